//! Server limits: each breach closes only the offending connection, is
//! counted in stats(), and leaves the other clients working.

mod util;

use std::time::Duration;

use netsvc::{ConnectionState, Dispatcher, Event, Exchange};
use util::*;

const RETRY: Duration = Duration::from_millis(100);

fn echo(d: &Dispatcher) -> netsvc::ServiceHandle {
    d.service("echo")
        .spawn(|_s, e| {
            if let Event::Request(r) = e {
                let _ = r.reply(&"pong");
            }
        })
        .unwrap()
}

#[test]
fn connections_beyond_the_maximum_are_refused() {
    let ds = Dispatcher::new().unwrap();
    let ex = Exchange::server(&ds)
        .max_connections(2)
        .listen("127.0.0.1:0")
        .unwrap();
    let echo = echo(&ds);
    let clients: Vec<(Dispatcher, Exchange)> = (0..2)
        .map(|_| {
            let d = Dispatcher::new().unwrap();
            let x = Exchange::client(&d)
                .connect(ex.local_addr(), RETRY)
                .unwrap();
            assert_eq!(
                x.connections().recv_timeout(WAIT).unwrap().state(),
                ConnectionState::Active
            );
            (d, x)
        })
        .collect();
    let third = Dispatcher::new().unwrap();
    let tx = Exchange::client(&third)
        .connect_once(ex.local_addr())
        .unwrap();
    let ann = tx.connections().recv_timeout(WAIT).unwrap();
    assert_eq!(
        ann.state(),
        ConnectionState::Inactive,
        "the third is refused"
    );
    wait_breaches(&ds, 1);
    // The server saw exactly two clients come.
    let server_side: Vec<_> = std::iter::from_fn(|| ex.connections().try_recv().ok()).collect();
    assert_eq!(server_side.len(), 2, "{server_side:?}");
    // The first two still work.
    for (d, _) in &clients {
        let me = d.service("me").open().unwrap();
        me.monitor_service_name("echo");
        let a = wait_announcement(&me, "echo", None, netsvc::ServiceStatus::Available);
        assert_eq!(a.binding(), echo.binding());
        let pong: String = me.call(a.binding(), "ping", &()).unwrap();
        assert_eq!(pong, "pong");
    }
}

#[test]
fn a_client_announcing_too_many_services_is_disconnected() {
    let ds = Dispatcher::new().unwrap();
    let ex = Exchange::server(&ds)
        .max_services_per_connection(3)
        .listen("127.0.0.1:0")
        .unwrap();
    let greedy = Dispatcher::new().unwrap();
    let _services: Vec<_> = (0..5)
        .map(|i| greedy.service(&format!("s{i}")).open().unwrap())
        .collect();
    let gx = Exchange::client(&greedy)
        .connect_once(ex.local_addr())
        .unwrap();
    let conns = ex.connections();
    assert_eq!(
        conns.recv_timeout(WAIT).unwrap().state(),
        ConnectionState::Active
    );
    assert_eq!(
        conns.recv_timeout(WAIT).unwrap().state(),
        ConnectionState::Inactive
    );
    wait_breaches(&ds, 1);
    for i in 0..5 {
        assert!(
            ds.lookup_service_name(&format!("s{i}")).is_empty(),
            "s{i} withdrawn"
        );
    }
    assert_eq!(
        gx.connections().recv_timeout(WAIT).unwrap().state(),
        ConnectionState::Active
    );
    assert_eq!(
        gx.connections().recv_timeout(WAIT).unwrap().state(),
        ConnectionState::Inactive
    );
    // A modest client is welcome.
    let modest = Dispatcher::new().unwrap();
    let _one = modest.service("one").open().unwrap();
    let mx = Exchange::client(&modest)
        .connect(ex.local_addr(), RETRY)
        .unwrap();
    assert_eq!(
        mx.connections().recv_timeout(WAIT).unwrap().state(),
        ConnectionState::Active
    );
    let watcher = ds.service("watcher").open().unwrap();
    watcher.monitor_service_name("one");
    wait_announcement(&watcher, "one", None, netsvc::ServiceStatus::Available);
    assert_eq!(ds.stats().limits_breached, 1);
}

