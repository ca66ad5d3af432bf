//! oslo.messaging-style RPC across processes: the `exchange` and
//! `rpc_server` example binaries run as real child processes linked over
//! 127.0.0.1, and the test process joins the exchange as a client and calls
//! the servers with an [`RpcClient`].
//!
//! `rpc_server --server NAME` serves topic `calculator` (exchange
//! `openstack`) as server NAME with one endpoint of version 1.2 (`add`,
//! `divide`, `sleep(ms)`, `whoami`) on 4 threads, and prints
//! `SERVING calculator on NAME` once started.
//!
//! Readiness is always an event: the exchange's `LISTENING` line, each
//! server's `SERVING` line, the test process's own link going Active, and
//! then the group monitor of the test process seeing every server's binding
//! become Available in group `rpc:openstack:calculator` (so the test
//! process's registry, which the client's routing uses, holds them).
//!
//! Every child is killed (SIGKILL) and reaped when its wrapper is dropped,
//! also on panic. `cargo test` builds the examples first; to run this file
//! alone, run `cargo build --examples` before `cargo test --test
//! rpc_processes`.

mod util;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use netsvc::{
    ConnectionState, Context, Dispatcher, Error, Exchange, RpcClient, Service, ServiceStatus,
    Target, Value,
};
use util::child::{spawn_example, Out};
use util::*;

/// The reconnect delay of the test process's exchange client.
const RETRY: Duration = Duration::from_millis(200);

/// The group every server of topic `calculator` joins.
const GROUP: &str = "rpc:openstack:calculator";

// ----- child processes -----

/// A running example binary with its stdout read line by line by a thread
/// of its own.
///
/// The examples print their link lines (`ACTIVE ...`, `INACTIVE ...`) from
/// a thread of their own, so they interleave with the other lines by
/// chance; [`Proc::expect_line`] only looks at the other lines.
struct Proc {
    name: String,
    child: std::process::Child,
    out: Receiver<Out>,
    /// Main-thread lines read but not yet consumed.
    main: VecDeque<String>,
    /// Every line read so far, for failure messages.
    seen: Vec<String>,
    eof: bool,
}

fn is_link_line(line: &str) -> bool {
    line.starts_with("ACTIVE ") || line.starts_with("INACTIVE ")
}

impl Proc {
    fn spawn(name: &str, args: &[String]) -> Proc {
        let (child, rx) = spawn_example(name, args);
        Proc {
            name: format!("{name}[{}]", child.id()),
            child,
            out: rx,
            main: VecDeque::new(),
            seen: Vec::new(),
            eof: false,
        }
    }

