//! Shutdown semantics: prompt shutdown with work in flight, pending calls
//! failed with `Error::Closed`, idempotence, workers joined, shutdown from a
//! handler, `shutdown_after`, clones of the dispatcher, use after shutdown.

mod util;
use util::*;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use netsvc::{Dispatcher, Error, Event, Lifetime, PendingReply, Result, Service};

/// The timeout of the calls that shutdown must end long before.
const LONG: Duration = Duration::from_secs(30);

/// "Promptly" for a call with a [`LONG`] timeout: a huge gap either way.
const PROMPT: Duration = Duration::from_secs(5);

/// Signals when it is dropped: sets its flag, then sends its name. The drop
/// is deliberately slow, so that a worker thread that was not joined is
/// still dropping it when the test looks.
struct DropSignal {
    name: &'static str,
    dropped: Arc<AtomicBool>,
    tx: Sender<&'static str>,
}

impl DropSignal {
    fn new(name: &'static str, tx: &Sender<&'static str>) -> (Self, Arc<AtomicBool>) {
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = DropSignal {
            name,
            dropped: dropped.clone(),
            tx: tx.clone(),
        };
        (guard, dropped)
    }
}

impl Drop for DropSignal {
    fn drop(&mut self) {
        // Slow on purpose (see the type's documentation).
        thread::sleep(Duration::from_millis(100));
        self.dropped.store(true, Ordering::SeqCst);
        let _ = self.tx.send(self.name);
    }
}

/// Every name sent so far, without waiting, sorted.
fn drained_now(rx: &Receiver<&'static str>) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = rx.try_iter().collect();
    names.sort_unstable();
    names
}

/// Receives events until the queue reports `Error::Closed`; returns the
/// events drained before that. Panics if it is not closed within [`WAIT`].
fn drain_until_closed(svc: &Service) -> Vec<Event> {
    let deadline = Instant::now() + WAIT;
    let mut drained = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match svc.recv_timeout(left) {
            Ok(Some(e)) => drained.push(e),
            Ok(None) => panic!("{}: queue not closed within {WAIT:?}", svc.binding()),
            Err(Error::Closed) => return drained,
            Err(e) => panic!("{}: expected Closed, got {e:?}", svc.binding()),
        }
    }
}

/// A spawned service that answers every request with its argument (u64).
fn spawn_echo(d: &Dispatcher, name: &str) -> netsvc::ServiceHandle {
    d.service(name)
        .spawn(|_svc, event| {
            if let Event::Request(r) = event {
                let v: u64 = r.decode().expect("u64 argument");
                let _ = r.reply(&v);
            }
        })
        .expect("spawn echo")
}

fn assert_closed<T: std::fmt::Debug>(what: &str, result: Result<T>) {
    match result {
        Err(Error::Closed) => {}
        other => panic!("{what}: expected Err(Closed), got {other:?}"),
    }
}

