//! What a peer can make an exchange hold, and how long it can keep it busy,
//! is bounded: each attack from a raw TCP peer closes only that
//! connection, is counted in `stats().limits_breached`, and a well-behaved
//! client calls echo during and after it.

mod util;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netsvc::fuzzing::{
    available_frame, binding, binding_of, group_frame, report_frame, request_frame, subscribe_frame,
};
use netsvc::*;
use util::raw::wait_closed;
use util::*;

/// A server dispatcher (configured by `server`) with an echo service
/// (doubling a u64), and a client dispatcher connected to it whose "me"
/// has called echo once.
struct Setup {
    ds: Dispatcher,
    _ex: Exchange,
    addr: SocketAddr,
    echo: ServiceHandle,
    _dc: Dispatcher,
    _cx: Exchange,
    me: Arc<Service>,
    echo_seen: ServiceBinding,
}

fn setup(server: impl FnOnce(ServerBuilder) -> ServerBuilder) -> Setup {
    let ds = Dispatcher::builder().name("server").build().unwrap();
    let ex = server(Exchange::server(&ds)).listen("127.0.0.1:0").unwrap();
    let addr = ex.local_addr();
    // The raw peers' subscriptions to echo (up to 1000, each told to echo
    // when made and again when its link closes) are events on echo's
    // queue, which refuses requests as busy once it holds its capacity:
    // room for all of them, so that the good client's calls are never
    // refused however slowly echo's thread drains them on a loaded
    // machine (the default 1024 made this test fail there).
    let echo = ds
        .service("echo")
        .queue_capacity(4096)
        .spawn(|_s, ev| {
            if let Event::Request(r) = ev {
                if let Ok(x) = r.decode::<u64>() {
                    let _ = r.reply(&(x * 2));
                }
            }
        })
        .unwrap();
    let dc = Dispatcher::builder().name("client").build().unwrap();
    let cx = Exchange::client(&dc)
        .connect(addr, Duration::from_millis(100))
        .unwrap();
    assert_eq!(
        cx.connections().recv_timeout(WAIT).unwrap().state(),
        ConnectionState::Active
    );
    let me = dc.service("me").open().unwrap();
    me.monitor_service_name("echo");
    let echo_seen = wait_announcement(&me, "echo", None, ServiceStatus::Available)
        .binding()
        .clone();
    let s = Setup {
        ds,
        _ex: ex,
        addr,
        echo,
        _dc: dc,
        _cx: cx,
        me: Arc::new(me),
        echo_seen,
    };
    s.call_echo();
    s
}

impl Setup {
    fn call_echo(&self) {
        let r: u64 = self
            .me
            .call_timeout(&self.echo_seen, "double", &21u64, WAIT)
            .unwrap();
        assert_eq!(r, 42);
    }

    /// Calls echo from the good client, over and over, until the guard is
    /// finished; each call must succeed.
    fn calling_during(&self) -> During {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let (me, echo) = (self.me.clone(), self.echo_seen.clone());
        let (flag, count) = (stop.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            let mut calls = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let r: u64 = me
                    .call_timeout(&echo, "double", &calls, WAIT)
                    .unwrap_or_else(|e| panic!("call {calls} to echo failed: {e:?}"));
                assert_eq!(r, calls * 2);
                calls += 1;
                count.store(calls, Ordering::Relaxed);
            }
            calls
        });
        During {
            stop,
            done,
            thread: Some(thread),
        }
    }

    fn raw(&self, uid: u8) -> TcpStream {
        util::raw::handshake(self.addr, uid)
    }
}

