//! Flow control across real processes: an `exchange` example process, a
//! `flood` example process publishing as fast as it is let, and a slow
//! subscriber in this process, all at the library's default settings.
//!
//! - A subscriber that reads slowly gets every report, in order, and
//!   nothing is dropped anywhere; meanwhile calls to another service of
//!   its process (over the same link) complete within the stall limit:
//!   calls are never queued behind reports.
//! - A subscriber with a drop policy is told of every drop: what arrived
//!   and the counts of its `Event::Dropped` add up to what was sent.
//! - A publisher dropped at once after its last publish: every report it
//!   published arrives before its withdrawal, also those that were still
//!   waiting for a link's credit.
//! - A publisher process killed (SIGKILL) while a slow subscriber holds it
//!   back: the subscriber gets what had left it, in order, then its
//!   withdrawal, and nothing is refused on the way.
//! - A subscriber process that holds its publisher back and is then killed
//!   (SIGKILL) lets it go: the publisher goes on, and another subscriber
//!   gets every report, in order, none dropped.

mod util;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netsvc::{Dispatcher, DropReason, Event, Exchange, Overflow, ServiceStatus};
use util::child::{example, read_lines, Out};
use util::exchange_proc::ExchangeProc;
use util::*;

const REPORTS: u64 = 200_000;

/// Set in the environment of this test binary run again as the stuck
/// subscriber's process (see `stuck_subscriber_role`): the exchange's port.
const STUCK_PORT_VAR: &str = "NETSVC_FLOW_STUCK_PORT";

/// The `flood` example, killed and reaped on drop.
struct Flood {
    child: Child,
    lines: crossbeam_channel::Receiver<Out>,
}

