//! No input costs more than it weighs; nothing panics, nothing hangs:
//! huge durations, settings that cannot work, a dispatcher that panics or
//! stalls, and values nested too deep.

mod util;
use util::*;

use std::thread;
use std::time::Duration;

use crossbeam_channel::bounded;
use netsvc::{
    codes, Context, Dispatcher, Endpoint, Error, Event, Lifetime, NotificationListener, RpcClient,
    RpcServer, RpcServerHandle, Target, Value,
};

/// An "echo" service answering with its argument, spawned.
fn echo(d: &Dispatcher) -> netsvc::ServiceHandle {
    d.service("echo")
        .spawn(|_svc, ev| {
            if let Event::Request(r) = ev {
                let x: u64 = r.decode().unwrap_or_default();
                let _ = r.reply(&x);
            }
        })
        .expect("open echo")
}

/// An RPC server of topic "calc" with "add".
fn calc(d: &Dispatcher) -> RpcServerHandle {
    RpcServer::new(d, Target::new("calc").server("c1"))
        .endpoint(Endpoint::new().method("add", |_ctx: &Context, (a, b): (i64, i64)| Ok(a + b)))
        .start()
        .expect("start calc")
}

fn add(d: &Dispatcher) -> netsvc::Result<i64> {
    RpcClient::new(d, Target::new("calc")).call(&Context::new(), "add", &(2i64, 3i64))
}

// ----- 1. huge durations -----

#[test]
fn call_with_duration_max_is_answered() {
    let d = Dispatcher::new().unwrap();
    let e = echo(&d);
    let me = d.service("me").open().unwrap();
    let x: u64 = me
        .call_timeout(e.binding(), "x", &7u64, Duration::MAX)
        .unwrap();
    assert_eq!(x, 7);
    let p = me.request::<u64, _>(e.binding(), "x", &8u64).unwrap();
    assert_eq!(p.wait_timeout(Duration::MAX).unwrap(), 8);
    d.shutdown();
}

#[test]
fn call_with_duration_max_that_is_never_answered_ends_at_shutdown() {
    let d = Dispatcher::new().unwrap();
    let silent = d.service("silent").open().unwrap();
    let to = silent.binding().clone();
    let me = d.service("me").open().unwrap();
    let caller =
        thread::spawn(move || me.call_timeout::<u64, _>(&to, "never", &1u64, Duration::MAX));
    // The request is held, unanswered, while the dispatcher shuts down.
    let held = request(&silent);
    let d2 = d.clone();
    within("shutdown with a call of no limit pending", move || {
        d2.shutdown()
    });
    let result = within("the call of no limit", move || caller.join().unwrap());
    assert!(
        matches!(result, Err(Error::Closed | Error::ServiceUnavailable(_))),
        "{result:?}"
    );
    drop(held);
}

#[test]
fn timer_with_duration_max_never_fires_and_the_dispatcher_goes_on() {
    let d = Dispatcher::new().unwrap();
    let svc = d.service("timed").open().unwrap();
    svc.start_timer(Duration::MAX, 1);
    svc.start_timer(Duration::ZERO, 2);
    assert!(matches!(next(&svc), Event::Timer(2)));
    assert_quiet(&svc);
    assert_eq!(d.lookup_service_name("timed").len(), 1);
    svc.cancel_timer(1);
    d.shutdown();
}

#[test]
fn shutdown_after_duration_max_does_not_panic_the_dispatcher() {
    let d = Dispatcher::new().unwrap();
    let svc = d.service("s").open().unwrap();
    d.shutdown_after(Duration::MAX);
    assert!(matches!(next(&svc), Event::Shutdown));
    // Still routing: the delayed shutdown never comes, an explicit one does.
    assert_eq!(d.lookup_service_name("s").len(), 1);
    within("shutdown after shutdown_after(MAX)", move || d.shutdown());
}

#[test]
fn wait_ends_after_shutdown_after_duration_max_and_a_shutdown() {
    let d = Dispatcher::new().unwrap();
    d.shutdown_after(Duration::MAX);
    let waiter = d.clone();
    let w = thread::spawn(move || waiter.wait());
    d.shutdown();
    within("wait()", move || w.join().unwrap()).expect("a shutdown is not a failure");
}

#[test]
fn report_cached_for_duration_max_reaches_a_late_subscriber() {
    let d = Dispatcher::new().unwrap();
    let publisher = d.service("pub").open().unwrap();
    publisher
        .publish_report("t", &5u64, Lifetime::For(Duration::MAX))
        .unwrap();
    let sub = d.service("sub").open().unwrap();
    sub.subscribe_reports("pub", "*");
    let r = wait_for(&sub, "the cached report", |e| match e {
        Event::Report(r) => Some(r),
        _ => None,
    });
    assert_eq!(r.decode::<u64>().unwrap(), 5);
    d.shutdown();
}

