//! oslo.messaging's functional RPC scenarios and dispatcher rules, in one
//! process: one Dispatcher, no exchange.

mod util;
use util::*;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use netsvc::{
    Context, Dispatcher, Endpoint, Error, RemoteError, RpcClient, RpcFailure, RpcServer,
    RpcServerHandle, Serializer, Target, Value,
};

/// A server `name` of `topic` in `exchange` answering "whoami" with its name
/// and counting "ping" casts on `hits` (each ping also sends its name on `tx`).
fn named_server(
    d: &Dispatcher,
    exchange: &str,
    topic: &str,
    name: &str,
    hits: Arc<AtomicUsize>,
    tx: Sender<String>,
) -> RpcServerHandle {
    let me = name.to_owned();
    let me2 = name.to_owned();
    RpcServer::new(d, Target::new(topic).exchange(exchange).server(name))
        .endpoint(
            Endpoint::new()
                .method("whoami", move |_c: &Context, (): ()| Ok(me.clone()))
                .method("ping", move |_c: &Context, (): ()| {
                    hits.fetch_add(1, Ordering::SeqCst);
                    tx.send(me2.clone()).unwrap();
                    Ok(())
                }),
        )
        .start()
        .unwrap()
}

/// Three servers s1, s2, s3 of topic "t" in the default exchange; their
/// ping counters; the channel their pings arrive on.
type Trio = (
    Vec<RpcServerHandle>,
    Vec<Arc<AtomicUsize>>,
    Receiver<String>,
);

fn three_servers(d: &Dispatcher) -> Trio {
    let (tx, rx) = unbounded();
    let mut servers = Vec::new();
    let mut hits = Vec::new();
    for name in ["s1", "s2", "s3"] {
        let h = Arc::new(AtomicUsize::new(0));
        servers.push(named_server(
            d,
            netsvc::DEFAULT_EXCHANGE,
            "t",
            name,
            h.clone(),
            tx.clone(),
        ));
        hits.push(h);
    }
    (servers, hits, rx)
}

fn ctx() -> Context {
    Context::new()
}

/// Receives `n` messages from `rx` (each within WAIT), then checks that no
/// more arrive within QUIET.
fn collect_exactly<T: std::fmt::Debug>(rx: &Receiver<T>, n: usize) -> Vec<T> {
    let mut got = Vec::new();
    for i in 0..n {
        match rx.recv_timeout(WAIT) {
            Ok(t) => got.push(t),
            Err(_) => panic!("only {i} of {n} messages within {WAIT:?}: {got:?}"),
        }
    }
    if let Ok(extra) = rx.recv_timeout(QUIET) {
        panic!("more than {n} messages: extra {extra:?} after {got:?}");
    }
    got
}

fn remote(e: Error) -> RemoteError {
    match e {
        Error::Remote(r) => r,
        other => panic!("expected Error::Remote, got {other:?}"),
    }
}

// ----- targets and routing -----

#[test]
fn server_target_reaches_only_that_server() {
    let d = Dispatcher::new().unwrap();
    let (_servers, _hits, _rx) = three_servers(&d);
    let client = RpcClient::new(&d, Target::new("t"));
    let to_s2 = client.prepare().server("s2").build();
    for _ in 0..10 {
        let who: String = to_s2.call(&ctx(), "whoami", &()).unwrap();
        assert_eq!(who, "s2");
    }
    for name in ["s1", "s3"] {
        let c = RpcClient::new(&d, Target::new("t").server(name));
        for _ in 0..3 {
            let who: String = c.call(&ctx(), "whoami", &()).unwrap();
            assert_eq!(who, name);
        }
    }
}