#[test]
fn a_client_holding_too_many_subscriptions_is_disconnected() {
    let ds = Dispatcher::new().unwrap();
    let ex = Exchange::server(&ds)
        .max_subscriptions_per_connection(2)
        .listen("127.0.0.1:0")
        .unwrap();
    let publisher = ds.service("publisher").open().unwrap();
    let dc = Dispatcher::new().unwrap();
    let cx = Exchange::client(&dc).connect_once(ex.local_addr()).unwrap();
    assert_eq!(
        cx.connections().recv_timeout(WAIT).unwrap().state(),
        ConnectionState::Active
    );
    let sub = dc.service("sub").open().unwrap();
    sub.subscribe_reports("publisher", "a.*");
    sub.subscribe_reports("publisher", "b.*");
    // Two are within the limit: the publisher hears both.
    assert_eq!(subscription(&publisher).subject(), "a.*");
    assert_eq!(subscription(&publisher).subject(), "b.*");
    sub.subscribe_reports("publisher", "c.*");
    assert_eq!(
        cx.connections().recv_timeout(WAIT).unwrap().state(),
        ConnectionState::Inactive
    );
    wait_breaches(&ds, 1);
    // The lost link withdraws the subscriber's subscriptions at the publisher.
    let gone: Vec<String> = (0..2)
        .map(|_| subscription(&publisher).subject().to_owned())
        .collect();
    assert!(
        gone.contains(&"a.*".to_owned()) && gone.contains(&"b.*".to_owned()),
        "{gone:?}"
    );
}

#[test]
fn a_congested_peer_holds_commands_back_until_it_is_dropped() {
    // 32 MiB limit: congested above 4 MiB of unsent output. A peer that
    // never reads is sent a table of ~12 MB: the kernel takes a few MB, the
    // rest waits, and the dispatcher pushes back instead of buffering on.
    let ds = Dispatcher::builder()
        .max_outbound_buffer(32 << 20)
        // Names of 4 KB, to make a large table of few services.
        .max_name_len(8192)
        .heartbeat(Duration::from_millis(50), Duration::from_millis(500))
        .build()
        .unwrap();
    let ex = Exchange::server(&ds).listen("127.0.0.1:0").unwrap();
    let name = "x".repeat(4000);
    let _bulk: Vec<_> = (0..3000)
        .map(|i| ds.service(&format!("{name}{i}")).open().unwrap())
        .collect();
    let echo = echo(&ds);
    let me = ds.service("me").open().unwrap();
    let mut raw = util::raw::handshake(ex.local_addr(), 21);
    let conns = ex.connections();
    assert_eq!(
        conns.recv_timeout(WAIT).unwrap().state(),
        ConnectionState::Active
    );
    // Alive (it sends heartbeats: Message::Heartbeat is variant 5) but not
    // reading: congested, not silent.
    let mut beat = raw.try_clone().unwrap();
    let beating = std::thread::spawn(move || {
        use std::io::Write;
        while beat.write_all(&[0, 0, 0, 1, 5]).is_ok() {
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    // A local call waits behind the congestion, then completes once the
    // stuck peer is dropped (after the dead-peer timeout): late, not lost.
    let pong: String = me.call(echo.binding(), "ping", &()).unwrap();
    assert_eq!(pong, "pong");
    assert_eq!(
        conns.recv_timeout(WAIT).unwrap().state(),
        ConnectionState::Inactive
    );
    assert_eq!(ds.stats().slow_consumers, 1);
    // The peer received part of the table, then end of stream.
    use std::io::Read;
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match raw.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    assert!(total < 12_000_000, "the whole table was sent: {total}");
    drop(raw);
    beating.join().unwrap();
}