    /// An exchange on 127.0.0.1, port chosen by the OS; returns it with the
    /// port it printed in `LISTENING 127.0.0.1:PORT`.
    fn exchange() -> (Proc, u16) {
        let mut p = Proc::spawn(
            "exchange",
            &[
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                "0".into(),
            ],
        );
        let line = p.expect_line("LISTENING", |_| true);
        let addr: SocketAddr = line
            .strip_prefix("LISTENING ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{}: expected LISTENING <address>, got {line:?}", p.name));
        assert_eq!(addr.ip().to_string(), "127.0.0.1", "{line}");
        assert_ne!(addr.port(), 0, "{line}");
        (p, addr.port())
    }

    /// An `rpc_server --server <server>`, client of the exchange at `port`;
    /// returns once it printed `SERVING calculator on <server>`.
    fn rpc_server(port: u16, server: &str) -> Proc {
        let mut p = Proc::spawn(
            "rpc_server",
            &[
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.to_string(),
                "--server".into(),
                server.into(),
            ],
        );
        let line = p.expect_line("SERVING", |_| true);
        assert_eq!(line, format!("SERVING calculator on {server}"));
        p
    }

    fn failure(&self, what: &str) -> String {
        format!(
            "{}: {what}; lines seen so far:\n    {}",
            self.name,
            self.seen.join("\n    ")
        )
    }

    /// Consumes main-thread lines until one matches `pred` and returns it;
    /// panics with the lines seen so far if none does within [`WAIT`].
    fn expect_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            while let Some(line) = self.main.pop_front() {
                if pred(&line) {
                    return line;
                }
            }
            if self.eof {
                panic!("{}", self.failure(&format!("output ended before {what}")));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok(Out::Line(_, line)) => {
                    self.seen.push(line.clone());
                    if !is_link_line(&line) {
                        self.main.push_back(line);
                    }
                }
                Ok(Out::Eof) | Err(RecvTimeoutError::Disconnected) => self.eof = true,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{}", self.failure(&format!("no {what} within {WAIT:?}")))
                }
            }
        }
    }

    /// SIGKILL, and reap the process (its sockets are closed by then).
    fn sigkill(&mut self) {
        self.child.kill().expect("kill the child");
        self.child.wait().expect("reap the child");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Never outlive the test, also when it panics.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----- the test process as a client of the exchange -----

/// The service name of server `server` of topic `calculator`.
fn server_name(server: &str) -> String {
    format!("{GROUP}:{server}")
}

/// Everything one test runs: the exchange, the server processes, and the
/// test process's dispatcher (an exchange client) with a service that
/// monitors the topic's group.
struct Cluster {
    d: Dispatcher,
    /// Monitors [`GROUP`].
    watcher: Service,
    /// The server processes, by server name.
    servers: BTreeMap<String, Proc>,
    _ex: Proc,
    port: u16,
}

impl Cluster {
    /// An exchange, one `rpc_server` process per name, and the test
    /// process linked to the exchange, once every server is in the group
    /// as the test process sees it.
    fn start(servers: &[&str]) -> Cluster {
        let (ex, port) = Proc::exchange();
        let d = Dispatcher::builder().name("rpc-tester").build().unwrap();
        let x = Exchange::client(&d)
            .connect(("127.0.0.1", port), RETRY)
            .unwrap();
        let conns = x.connections();
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ann = conns
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no Active link to the exchange within {WAIT:?}"));
            if ann.state() == ConnectionState::Active {
                break;
            }
        }
        let watcher = d.service("watcher").audience("").open().unwrap();
        watcher.monitor_service_group(GROUP);
        let mut cluster = Cluster {
            d,
            watcher,
            servers: BTreeMap::new(),
            _ex: ex,
            port,
        };
        for s in servers {
            cluster.add_server(s);
        }
        assert_eq!(
            cluster.group_names(),
            servers.iter().map(|s| server_name(s)).collect::<Vec<_>>()
        );
        cluster
    }

    /// Starts one more server process and waits until the test process
    /// sees it in the group.
    fn add_server(&mut self, server: &str) {
        let p = Proc::rpc_server(self.port, server);
        let a = wait_announcement(
            &self.watcher,
            &server_name(server),
            Some(GROUP),
            ServiceStatus::Available,
        );
        assert_ne!(
            a.binding().process_identity(),
            &self.d.process_id(),
            "the server runs in another process"
        );
        self.servers.insert(server.to_owned(), p);
    }

    /// The service names of the group's members, as the test process's
    /// registry has them.
    fn group_names(&self) -> Vec<String> {
        self.d
            .lookup_service_group(GROUP)
            .iter()
            .map(|b| b.service_name().to_owned())
            .collect()
    }

    fn client(&self) -> RpcClient {
        RpcClient::new(&self.d, Target::new("calculator")).timeout(WAIT)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.d.shutdown();
    }
}

fn ctx_of(user: &str) -> Context {
    let mut ctx = Context::new();
    ctx.insert("user".to_owned(), Value::from(user));
    ctx
}

/// `whoami`'s answer: `<server>, at the service of <user>`.
fn whoami(server: &str, user: &str) -> String {
    format!("{server}, at the service of {user}")
}

/// The server that answered a `whoami`.
fn answered_by(answer: &str) -> String {
    answer
        .split_once(", at the service of ")
        .unwrap_or_else(|| panic!("not a whoami answer: {answer:?}"))
        .0
        .to_owned()
}

// ----- tests -----