#[test]
fn shutdown_with_work_in_flight_fails_pending_calls_with_closed() {
    let d = Dispatcher::new().unwrap();

    // A pulled service that takes requests and holds them unanswered.
    let holder = d.service("holder").open().unwrap();
    holder.start_timer(Duration::from_secs(60), 1);

    // A pulled service whose queue still holds requests at shutdown.
    let backlog = d.service("backlog").open().unwrap();

    // A spawned service that keeps a 1 ms timer running all the time.
    let ticker = d
        .service("ticker")
        .spawn(|svc, event| match event {
            Event::Request(r) => {
                svc.start_timer(Duration::from_millis(1), 7);
                svc.start_timer(Duration::from_secs(60), 8);
                let _ = r.reply(&0u64);
            }
            Event::Timer(7) => svc.start_timer(Duration::from_millis(1), 7),
            _ => {}
        })
        .unwrap();
    let _echo = spawn_echo(&d, "echo");

    let me = d.service("me").open().unwrap();
    let armed: u64 = me.call(ticker.binding(), "arm", &0u64).unwrap();
    assert_eq!(armed, 0);

    // Four threads blocked in call() with 30 s timeouts to the holder.
    const CALLERS: u64 = 4;
    let (done_tx, done_rx) = crossbeam_channel::unbounded();
    for i in 0..CALLERS {
        let caller = d.service(&format!("caller-{i}")).open().unwrap();
        let to = holder.binding().clone();
        let done_tx = done_tx.clone();
        thread::spawn(move || {
            let started = Instant::now();
            let result = caller.call_timeout::<u64, _>(&to, "hold", &i, LONG);
            let _ = done_tx.send((i, result, started.elapsed(), caller));
        });
    }
    // Three PendingReplys to the holder as well.
    let pending_holder: Vec<PendingReply<u64>> = (100..103u64)
        .map(|i| {
            me.request_timeout(holder.binding(), "hold", &i, LONG)
                .unwrap()
        })
        .collect();

    // The holder takes all seven requests: every call is now pending.
    let mut held = Vec::new();
    for _ in 0..CALLERS + 3 {
        let r = request(&holder);
        assert_eq!(r.method(), "hold");
        held.push(r);
    }
    let mut held_args: Vec<u64> = held.iter().map(|r| r.decode::<u64>().unwrap()).collect();
    held_args.sort_unstable();
    assert_eq!(held_args, vec![0, 1, 2, 3, 100, 101, 102]);

    // Three requests left queued on the backlog service. The lookup is a
    // round trip after them: once it returns, they are on the queue.
    let pending_backlog: Vec<PendingReply<u64>> = (200..203u64)
        .map(|i| {
            me.request_timeout(backlog.binding(), "queued", &i, LONG)
                .unwrap()
        })
        .collect();
    assert_eq!(
        d.lookup_service_name("backlog"),
        vec![backlog.binding().clone()]
    );
    assert_eq!(backlog.receiver().len(), 3);

    let started = Instant::now();
    let d2 = d.clone();
    within("shutdown with work in flight", move || d2.shutdown());

    // Every blocked call ends with Closed, long before its timeout.
    let mut answered = Vec::new();
    for _ in 0..CALLERS {
        let (i, result, elapsed, caller) = done_rx
            .recv_timeout(WAIT)
            .expect("a blocked call did not return after shutdown");
        assert_closed(&format!("blocked call {i}"), result);
        assert!(elapsed < PROMPT, "call {i} took {elapsed:?}");
        assert!(drain_until_closed(&caller).is_empty());
        answered.push(i);
    }
    answered.sort_unstable();
    assert_eq!(answered, vec![0, 1, 2, 3]);

    // Every PendingReply ends with Closed.
    for (n, p) in pending_holder.iter().chain(&pending_backlog).enumerate() {
        assert_closed(&format!("pending reply {n}"), p.wait_timeout(WAIT));
    }
    assert!(started.elapsed() < PROMPT);

    // The backlog drains its three queued requests, then reports Closed.
    let drained: Vec<u64> = drain_until_closed(&backlog)
        .into_iter()
        .map(|e| match e {
            Event::Request(r) => r.decode::<u64>().unwrap(),
            other => panic!("backlog: expected a queued request, got {other:?}"),
        })
        .collect();
    assert_eq!(drained, vec![200, 201, 202]);
    // The holder's 60 s timer never fired; its queue is empty and closed.
    assert!(drain_until_closed(&holder).is_empty());
    assert!(drain_until_closed(&me).is_empty());
    // Answering a held request after shutdown is refused quietly.
    for r in held {
        assert_closed("reply after shutdown", r.reply(&0u64));
    }
}

#[test]
fn shutdown_is_idempotent() {
    let d = Dispatcher::new().unwrap();
    let svc = d.service("svc").open().unwrap();
    let d2 = d.clone();
    within("two shutdowns in a row", move || {
        d2.shutdown();
        d2.shutdown();
    });
    assert!(drain_until_closed(&svc).is_empty());
    assert!(d.lookup_service_name("svc").is_empty());
    within("a third shutdown and the last drop", move || {
        d.shutdown();
        drop(d);
    });
}

