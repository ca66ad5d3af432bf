//! Every `Inactive` reason produced by its cause, on the side that sees it,
//! and no `Active` announced before the handshake and authentication are
//! complete.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use netsvc::{ConnectionAnnouncement, ConnectionState, Dispatcher, Exchange, InactiveReason};
use util::raw;
use util::{spawn_u64, WAIT};

/// The first announcement of an exchange.
fn first(ex: &Exchange) -> ConnectionAnnouncement {
    ex.connections()
        .recv_timeout(WAIT)
        .expect("a connection announcement")
}

/// Asserts that an announcement is an Inactive with that reason.
fn assert_inactive(a: &ConnectionAnnouncement, reason: InactiveReason) {
    assert_eq!(a.state(), ConnectionState::Inactive, "{a}");
    assert_eq!(a.reason(), Some(reason), "{a}");
    assert!(!a.detail().is_empty(), "{a}");
    let shown = a.to_string();
    assert!(shown.contains(reason.as_str()), "{shown}");
}

/// A client that tries once to reach `addr`.
fn client_once(d: &Dispatcher, addr: SocketAddr) -> Exchange {
    Exchange::client(d).connect_once(addr).unwrap()
}

/// A fake server: accepts one connection and hands it to `serve` on a
/// thread of its own.
fn fake_server(serve: impl FnOnce(TcpStream) + Send + 'static) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        if let Ok((s, _)) = l.accept() {
            s.set_read_timeout(Some(WAIT)).unwrap();
            serve(s);
        }
    });
    addr
}

/// Reads until the peer closes (bounded by the read timeout).
fn drain(mut s: TcpStream) {
    let mut buf = [0u8; 4096];
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
}

#[test]
fn refused() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap(); // (the listener is dropped: nothing listens there)
    let d = Dispatcher::new().unwrap();
    let cx = client_once(&d, addr);
    assert_inactive(&first(&cx), InactiveReason::Refused);
}

#[test]
fn unreachable_when_connect_never_completes() {
    // A listener whose backlog is full: the kernel drops further SYNs, so
    // a connect hangs until the client's handshake timeout.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    // Fill the backlog (never accepted); connects past it hang.
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&addr.into());
        fillers.push(s);
    }
    let d = Dispatcher::builder()
        .handshake_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let cx = client_once(&d, addr);
    let a = first(&cx);
    // The SYN of the client is dropped (Unreachable at the timeout); on a
    // kernel that still completes it, the handshake times out instead.
    assert_eq!(a.state(), ConnectionState::Inactive, "{a}");
    assert!(
        matches!(
            a.reason(),
            Some(InactiveReason::Unreachable | InactiveReason::HandshakeTimeout)
        ),
        "{a}"
    );
    drop(fillers);
}

#[test]
fn not_a_netsvc_peer() {
    let addr = fake_server(|mut s| {
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        drain(s);
    });
    let d = Dispatcher::new().unwrap();
    let cx = client_once(&d, addr);
    assert_inactive(&first(&cx), InactiveReason::NotNetsvc);
}

#[test]
fn not_a_netsvc_peer_by_its_magic() {
    let addr = fake_server(|mut s| {
        let mut body = raw::hello_body(raw::VERSION, 5, "fake@1/5", "");
        body[..6].copy_from_slice(b"NOTSVC");
        let _ = s.write_all(&raw::frame(&body));
        drain(s);
    });
    let d = Dispatcher::new().unwrap();
    let cx = client_once(&d, addr);
    assert_inactive(&first(&cx), InactiveReason::NotNetsvc);
}

#[test]
fn protocol_version() {
    let addr = fake_server(|mut s| {
        let _ = s.write_all(&raw::frame(&raw::hello_body(99, 5, "fake@1/5", "")));
        drain(s);
    });
    let d = Dispatcher::new().unwrap();
    let cx = client_once(&d, addr);
    let a = first(&cx);
    assert_inactive(&a, InactiveReason::ProtocolVersion);
    assert!(a.detail().contains("99"), "{a}");
}