#[test]
fn topic_calls_and_casts_round_robin_over_servers() {
    let d = Dispatcher::new().unwrap();
    let (_servers, hits, rx) = three_servers(&d);
    let client = RpcClient::new(&d, Target::new("t"));

    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..14 {
        let who: String = client.call(&ctx(), "whoami", &()).unwrap();
        *answers.entry(who).or_default() += 1;
    }
    assert_eq!(
        answers.keys().cloned().collect::<Vec<_>>(),
        ["s1", "s2", "s3"],
        "every server answers: {answers:?}"
    );
    assert!(
        answers.values().all(|&n| n == 4 || n == 5),
        "round robin: {answers:?}"
    );
    assert_eq!(answers.values().sum::<usize>(), 14);

    for _ in 0..20 {
        client.cast(&ctx(), "ping", &()).unwrap();
    }
    let pings = collect_exactly(&rx, 20);
    let total: usize = hits.iter().map(|h| h.load(Ordering::SeqCst)).sum();
    assert_eq!(total, 20);
    let mut per_server: BTreeMap<String, usize> = BTreeMap::new();
    for p in pings {
        *per_server.entry(p).or_default() += 1;
    }
    let mut counts: Vec<usize> = per_server.values().copied().collect();
    counts.sort();
    assert_eq!(counts, [6, 7, 7], "casts round robin too: {per_server:?}");
    for (i, name) in ["s1", "s2", "s3"].iter().enumerate() {
        assert_eq!(hits[i].load(Ordering::SeqCst), per_server[*name]);
    }
}

#[test]
fn exchanges_isolate_topics() {
    let d = Dispatcher::new().unwrap();
    let (tx, _rx) = unbounded();
    let _a = named_server(&d, "a", "t", "in-a", Arc::default(), tx.clone());
    let _b = named_server(&d, "b", "t", "in-b", Arc::default(), tx);
    let client_a = RpcClient::new(&d, Target::new("t").exchange("a"));
    for _ in 0..6 {
        let who: String = client_a.call(&ctx(), "whoami", &()).unwrap();
        assert_eq!(who, "in-a");
    }
    let client_b = client_a.prepare().exchange("b").build();
    for _ in 0..6 {
        let who: String = client_b.call(&ctx(), "whoami", &()).unwrap();
        assert_eq!(who, "in-b");
    }
    // The default exchange has no server of topic "t".
    let default = RpcClient::new(&d, Target::new("t")).retry(Some(0));
    let r: Result<String, _> = default.call(&ctx(), "whoami", &());
    assert!(matches!(r, Err(Error::DeliveryFailure(_))), "{r:?}");
}

#[test]
fn fanout_cast_reaches_every_server_once() {
    let d = Dispatcher::new().unwrap();
    let (_servers, hits, rx) = three_servers(&d);
    let client = RpcClient::new(&d, Target::new("t").fanout(true));
    client.cast(&ctx(), "ping", &()).unwrap();
    let mut got = collect_exactly(&rx, 3);
    got.sort();
    assert_eq!(got, ["s1", "s2", "s3"]);
    for h in &hits {
        assert_eq!(h.load(Ordering::SeqCst), 1);
    }
}

#[test]
fn call_on_fanout_target_is_invalid_and_sends_nothing() {
    let d = Dispatcher::new().unwrap();
    let (_servers, hits, rx) = three_servers(&d);
    let fanout = RpcClient::new(&d, Target::new("t").fanout(true));
    let r: Result<(), _> = fanout.call(&ctx(), "ping", &());
    assert!(matches!(r, Err(Error::InvalidTarget(_))), "{r:?}");
    let prepared = RpcClient::new(&d, Target::new("t"))
        .prepare()
        .fanout(true)
        .build();
    let r: Result<(), _> = prepared.call(&ctx(), "ping", &());
    assert!(matches!(r, Err(Error::InvalidTarget(_))), "{r:?}");
    assert!(rx.recv_timeout(QUIET).is_err(), "a server saw the call");
    for h in &hits {
        assert_eq!(h.load(Ordering::SeqCst), 0);
    }
}

// ----- no server, retry, timeout -----

#[test]
fn call_with_no_server_and_no_retry_limit_fails_at_its_timeout() {
    let d = Dispatcher::new().unwrap();
    let client = RpcClient::new(&d, Target::new("nobody"))
        .retry(None)
        .timeout(Duration::from_millis(500));
    let started = Instant::now();
    let r: Result<(), _> = client.call(&ctx(), "m", &());
    let took = started.elapsed();
    // The call waits for a server until its timeout; never delivered, it
    // fails as a delivery failure (no server was reachable), not a timeout.
    assert!(matches!(r, Err(Error::DeliveryFailure(_))), "{r:?}");
    assert!(took >= Duration::from_millis(450), "failed early: {took:?}");
    assert!(took < Duration::from_millis(2500), "failed late: {took:?}");
}