#[test]
fn call_to_a_named_server_reaches_only_that_process() {
    let c = Cluster::start(&["s1", "s2"]);
    let client = c.client();
    let to_s2 = client.prepare().server("s2").build();
    for _ in 0..6 {
        let me: String = to_s2.call(&ctx_of("alice"), "whoami", &()).unwrap();
        assert_eq!(me, whoami("s2", "alice"));
    }
    // No user in the context: the method sees none.
    let me: String = to_s2.call(&Context::new(), "whoami", &()).unwrap();
    assert_eq!(me, whoami("s2", "nobody"));
    let to_s1 = client.prepare().server("s1").build();
    let me: String = to_s1.call(&ctx_of("bob"), "whoami", &()).unwrap();
    assert_eq!(me, whoami("s1", "bob"));
    // A server of the topic that does not exist.
    match client
        .prepare()
        .server("s3")
        .retry(Some(0))
        .build()
        .call::<String, _>(&Context::new(), "whoami", &())
    {
        Err(Error::DeliveryFailure(_)) => {}
        other => panic!("expected DeliveryFailure for server s3, got {other:?}"),
    }
}

#[test]
fn topic_calls_go_round_the_server_processes_and_casts_are_delivered() {
    let c = Cluster::start(&["s1", "s2", "s3"]);
    let client = c.client();
    let ctx = ctx_of("carol");
    let answers: Vec<String> = (0..14)
        .map(|_| {
            let a: String = client.call(&ctx, "whoami", &()).unwrap();
            answered_by(&a)
        })
        .collect();
    // In turn: the first three are the three servers, then the same cycle.
    let mut first: Vec<&str> = answers[..3].iter().map(String::as_str).collect();
    first.sort_unstable();
    assert_eq!(first, ["s1", "s2", "s3"], "{answers:?}");
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a, &answers[i % 3], "call {i} out of turn: {answers:?}");
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &answers {
        *counts.entry(a.as_str()).or_default() += 1;
    }
    let mut per_server: Vec<usize> = counts.values().copied().collect();
    per_server.sort_unstable();
    assert_eq!(per_server, [4, 5, 5], "{counts:?}");
    assert_eq!(per_server.iter().sum::<usize>(), 14);

    // Casts: the example's methods leave no trace a cast could show, so
    // what is checked is that each was handed to a server.
    for i in 0..20 {
        client
            .cast(&ctx, "sleep", &0u64)
            .unwrap_or_else(|e| panic!("cast {i}: {e:?}"));
    }
    // The servers are still all there and answering.
    let sum: i64 = client.call(&ctx, "add", &(20i64, 22i64)).unwrap();
    assert_eq!(sum, 42);
    assert_eq!(c.group_names().len(), 3);
}

#[test]
fn remote_exception_crosses_processes() {
    let c = Cluster::start(&["s1"]);
    let client = c.client();
    let ctx = Context::new();
    match client.call::<i64, _>(&ctx, "divide", &(7i64, 0i64)) {
        Err(Error::Remote(r)) => {
            assert_eq!(r.exc_type, "ZeroDivisionError");
            assert_eq!(r.value, "division by zero");
        }
        other => panic!("expected a ZeroDivisionError, got {other:?}"),
    }
    // The server goes on serving.
    let q: i64 = client.call(&ctx, "divide", &(7i64, 2i64)).unwrap();
    assert_eq!(q, 3);
    match client.call::<i64, _>(&ctx, "add", &(i64::MAX, 1i64)) {
        Err(Error::Remote(r)) => {
            assert_eq!(r.exc_type, "OverflowError");
            assert_eq!(r.value, "sum out of range");
        }
        other => panic!("expected an OverflowError, got {other:?}"),
    }
    match client.call::<i64, _>(&ctx, "multiply", &(2i64, 3i64)) {
        Err(Error::NoSuchMethod(m)) => assert_eq!(m, "multiply"),
        other => panic!("expected NoSuchMethod, got {other:?}"),
    }
    // Arguments the method cannot decode.
    match client.call::<i64, _>(&ctx, "add", &"two and three") {
        Err(Error::Remote(r)) => assert_eq!(r.exc_type, "TypeError", "{r:?}"),
        other => panic!("expected a TypeError, got {other:?}"),
    }
}

