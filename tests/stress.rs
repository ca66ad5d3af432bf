//! Load: many threads calling one spawned service, a shared caller, and a
//! report flood alongside calls. Every call answered, every report in order,
//! no deadlock.

mod util;
use util::*;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use netsvc::{Dispatcher, Event, Lifetime, ServiceBinding, ServiceHandle, ServiceStatus};

/// The bound on a whole stress scenario (debug build). Measured on a 2-CPU
/// machine: 8 x 10,000 calls about 2.5 s, the others about 0.5 s each; this
/// leaves a margin well beyond x5 for slow CI machines.
const STRESS_BOUND: Duration = Duration::from_secs(60);

/// [`within`] with a bound of its own: a hang fails the test instead of
/// blocking the suite.
fn within_for<T: Send + 'static>(
    bound: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(bound) {
        Ok(t) => t,
        Err(_) => panic!("{what} did not finish within {bound:?}"),
    }
}

/// A spawned service answering `(thread, call)` with the same pair.
fn spawn_echo(d: &Dispatcher) -> ServiceHandle {
    d.service("echo")
        .spawn(|_svc, event| {
            if let Event::Request(r) = event {
                let pair: (u64, u64) = r.decode().expect("(thread, call) arguments");
                r.reply(&pair).expect("reply");
            }
        })
        .expect("spawn echo")
}

/// Makes `calls` sequential calls from `caller`; returns the call indexes
/// of the replies in the order they came.
fn call_sequence(
    caller: &netsvc::Service,
    echo: &ServiceBinding,
    thread_index: u64,
    calls: u64,
) -> Vec<u64> {
    let mut seen = Vec::with_capacity(calls as usize);
    for i in 0..calls {
        let (t, c): (u64, u64) = caller
            .call_timeout(echo, "echo", &(thread_index, i), WAIT)
            .unwrap_or_else(|e| panic!("thread {thread_index}, call {i}: {e}"));
        assert_eq!(t, thread_index, "reply for another thread");
        seen.push(c);
    }
    seen
}

#[test]
fn eight_callers_each_get_ten_thousand_replies_in_order() {
    const THREADS: u64 = 8;
    const CALLS: u64 = 10_000;
    let d = Dispatcher::new().unwrap();
    let echo = spawn_echo(&d);
    let echo_binding = echo.binding().clone();
    let callers: Vec<_> = (0..THREADS)
        .map(|t| d.service(&format!("caller-{t}")).open().unwrap())
        .collect();

    let sequences = within_for(STRESS_BOUND, "8 x 10,000 calls", move || {
        let threads: Vec<_> = callers
            .into_iter()
            .enumerate()
            .map(|(t, caller)| {
                let echo = echo_binding.clone();
                thread::spawn(move || call_sequence(&caller, &echo, t as u64, CALLS))
            })
            .collect();
        threads
            .into_iter()
            .map(|h| h.join().expect("a caller thread panicked"))
            .collect::<Vec<_>>()
    });

    let expected: Vec<u64> = (0..CALLS).collect();
    assert_eq!(sequences.len(), THREADS as usize);
    for (t, seq) in sequences.iter().enumerate() {
        assert!(*seq == expected, "thread {t}: replies out of order or lost");
    }
    let stats = d.stats();
    assert_eq!(stats.requests_delivered, THREADS * CALLS);
    assert_eq!(stats.replies_delivered, THREADS * CALLS);
    assert_eq!(stats.busy_replies, 0);
    assert_eq!(stats.calls_timed_out, 0);
    within("shutdown", move || d.shutdown());
}

