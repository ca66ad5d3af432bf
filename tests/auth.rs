//! Shared-secret authentication of exchange links.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netsvc::{ConnectionState, Dispatcher, Event, Exchange, ServiceStatus};
use util::*;

const RETRY: Duration = Duration::from_millis(100);

struct Server {
    d: Dispatcher,
    ex: Exchange,
    _echo: netsvc::ServiceHandle,
}

fn server(secret: Option<&str>) -> Server {
    server_bound(secret, true)
}

/// A server whose proofs are bound to the addresses each side sees, or not
/// (as behind NAT or a proxy).
fn server_bound(secret: Option<&str>, bind: bool) -> Server {
    let d = Dispatcher::builder().name("server").build().unwrap();
    let mut b = Exchange::server(&d).bind_proofs_to_addresses(bind);
    if let Some(s) = secret {
        b = b.secret(s);
    }
    let ex = b.listen("127.0.0.1:0").unwrap();
    let echo = d
        .service("echo")
        .spawn(|_s, e| {
            if let Event::Request(r) = e {
                let _ = r.reply(&"pong");
            }
        })
        .unwrap();
    Server { d, ex, _echo: echo }
}

fn client(addr: std::net::SocketAddr, secret: Option<&str>) -> (Dispatcher, Exchange) {
    let d = Dispatcher::builder().name("client").build().unwrap();
    let mut b = Exchange::client(&d);
    if let Some(s) = secret {
        b = b.secret(s);
    }
    let ex = b.connect_once(addr).unwrap();
    (d, ex)
}

fn wait_auth_failures(d: &Dispatcher, n: u64) {
    wait_stat(d, "auth_failures", n, |s| s.auth_failures);
}

#[test]
fn the_right_key_connects_and_services_flow() {
    let s = server(Some("correct horse"));
    let (dc, cx) = client(s.ex.local_addr(), Some("correct horse"));
    assert_eq!(
        cx.connections().recv_timeout(WAIT).unwrap().state(),
        ConnectionState::Active
    );
    assert_eq!(
        s.ex.connections().recv_timeout(WAIT).unwrap().state(),
        ConnectionState::Active
    );
    let me = dc.service("me").open().unwrap();
    me.monitor_service_name("echo");
    let a = wait_announcement(&me, "echo", None, ServiceStatus::Available);
    let pong: String = me.call(a.binding(), "ping", &()).unwrap();
    assert_eq!(pong, "pong");
    assert_eq!(s.d.stats().auth_failures, 0);
    assert_eq!(dc.stats().auth_failures, 0);
}

/// The client is refused: Inactive, never Active, and it learned no service.
fn refused(s: &Server, dc: &Dispatcher, cx: &Exchange) {
    let ann = cx.connections().recv_timeout(WAIT).unwrap();
    let ann = if ann.state() == ConnectionState::Active {
        // A client with no secret believes the link is up until the server
        // closes it; it must still learn nothing.
        cx.connections().recv_timeout(WAIT).unwrap()
    } else {
        ann
    };
    assert_eq!(ann.state(), ConnectionState::Inactive);
    assert!(
        dc.lookup_service_name("echo").is_empty(),
        "the client learned a service"
    );
    assert!(
        s.ex.connections().recv_timeout(QUIET).is_err(),
        "the server announced a refused client"
    );
}

#[test]
fn a_wrong_key_is_refused() {
    let s = server(Some("correct horse"));
    let (dc, cx) = client(s.ex.local_addr(), Some("battery staple"));
    refused(&s, &dc, &cx);
    wait_auth_failures(&s.d, 1);
}

#[test]
fn no_key_is_refused() {
    let s = server(Some("correct horse"));
    let (dc, cx) = client(s.ex.local_addr(), None);
    refused(&s, &dc, &cx);
    wait_auth_failures(&s.d, 1);
}

#[test]
fn a_client_with_a_key_refuses_a_server_without_one() {
    let s = server(None);
    let (dc, cx) = client(s.ex.local_addr(), Some("correct horse"));
    let ann = cx.connections().recv_timeout(WAIT).unwrap();
    assert_eq!(ann.state(), ConnectionState::Inactive);
    wait_auth_failures(&dc, 1);
    assert!(
        dc.lookup_service_name("echo").is_empty(),
        "the client took in the table"
    );
}

/// A relay between a client and `upstream` that records what the client
/// sends, as a party in the middle would: its address, the recording, and
/// its thread (which ends when either side closes).
fn recording_relay(
    upstream: std::net::SocketAddr,
) -> (
    std::net::SocketAddr,
    Arc<Mutex<Vec<u8>>>,
    std::thread::JoinHandle<()>,
) {
    let recorded = Arc::new(Mutex::new(Vec::<u8>::new()));
    let rec = recorded.clone();
    let (addr, thread) = util::relay::relay(upstream, move |chunk| {
        rec.lock().unwrap().extend_from_slice(chunk);
    });
    (addr, recorded, thread)
}

