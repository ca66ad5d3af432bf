//! Service timers: start_timer / cancel_timer and Event::Timer.

mod util;

use std::time::Duration;

use crossbeam_channel::TryRecvError;
use netsvc::{Dispatcher, Event, Service};
use util::*;

const MS: Duration = Duration::from_millis(1);

/// The next event, which must be a timer; its tag.
fn timer(svc: &Service) -> u64 {
    match next(svc) {
        Event::Timer(tag) => tag,
        other => panic!("expected a timer, got {other:?}"),
    }
}

/// Waits until `svc`'s timer `tag` fires; any other event fails the test.
fn wait_timer(svc: &Service, tag: u64) {
    let got = timer(svc);
    assert_eq!(got, tag, "timer {got} fired, expected {tag}");
}

#[test]
fn timers_fire_in_deadline_order() {
    let d = Dispatcher::new().unwrap();
    let svc = d.service("timed").open().unwrap();
    // Started in scrambled order; the gaps between deadlines are far larger
    // than the time the three calls take.
    svc.start_timer(350 * MS, 3);
    svc.start_timer(50 * MS, 1);
    svc.start_timer(200 * MS, 2);
    let tags: Vec<u64> = (0..3).map(|_| timer(&svc)).collect();
    assert_eq!(tags, [1, 2, 3]);
    assert_quiet(&svc);
}

#[test]
fn zero_delay_timer_fires() {
    let d = Dispatcher::new().unwrap();
    let svc = d.service("timed").open().unwrap();
    svc.start_timer(Duration::ZERO, 7);
    wait_timer(&svc, 7);
    assert_quiet(&svc);
}

#[test]
fn timers_with_equal_deadlines_fire_in_order_of_starting() {
    let d = Dispatcher::new().unwrap();
    let svc = d.service("timed").open().unwrap();
    // Each deadline is no earlier than the one started before it.
    for tag in [5, 1, 4, 2, 3] {
        svc.start_timer(Duration::ZERO, tag);
    }
    let tags: Vec<u64> = (0..5).map(|_| timer(&svc)).collect();
    assert_eq!(tags, [5, 1, 4, 2, 3]);
    assert_quiet(&svc);
}

#[test]
fn several_timers_may_share_a_tag_and_each_fires() {
    let d = Dispatcher::new().unwrap();
    let svc = d.service("timed").open().unwrap();
    svc.start_timer(Duration::ZERO, 9);
    svc.start_timer(20 * MS, 9);
    svc.start_timer(40 * MS, 9);
    for _ in 0..3 {
        wait_timer(&svc, 9);
    }
    assert_quiet(&svc);
}

#[test]
fn timer_is_ordered_with_the_other_events_of_its_queue() {
    let d = Dispatcher::new().unwrap();
    let target = d.service("target").open().unwrap();
    let client = d.service("client").open().unwrap();
    let sentinel = d.service("sentinel").open().unwrap();

    // The target does not read yet. A request is queued for it first; then
    // its timers start (commands from one thread are handled in order).
    let first = client
        .request::<u32, _>(target.binding(), "first", &1u32)
        .unwrap();
    target.start_timer(Duration::ZERO, 10);
    target.start_timer(50 * MS, 11);
    // The sentinel's timer is started after the target's with the same
    // delay, so its deadline is not earlier: once it fires, the target's
    // timer 11 has been put on the target's queue.
    sentinel.start_timer(50 * MS, 99);
    wait_timer(&sentinel, 99);
    // Queued after both timers.
    let second = client
        .request::<u32, _>(target.binding(), "second", &2u32)
        .unwrap();

    let r = request(&target);
    assert_eq!(r.method(), "first");
    r.reply(&10u32).unwrap();
    wait_timer(&target, 10);
    wait_timer(&target, 11);
    let r = request(&target);
    assert_eq!(r.method(), "second");
    r.reply(&20u32).unwrap();
    assert_quiet(&target);

    assert_eq!(first.wait_timeout(WAIT).unwrap(), 10);
    assert_eq!(second.wait_timeout(WAIT).unwrap(), 20);
}

#[test]
fn cancel_timer_cancels_every_timer_with_that_tag() {
    let d = Dispatcher::new().unwrap();
    let svc = d.service("timed").open().unwrap();
    // The cancelled timers are far enough out that cancel_timer, sent right
    // after, reaches the dispatcher before they are due.
    svc.start_timer(300 * MS, 1);
    svc.start_timer(350 * MS, 2);
    svc.start_timer(400 * MS, 1);
    svc.start_timer(450 * MS, 3);
    svc.start_timer(500 * MS, 1);
    svc.cancel_timer(1);
    // Timer 3 is due after every cancelled one: had any of them fired, it
    // would come first.
    wait_timer(&svc, 2);
    wait_timer(&svc, 3);
    assert_quiet(&svc);
}