#[test]
fn parked_call_that_times_out_counts_no_late_reply() {
    let d = Dispatcher::new().unwrap();
    let client = RpcClient::new(&d, Target::new("nobody"))
        .retry(None)
        .timeout(Duration::from_millis(300));
    let r: Result<(), _> = client.call(&ctx(), "m", &());
    assert!(matches!(r, Err(Error::DeliveryFailure(_))), "{r:?}");
    // Any later command is handled after both timers of that call fired.
    let (tx, _rx) = unbounded();
    let _s = named_server(&d, netsvc::DEFAULT_EXCHANGE, "x", "x1", Arc::default(), tx);
    let c = RpcClient::new(&d, Target::new("x"));
    let who: String = c.call(&ctx(), "whoami", &()).unwrap();
    assert_eq!(who, "x1");
    let stats = d.stats();
    assert_eq!(
        stats.calls_timed_out, 0,
        "never delivered, so never timed out"
    );
    assert_eq!(
        stats.late_replies, 0,
        "no reply ever came, yet a late reply was counted"
    );
}

#[test]
fn retry_zero_with_no_server_fails_at_once() {
    let d = Dispatcher::new().unwrap();
    let client = RpcClient::new(&d, Target::new("nobody")).retry(Some(0));
    let started = Instant::now();
    let r: Result<(), _> = client.call(&ctx(), "m", &());
    assert!(matches!(r, Err(Error::DeliveryFailure(_))), "{r:?}");
    let r = client.cast(&ctx(), "m", &());
    assert!(matches!(r, Err(Error::DeliveryFailure(_))), "{r:?}");
    let to_server = client.prepare().server("s1").build();
    let r: Result<(), _> = to_server.call(&ctx(), "m", &());
    assert!(matches!(r, Err(Error::DeliveryFailure(_))), "{r:?}");
    // The default timeout is 60 s; "at once" is far below it.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn call_waits_for_a_server_that_starts_later() {
    let d = Dispatcher::new().unwrap();
    let client = RpcClient::new(&d, Target::new("late"))
        .retry(None)
        .timeout(Duration::from_secs(10));
    let (done_tx, done_rx) = bounded(1);
    let caller = {
        let client = client.clone();
        thread::spawn(move || {
            let r: netsvc::Result<String> = client.call(&ctx(), "whoami", &());
            done_tx.send(r).unwrap();
        })
    };
    // Negative check: with no server, the call neither fails nor returns.
    if let Ok(r) = done_rx.recv_timeout(QUIET) {
        panic!("the call ended with no server: {r:?}");
    }
    let (tx, _rx) = unbounded();
    let _server = named_server(
        &d,
        netsvc::DEFAULT_EXCHANGE,
        "late",
        "l1",
        Arc::default(),
        tx,
    );
    let r = done_rx.recv_timeout(WAIT).expect("the call never returned");
    assert_eq!(r.unwrap(), "l1");
    caller.join().unwrap();
}

// ----- failures -----