struct During {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl During {
    /// Stops calling once at least one more call has succeeded; the calls
    /// made.
    fn finish(mut self) -> u64 {
        let deadline = Instant::now() + WAIT;
        let before = self.done.load(Ordering::Relaxed);
        while self.done.load(Ordering::Relaxed) <= before {
            assert!(Instant::now() < deadline, "no call to echo succeeded");
            std::thread::sleep(Duration::from_millis(1));
        }
        self.stop.store(true, Ordering::Relaxed);
        let calls = self.thread.take().unwrap().join().expect("a call failed");
        assert!(calls >= 1);
        calls
    }
}

impl Drop for During {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Sends frames, ignoring a connection already closed by the other side
/// (that is what the tests expect to happen at some point).
fn send_all(s: &mut TcpStream, frames: impl IntoIterator<Item = Vec<u8>>) {
    let mut buf = Vec::new();
    for f in frames {
        buf.extend_from_slice(&f);
        if buf.len() > 64 * 1024 {
            if s.write_all(&buf).is_err() {
                return;
            }
            buf.clear();
        }
    }
    let _ = s.write_all(&buf);
}

/// Asserts the connection is still open after what was sent was handled:
/// a request to echo through it gets its reply.
fn still_open(s: &mut TcpStream, sender: &ServiceBinding, echo: &ServiceBinding, seq: u64) {
    s.write_all(&request_frame(seq, sender, echo, "double", 5, 10_000))
        .expect("the connection is open");
    s.set_read_timeout(Some(WAIT)).unwrap();
    // The reply is a frame among the server's announcements; read until a
    // frame that can only be it (Reply is variant 9) or the end.
    loop {
        let body = util::raw::read_frame(s).expect("the connection is still open");
        if body.first() == Some(&9) {
            return;
        }
    }
}

fn groups(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("g{i}")).collect()
}

// ----- groups -----

#[test]
fn a_service_with_20000_groups_is_refused() {
    let s = setup(|b| b);
    let during = s.calling_during();
    let mut raw = s.raw(31);
    let watcher = s.ds.service("watcher").open().unwrap();
    watcher.monitor_service_name("many");
    send_all(
        &mut raw,
        [available_frame(&binding_of(
            31,
            "many",
            "*",
            1,
            groups(20_000),
        ))],
    );
    wait_closed(&mut raw);
    wait_breaches(&s.ds, 1);
    during.finish();
    assert_quiet(&watcher);
    assert!(s.ds.lookup_service_name("many").is_empty());
    s.call_echo();
}

#[test]
fn groups_up_to_the_limit_pass_and_joining_past_it_is_refused() {
    let s = setup(|b| b.max_groups_per_service(3));
    let mut raw = s.raw(32);
    let b = binding_of(32, "few", "*", 1, groups(3));
    let watcher = s.ds.service("watcher").open().unwrap();
    watcher.monitor_service_group("g2");
    send_all(&mut raw, [available_frame(&b)]);
    wait_announcement(&watcher, "few", Some("g2"), ServiceStatus::Available);
    // Joining one already held changes nothing and costs nothing.
    send_all(&mut raw, [group_frame(&b, "g1", true)]);
    still_open(&mut raw, &b, s.echo.binding(), 1);
    assert_eq!(s.ds.stats().limits_breached, 0);
    let during = s.calling_during();
    send_all(&mut raw, [group_frame(&b, "g3", true)]);
    wait_closed(&mut raw);
    wait_breaches(&s.ds, 1);
    during.finish();
    wait_announcement(&watcher, "few", Some("g2"), ServiceStatus::Withdrawn);
    s.call_echo();
}

// ----- lengths -----

#[test]
fn names_past_255_bytes_are_refused_and_255_pass() {
    let s = setup(|b| b);
    let watcher = s.ds.service("watcher").open().unwrap();
    let ok = "n".repeat(255);
    watcher.monitor_service_name(&ok);
    let mut raw = s.raw(33);
    send_all(
        &mut raw,
        [available_frame(&binding_of(33, &ok, "*", 1, vec![]))],
    );
    wait_announcement(&watcher, &ok, None, ServiceStatus::Available);
    let cases: Vec<Vec<u8>> = vec![
        available_frame(&binding_of(33, &"n".repeat(300), "*", 2, vec![])),
        available_frame(&binding_of(33, "a", &"x".repeat(256), 3, vec![])),
        available_frame(&binding_of(33, "b", "*", 4, vec!["g".repeat(256)])),
        group_frame(
            &binding_of(33, &ok, "*", 1, vec![]),
            &"g".repeat(1000),
            true,
        ),
        request_frame(
            1,
            &binding_of(33, "c", "*", 5, vec![]),
            s.echo.binding(),
            &"m".repeat(256),
            1,
            1000,
        ),
        subscribe_frame(
            &binding_of(33, "d", "", 6, vec![]),
            s.echo.binding(),
            &"p".repeat(100_000),
            true,
        ),
        report_frame(
            &binding_of(33, &ok, "*", 1, vec![]),
            &"s".repeat(220_000),
            1,
        ),
    ];
    let during = s.calling_during();
    for (i, frame) in cases.into_iter().enumerate() {
        let mut raw = s.raw(40 + i as u8);
        send_all(&mut raw, [frame]);
        wait_closed(&mut raw);
        wait_breaches(&s.ds, i as u64 + 1);
    }
    during.finish();
    // The first peer's service stayed, and the first peer with it.
    assert_eq!(s.ds.lookup_service_name(&ok).len(), 1);
    still_open(
        &mut raw,
        &binding_of(33, &ok, "*", 1, vec![]),
        s.echo.binding(),
        1,
    );
    assert_eq!(s.ds.stats().limits_breached, 7);
    s.call_echo();
}

#[test]
fn the_length_limits_are_configurable() {
    let ds = Dispatcher::builder()
        .max_name_len(8)
        .max_subject_len(4)
        .build()
        .unwrap();
    let ex = Exchange::server(&ds).listen("127.0.0.1:0").unwrap();
    let echo = ds.service("echo").open().unwrap();
    let mut raw = util::raw::handshake(ex.local_addr(), 50);
    send_all(
        &mut raw,
        [available_frame(&binding_of(
            50,
            "ninechars",
            "*",
            1,
            vec![],
        ))],
    );
    wait_closed(&mut raw);
    wait_breaches(&ds, 1);
    let mut raw = util::raw::handshake(ex.local_addr(), 51);
    send_all(
        &mut raw,
        [subscribe_frame(
            &binding_of(51, "s", "", 1, vec![]),
            echo.binding(),
            "a.b.c",
            true,
        )],
    );
    wait_closed(&mut raw);
    wait_breaches(&ds, 2);
    assert!(ds.service("ninechars").open().is_err());
    assert!(echo.publish_report("abcde", &1u8, Lifetime::None).is_err());
    assert!(echo.publish_report("abcd", &1u8, Lifetime::None).is_ok());
}

#[test]
fn the_local_api_refuses_what_a_peer_would() {
    let d = Dispatcher::new().unwrap();
    let long = "x".repeat(256);
    assert!(matches!(
        d.service(&long).open(),
        Err(Error::InvalidArgument(e)) if e.contains("service name of 256 bytes, at most 255")
    ));
    assert!(d.service("a").audience(&long).open().is_err());
    assert!(d.service("a").group(&long).open().is_err());
    let publisher = d.service("pub").open().unwrap();
    let sub = d.service("sub").open().unwrap();
    let subject = "s".repeat(1025);
    assert!(matches!(
        publisher.publish_report(&subject, &1u8, Lifetime::None),
        Err(Error::InvalidArgument(_))
    ));
    assert!(publisher
        .send_report(sub.binding(), &subject, &1u8)
        .is_err());
    let r: Result<u64> = sub.call(publisher.binding(), &long, &1u8);
    assert!(matches!(r, Err(Error::InvalidArgument(_))));
    // Calls that return nothing ignore what is too long (with a warning).
    sub.subscribe_reports("pub", &subject);
    sub.subscribe_reports(&long, "*");
    sub.join_group(&long);
    sub.subscribe_reports("pub", &"s".repeat(1024));
    let first = subscription(&publisher);
    assert_eq!(
        first.subject().len(),
        1024,
        "the ignored ones never arrived"
    );
    assert!(d.lookup_service_group(&long).is_empty());
}

// ----- subscriptions -----

#[test]
fn subscriptions_past_the_limit_are_refused() {
    let s = setup(|b| b.max_subscriptions_per_connection(1000));
    let mut raw = s.raw(60);
    let hidden = binding_of(60, "hidden", "", 1, vec![]);
    let echo = s.echo.binding().clone();
    // 1000 pass (a repeat counts once).
    send_all(
        &mut raw,
        (0..1000)
            .map(|i| subscribe_frame(&hidden, &echo, &format!("p{i}"), true))
            .chain((0..10).map(|_| subscribe_frame(&hidden, &echo, "p0", true))),
    );
    still_open(&mut raw, &hidden, &echo, 1);
    let during = s.calling_during();
    send_all(
        &mut raw,
        [subscribe_frame(&hidden, &echo, "one more", true)],
    );
    wait_closed(&mut raw);
    wait_breaches(&s.ds, 1);
    during.finish();
    s.call_echo();
}

#[test]
fn unsubscribing_what_was_never_subscribed_frees_nothing() {
    let s = setup(|b| b.max_subscriptions_per_connection(1000));
    let mut raw = s.raw(61);
    let echo = s.echo.binding().clone();
    let hidden = binding_of(61, "hidden", "", 1, vec![]);
    let during = s.calling_during();
    // 20,000 unsubscribes of patterns never subscribed, half of them by
    // subscribers never seen (which must not be remembered either).
    send_all(
        &mut raw,
        (0..20_000).map(|i| {
            let who = if i % 2 == 0 {
                hidden.clone()
            } else {
                binding_of(61, &format!("ghost{i}"), "", i, vec![])
            };
            subscribe_frame(&who, &echo, &format!("never{i}"), false)
        }),
    );
    still_open(&mut raw, &hidden, &echo, 1);
    // Then subscriptions interleaved with more such unsubscribes: refused
    // past 1000.
    send_all(
        &mut raw,
        (0..2000).flat_map(|i| {
            [
                subscribe_frame(&hidden, &echo, &format!("p{i}"), true),
                subscribe_frame(&hidden, &echo, &format!("never{i}"), false),
            ]
        }),
    );
    wait_closed(&mut raw);
    wait_breaches(&s.ds, 1);
    during.finish();
    s.call_echo();
}

#[test]
fn real_unsubscribes_free_their_place() {
    let s = setup(|b| b.max_subscriptions_per_connection(10));
    let mut raw = s.raw(62);
    let echo = s.echo.binding().clone();
    let hidden = binding_of(62, "hidden", "", 1, vec![]);
    send_all(
        &mut raw,
        (0..100).flat_map(|i| {
            [
                subscribe_frame(&hidden, &echo, &format!("p{i}"), true),
                subscribe_frame(&hidden, &echo, &format!("p{i}"), false),
            ]
        }),
    );
    still_open(&mut raw, &hidden, &echo, 1);
    assert_eq!(s.ds.stats().limits_breached, 0);
}

#[test]
fn subscriptions_for_agents_that_are_not_the_peers_are_ignored() {
    let s = setup(|b| b);
    let publisher = s.ds.service("pub").open().unwrap();
    let local = s.ds.service("local").open().unwrap();
    let mut raw = s.raw(63);
    // The good client's "me" (learned through another connection) and a
    // service of the server itself.
    send_all(
        &mut raw,
        [
            subscribe_frame(s.me.binding(), publisher.binding(), "forged.me", true),
            subscribe_frame(local.binding(), publisher.binding(), "forged.local", true),
        ],
    );
    let own = binding_of(63, "own", "", 1, vec![]);
    send_all(
        &mut raw,
        [subscribe_frame(&own, publisher.binding(), "own", true)],
    );
    let first = subscription(&publisher);
    assert_eq!(first.subject(), "own", "the forged ones were not taken");
    assert_eq!(first.subscriber(), &own);
    assert_quiet(&publisher);
    assert!(local.try_recv().is_none());
    still_open(&mut raw, &own, s.echo.binding(), 1);
    s.call_echo();
}

#[test]
fn hidden_subscribers_count_against_the_memory_budget() {
    let s = setup(|b| b.max_connection_memory(256 * 1024));
    let mut raw = s.raw(64);
    let echo = s.echo.binding().clone();
    let during = s.calling_during();
    // Each subscription is real (a fresh hidden subscriber with a long
    // name and a long pattern): ~1.7 KB each, 2000 of them past 256 KiB.
    send_all(
        &mut raw,
        (0..2000).map(|i| {
            let who = binding_of(64, &format!("{}{i}", "h".repeat(200)), "", i, vec![]);
            subscribe_frame(&who, &echo, &format!("{}{i}", "p".repeat(1000)), true)
        }),
    );
    wait_closed(&mut raw);
    wait_breaches(&s.ds, 1);
    during.finish();
    s.call_echo();
}

#[test]
fn services_count_against_the_memory_budget() {
    let s = setup(|b| b.max_connection_memory(256 * 1024));
    let mut raw = s.raw(65);
    let during = s.calling_during();
    send_all(
        &mut raw,
        (0..2000).map(|i| {
            available_frame(&binding_of(
                65,
                &format!("{}{i}", "n".repeat(250)),
                "*",
                i,
                vec![],
            ))
        }),
    );
    wait_closed(&mut raw);
    wait_breaches(&s.ds, 1);
    during.finish();
    assert!(s
        .ds
        .lookup_service_name(&format!("{}0", "n".repeat(250)))
        .is_empty());
    s.call_echo();
}

#[test]
fn long_patterns_against_long_subjects_within_the_limits() {
    // The matching is linear: the longest pattern against the longest
    // subject, many times, leaves the exchange responsive.
    let s = setup(|b| b);
    let mut raw = s.raw(66);
    let publisher = binding_of(66, "pubr", "*", 1, vec![]);
    let local_sub = s.ds.service("sub").open().unwrap();
    let pattern = format!("*{}?*b", "a".repeat(1000));
    local_sub.subscribe_reports("pubr", &pattern);
    send_all(&mut raw, [available_frame(&publisher)]);
    // The subscription has taken effect once the subscriber hears of the
    // publisher.
    wait_for(&local_sub, "the publisher", |e| match e {
        Event::Publisher(p) if p.status() == ServiceStatus::Available => Some(()),
        _ => None,
    });
    let subject = "a".repeat(1024);
    let during = s.calling_during();
    send_all(
        &mut raw,
        (0..2000).map(|i| report_frame(&publisher, &subject, i)),
    );
    let mut hit = subject.clone();
    hit.replace_range(1023.., "b");
    send_all(&mut raw, [report_frame(&publisher, &hit, 7)]);
    let r = wait_for(&local_sub, "the matching report", |e| match e {
        Event::Report(r) => Some(r),
        _ => None,
    });
    assert_eq!(r.subject(), hit.as_str());
    during.finish();
    assert_eq!(s.ds.stats().limits_breached, 0);
}

// ----- pending calls -----

#[test]
fn pending_calls_past_the_limit_are_refused() {
    let s = setup(|b| b.max_pending_calls_per_connection(100));
    // A service that never answers: its calls stay pending.
    let sink = s.ds.service("sink").open().unwrap();
    let mut raw = s.raw(70);
    let me = binding_of(70, "caller", "", 1, vec![]);
    send_all(
        &mut raw,
        (0..99).map(|i| request_frame(i, &me, sink.binding(), "m", i, 60_000)),
    );
    // (The 100th, to echo, is answered: its place is free again.)
    still_open(&mut raw, &me, s.echo.binding(), 1000);
    let during = s.calling_during();
    send_all(
        &mut raw,
        (100..300_000).map(|i| request_frame(i, &me, sink.binding(), "m", i, 60_000)),
    );
    wait_closed(&mut raw);
    wait_breaches(&s.ds, 1);
    during.finish();
    s.call_echo();
}

// ----- a hostile server -----

#[test]
fn a_client_applies_the_lengths_to_its_server() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let dc = Dispatcher::new().unwrap();
    let cx = Exchange::client(&dc).connect_once(addr).unwrap();
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let hello = util::raw::read_frame(&mut s).unwrap();
    assert_eq!(&hello[..6], util::raw::MAGIC);
    s.write_all(&util::raw::hello(80, "")).unwrap();
    assert_eq!(
        cx.connections().recv_timeout(WAIT).unwrap().state(),
        ConnectionState::Active
    );
    send_all(
        &mut s,
        [available_frame(&binding(&"n".repeat(300), "*", 1, vec![]))],
    );
    assert_eq!(
        cx.connections().recv_timeout(WAIT).unwrap().state(),
        ConnectionState::Inactive
    );
    wait_breaches(&dc, 1);
    wait_closed(&mut s);
}