#[test]
fn concurrent_shutdowns_from_two_threads_both_return() {
    let d = Dispatcher::new().unwrap();
    let svc = d.service("svc").open().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let _worker = d
        .service("worker")
        .spawn({
            let (guard, _) = DropSignal::new("worker", &tx);
            move |_svc, _event| {
                let _keep = &guard;
            }
        })
        .unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let d = d.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                d.shutdown();
            })
        })
        .collect();
    within("two concurrent shutdowns", move || {
        for t in threads {
            t.join().expect("a shutdown thread panicked");
        }
    });
    // Both returned; by then the worker had been joined.
    assert_eq!(drained_now(&rx), vec!["worker"]);
    assert!(drain_until_closed(&svc).is_empty());
    assert!(d.lookup_service_name("worker").is_empty());
}

#[test]
fn shutdown_joins_spawned_workers() {
    let d = Dispatcher::new().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let (guard_a, dropped_a) = DropSignal::new("a", &tx);
    let (guard_b, dropped_b) = DropSignal::new("b", &tx);
    let a = d
        .service("a")
        .spawn(move |_svc, event| {
            let _keep = &guard_a;
            if let Event::Request(r) = event {
                let _ = r.reply(&1u64);
            }
        })
        .unwrap();
    let _b = d
        .service("b")
        .spawn(move |_svc, _event| {
            let _keep = &guard_b;
        })
        .unwrap();
    let me = d.service("me").open().unwrap();
    // Worker a has handled an event: it is running.
    assert_eq!(me.call::<u64, _>(a.binding(), "x", &()).unwrap(), 1);
    assert_eq!(drained_now(&rx), Vec::<&str>::new());

    let d2 = d.clone();
    within("shutdown", move || d2.shutdown());
    // No waiting: the guards were dropped before shutdown() returned.
    assert!(dropped_a.load(Ordering::SeqCst), "worker a not joined");
    assert!(dropped_b.load(Ordering::SeqCst), "worker b not joined");
    assert_eq!(drained_now(&rx), vec!["a", "b"]);
}

#[test]
fn dropping_the_last_dispatcher_handle_joins_spawned_workers() {
    let d = Dispatcher::new().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let (guard, dropped) = DropSignal::new("worker", &tx);
    let worker = d
        .service("worker")
        .spawn(move |_svc, event| {
            let _keep = &guard;
            if let Event::Request(r) = event {
                let _ = r.reply(&2u64);
            }
        })
        .unwrap();
    let me = d.service("me").open().unwrap();
    assert_eq!(me.call::<u64, _>(worker.binding(), "x", &()).unwrap(), 2);
    assert!(!dropped.load(Ordering::SeqCst));

    // The services and the handle do not keep the dispatcher alive.
    within("drop of the last handle", move || drop(d));
    assert!(dropped.load(Ordering::SeqCst), "worker not joined");
    assert_eq!(drained_now(&rx), vec!["worker"]);
    assert!(drain_until_closed(&me).is_empty());
    assert_closed(
        "call after the drop",
        me.call::<u64, _>(worker.binding(), "x", &()),
    );
}

#[test]
fn shutdown_called_from_inside_a_handler_does_not_deadlock() {
    let d = Dispatcher::new().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let inner = d.clone();
    let stopper = d
        .service("stopper")
        .spawn(move |_svc, event| {
            if let Event::Request(r) = event {
                let _ = r.reply(&"stopping");
                inner.shutdown();
                let _ = tx.send("shutdown returned in the handler");
            }
        })
        .unwrap();
    let (other_tx, other_rx) = crossbeam_channel::unbounded();
    let (guard, other_flag) = DropSignal::new("other", &other_tx);
    let _other = d
        .service("other")
        .spawn(move |_svc, _event| {
            let _keep = &guard;
        })
        .unwrap();

    let me = d.service("me").open().unwrap();
    let answer: String = me.call(stopper.binding(), "stop", &()).unwrap();
    assert_eq!(answer, "stopping");

    let waiter = d.clone();
    within("wait() after a shutdown from a handler", move || {
        waiter.wait()
    })
    .expect("a shutdown is not a failure");
    assert_eq!(
        rx.recv_timeout(WAIT),
        Ok("shutdown returned in the handler")
    );
    // The handler's shutdown joined the other worker.
    assert!(other_flag.load(Ordering::SeqCst));
    assert_eq!(drained_now(&other_rx), vec!["other"]);
    assert!(drain_until_closed(&me).is_empty());
    assert!(d.lookup_service_name("stopper").is_empty());
}