#[test]
fn cancel_timer_after_one_of_its_timers_fired_cancels_the_others() {
    let d = Dispatcher::new().unwrap();
    let svc = d.service("timed").open().unwrap();
    // Two timers under one tag: the later one started first.
    svc.start_timer(300 * MS, 1);
    svc.start_timer(Duration::ZERO, 1);
    wait_timer(&svc, 1);
    // The remaining one (due in about 300 ms) must be cancelled now.
    svc.cancel_timer(1);
    svc.start_timer(500 * MS, 2);
    wait_timer(&svc, 2);
    assert_quiet(&svc);
}

#[test]
fn a_tag_can_be_used_again_after_cancel() {
    let d = Dispatcher::new().unwrap();
    let svc = d.service("timed").open().unwrap();
    svc.cancel_timer(42); // nothing to cancel: harmless
    svc.start_timer(300 * MS, 4);
    svc.cancel_timer(4);
    svc.start_timer(Duration::ZERO, 4);
    wait_timer(&svc, 4);
    // The cancelled one would be due by the time this one fires.
    svc.start_timer(500 * MS, 5);
    wait_timer(&svc, 5);
    assert_quiet(&svc);
}

#[test]
fn cancel_timer_touches_only_the_calling_service() {
    let d = Dispatcher::new().unwrap();
    let a = d.service("a").open().unwrap();
    let b = d.service("b").open().unwrap();
    a.start_timer(300 * MS, 1);
    b.start_timer(20 * MS, 1);
    b.start_timer(350 * MS, 1);
    a.cancel_timer(1);
    wait_timer(&b, 1);
    wait_timer(&b, 1);
    // b's second timer was due after a's: a's would have fired by now.
    assert_eq!(a.try_recv().map(|e| format!("{e:?}")), None);
    assert_quiet(&a);
    assert_quiet(&b);
}

#[test]
fn timer_of_a_dropped_service_never_fires_and_the_dispatcher_goes_on() {
    let d = Dispatcher::new().unwrap();
    let gone = d.service("gone").open().unwrap();
    // Keep its queue to look into after the service is dropped.
    let queue = gone.receiver().clone();
    gone.start_timer(50 * MS, 1);
    gone.start_timer(Duration::from_secs(1), 2);
    drop(gone);

    // Another service's timer due after the dropped one's first timer.
    let other = d.service("other").open().unwrap();
    other.start_timer(300 * MS, 3);
    wait_timer(&other, 3);

    // Nothing was put on the dropped service's queue; it is disconnected.
    assert_eq!(
        queue.try_recv().map(|e| format!("{e:?}")),
        Err(TryRecvError::Disconnected)
    );
    assert_eq!(d.stats().events_dropped, 0);

    // The dispatcher keeps working: timers, calls, lookups.
    other.start_timer(Duration::ZERO, 4);
    wait_timer(&other, 4);
    let echo = d
        .service("echo")
        .spawn(|_svc, ev| {
            if let Event::Request(r) = ev {
                let n: u32 = r.decode().unwrap();
                r.reply(&(n + 1)).unwrap();
            }
        })
        .unwrap();
    let n: u32 = other
        .call_timeout(echo.binding(), "inc", &1u32, WAIT)
        .unwrap();
    assert_eq!(n, 2);
    assert!(d.lookup_service_name("gone").is_empty());
    echo.stop();
}

#[test]
fn spawned_handler_receives_its_timers_and_can_start_more() {
    let d = Dispatcher::new().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let svc = d.service("ticker").open().unwrap();
    svc.start_timer(Duration::ZERO, 0);
    let h = svc
        .spawn(move |svc, ev| match ev {
            Event::Timer(n) => {
                tx.send(n).unwrap();
                if n < 4 {
                    svc.start_timer(5 * MS, n + 1);
                }
            }
            other => panic!("unexpected {other:?}"),
        })
        .unwrap();
    let ticks: Vec<u64> = (0..5)
        .map(|_| rx.recv_timeout(WAIT).expect("a tick"))
        .collect();
    assert_eq!(ticks, [0, 1, 2, 3, 4]);
    h.stop();
    // Stopped: the handler (and its sender) is gone, and no tick came after 4.
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
}