impl Flood {
    fn start(ex: &ExchangeProc, count: u64) -> Flood {
        let mut child = Command::new(example("flood"))
            .args(["--host", "127.0.0.1", "--port"])
            .arg(ex.addr().port().to_string())
            .args(["--count", &count.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the flood example");
        let lines = read_lines("flood", &mut child);
        Flood { child, lines }
    }

    /// Waits for a line that starts with `prefix`.
    fn expect(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(Out::Line(_, l)) if l.starts_with(prefix) => return l,
                Ok(Out::Line(..)) => {}
                Ok(Out::Eof) => panic!("flood exited before saying {prefix}"),
                Err(_) => panic!("flood did not say {prefix} within {timeout:?}"),
            }
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client(ex: &ExchangeProc, name: &str) -> (Dispatcher, Exchange) {
    connected(Dispatcher::builder().name(name), ex.addr())
}

/// A dispatcher built so, linked to the exchange at `addr`.
fn connected(
    builder: netsvc::DispatcherBuilder,
    addr: std::net::SocketAddr,
) -> (Dispatcher, Exchange) {
    let d = builder.build().expect("dispatcher");
    let link = Exchange::client(&d)
        .connect(addr, Duration::from_millis(100))
        .expect("connect to the exchange");
    (d, link)
}

/// Waits for the confirmation of `svc`'s subscription; its publisher.
fn confirmed(svc: &netsvc::Service) -> netsvc::ServiceBinding {
    wait_for(svc, "the confirmation", |e| match e {
        Event::Confirmed(c) => Some(c.publisher().clone()),
        _ => None,
    })
}

/// Takes `u64`-numbered reports from `svc`, each the next one of `seqs`
/// (none lost, none dropped; from `from`, if given), until the last has
/// come or `stop` says so of another event; the number after the last
/// that came. `each` is told each such number. Panics if neither happens
/// within `within`.
fn take_in_order(
    svc: &netsvc::Service,
    from: Option<&netsvc::ServiceBinding>,
    seqs: std::ops::Range<u64>,
    within: Duration,
    mut each: impl FnMut(u64),
    mut stop: impl FnMut(&Event) -> bool,
) -> u64 {
    let deadline = Instant::now() + within;
    let (mut next, n) = (seqs.start, seqs.end);
    while next < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match svc.recv_timeout(left).unwrap() {
            Some(Event::Report(r)) => {
                if let Some(from) = from {
                    assert_eq!(r.publisher(), from);
                }
                let seq: u64 = r.decode().unwrap();
                assert_eq!(seq, next, "reports out of order or lost");
                next += 1;
                each(next);
            }
            Some(Event::Dropped(d)) => panic!("reports dropped under the defaults: {d:?}"),
            Some(e) if stop(&e) => return next,
            Some(_) => {}
            None => panic!("only {next} of {n} reports within {within:?}"),
        }
    }
    next
}

#[test]
fn a_slow_subscriber_across_an_exchange_gets_every_report_in_order_and_its_process_keeps_answering()
{
    let ex = ExchangeProc::start(&[]);
    // The slow subscriber's process: the subscriber, and a service that
    // answers calls over the same link.
    let (ds, _ls) = client(&ex, "slow-process");
    let _echo = spawn_u64(&ds, "echo", |n| n + 1);
    let slow = ds.service("slow").open().unwrap();
    slow.subscribe_reports("flood", "flood.*");
    // Another process's caller (a dispatcher of this test process).
    let (dc, _lc) = client(&ex, "caller");
    let echo = await_service(&dc, "echo");
    let caller = dc.service("caller").open().unwrap();

    let flood = Flood::start(&ex, REPORTS);
    let publisher = wait_for(&slow, "the flood publisher", |e| match e {
        Event::Publisher(p) if p.status() == ServiceStatus::Available => {
            Some(p.publisher().clone())
        }
        _ => None,
    });
    flood.expect("SUBSCRIBED", WAIT);

    // Calls go on, one after another, for as long as the reports flow.
    let stop = Arc::new(AtomicBool::new(false));
    let calls = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut n, mut slowest) = (0u64, Duration::ZERO);
            while !stop.load(Ordering::Acquire) && n < 100_000 {
                let t = Instant::now();
                let r: u64 = caller
                    .call_timeout(&echo, "inc", &n, WAIT)
                    .unwrap_or_else(|e| panic!("call {n} during the flood: {e}"));
                assert_eq!(r, n + 1);
                slowest = slowest.max(t.elapsed());
                n += 1;
                std::thread::sleep(Duration::from_millis(5)); // (a caller's pace)
            }
            (n, slowest)
        })
    };

    // Slow: a millisecond's pause every 100 reports, so the publisher (a
    // million reports a second when let) is held back all along.
    let pause = |n: u64| {
        if n % 100 == 0 {
            std::thread::sleep(Duration::from_millis(1)); // (the slowness under test)
        }
    };
    let within = Duration::from_secs(60);
    take_in_order(&slow, Some(&publisher), 0..REPORTS, within, pause, |_| {
        false
    });
    flood.expect("PUBLISHED", WAIT);
    stop.store(true, Ordering::Release);
    let (n, slowest) = calls.join().expect("caller thread");
    assert!(n > 0, "no call completed during the flood");
    // The documented limit: calls are not queued behind reports, so none
    // waits anywhere near the stall limit (2 s).
    assert!(
        slowest < Duration::from_secs(2),
        "a call took {slowest:?} while reports were held back"
    );
    let stats = ds.stats();
    assert_eq!(stats.reports_dropped, 0);
    assert_eq!(stats.subscribers_stalled, 0);
    assert_eq!(stats.reports_delivered, REPORTS);
    let exchange = ex.stats().expect("exchange stats");
    assert_eq!(ExchangeProc::stat(&exchange, "reports_dropped"), 0);
    assert_eq!(ExchangeProc::stat(&exchange, "slow_consumers"), 0);
    assert_quiet(&slow);
}

