//! Exchange link liveness: heartbeats keep a quiet link up; a peer that
//! goes silent (half-open TCP) is dropped within the dead-peer timeout.

mod util;

use std::io::Read;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use netsvc::{ConnectionState, Dispatcher, Exchange};
use util::*;

const INTERVAL: Duration = Duration::from_millis(50);
const DEAD: Duration = Duration::from_millis(300);

fn fast(name: &str) -> Dispatcher {
    Dispatcher::builder()
        .name(name)
        .heartbeat(INTERVAL, DEAD)
        .build()
        .expect("dispatcher")
}

#[test]
fn server_drops_a_peer_that_goes_silent() {
    let ds = fast("server");
    let ex = Exchange::server(&ds).listen("127.0.0.1:0").unwrap();
    let conns = ex.connections();
    // Handshakes, then neither reads nor writes: a half-open peer.
    let _raw = raw::handshake(ex.local_addr(), 9);
    let up = conns.recv_timeout(WAIT).expect("Active");
    assert_eq!(up.state(), ConnectionState::Active);
    let since = Instant::now();
    let down = conns.recv_timeout(WAIT).expect("Inactive");
    assert_eq!(down.state(), ConnectionState::Inactive);
    assert_eq!(down.remote_process().map(|p| p.uid()), Some(raw::uid(9)));
    // Dropped for silence, not at once (and long before the test's bound).
    assert!(since.elapsed() < WAIT);
    ds.shutdown();
}

#[test]
fn client_drops_a_silent_server_and_reconnects() {
    // A "server" that completes the handshake and then says nothing more.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mute = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(2) {
            let mut s = stream.unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            std::io::Write::write_all(&mut s, &raw::hello(11, "")).unwrap();
            let _ = raw::read_frame(&mut s); // the client's hello
            held.push(s); // kept open, never read again
        }
        held
    });
    let dc = fast("client");
    let ex = Exchange::client(&dc)
        .connect(addr, Duration::from_millis(100))
        .unwrap();
    let conns = ex.connections();
    assert_eq!(
        conns.recv_timeout(WAIT).unwrap().state(),
        ConnectionState::Active
    );
    let down = conns.recv_timeout(WAIT).unwrap();
    assert_eq!(
        down.state(),
        ConnectionState::Inactive,
        "silent server dropped"
    );
    assert_eq!(
        conns.recv_timeout(WAIT).unwrap().state(),
        ConnectionState::Active,
        "reconnected"
    );
    assert!(dc.stats().reconnects >= 1);
    ex.close();
    let mut held = mute.join().unwrap();
    // The client closed both links: each raw socket reads end of stream.
    for s in &mut held {
        let mut buf = [0u8; 1024];
        let deadline = Instant::now() + WAIT;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => assert!(Instant::now() < deadline, "link not closed"),
            }
        }
    }
}

#[test]
fn heartbeats_keep_an_idle_link_up() {
    let ds = fast("server");
    let ex = Exchange::server(&ds).listen("127.0.0.1:0").unwrap();
    let dc = fast("client");
    let cx = Exchange::client(&dc)
        .connect(ex.local_addr(), Duration::from_millis(100))
        .unwrap();
    assert_eq!(
        cx.connections().recv_timeout(WAIT).unwrap().state(),
        ConnectionState::Active
    );
    assert_eq!(
        ex.connections().recv_timeout(WAIT).unwrap().state(),
        ConnectionState::Active
    );
    // Four dead-peer timeouts with no traffic but heartbeats: still up.
    let quiet = DEAD * 4;
    assert!(
        cx.connections().recv_timeout(quiet).is_err(),
        "client link dropped"
    );
    assert!(ex.connections().try_recv().is_err(), "server link dropped");
    assert!(
        ds.stats().frames_in > 2,
        "heartbeats flowed: {:?}",
        ds.stats()
    );
    ds.shutdown();
    dc.shutdown();
}

/// The kernel's timer type for a TCP socket, from /proc/net/tcp: 0 none,
/// 1 retransmit, 2 keepalive.
#[cfg(target_os = "linux")]
fn timer_of(local: std::net::SocketAddr, remote: std::net::SocketAddr) -> Option<u32> {
    let text = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let hex = |a: std::net::SocketAddr| format!("0100007F:{:04X}", a.port());
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.get(1) == Some(&hex(local).as_str()) && f.get(2) == Some(&hex(remote).as_str()))
            .then(|| f.get(5).and_then(|t| t.split(':').next()))
            .flatten()
            .and_then(|t| u32::from_str_radix(t, 16).ok())
    })
}

#[cfg(target_os = "linux")]
#[test]
fn exchange_connections_have_tcp_keepalive() {
    let ds = fast("server");
    let ex = Exchange::server(&ds).listen("127.0.0.1:0").unwrap();
    let raw = raw::handshake(ex.local_addr(), 12);
    assert_eq!(
        ex.connections().recv_timeout(WAIT).unwrap().state(),
        ConnectionState::Active
    );
    // The server's end of this link: local = the listening port, remote = ours.
    let (server_end, client_end) = (ex.local_addr(), raw.local_addr().unwrap());
    let deadline = Instant::now() + WAIT;
    loop {
        match timer_of(server_end, client_end) {
            Some(2) => break,
            // 1 while the hello is unacknowledged; the keepalive timer
            // follows once the link is idle.
            other => assert!(
                Instant::now() < deadline,
                "server socket timer {other:?}, not keepalive"
            ),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // The raw client set no keepalive: the check can tell the difference.
    assert_ne!(timer_of(client_end, server_end), Some(2));
    ds.shutdown();
}

#[test]
fn a_dispatcher_that_was_stalled_reads_before_it_judges() {
    // The server heartbeats every 50 ms and is patient; the client gives a
    // peer 300 ms. The client's dispatcher is then stalled for well over
    // 300 ms while the server's heartbeats pile up in its socket: once it
    // runs again, its overdue liveness check must read them and keep the
    // link, not drop a healthy peer as dead.
    let ds = Dispatcher::builder()
        .name("server")
        .heartbeat(INTERVAL, Duration::from_secs(30))
        .build()
        .unwrap();
    let ex = Exchange::server(&ds).listen("127.0.0.1:0").unwrap();
    let echo = spawn_u64(&ds, "echo", |x| x + 1);
    let dc = fast("client");
    let cx = Exchange::client(&dc).connect_once(ex.local_addr()).unwrap();
    assert_eq!(
        cx.connections().recv_timeout(WAIT).unwrap().state(),
        ConnectionState::Active
    );
    let me = dc.service("me").open().unwrap();
    me.monitor_service_name("echo");
    let echo_b = wait_announcement(&me, "echo", None, netsvc::ServiceStatus::Available)
        .binding()
        .clone();
    assert_eq!(echo_b, *echo.binding());

    let (release, stalled) = crossbeam_channel::bounded::<()>(1);
    netsvc::stall_dispatcher(&dc, stalled).unwrap();
    // Heartbeats from the server arrive while the client cannot read them:
    // wait until several periods' worth has certainly been sent (the
    // server counts its frames out).
    let out0 = ds.stats().frames_out;
    wait_stat(&ds, "frames_out", out0 + 10, |s| s.frames_out);
    release.send(()).unwrap();

    // A call through the link is handled after the overdue liveness check.
    let r: u64 = me.call_timeout(&echo_b, "inc", &1u64, WAIT).unwrap();
    assert_eq!(r, 2);
    if let Ok(a) = cx.connections().try_recv() {
        panic!("the link went down after the stall: {a}");
    }
    assert_eq!(dc.stats().reconnects, 0);
}