#[test]
fn method_failure_reaches_caller_as_remote_error() {
    let d = Dispatcher::new().unwrap();
    let _server = RpcServer::new(&d, Target::new("math").server("m1"))
        .endpoint(
            Endpoint::new()
                .method("sqrt", |_c: &Context, x: f64| {
                    if x < 0.0 {
                        Err(RpcFailure::new("ValueError", "negative input"))
                    } else {
                        Ok(x.sqrt())
                    }
                })
                .method("traced", |_c: &Context, (): ()| -> Result<(), RpcFailure> {
                    Err(
                        RpcFailure::new("KeyError", "no such key").with_traceback(vec![
                            "File \"a.py\", line 1, in outer".to_owned(),
                            "File \"b.py\", line 2, in inner".to_owned(),
                        ]),
                    )
                })
                .method("boom", |_c: &Context, (): ()| -> Result<(), RpcFailure> {
                    panic!("kaboom")
                }),
        )
        .start()
        .unwrap();
    let client = RpcClient::new(&d, Target::new("math"));

    let ok: f64 = client.call(&ctx(), "sqrt", &16.0f64).unwrap();
    assert_eq!(ok, 4.0);

    let e = remote(client.call::<f64, _>(&ctx(), "sqrt", &-1.0f64).unwrap_err());
    assert_eq!(e.exc_type, "ValueError");
    assert_eq!(e.value, "negative input");
    assert!(e.traceback.is_empty(), "{:?}", e.traceback);

    let e = remote(client.call::<(), _>(&ctx(), "traced", &()).unwrap_err());
    assert_eq!(
        e,
        RemoteError {
            exc_type: "KeyError".to_owned(),
            value: "no such key".to_owned(),
            traceback: vec![
                "File \"a.py\", line 1, in outer".to_owned(),
                "File \"b.py\", line 2, in inner".to_owned(),
            ],
        }
    );

    let e = remote(client.call::<(), _>(&ctx(), "boom", &()).unwrap_err());
    assert_eq!(e.exc_type, "Panic");
    assert!(e.value.contains("kaboom"), "{e:?}");

    // Arguments that do not decode as the method's type (no bytes for an f64).
    let e = remote(client.call::<f64, _>(&ctx(), "sqrt", &()).unwrap_err());
    assert_eq!(e.exc_type, "TypeError");

    // The server goes on serving after all that.
    let ok: f64 = client.call(&ctx(), "sqrt", &9.0f64).unwrap();
    assert_eq!(ok, 3.0);
}

// ----- endpoint dispatch -----

fn versioned(version: &str) -> Endpoint {
    let v = version.to_owned();
    Endpoint::new()
        .version(version)
        .method("version", move |_c: &Context, (): ()| Ok(v.clone()))
        .method("_secret", |_c: &Context, (): ()| Ok("leaked".to_owned()))
}

fn serve(d: &Dispatcher, topic: &str, endpoints: Vec<Endpoint>) -> RpcServerHandle {
    let mut server = RpcServer::new(d, Target::new(topic).server("e1"));
    for e in endpoints {
        server = server.endpoint(e);
    }
    server.start().unwrap()
}

#[test]
fn compatible_endpoint_with_same_major_handles_the_call() {
    let d = Dispatcher::new().unwrap();
    let _s = serve(&d, "v", vec![versioned("1.5"), versioned("3.4")]);
    let client = RpcClient::new(&d, Target::new("v"));
    let v: String = client
        .prepare()
        .version("3.2")
        .build()
        .call(&ctx(), "version", &())
        .unwrap();
    assert_eq!(v, "3.4");
    let v: String = client
        .prepare()
        .version("1.3")
        .build()
        .call(&ctx(), "version", &())
        .unwrap();
    assert_eq!(v, "1.5");
    // No version asked: 1.0.
    let v: String = client.call(&ctx(), "version", &()).unwrap();
    assert_eq!(v, "1.5");
}

#[test]
fn no_compatible_endpoint_is_unsupported_version() {
    let d = Dispatcher::new().unwrap();
    let _s = serve(&d, "v", vec![versioned("1.5"), versioned("3.0")]);
    let client = RpcClient::new(&d, Target::new("v"));
    let r: Result<String, _> = client
        .prepare()
        .version("3.2")
        .build()
        .call(&ctx(), "version", &());
    assert!(matches!(r, Err(Error::UnsupportedVersion(_))), "{r:?}");
    let r: Result<String, _> = client
        .prepare()
        .version("2.0")
        .build()
        .call(&ctx(), "version", &());
    assert!(matches!(r, Err(Error::UnsupportedVersion(_))), "{r:?}");
    // Same major, lower minor still works.
    let v: String = client
        .prepare()
        .version("3.0")
        .build()
        .call(&ctx(), "version", &())
        .unwrap();
    assert_eq!(v, "3.0");
}

#[test]
fn unaccepted_namespace_is_unsupported_version() {
    let d = Dispatcher::new().unwrap();
    let _s = serve(&d, "ns", vec![versioned("1.0")]);
    let client = RpcClient::new(&d, Target::new("ns"));
    let r: Result<String, _> =
        client
            .prepare()
            .namespace("other")
            .build()
            .call(&ctx(), "version", &());
    assert!(matches!(r, Err(Error::UnsupportedVersion(_))), "{r:?}");
    let v: String = client.call(&ctx(), "version", &()).unwrap();
    assert_eq!(v, "1.0");
}