#[test]
fn a_subscriber_with_a_drop_policy_is_told_of_every_drop() {
    let ex = ExchangeProc::start(&[]);
    let (ds, _ls) = client(&ex, "lossy-process");
    let lossy = ds.service("lossy").queue_capacity(64).open().unwrap();
    lossy.subscribe_reports_with("flood", "flood.*", Overflow::DropOldest(100));
    let flood = Flood::start(&ex, REPORTS);
    wait_for(&lossy, "the flood publisher", |e| match e {
        Event::Publisher(p) if p.status() == ServiceStatus::Available => Some(()),
        _ => None,
    });
    flood.expect("SUBSCRIBED", WAIT);
    // The publisher is never held by this subscriber: it finishes while
    // the subscriber has hardly begun.
    let (mut arrived, mut dropped, mut last) = (0u64, 0u64, None::<u64>);
    let deadline = Instant::now() + Duration::from_secs(60);
    while arrived + dropped < REPORTS {
        let left = deadline.saturating_duration_since(Instant::now());
        match lossy.recv_timeout(left).unwrap() {
            Some(Event::Report(r)) => {
                let seq: u64 = r.decode().unwrap();
                assert!(
                    last.is_none_or(|l| seq > l),
                    "out of order: {seq} after {last:?}"
                );
                last = Some(seq);
                arrived += 1;
                if arrived % 10 == 0 {
                    std::thread::sleep(Duration::from_millis(1)); // (the slowness under test)
                }
            }
            Some(Event::Dropped(d)) => {
                assert_eq!(d.reason(), DropReason::Policy);
                dropped += d.count();
            }
            Some(_) => {}
            None => panic!("{arrived} arrived and {dropped} told dropped of {REPORTS} in 60 s"),
        }
    }
    flood.expect("PUBLISHED", WAIT);
    assert_eq!(arrived + dropped, REPORTS);
    assert!(
        dropped > 0,
        "the policy never had to drop: the test is not slow enough"
    );
    assert_eq!(ds.stats().reports_dropped, dropped);
    assert_eq!(ds.stats().subscribers_stalled, 0);
    assert_quiet(&lossy);
}

#[test]
fn a_subscription_is_confirmed_once_it_is_in_force_at_the_publisher() {
    let confirmed = |svc: &netsvc::Service| {
        wait_for(svc, "the confirmation", |e| match e {
            Event::Confirmed(c) => Some(c),
            _ => None,
        })
    };
    // In one process.
    let d = Dispatcher::new().unwrap();
    let publ = d.service("p").open().unwrap();
    let sub = d.service("s").open().unwrap();
    sub.subscribe_reports("p", "x.*");
    let c = confirmed(&sub);
    assert_eq!((c.publisher(), c.pattern()), (publ.binding(), "x.*"));

    // Through an exchange (a real one, another process): once confirmed, a
    // report published at once arrives, with no guessing how long to wait.
    let ex = ExchangeProc::start(&[]);
    let (dp, _lp) = client(&ex, "publisher-process");
    let far = dp.service("far").open().unwrap();
    let (dsub, _ls) = client(&ex, "subscriber-process");
    let s2 = dsub.service("s2").open().unwrap();
    s2.subscribe_reports("far", "y.*");
    let c = confirmed(&s2);
    assert_eq!((c.publisher(), c.pattern()), (far.binding(), "y.*"));
    far.publish_report("y.1", &1u8, netsvc::Lifetime::None)
        .unwrap();
    let r = wait_for(&s2, "the report", |e| match e {
        Event::Report(r) => Some(r),
        _ => None,
    });
    assert_eq!((r.subject(), r.decode::<u8>().unwrap()), ("y.1", 1));
}

