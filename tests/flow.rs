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
    let d = Dispatcher::builder()
        .name(name)
        .build()
        .expect("dispatcher");
    let link = Exchange::client(&d)
        .connect(ex.addr(), Duration::from_millis(100))
        .expect("connect to the exchange");
    (d, link)
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
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next = 0u64;
    while next < REPORTS {
        let left = deadline.saturating_duration_since(Instant::now());
        match slow.recv_timeout(left).unwrap() {
            Some(Event::Report(r)) => {
                assert_eq!(r.publisher(), &publisher);
                let seq: u64 = r.decode().unwrap();
                assert_eq!(seq, next, "reports out of order or lost");
                next += 1;
                if next % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(1)); // (the slowness under test)
                }
            }
            Some(Event::Dropped(d)) => panic!("reports dropped under the defaults: {d:?}"),
            Some(_) => {}
            None => panic!("only {next} of {REPORTS} reports within 60 s"),
        }
    }
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