#[test]
fn group_mismatch_on_both_sides() {
    let ds = Dispatcher::new().unwrap();
    let ex = Exchange::server(&ds)
        .group("plant")
        .listen("127.0.0.1:0")
        .unwrap();
    let d = Dispatcher::new().unwrap();
    let cx = Exchange::client(&d)
        .group("office")
        .connect_once(ex.local_addr())
        .unwrap();
    let a = first(&cx);
    assert_inactive(&a, InactiveReason::GroupMismatch);
    assert!(
        a.detail().contains("plant") && a.detail().contains("office"),
        "{a}"
    );
}

#[test]
fn authentication_failed_without_a_secret_and_never_active() {
    let ds = Dispatcher::new().unwrap();
    let ex = Exchange::server(&ds)
        .secret("k")
        .listen("127.0.0.1:0")
        .unwrap();
    let d = Dispatcher::new().unwrap();
    let cx = client_once(&d, ex.local_addr());
    // The first thing the client announces is the failure, not Active.
    assert_inactive(&first(&cx), InactiveReason::AuthenticationFailed);
    assert_eq!(ex.connections().try_recv().ok().map(|a| a.state()), None);
}

#[test]
fn authentication_failed_with_a_wrong_secret_and_never_active() {
    let ds = Dispatcher::new().unwrap();
    let ex = Exchange::server(&ds)
        .secret("right")
        .listen("127.0.0.1:0")
        .unwrap();
    let d = Dispatcher::new().unwrap();
    let cx = Exchange::client(&d)
        .secret("wrong")
        .connect_once(ex.local_addr())
        .unwrap();
    assert_inactive(&first(&cx), InactiveReason::AuthenticationFailed);
    assert!(ds.stats().auth_failures >= 1);
}

#[test]
fn authentication_failed_when_only_the_client_has_a_secret() {
    let ds = Dispatcher::new().unwrap();
    let ex = Exchange::server(&ds).listen("127.0.0.1:0").unwrap();
    let d = Dispatcher::new().unwrap();
    let cx = Exchange::client(&d)
        .secret("k")
        .connect_once(ex.local_addr())
        .unwrap();
    assert_inactive(&first(&cx), InactiveReason::AuthenticationFailed);
}

#[test]
fn heartbeat_timeout() {
    // A server that completes the handshake, then says nothing more.
    let addr = fake_server(|mut s| {
        let _ = s.write_all(&raw::hello(5, ""));
        drain(s);
    });
    let d = Dispatcher::builder()
        .heartbeat(Duration::from_millis(50), Duration::from_millis(300))
        .build()
        .unwrap();
    let cx = client_once(&d, addr);
    let a = first(&cx);
    assert_eq!(a.state(), ConnectionState::Active, "{a}");
    assert_inactive(&first(&cx), InactiveReason::HeartbeatTimeout);
}

#[test]
fn closed_by_peer() {
    let ds = Dispatcher::new().unwrap();
    let ex = Exchange::server(&ds).listen("127.0.0.1:0").unwrap();
    let d = Dispatcher::new().unwrap();
    let cx = client_once(&d, ex.local_addr());
    assert_eq!(first(&cx).state(), ConnectionState::Active);
    ex.close();
    assert_inactive(&first(&cx), InactiveReason::ClosedByPeer);
}

#[test]
fn closed_here() {
    let ds = Dispatcher::new().unwrap();
    let ex = Exchange::server(&ds).listen("127.0.0.1:0").unwrap();
    let d = Dispatcher::new().unwrap();
    let cx = client_once(&d, ex.local_addr());
    assert_eq!(first(&cx).state(), ConnectionState::Active);
    assert_eq!(first(&ex).state(), ConnectionState::Active);
    ex.close();
    assert_inactive(&first(&ex), InactiveReason::Closed);
}

#[test]
fn limit_breached() {
    let ds = Dispatcher::new().unwrap();
    let ex = Exchange::server(&ds)
        .max_services_per_connection(1)
        .listen("127.0.0.1:0")
        .unwrap();
    let d = Dispatcher::new().unwrap();
    let _a = d.service("a").open().unwrap();
    let _b = d.service("b").open().unwrap();
    let cx = client_once(&d, ex.local_addr());
    assert_eq!(first(&ex).state(), ConnectionState::Active);
    let a = first(&ex);
    assert_inactive(&a, InactiveReason::LimitBreached);
    assert!(a.detail().contains("services"), "{a}");
    // The client is told why, not only that the server hung up.
    assert_eq!(first(&cx).state(), ConnectionState::Active);
    let b = first(&cx);
    assert_inactive(&b, InactiveReason::ClosedByPeer);
    assert!(b.detail().contains("limit breached"), "{b}");
}