#[test]
fn rpc_call_with_duration_max_and_no_retry_fails_and_the_dispatcher_keeps_answering() {
    let d = Dispatcher::new().unwrap();
    let client = RpcClient::new(&d, Target::new("nobody"))
        .timeout(Duration::MAX)
        .retry(Some(0));
    let result = within("call to nobody", move || {
        client.call::<u64, _>(&Context::new(), "x", &())
    });
    assert!(
        matches!(result, Err(Error::DeliveryFailure(_))),
        "{result:?}"
    );
    let _server = calc(&d);
    let sum = RpcClient::new(&d, Target::new("calc"))
        .timeout(Duration::MAX)
        .call::<i64, _>(&Context::new(), "add", &(2i64, 3i64));
    assert_eq!(sum.unwrap(), 5);
    d.shutdown();
}

#[test]
fn rpc_call_with_duration_max_waiting_for_a_server_ends_at_shutdown() {
    let d = Dispatcher::new().unwrap();
    let client = RpcClient::new(&d, Target::new("nobody")).timeout(Duration::MAX);
    let (sent_tx, sent_rx) = bounded(1);
    let caller = thread::spawn(move || {
        let _ = sent_tx.send(());
        client.call::<u64, _>(&Context::new(), "x", &())
    });
    sent_rx.recv_timeout(WAIT).unwrap();
    d.shutdown();
    let result = within("parked call of no limit", move || caller.join().unwrap());
    assert!(matches!(result, Err(Error::Closed)), "{result:?}");
}

// ----- 2. settings that cannot work -----