#[test]
fn private_and_unknown_methods_are_no_such_method() {
    let d = Dispatcher::new().unwrap();
    let _s = serve(&d, "p", vec![versioned("2.1")]);
    let client = RpcClient::new(&d, Target::new("p"))
        .prepare()
        .version("2.0")
        .build();
    let r: Result<String, _> = client.call(&ctx(), "_secret", &());
    assert!(matches!(r, Err(Error::NoSuchMethod(_))), "{r:?}");
    let r: Result<String, _> = client.call(&ctx(), "nope", &());
    assert!(matches!(r, Err(Error::NoSuchMethod(_))), "{r:?}");
    // An unknown method on an incompatible version is a version problem.
    let r: Result<String, _> = client
        .prepare()
        .version("1.0")
        .build()
        .call(&ctx(), "nope", &());
    assert!(matches!(r, Err(Error::UnsupportedVersion(_))), "{r:?}");
}

#[test]
fn accepted_namespaces_with_none_serve_unnamed_requests() {
    let d = Dispatcher::new().unwrap();
    let e = Endpoint::new()
        .namespace("ns")
        .accepted_namespaces(&[Some("ns"), None])
        .method("hi", |_c: &Context, (): ()| Ok("hi".to_owned()));
    let _s = serve(&d, "acc", vec![e]);
    let client = RpcClient::new(&d, Target::new("acc"));
    let v: String = client.call(&ctx(), "hi", &()).unwrap();
    assert_eq!(v, "hi");
    let v: String = client
        .prepare()
        .namespace("ns")
        .build()
        .call(&ctx(), "hi", &())
        .unwrap();
    assert_eq!(v, "hi");
    let r: Result<String, _> = client
        .prepare()
        .namespace("x")
        .build()
        .call(&ctx(), "hi", &());
    assert!(matches!(r, Err(Error::UnsupportedVersion(_))), "{r:?}");

    // Without the None entry, a namespaced endpoint refuses unnamed requests.
    let strict = Endpoint::new()
        .namespace("ns")
        .method("hi", |_c: &Context, (): ()| Ok("hi".to_owned()));
    let _s2 = serve(&d, "strict", vec![strict]);
    let r: Result<String, _> = RpcClient::new(&d, Target::new("strict")).call(&ctx(), "hi", &());
    assert!(matches!(r, Err(Error::UnsupportedVersion(_))), "{r:?}");
}

// ----- version cap -----

#[test]
fn version_above_cap_fails_before_sending() {
    let d = Dispatcher::new().unwrap();
    let (tx, rx) = unbounded();
    let _s = RpcServer::new(&d, Target::new("cap").server("c1"))
        .endpoint(
            Endpoint::new()
                .version("2.9")
                .method("m", move |_c: &Context, tag: String| {
                    tx.send(tag.clone()).unwrap();
                    Ok(tag)
                }),
        )
        .start()
        .unwrap();
    let client = RpcClient::new(&d, Target::new("cap")).version_cap("2.0");
    let r: Result<String, _> =
        client
            .prepare()
            .version("2.5")
            .build()
            .call(&ctx(), "m", &"too new".to_owned());
    assert!(matches!(r, Err(Error::VersionCap(_))), "{r:?}");
    let r = client
        .prepare()
        .version("2.5")
        .build()
        .cast(&ctx(), "m", &"too new cast".to_owned());
    assert!(matches!(r, Err(Error::VersionCap(_))), "{r:?}");
    let ok: String = client
        .prepare()
        .version("2.0")
        .build()
        .call(&ctx(), "m", &"allowed".to_owned())
        .unwrap();
    assert_eq!(ok, "allowed");
    // The server saw only the allowed call.
    assert_eq!(collect_exactly(&rx, 1), ["allowed"]);
}

#[test]
fn can_send_version_follows_the_cap() {
    let d = Dispatcher::new().unwrap();
    let uncapped = RpcClient::new(&d, Target::new("t"));
    assert!(uncapped.can_send_version("9.9"));
    let capped = uncapped.clone().version_cap("2.3");
    assert!(capped.can_send_version("2.0"));
    assert!(capped.can_send_version("2.3"));
    assert!(!capped.can_send_version("2.4"));
    assert!(!capped.can_send_version("3.0"));
    let prepared = uncapped.prepare().version_cap("1.1").build();
    assert!(prepared.can_send_version("1.1"));
    assert!(!prepared.can_send_version("1.2"));
}