#[test]
fn eight_threads_sharing_one_caller_service_all_get_their_replies() {
    const THREADS: u64 = 8;
    const CALLS: u64 = 2_000;
    let d = Dispatcher::new().unwrap();
    let echo = spawn_echo(&d);
    let echo_binding = echo.binding().clone();
    let caller = Arc::new(d.service("shared-caller").open().unwrap());

    let thread_caller = caller.clone();
    let sequences = within_for(STRESS_BOUND, "8 x 2,000 calls on one Service", move || {
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let caller = thread_caller.clone();
                let echo = echo_binding.clone();
                thread::spawn(move || call_sequence(&caller, &echo, t, CALLS))
            })
            .collect();
        threads
            .into_iter()
            .map(|h| h.join().expect("a caller thread panicked"))
            .collect::<Vec<_>>()
    });

    let expected: Vec<u64> = (0..CALLS).collect();
    assert_eq!(sequences.len(), THREADS as usize);
    for (t, seq) in sequences.iter().enumerate() {
        assert!(*seq == expected, "thread {t}: replies out of order or lost");
    }
    assert_eq!(d.stats().replies_delivered, THREADS * CALLS);
    // Replies go to the calls, never onto the caller's event queue.
    assert_quiet(&caller);
    within("shutdown", move || d.shutdown());
}

#[test]
fn report_flood_arrives_in_order_while_calls_continue() {
    const REPORTS: u64 = 50_000;
    const CALLERS: u64 = 4;
    const CALLS: u64 = 1_000;
    let d = Dispatcher::builder()
        .queue_capacity(65_536)
        .build()
        .unwrap();
    let echo = spawn_echo(&d);
    let echo_binding = echo.binding().clone();

    let publisher = d.service("flood").open().unwrap();
    let subscriber = d.service("reader").open().unwrap();
    subscriber.subscribe_reports("flood", "seq.*");
    let p = publisher_available(&subscriber);
    assert_eq!(p, *publisher.binding());
    let s = subscription(&publisher);
    assert_eq!(s.subscriber(), subscriber.binding());

    let callers: Vec<_> = (0..CALLERS)
        .map(|t| d.service(&format!("caller-{t}")).open().unwrap())
        .collect();

    let flood_binding = publisher.binding().clone();
    let (call_seqs, received) = within_for(STRESS_BOUND, "report flood with calls", move || {
        let reader = thread::spawn(move || {
            let mut got = Vec::with_capacity(REPORTS as usize);
            while (got.len() as u64) < REPORTS {
                let r = report(&subscriber);
                assert_eq!(*r.publisher(), flood_binding);
                let n: u64 = r.decode().expect("u64 report");
                assert_eq!(r.subject(), format!("seq.{}", n % 10));
                got.push(n);
            }
            // Nothing beyond the flood.
            assert_quiet(&subscriber);
            got
        });
        let callers: Vec<_> = callers
            .into_iter()
            .enumerate()
            .map(|(t, caller)| {
                let echo = echo_binding.clone();
                thread::spawn(move || call_sequence(&caller, &echo, t as u64, CALLS))
            })
            .collect();
        for n in 0..REPORTS {
            publisher
                .publish_report(&format!("seq.{}", n % 10), &n, Lifetime::None)
                .expect("publish");
        }
        let call_seqs: Vec<Vec<u64>> = callers
            .into_iter()
            .map(|h| h.join().expect("a caller thread panicked"))
            .collect();
        let received = reader.join().expect("the reader panicked");
        (call_seqs, received)
    });

    let expected_calls: Vec<u64> = (0..CALLS).collect();
    for (t, seq) in call_seqs.iter().enumerate() {
        assert!(
            *seq == expected_calls,
            "caller {t}: replies out of order or lost"
        );
    }
    let expected_reports: Vec<u64> = (0..REPORTS).collect();
    assert!(received == expected_reports, "reports lost or out of order");
    let stats = d.stats();
    assert_eq!(stats.reports_published, REPORTS);
    assert_eq!(stats.reports_delivered, REPORTS);
    assert_eq!(stats.reports_dropped, 0);
    assert_eq!(stats.replies_delivered, CALLERS * CALLS);
    within("shutdown", move || d.shutdown());
}

/// The next event, which must be a publisher Available announcement.
fn publisher_available(svc: &netsvc::Service) -> ServiceBinding {
    let p = publisher(svc);
    assert_eq!(p.status(), ServiceStatus::Available);
    p.publisher().clone()
}