fn refused<T: std::fmt::Debug>(result: netsvc::Result<T>, setting: &str) {
    match result {
        Err(Error::InvalidArgument(m)) => {
            assert!(m.contains(setting), "{m:?} does not name {setting}");
            assert_eq!(
                Error::InvalidArgument(m).code(),
                codes::PARAMETERS_INCORRECT
            );
        }
        other => panic!("{setting}: expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn dispatcher_builder_refuses_settings_that_cannot_work() {
    let b = Dispatcher::builder;
    refused(b().queue_capacity(0).build(), "queue_capacity");
    refused(b().queue_capacity(usize::MAX).build(), "queue_capacity");
    refused(
        b().heartbeat(Duration::ZERO, Duration::from_secs(1))
            .build(),
        "heartbeat interval",
    );
    refused(
        b().heartbeat(Duration::from_secs(2), Duration::from_secs(1))
            .build(),
        "dead_peer_timeout",
    );
    refused(
        b().heartbeat(Duration::from_secs(1), Duration::ZERO)
            .build(),
        "dead_peer_timeout",
    );
    refused(
        b().handshake_timeout(Duration::ZERO).build(),
        "handshake_timeout",
    );
    refused(
        b().default_timeout(Duration::ZERO).build(),
        "default_timeout",
    );
    refused(b().max_frame_size(100).build(), "max_frame_size");
    refused(b().max_outbound_buffer(0).build(), "max_outbound_buffer");
    // A spin longer than 10 ms is a busy loop.
    refused(
        b().idle_spin(Duration::from_millis(11)).build(),
        "idle_spin",
    );
    refused(
        b().call_spin(Duration::from_millis(11)).build(),
        "call_spin",
    );
    // The first refusal is the one reported.
    refused(
        b().queue_capacity(0)
            .default_timeout(Duration::ZERO)
            .build(),
        "queue_capacity",
    );
    // The limits themselves, and "no limit", are accepted.
    let d = b()
        .queue_capacity(1)
        .max_frame_size(1024)
        .max_outbound_buffer(1024)
        .heartbeat(Duration::from_millis(1), Duration::from_millis(1))
        .handshake_timeout(Duration::MAX)
        .default_timeout(Duration::MAX)
        .idle_spin(Duration::ZERO)
        .call_spin(Duration::from_millis(10))
        .build()
        .unwrap();
    let e = echo(&d);
    let me = d.service("me").open().unwrap();
    assert_eq!(me.call::<u64, _>(e.binding(), "x", &3u64).unwrap(), 3);
    d.shutdown();
}

#[test]
fn service_builders_refuse_settings_that_cannot_work() {
    let d = Dispatcher::new().unwrap();
    refused(d.service("").open(), "service name");
    refused(d.service("").spawn(|_, _| {}), "service name");
    refused(d.service("q").queue_capacity(0).open(), "queue_capacity");
    refused(
        d.service("q").queue_capacity(usize::MAX).spawn(|_, _| {}),
        "queue_capacity",
    );
    refused(d.service("g").group("").open(), "group name");
    let pool = d.service("pool").open().unwrap();
    refused(pool.spawn_pool(0, |_, _| {}), "spawn_pool");
    // Nothing refused was registered; the pool was withdrawn with its service.
    for name in ["", "q", "g", "pool"] {
        assert!(
            d.lookup_service_name(name).is_empty(),
            "{name:?} registered"
        );
    }
    d.shutdown();
}

#[test]
fn rpc_builders_refuse_settings_that_cannot_work() {
    let d = Dispatcher::new().unwrap();
    refused(
        RpcServer::new(&d, Target::new("calc")).threads(0).start(),
        "threads",
    );
    refused(RpcServer::new(&d, Target::new("")).start(), "topic");
    let _server = calc(&d);
    let client = RpcClient::new(&d, Target::new("calc"));
    refused(
        client.clone().timeout(Duration::ZERO).call::<i64, _>(
            &Context::new(),
            "add",
            &(1i64, 2i64),
        ),
        "timeout",
    );
    refused(
        client.prepare().timeout(Duration::ZERO).build().cast(
            &Context::new(),
            "add",
            &(1i64, 2i64),
        ),
        "timeout",
    );
    refused(
        client
            .prepare()
            .call_monitor_timeout(Duration::ZERO)
            .build()
            .call::<i64, _>(&Context::new(), "add", &(1i64, 2i64)),
        "call_monitor_timeout",
    );
    refused(NotificationListener::new(&d, &[]).start(), "topics");
    refused(NotificationListener::new(&d, &[""]).start(), "topic");
    refused(
        NotificationListener::new(&d, &["n"]).pool("").start(),
        "pool",
    );
    // The client itself still works.
    assert_eq!(add(&d).unwrap(), 5);
    d.shutdown();
}

// ----- 3. a dispatcher that panics -----

#[test]
fn dispatcher_panic_fails_a_pending_direct_call_with_closed() {
    let d = Dispatcher::new().unwrap();
    let silent = d.service("silent").open().unwrap();
    let to = silent.binding().clone();
    let me = d.service("me").open().unwrap();
    let caller =
        thread::spawn(move || me.call_timeout::<u64, _>(&to, "never", &1u64, Duration::MAX));
    let held = request(&silent);
    netsvc::panic_dispatcher(&d);
    let result = within("a direct call when the dispatcher panics", move || {
        caller.join().unwrap()
    });
    assert!(matches!(result, Err(Error::Closed)), "{result:?}");
    let waiter = d.clone();
    match within("wait() after a panic", move || waiter.wait()) {
        Err(Error::DispatcherFailed(m)) => assert!(m.contains("panic"), "{m}"),
        other => panic!("expected DispatcherFailed, got {other:?}"),
    }
    // Everything after it fails at once.
    let d2 = d.clone();
    let opened = within("open after a panic", move || d2.service("late").open());
    assert!(matches!(opened, Err(Error::Closed)), "{opened:?}");
    assert!(d.lookup_service_name("silent").is_empty());
    drop(held);
    drop(silent);
    within("dropping the last handle after a panic", move || drop(d));
}

#[test]
fn dispatcher_panic_fails_a_pending_rpc_call_with_closed_and_drop_returns() {
    let d = Dispatcher::new().unwrap();
    let (started_tx, started_rx) = bounded(1);
    let (release_tx, release_rx) = bounded::<()>(1);
    let server = RpcServer::new(&d, Target::new("slow").server("s1"))
        .endpoint(
            Endpoint::new().method("hold", move |_ctx: &Context, (): ()| {
                let _ = started_tx.send(());
                let _ = release_rx.recv_timeout(WAIT);
                Ok(1u64)
            }),
        )
        .start()
        .unwrap();
    let client = RpcClient::new(&d, Target::new("slow")).timeout(Duration::MAX);
    let caller = thread::spawn(move || client.call::<u64, _>(&Context::new(), "hold", &()));
    started_rx.recv_timeout(WAIT).unwrap();
    netsvc::panic_dispatcher(&d);
    let result = within("an RPC call when the dispatcher panics", move || {
        caller.join().unwrap()
    });
    assert!(matches!(result, Err(Error::Closed)), "{result:?}");
    release_tx.send(()).unwrap();
    let d2 = d.clone();
    let waited = within("wait() after a panic", move || d2.wait());
    assert!(
        matches!(waited, Err(Error::DispatcherFailed(_))),
        "{waited:?}"
    );
    // shutdown() is idempotent and returns, as does dropping everything.
    let d3 = d.clone();
    within("shutdown() after a panic", move || d3.shutdown());
    within("dropping the last handle after a panic", move || {
        drop(server);
        drop(d);
    });
}

#[test]
fn wait_after_a_plain_shutdown_is_ok() {
    let d = Dispatcher::new().unwrap();
    d.shutdown();
    within("wait()", move || d.wait()).expect("a shutdown is not a failure");
}

// ----- 4. a dispatcher that stalls -----

#[test]
fn calls_into_a_stalled_dispatcher_give_up_after_the_stall_limit() {
    // Stall limit: dead-peer timeout + handshake timeout = 200 ms.
    let d = Dispatcher::builder()
        .heartbeat(Duration::from_millis(50), Duration::from_millis(100))
        .handshake_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let (release_tx, release_rx) = bounded::<()>(1);
    let publisher = d.service("pub").open().unwrap();
    netsvc::stall_dispatcher(&d, release_rx).unwrap();

    // A command that waits for an answer gives up.
    let d2 = d.clone();
    let opened = within("open on a stalled dispatcher", move || {
        d2.service("late").open()
    });
    assert!(matches!(opened, Err(Error::Timeout)), "{opened:?}");
    // Commands fill the queue, then the next one gives up.
    let flooded = within("publishing into a stalled dispatcher", move || {
        let mut sent = 0u64;
        loop {
            match publisher.publish_report("t", &sent, Lifetime::None) {
                Ok(()) => sent += 1,
                Err(e) => return (sent, e, publisher),
            }
            assert!(sent < 1_000_000, "the command queue is not bounded");
        }
    });
    assert!(matches!(flooded.1, Error::Timeout), "{:?}", flooded.1);
    assert!(flooded.0 > 0, "nothing was queued before the stall limit");

    // Released, the dispatcher serves again.
    release_tx.send(()).unwrap();
    let d3 = d.clone();
    let open = within("open after the stall", move || d3.service("after").open());
    assert!(open.is_ok(), "{open:?}");
    within("shutdown after the stall", move || d.shutdown());
}

// ----- 5. values nested too deep -----

/// A value `depth` lists deep, built without recursion.
fn deep(depth: usize) -> Value {
    let mut v = Value::Null;
    for _ in 1..depth {
        v = Value::List(vec![v]);
    }
    v
}

#[test]
fn a_context_nested_too_deep_fails_that_call_and_the_server_goes_on() {
    let d = Dispatcher::new().unwrap();
    let _server = calc(&d);
    let client = RpcClient::new(&d, Target::new("calc"));
    // Encoding (and dropping) 10,000 levels recurses on the sender's side:
    // that thread gets a large stack. The server's threads have the usual one.
    let c = client.clone();
    let sender = thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || {
            let mut ctx = Context::new();
            ctx.insert("deep".to_owned(), deep(10_000));
            c.call::<i64, _>(&ctx, "add", &(1i64, 2i64))
        })
        .unwrap();
    let result = within("a call with a 10,000-deep context", move || {
        sender.join().unwrap()
    });
    match result {
        Err(Error::Service(f)) => {
            assert_eq!(f.code, codes::REQUEST_DECODING_ERROR, "{f}");
        }
        other => panic!("expected a decoding failure, got {other:?}"),
    }
    // The server lives and answers, also with a context at the limit.
    assert_eq!(add(&d).unwrap(), 5);
    let mut ctx = Context::new();
    ctx.insert("deep".to_owned(), deep(Value::MAX_DEPTH));
    let sum: i64 = client.call(&ctx, "add", &(1i64, 2i64)).unwrap();
    assert_eq!(sum, 3);
    d.shutdown();
}

/// This process's resident memory, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// A queue's memory follows what it holds, not its capacity: services of
/// the largest capacity (16,777,216 events, a reserve as large again) cost
/// next to nothing until used. (A queue that made every slot up front
/// cost some 1.8 GB each.)
#[test]
fn a_queue_of_the_largest_capacity_costs_only_what_it_holds() {
    let d = Dispatcher::new().unwrap();
    let before = rss_kib();
    let big: Vec<_> = (0..2)
        .map(|i| {
            d.service(&format!("big{i}"))
                .queue_capacity(1 << 24)
                .open()
                .unwrap()
        })
        .collect();
    let opened = rss_kib();
    // (Other tests of this binary run meanwhile: a wide margin, far
    // below what one slot per event would cost.)
    assert!(
        opened.saturating_sub(before) < 64 * 1024,
        "two services of the largest queue cost {} KiB",
        opened.saturating_sub(before)
    );
    // They work: a stream of reports through one, taken as it comes.
    let publ = d.service("p").open().unwrap();
    big[0].subscribe_reports("p", "x.*");
    wait_for(&big[0], "the confirmation", |e| match e {
        Event::Confirmed(_) => Some(()),
        _ => None,
    });
    for i in 0..10_000u32 {
        publ.publish_report("x.n", &i, Lifetime::None).unwrap();
    }
    let mut seen = 0u32;
    while seen < 10_000 {
        match big[0].recv_timeout(WAIT).unwrap() {
            Some(Event::Report(r)) => {
                assert_eq!(r.decode::<u32>().unwrap(), seen);
                seen += 1;
            }
            Some(_) => {}
            None => panic!("only {seen} of 10,000 reports"),
        }
    }
}