#[test]
fn shutdown_after_announces_shutdown_to_every_service_then_withdraws_them() {
    let d = Dispatcher::new().unwrap();
    let pulled = d.service("pulled").open().unwrap();
    let monitor = d.service("monitor").open().unwrap();
    monitor.monitor_service_name("pulled");
    let ann = wait_announcement(&monitor, "pulled", None, netsvc::ServiceStatus::Available);
    assert_eq!(ann.binding(), pulled.binding());

    let (tx, rx) = crossbeam_channel::unbounded();
    let _spawned = d
        .service("spawned")
        .spawn(move |_svc, event| {
            if let Event::Shutdown = event {
                let _ = tx.send("spawned got Shutdown");
            }
        })
        .unwrap();

    let d2 = d.clone();
    within("shutdown_after", move || {
        d2.shutdown_after(Duration::from_millis(100))
    });

    assert!(matches!(next(&pulled), Event::Shutdown));
    assert!(matches!(
        wait_for(&monitor, "Shutdown", |e| matches!(e, Event::Shutdown)
            .then_some(e)),
        Event::Shutdown
    ));
    assert_eq!(rx.recv_timeout(WAIT), Ok("spawned got Shutdown"));

    let waiter = d.clone();
    within("wait() after shutdown_after", move || waiter.wait())
        .expect("a shutdown is not a failure");
    // Withdrawn: the queues close once drained, the registry is empty.
    assert!(drain_until_closed(&pulled).is_empty());
    drain_until_closed(&monitor);
    assert!(d.lookup_service_name("pulled").is_empty());
    assert!(d.lookup_service_name("spawned").is_empty());
    assert_closed(
        "publish after shutdown_after",
        pulled.publish_report("x", &1u64, Lifetime::None),
    );
}

#[test]
fn clones_share_one_dispatcher_and_dropping_one_does_not_shut_down() {
    let d = Dispatcher::new().unwrap();
    let echo = spawn_echo(&d, "echo");
    let clone = d.clone();
    assert_eq!(clone.process_id(), d.process_id());

    let via_clone = clone.service("via-clone").open().unwrap();
    assert_eq!(
        d.lookup_service_name("via-clone"),
        vec![via_clone.binding().clone()]
    );
    assert_eq!(
        clone.lookup_service_name("echo"),
        vec![echo.binding().clone()]
    );

    drop(clone);
    // Still running: the service opened through the clone works.
    assert_eq!(
        d.lookup_service_name("via-clone"),
        vec![via_clone.binding().clone()]
    );
    let v: u64 = via_clone.call(echo.binding(), "echo", &42u64).unwrap();
    assert_eq!(v, 42);
    let late = d.service("late").open().unwrap();
    let v: u64 = late.call(echo.binding(), "echo", &43u64).unwrap();
    assert_eq!(v, 43);
    assert_quiet(&via_clone);
}

#[test]
fn after_shutdown_open_lookup_and_publish_fail_closed() {
    let d = Dispatcher::new().unwrap();
    let svc = d.service("before").group("g").open().unwrap();
    let echo = spawn_echo(&d, "echo");
    assert_eq!(d.lookup_service_group("g"), vec![svc.binding().clone()]);

    let d2 = d.clone();
    within("shutdown", move || d2.shutdown());

    assert_closed("open", d.service("after").open());
    assert_closed("spawn", d.service("after").spawn(|_svc, _event| {}));
    assert!(d.lookup_service_name("before").is_empty());
    assert!(d.lookup_service_name("echo").is_empty());
    assert!(d.lookup_service_group("g").is_empty());
    // Every time, not only until the publisher's limit is reached.
    for i in 0..3_000u64 {
        assert_closed(
            "publish_report",
            svc.publish_report("system.time", &i, Lifetime::Forever),
        );
    }
    assert_closed("call", svc.call::<u64, _>(echo.binding(), "echo", &1u64));
    assert_closed(
        "request",
        svc.request::<u64, _>(echo.binding(), "echo", &1u64),
    );
    assert!(drain_until_closed(&svc).is_empty());
}