/// The stuck subscriber's process: this test binary again, with
/// `STUCK_PORT_VAR` set (run alone, this test does nothing). It subscribes
/// to `pub`'s `s.*`, says `CONFIRMED` once its subscription is in force
/// at the publisher, and then takes nothing from its queue until its
/// stdin ends (or it is killed). Its stall limit is a minute, so it is
/// never stalled meanwhile: it holds its publisher back for as long as it
/// lives (until the exchange drops it as a slow consumer, after 3 s).
#[test]
fn stuck_subscriber_role() {
    let Ok(port) = std::env::var(STUCK_PORT_VAR) else {
        return;
    };
    let port: u16 = port
        .parse()
        .unwrap_or_else(|e| panic!("{STUCK_PORT_VAR}: {e}"));
    let builder = Dispatcher::builder()
        .name("stuck-process")
        .stall_limit(Duration::from_secs(60));
    let (d, _link) = connected(builder, std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    let stuck = d.service("stuck").open().unwrap();
    stuck.subscribe_reports("pub", "s.*");
    confirmed(&stuck);
    println!("CONFIRMED");
    let _ = std::io::stdin().read_line(&mut String::new());
}

#[test]
fn a_subscriber_process_killed_while_it_holds_the_publisher_back_lets_it_go_on() {
    // The publisher is held back after some 21,000 of these reports: two
    // links' windows (256 KiB, some 28 bytes of credit each) and two queues.
    const N: u64 = 100_000;
    let ex = ExchangeProc::start(&[]);
    // The publisher fails a publish after 300 ms held back, which is how
    // this test knows it is held back: before the exchange would drop the
    // stuck subscriber as a slow consumer (3 s).
    let builder = Dispatcher::builder()
        .name("publisher-process")
        .publish_timeout(Duration::from_millis(300));
    let (dp, _lp) = connected(builder, ex.addr());
    let publ = dp.service("pub").open().unwrap();
    let (df, _lf) = client(&ex, "fast-process");
    let fast = df.service("fast").open().unwrap();
    fast.subscribe_reports("pub", "s.*");
    confirmed(&fast);
    let mut stuck = Command::new(std::env::current_exe().expect("current_exe"))
        .args(["--exact", "stuck_subscriber_role", "--nocapture"])
        .env(STUCK_PORT_VAR, ex.addr().port().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the stuck subscriber");
    struct Reaped(Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let lines = read_lines("stuck", &mut stuck);
    let mut stuck = Reaped(stuck);
    let deadline = Instant::now() + WAIT;
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Out::Line(_, l)) if l == "CONFIRMED" => break,
            Ok(Out::Line(..)) => {}
            Ok(Out::Eof) => panic!("the stuck subscriber exited before CONFIRMED"),
            Err(_) => panic!("the stuck subscriber did not confirm within {WAIT:?}"),
        }
    }

    // The fast subscriber takes everything as it comes.
    let reader = std::thread::spawn(move || {
        take_in_order(
            &fast,
            None,
            0..N,
            Duration::from_secs(60),
            |_| {},
            |_| false,
        );
        fast
    });

    // The publisher publishes until it is held back, waits for the kill,
    // and publishes the rest (a publish that failed is made again: it was
    // not published).
    let (held_tx, held_rx) = crossbeam_channel::bounded::<u64>(1);
    let (killed_tx, killed_rx) = crossbeam_channel::bounded::<()>(1);
    let publisher = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut told = false;
        for seq in 0..N {
            loop {
                match publ.publish_report("s.x", &seq, netsvc::Lifetime::None) {
                    Ok(()) => break,
                    Err(netsvc::Error::Backpressure(_)) if !told => {
                        told = true;
                        held_tx.send(seq).expect("tell the test");
                        killed_rx.recv().expect("the kill");
                    }
                    // (After the kill, only the fast subscriber's pace.)
                    Err(netsvc::Error::Backpressure(e)) if Instant::now() < deadline => {
                        log::info!("held back again at {seq}: {e}");
                    }
                    Err(e) => panic!("publish {seq}: {e}"),
                }
            }
        }
        (told, publ)
    });
    let held_at = held_rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("the publisher was never held back by the stuck subscriber"));
    assert!(held_at < N, "held back at {held_at}");
    stuck.0.kill().expect("SIGKILL the stuck subscriber");
    killed_tx.send(()).expect("tell the publisher");
    let (told, _publ) = publisher.join().expect("publisher thread");
    assert!(told, "never held back");
    let fast = reader.join().expect("reader thread");
    assert_eq!(df.stats().reports_dropped, 0);
    assert_eq!(df.stats().reports_delivered, N);
    assert_eq!(dp.stats().reports_dropped, 0);
    let exchange = ex.stats().expect("exchange stats");
    assert_eq!(ExchangeProc::stat(&exchange, "reports_dropped"), 0);
    assert_quiet(&fast);
}