#[test]
fn silent_connections_give_way_to_a_new_client() {
    let ds = Dispatcher::new().unwrap();
    let ex = Exchange::server(&ds)
        .max_connections(8)
        .listen("127.0.0.1:0")
        .unwrap();
    let addr = ex.local_addr();
    // More silent connections than the server has slots, from one address.
    let silent: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // Every one of them is accepted and read (its hello arrives) or closed.
    for mut s in silent.iter() {
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut b = [0u8; 1];
        let _ = s.read(&mut b);
    }
    // A handshake counts as stuck, and may be made to give way, once it
    // has had a quarter of the handshake timeout (at most 500 ms): that
    // age is the rule itself, so it is waited out.
    std::thread::sleep(Duration::from_millis(600));
    let d = Dispatcher::new().unwrap();
    let cx = client_once(&d, addr);
    let a = first(&cx);
    assert_eq!(a.state(), ConnectionState::Active, "{a}");
    assert!(ds.stats().limits_breached >= 1, "{:?}", ds.stats());
}

#[test]
fn a_burst_of_honest_clients_from_one_address_is_taken_whole() {
    // More clients than the handshake slots of one address, all at once
    // (one host's processes reconnecting after a restart): fresh
    // handshakes never give way, so every one of them gets its link.
    let ds = Dispatcher::new().unwrap();
    let ex = Exchange::server(&ds).listen("127.0.0.1:0").unwrap();
    let addr = ex.local_addr();
    let clients: Vec<(Dispatcher, Exchange)> = (0..48)
        .map(|_| {
            let d = Dispatcher::new().unwrap();
            let cx = client_once(&d, addr);
            (d, cx)
        })
        .collect();
    for (_, cx) in &clients {
        let a = first(cx);
        assert_eq!(a.state(), ConnectionState::Active, "{a}");
    }
    assert_eq!(ds.stats().limits_breached, 0);
}

#[test]
fn a_slow_authorise_callback_stalls_only_the_connection_it_decides_on() {
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ds = Dispatcher::new().unwrap();
    let n = calls.clone();
    let ex = Exchange::server(&ds)
        .authorise(move |_peer| {
            if n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                // The second connection: decided only when the test says.
                let _ = release_rx.recv_timeout(WAIT);
            }
            true
        })
        .listen("127.0.0.1:0")
        .unwrap();
    let echo = spawn_u64(&ds, "echo", |x| x + 1);
    let d = Dispatcher::new().unwrap();
    let cx = client_once(&d, ex.local_addr());
    assert_eq!(first(&cx).state(), ConnectionState::Active);
    let me = d.service("me").open().unwrap();
    me.monitor_service_name("echo");
    let echo_b = util::wait_announcement(&me, "echo", None, netsvc::ServiceStatus::Available)
        .binding()
        .clone();
    // A second connection, whose callback blocks.
    let mut waiting = TcpStream::connect(ex.local_addr()).unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // Meanwhile the dispatcher serves the established link and local calls.
    for x in 0..20u64 {
        let r: u64 = me.call_timeout(&echo_b, "inc", &x, WAIT).unwrap();
        assert_eq!(r, x + 1);
    }
    let local = ds.service("local").open().unwrap();
    let r: u64 = local
        .call_timeout(echo.binding(), "inc", &7u64, WAIT)
        .unwrap();
    assert_eq!(r, 8);
    // Nothing was sent to the waiting connection before its decision...
    let mut b = [0u8; 4];
    assert!(
        waiting.read(&mut b).is_err(),
        "hello before authorise decided"
    );
    // ...and once decided, its hello comes.
    release_tx.send(()).unwrap();
    waiting.set_read_timeout(Some(WAIT)).unwrap();
    let body = raw::read_frame(&mut waiting).unwrap();
    assert_eq!(&body[..6], raw::MAGIC);
}