// ----- ordering and concurrency -----

#[test]
fn sequential_calls_from_one_thread_are_answered_in_order() {
    let d = Dispatcher::new().unwrap();
    let counter = Arc::new(AtomicUsize::new(0));
    let c = counter.clone();
    let _s = RpcServer::new(&d, Target::new("seq").server("q1"))
        .endpoint(Endpoint::new().method("next", move |_c: &Context, (): ()| {
            Ok(c.fetch_add(1, Ordering::SeqCst) + 1)
        }))
        .start()
        .unwrap();
    let client = RpcClient::new(&d, Target::new("seq"));
    let got: Vec<usize> = (0..100)
        .map(|_| client.call(&ctx(), "next", &()).unwrap())
        .collect();
    assert_eq!(got, (1..=100).collect::<Vec<usize>>());
    assert_eq!(counter.load(Ordering::SeqCst), 100);
}

#[test]
fn one_timed_out_call_does_not_disturb_concurrent_calls() {
    let d = Dispatcher::new().unwrap();
    let (started_tx, started_rx) = bounded::<()>(1);
    let (release_tx, release_rx) = bounded::<()>(1);
    let _s = RpcServer::new(&d, Target::new("mixed").server("m1"))
        .endpoint(
            Endpoint::new()
                .method("slow", move |_c: &Context, (): ()| {
                    started_tx.send(()).unwrap();
                    // Held until the test has seen everything else happen.
                    release_rx.recv_timeout(WAIT).unwrap();
                    Ok("slow".to_owned())
                })
                .method("fast", |_c: &Context, i: u32| Ok(i * 10)),
        )
        .threads(4)
        .start()
        .unwrap();
    let client = RpcClient::new(&d, Target::new("mixed"));

    let slow = {
        let c = client.prepare().timeout(Duration::from_millis(300)).build();
        thread::spawn(move || c.call::<String, _>(&ctx(), "slow", &()))
    };
    started_rx.recv_timeout(WAIT).expect("slow never started");
    let fast: Vec<_> = (0..10u32)
        .map(|i| {
            let c = client.clone();
            thread::spawn(move || c.call::<u32, _>(&ctx(), "fast", &i))
        })
        .collect();
    for (i, t) in fast.into_iter().enumerate() {
        assert_eq!(t.join().unwrap().unwrap(), i as u32 * 10);
    }
    let r = slow.join().unwrap();
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert_eq!(d.stats().calls_timed_out, 1);

    // The slow method ends after its caller gave up: its reply is late.
    release_tx.send(()).unwrap();
    // Still serving, and the late reply did not reach anyone else.
    let after: u32 = client.call(&ctx(), "fast", &7u32).unwrap();
    assert_eq!(after, 70);
}

#[test]
fn call_monitor_heartbeats_keep_a_long_call_alive() {
    let d = Dispatcher::new().unwrap();
    let _s = RpcServer::new(&d, Target::new("long").server("l1"))
        .endpoint(Endpoint::new().method("work", |_c: &Context, (): ()| {
            // Deliberately much longer than the monitor period.
            thread::sleep(Duration::from_millis(1500));
            Ok("done".to_owned())
        }))
        .start()
        .unwrap();
    let client = RpcClient::new(&d, Target::new("long"))
        .prepare()
        .call_monitor_timeout(Duration::from_millis(300))
        .timeout(Duration::from_secs(30))
        .build();
    let r: String = client.call(&ctx(), "work", &()).unwrap();
    assert_eq!(r, "done");
    assert_eq!(d.stats().calls_timed_out, 0);
}

// ----- stopping a server -----