#[test]
fn a_relayed_handshake_yields_nothing() {
    // A party in the middle relays a keyed client's handshake, byte for
    // byte, to the server: each side sees another connection than the
    // other, so neither proof verifies. Nobody is announced Active, the
    // relay learns no service, and the failure is counted.
    let s = server(Some("correct horse"));
    let (proxy_addr, recorded, relay) = recording_relay(s.ex.local_addr());
    let (dc, cx) = client(proxy_addr, Some("correct horse"));
    let a = cx.connections().recv_timeout(WAIT).unwrap();
    assert_eq!(a.state(), ConnectionState::Inactive, "{a:?}");
    assert_eq!(
        a.reason(),
        Some(netsvc::InactiveReason::AuthenticationFailed)
    );
    wait_auth_failures(&s.d, 1);
    assert!(
        s.ex.connections().recv_timeout(QUIET).is_err(),
        "the server announced the relayed link"
    );
    assert!(dc.lookup_service_name("echo").is_empty());
    dc.shutdown();
    relay.join().unwrap();
    // What the relay saw of the client holds no table: only the hello and
    // the handshake (a few hundred bytes, no service name).
    let seen = recorded.lock().unwrap().clone();
    assert!(!seen.windows(4).any(|w| w == b"echo"));
}

#[test]
fn a_replayed_handshake_is_refused() {
    // Behind a proxy (the proofs not bound to addresses) a relay works;
    // what it recorded, replayed, does not: the server's nonce is new.
    let s = server_bound(Some("correct horse"), false);
    let upstream = s.ex.local_addr();
    let (proxy_addr, recorded, relay) = recording_relay(upstream);
    let (dc, cx) = client(proxy_addr, Some("correct horse"));
    assert_eq!(
        cx.connections().recv_timeout(WAIT).unwrap().state(),
        ConnectionState::Active
    );
    assert_eq!(
        s.ex.connections().recv_timeout(WAIT).unwrap().state(),
        ConnectionState::Active
    );
    dc.shutdown();
    relay.join().unwrap();
    assert_eq!(
        s.ex.connections().recv_timeout(WAIT).unwrap().state(),
        ConnectionState::Inactive
    );
    let captured = recorded.lock().unwrap().clone();
    assert!(captured.len() > 40, "the handshake was captured");
    assert_eq!(s.d.stats().auth_failures, 0);

    // The same bytes, replayed: the server's nonce is new, so the proof fails.
    let mut replay = TcpStream::connect(upstream).unwrap();
    replay.set_read_timeout(Some(WAIT)).unwrap();
    let _ = replay.write_all(&captured);
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + WAIT;
    loop {
        match replay.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => assert!(Instant::now() < deadline, "replay not closed"),
        }
    }
    wait_auth_failures(&s.d, 1);
    assert!(
        s.ex.connections().recv_timeout(QUIET).is_err(),
        "the replay became Active"
    );
}

#[test]
fn the_secret_never_shows_in_debug_output() {
    let d = Dispatcher::new().unwrap();
    let b = Exchange::server(&d).secret("hunter2");
    assert!(!format!("{b:?}").contains("hunter2"));
    let c = Exchange::client(&d).secret("hunter2");
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn reconnecting_clients_authenticate_again() {
    let s = server(Some("k"));
    let port = s.ex.local_addr();
    let dc = Dispatcher::new().unwrap();
    let cx = Exchange::client(&dc)
        .secret("k")
        .connect(port, RETRY)
        .unwrap();
    assert_eq!(
        cx.connections().recv_timeout(WAIT).unwrap().state(),
        ConnectionState::Active
    );
    s.d.shutdown();
    assert_eq!(
        cx.connections().recv_timeout(WAIT).unwrap().state(),
        ConnectionState::Inactive
    );
    let s2 = Dispatcher::new().unwrap();
    let ex2 = Exchange::server(&s2).secret("k").listen(port).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let ann = cx.connections().recv_timeout(WAIT).unwrap();
        if ann.state() == ConnectionState::Active {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    assert_eq!(
        ex2.connections().recv_timeout(WAIT).unwrap().state(),
        ConnectionState::Active
    );
    assert_eq!(s2.stats().auth_failures, 0);
}

#[test]
fn an_address_that_keeps_failing_is_refused_for_a_while() {
    // 32 failed authentications from 127.0.0.1 within the window: from then
    // on the server drops that address's connections before reading a
    // byte, the right key included, and counts each as a limit breached.
    let s = server(Some("correct horse"));
    for _ in 0..32 {
        let (_dc, cx) = client(s.ex.local_addr(), Some("battery staple"));
        let a = cx.connections().recv_timeout(WAIT).unwrap();
        assert_eq!(a.state(), ConnectionState::Inactive, "{a:?}");
    }
    wait_auth_failures(&s.d, 32);
    let (dc, cx) = client(s.ex.local_addr(), Some("correct horse"));
    let a = cx.connections().recv_timeout(WAIT).unwrap();
    assert_eq!(a.state(), ConnectionState::Inactive, "{a:?}");
    wait_stat(&s.d, "limits_breached", 1, |st| st.limits_breached);
    assert_eq!(s.d.stats().auth_failures, 32, "no handshake was attempted");
    assert!(dc.lookup_service_name("echo").is_empty());
}