#[test]
fn versions_are_checked_across_processes() {
    let c = Cluster::start(&["s1"]);
    let client = c.client();
    let ctx = Context::new();
    // The endpoint is 1.2: a newer minor version is not served.
    match client
        .prepare()
        .version("1.5")
        .build()
        .call::<i64, _>(&ctx, "add", &(1i64, 2i64))
    {
        Err(Error::UnsupportedVersion(v)) => assert_eq!(v, "1.5 (method add)"),
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    // Another major version neither.
    match client
        .prepare()
        .version("2.0")
        .build()
        .call::<i64, _>(&ctx, "add", &(1i64, 2i64))
    {
        Err(Error::UnsupportedVersion(v)) => assert_eq!(v, "2.0 (method add)"),
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    // Older and equal minor versions are.
    for v in ["1.1", "1.2", "1.0"] {
        let sum: i64 = client
            .prepare()
            .version(v)
            .build()
            .call(&ctx, "add", &(1i64, 2i64))
            .unwrap_or_else(|e| panic!("version {v}: {e:?}"));
        assert_eq!(sum, 3, "version {v}");
    }
    // Above the client's cap: refused before sending.
    let capped = client.prepare().version_cap("1.0").version("1.1").build();
    assert!(!capped.can_send_version("1.1"));
    match capped.call::<i64, _>(&ctx, "add", &(1i64, 2i64)) {
        Err(Error::VersionCap(_)) => {}
        other => panic!("expected VersionCap, got {other:?}"),
    }
    match capped.cast(&ctx, "sleep", &0u64) {
        Err(Error::VersionCap(_)) => {}
        other => panic!("expected VersionCap for a cast, got {other:?}"),
    }
}

#[test]
fn calls_without_any_server_process_fail_by_retry_policy() {
    let c = Cluster::start(&[]);
    assert_eq!(c.group_names(), Vec::<String>::new());
    let ctx = Context::new();
    let client = RpcClient::new(&c.d, Target::new("calculator"));

    // No retry: at once, although the timeout is long.
    let started = Instant::now();
    let r = client
        .prepare()
        .retry(Some(0))
        .timeout(Duration::from_secs(30))
        .build()
        .call::<i64, _>(&ctx, "add", &(1i64, 2i64));
    let took = started.elapsed();
    assert!(
        matches!(r, Err(Error::DeliveryFailure(_))),
        "expected DeliveryFailure, got {r:?}"
    );
    assert!(took < Duration::from_secs(5), "a 30 s call took {took:?}");
    let r = client
        .prepare()
        .retry(Some(0))
        .build()
        .cast(&ctx, "sleep", &0u64);
    assert!(
        matches!(r, Err(Error::DeliveryFailure(_))),
        "expected DeliveryFailure for a cast, got {r:?}"
    );

    // One retry: a server is waited for one retry interval (1 s), then the
    // call gives up, long before its timeout.
    let started = Instant::now();
    let r = client
        .prepare()
        .retry(Some(1))
        .timeout(Duration::from_secs(30))
        .build()
        .call::<i64, _>(&ctx, "add", &(1i64, 2i64));
    let took = started.elapsed();
    assert!(
        matches!(r, Err(Error::DeliveryFailure(_))),
        "expected DeliveryFailure after one retry, got {r:?}"
    );
    assert!(took >= Duration::from_millis(950), "gave up after {took:?}");
    assert!(took < Duration::from_secs(5), "a 30 s call took {took:?}");

    // Retry until the timeout: the call waits for a server the whole
    // 500 ms, then gives up with a delivery failure (rpc brief: "None →
    // waits until a server appears or the timeout (then DeliveryFailure)").
    let started = Instant::now();
    let r = client
        .prepare()
        .retry(None)
        .timeout(Duration::from_millis(500))
        .build()
        .call::<i64, _>(&ctx, "add", &(1i64, 2i64));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(450), "gave up after {took:?}");
    assert!(
        matches!(r, Err(Error::DeliveryFailure(_))),
        "expected DeliveryFailure after the 500 ms timeout, got {r:?}"
    );
}

#[test]
fn call_monitor_keeps_a_long_call_alive_across_processes() {
    let c = Cluster::start(&["s1"]);
    let client = c
        .client()
        .prepare()
        .call_monitor_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(30))
        .build();
    // 3 s of work, six times the monitor period: heartbeats keep it going.
    let slept: u64 = client.call(&Context::new(), "sleep", &3000u64).unwrap();
    assert_eq!(slept, 3000);
    assert_eq!(c.d.stats().calls_timed_out, 0);
}