#[test]
fn stopped_server_refuses_new_calls_and_wait_returns() {
    let d = Dispatcher::new().unwrap();
    let (tx, _rx) = unbounded();
    let server = named_server(&d, netsvc::DEFAULT_EXCHANGE, "st", "x1", Arc::default(), tx);
    let client = RpcClient::new(&d, Target::new("st")).retry(Some(0));
    let who: String = client.call(&ctx(), "whoami", &()).unwrap();
    assert_eq!(who, "x1");
    server.stop();
    let r: Result<String, _> = client.call(&ctx(), "whoami", &());
    assert!(matches!(r, Err(Error::DeliveryFailure(_))), "{r:?}");
    let r: Result<String, _> = client
        .prepare()
        .server("x1")
        .build()
        .call(&ctx(), "whoami", &());
    assert!(matches!(r, Err(Error::DeliveryFailure(_))), "{r:?}");
    within("RpcServerHandle::wait", move || server.wait());
}

#[test]
fn call_in_progress_at_stop_still_gets_its_answer() {
    let d = Dispatcher::new().unwrap();
    let (started_tx, started_rx) = bounded::<()>(1);
    let (release_tx, release_rx) = bounded::<()>(1);
    let server = RpcServer::new(&d, Target::new("stopping").server("s1"))
        .endpoint(
            Endpoint::new().method("block", move |_c: &Context, (): ()| {
                started_tx.send(()).unwrap();
                release_rx.recv_timeout(WAIT).unwrap();
                Ok(42u32)
            }),
        )
        .start()
        .unwrap();
    let client = RpcClient::new(&d, Target::new("stopping")).retry(Some(0));
    let call = {
        let c = client.clone();
        thread::spawn(move || c.call::<u32, _>(&ctx(), "block", &()))
    };
    started_rx
        .recv_timeout(WAIT)
        .expect("the method never started");
    server.stop();
    let r: Result<u32, _> = client.call(&ctx(), "block", &());
    assert!(matches!(r, Err(Error::DeliveryFailure(_))), "{r:?}");
    release_tx.send(()).unwrap();
    let r = within("the call in progress", move || call.join().unwrap());
    assert_eq!(r.unwrap(), 42, "the method ran to the end");
    within("RpcServerHandle::wait", move || server.wait());
}

// ----- contexts and serializers -----

struct Tagging;
impl Serializer for Tagging {
    fn serialize_context(&self, ctx: &Context) -> Context {
        let mut c = ctx.clone();
        c.insert("added".to_owned(), Value::from("by-client"));
        c
    }
}

struct Upper;
impl Serializer for Upper {
    fn deserialize_context(&self, mut ctx: Context) -> Context {
        if let Some(Value::String(s)) = ctx.get_mut("user") {
            *s = s.to_uppercase();
        }
        ctx
    }
}

#[test]
fn serializers_transform_context_on_both_sides() {
    let d = Dispatcher::new().unwrap();
    let _s = RpcServer::new(&d, Target::new("ser").server("z1"))
        .endpoint(Endpoint::new().method("ctx", |c: &Context, (): ()| Ok(c.clone())))
        .serializer(Arc::new(Upper))
        .start()
        .unwrap();
    let client = RpcClient::new(&d, Target::new("ser")).serializer(Arc::new(Tagging));
    let mut sent = Context::new();
    sent.insert("user".to_owned(), Value::from("alice"));
    let seen: Context = client.call(&sent, "ctx", &()).unwrap();
    let mut expected = Context::new();
    expected.insert("user".to_owned(), Value::from("ALICE"));
    expected.insert("added".to_owned(), Value::from("by-client"));
    assert_eq!(seen, expected);
    // The caller's own context is untouched.
    assert_eq!(sent.len(), 1);
    assert_eq!(sent["user"], Value::from("alice"));
}

#[test]
fn context_passes_through_to_the_method() {
    let d = Dispatcher::new().unwrap();
    let _s = RpcServer::new(&d, Target::new("echo").server("e1"))
        .endpoint(Endpoint::new().method("rid", |c: &Context, (): ()| {
            Ok(c.get("request_id").cloned().unwrap_or_default())
        }))
        .start()
        .unwrap();
    let client = RpcClient::new(&d, Target::new("echo"));
    let mut c = Context::new();
    c.insert("request_id".to_owned(), Value::from("req-123"));
    c.insert("n".to_owned(), Value::from(7i64));
    let v: Value = client.call(&c, "rid", &()).unwrap();
    assert_eq!(v, Value::from("req-123"));
    let v: Value = client.call(&Context::new(), "rid", &()).unwrap();
    assert_eq!(v, Value::Null);
}