#[test]
fn a_publisher_dropped_after_publishing_has_every_report_delivered_before_its_withdrawal() {
    // More than the subscriber's queue and its link's window hold (some
    // 10,000 of these): the rest wait at the exchange, for the
    // subscriber's credit, when the publisher is dropped.
    const N: u64 = 15_000;
    let ex = ExchangeProc::start(&[]);
    let (dp, _lp) = client(&ex, "publisher-process");
    let publ = dp.service("pub").open().unwrap();
    let (ds, _ls) = client(&ex, "subscriber-process");
    let sub = ds.service("sub").open().unwrap();
    sub.subscribe_reports("pub", "s.*");
    let publisher = confirmed(&sub);
    for seq in 0..N {
        publ.publish_report("s.x", &seq, netsvc::Lifetime::None)
            .unwrap_or_else(|e| panic!("publish {seq}: {e}"));
    }
    // Withdrawn at once: its withdrawal goes to the exchange, and on to
    // the subscriber, behind the reports that wait for credit there.
    drop(publ);
    let withdrawn =
        |e: &Event| matches!(e, Event::Publisher(p) if p.status() == ServiceStatus::Withdrawn);
    let within = Duration::from_secs(30);
    let came = take_in_order(&sub, Some(&publisher), 0..N, within, |_| {}, withdrawn);
    assert_eq!(came, N, "the withdrawal came before the last reports");
    wait_for(&sub, "the withdrawal", |e| withdrawn(&e).then_some(()));
    assert_eq!(ds.stats().refused_frames, 0);
    assert_eq!(ds.stats().reports_delivered, N);
    let exchange = ex.stats().expect("exchange stats");
    assert_eq!(ExchangeProc::stat(&exchange, "refused_frames"), 0);
    assert_eq!(ExchangeProc::stat(&exchange, "reports_dropped"), 0);
    assert_quiet(&sub);
}

#[test]
fn a_publisher_process_killed_mid_stream_leaves_its_subscriber_what_left_it_then_its_withdrawal() {
    let ex = ExchangeProc::start(&[]);
    let (ds, _ls) = client(&ex, "slow-process");
    let slow = ds.service("slow").open().unwrap();
    slow.subscribe_reports("flood", "flood.*");
    let mut flood = Flood::start(&ex, REPORTS);
    let publisher = wait_for(&slow, "the flood publisher", |e| match e {
        Event::Publisher(p) if p.status() == ServiceStatus::Available => {
            Some(p.publisher().clone())
        }
        _ => None,
    });
    flood.expect("SUBSCRIBED", WAIT);
    // Slowly, so the publisher (a million reports a second when let) is
    // held back, its reports waiting all along the way: on this queue, at
    // this dispatcher, and at the exchange for this link's credit.
    let pause = |n: u64| {
        if n % 100 == 0 {
            std::thread::sleep(Duration::from_millis(1)); // (the slowness under test)
        }
    };
    let within = Duration::from_secs(60);
    let first = 5_000;
    take_in_order(&slow, Some(&publisher), 0..first, within, pause, |_| false);
    flood.child.kill().expect("SIGKILL the publisher");
    let _ = flood.child.wait();
    // What had left it comes, in order, then its withdrawal (the exchange
    // sees its link down): none of it refused as of a publisher gone.
    let withdrawn =
        |e: &Event| matches!(e, Event::Publisher(p) if p.status() == ServiceStatus::Withdrawn);
    let came = take_in_order(
        &slow,
        Some(&publisher),
        first..REPORTS,
        within,
        |_| {},
        withdrawn,
    );
    assert!(
        came < REPORTS,
        "all {REPORTS} arrived: the publisher was not held back when killed"
    );
    assert!(came > first, "nothing arrived after the kill: {came}");
    assert_eq!(ds.stats().refused_frames, 0);
    assert_eq!(ds.stats().reports_dropped, 0);
    assert_quiet(&slow);
}