#[test]
fn killed_server_process_fails_a_monitored_call_promptly() {
    let mut c = Cluster::start(&["s1"]);
    let client = c
        .client()
        .prepare()
        .call_monitor_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(30))
        .build();
    let (tx, rx) = crossbeam_channel::bounded(1);
    let calling = thread::spawn(move || {
        let r = client.call::<u64, _>(&Context::new(), "sleep", &3000u64);
        let _ = tx.send((r, Instant::now()));
    });
    // The server process prints nothing when a call arrives, so there is
    // no event to wait on: 300 ms is far more than a loopback round trip
    // through the exchange, and far less than the 3 s the method sleeps,
    // so the call is surely running in the server when it is killed. (If
    // it were not, the call would still fail the same way: the server is
    // withdrawn either way.)
    thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    c.servers.get_mut("s1").unwrap().sigkill();

    let (r, ended) = rx
        .recv_timeout(WAIT)
        .expect("the call did not end after its server was killed");
    calling.join().unwrap();
    let after = ended.duration_since(killed);
    assert!(
        after < Duration::from_secs(5),
        "the 30 s call failed only {after:?} after the kill"
    );
    // The link loss withdraws the server, which fails the call as
    // unavailable before the 500 ms call monitor could run out.
    assert!(
        matches!(r, Err(Error::ServiceUnavailable(_))),
        "expected ServiceUnavailable, got {r:?}"
    );
    wait_announcement(
        &c.watcher,
        &server_name("s1"),
        Some(GROUP),
        ServiceStatus::Withdrawn,
    );
    assert_eq!(c.group_names(), Vec::<String>::new());
    assert_eq!(c.d.stats().calls_timed_out, 0);
}

#[test]
fn timed_out_call_leaves_concurrent_calls_alone() {
    let c = Cluster::start(&["s1"]);
    let client = c.client();
    let start = Arc::new(Barrier::new(11));

    let slow = {
        let client = client.prepare().timeout(Duration::from_millis(300)).build();
        let start = start.clone();
        thread::spawn(move || {
            start.wait();
            client.call::<u64, _>(&Context::new(), "sleep", &2000u64)
        })
    };
    let adders: Vec<_> = (0..10i64)
        .map(|t| {
            let client = client.clone();
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                (0..5i64)
                    .map(|i| client.call::<i64, _>(&Context::new(), "add", &(t * 100, i)))
                    .collect::<Vec<_>>()
            })
        })
        .collect();

    match slow.join().unwrap() {
        Err(Error::Timeout) => {}
        other => panic!("expected Timeout, got {other:?}"),
    }
    for (t, h) in adders.into_iter().enumerate() {
        let sums = h.join().unwrap();
        let want: Vec<i64> = (0..5).map(|i| t as i64 * 100 + i).collect();
        let got: Vec<i64> = sums
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| panic!("thread {t}: {e:?}")))
            .collect();
        assert_eq!(got, want, "thread {t}");
    }
    // (Not checked: this dispatcher's `calls_timed_out`. The exchange and
    // the server hold the call with the remaining time too, rounded down to
    // whole milliseconds, so one of them usually times it out first and
    // replies Timeout, and the count goes up in that process instead.)
}

#[test]
fn sequential_calls_from_one_thread_answer_in_order() {
    let c = Cluster::start(&["s1", "s2"]);
    let client = c.client();
    let ctx = Context::new();
    let got: Vec<i64> = (0..50i64)
        .map(|i| client.call(&ctx, "add", &(i, 0i64)).unwrap())
        .collect();
    assert_eq!(got, (0..50).collect::<Vec<i64>>());
}
