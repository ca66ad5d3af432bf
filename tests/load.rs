//! Load: 200 client connections making calls concurrently through one
//! exchange.
//!
//! The exchange server is a child process (the `exchange` example, on
//! 127.0.0.1 port 0). The echo service lives in one Dispatcher of this test
//! process, connected to the exchange as a client; each of the 200 callers
//! is a thread of this process with a Dispatcher and an exchange client of
//! its own, so every call crosses the exchange twice (caller -> exchange ->
//! echo and back). Every call must be answered correctly, and the
//! exchange's thread count (Linux: `/proc/<pid>/status`) must be the same
//! with 1 connection as with 201: the exchange has no thread per
//! connection.
//!
//! `cargo test` builds the examples first; to run this file alone, run
//! `cargo build --examples` before `cargo test --test load`.

mod util;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use netsvc::{
    ConnectionAnnouncement, ConnectionState, Dispatcher, Event, Exchange, ServiceBinding,
};
use netsvc::{ServiceStatus, Stats};
use util::child::{spawn_example, Out};
use util::*;

/// Client connections wanted (scaled down if the fd limit is too low).
const CLIENTS: usize = 200;
/// Calls per client.
const CALLS: u32 = 20;
/// Timeout of each call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnect delay of every exchange client of this test.
const RETRY: Duration = Duration::from_millis(200);
/// File descriptors per client in this process: the dispatcher's epoll
/// instance and waker, and the socket (one more for slack).
const FDS_PER_CLIENT: u64 = 4;
/// File descriptors for everything else (std streams, pipes, the echo
/// dispatcher, the test harness).
const FDS_SPARE: u64 = 64;

// ----- the exchange child process -----

/// The exchange example as a child process, its stdout read line by line
/// on a thread; killed and reaped when dropped (also on panic).
struct ExchangeProc {
    child: Child,
    lines: Receiver<Out>,
    seen: Vec<String>,
    addr: SocketAddr,
}

impl ExchangeProc {
    fn start() -> ExchangeProc {
        let (child, rx) = spawn_example("exchange", &["--host", "127.0.0.1", "--port", "0"]);
        let mut p = ExchangeProc {
            child,
            lines: rx,
            seen: Vec::new(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let line = p.next_line(Instant::now() + WAIT, "LISTENING");
        p.addr = line
            .strip_prefix("LISTENING ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("expected LISTENING 127.0.0.1:PORT, got {line:?}"));
        assert_eq!(p.addr.ip().to_string(), "127.0.0.1", "{line}");
        assert_ne!(p.addr.port(), 0, "{line}");
        p
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How the exchange's ProcessId displays begins: `exchange@<pid>/`.
    fn ident(&self) -> String {
        format!("exchange@{}/", self.pid())
    }

    fn next_line(&mut self, deadline: Instant, what: &str) -> String {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(Out::Line(_, line)) => {
                self.seen.push(line.clone());
                line
            }
            Ok(Out::Eof) => panic!(
                "exchange: exited before {what}; the last lines it printed:\n    {}",
                self.seen[self.seen.len().saturating_sub(20)..].join("\n    ")
            ),
            Err(e) => panic!(
                "exchange: no {what} ({e}); the last lines it printed:\n    {}",
                self.seen[self.seen.len().saturating_sub(20)..].join("\n    ")
            ),
        }
    }

    /// Waits for one `<state> <process> (<address>)` line for each of
    /// `names` (the dispatcher names of the peers), in any order.
    fn expect_links(&mut self, state: &str, names: &BTreeSet<String>) {
        let deadline = Instant::now() + WAIT;
        let mut missing = names.clone();
        let prefix = format!("{state} ");
        while !missing.is_empty() {
            let line = self.next_line(
                deadline,
                &format!("{state} line for {} more peers", missing.len()),
            );
            let Some(rest) = line.strip_prefix(&prefix) else {
                continue;
            };
            let name = rest.split('@').next().unwrap_or("");
            assert!(
                missing.remove(name) || !names.contains(name),
                "exchange: a second {state} line for {name}: {line:?}"
            );
        }
    }
}

impl Drop for ExchangeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The thread count of process `pid` (the `Threads:` line of
/// /proc/<pid>/status).
#[cfg(target_os = "linux")]
fn threads_of(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Threads: line in /proc/{pid}/status:\n{status}"))
}

/// The soft limit on open files of this process (the exchange child
/// inherits it); None if unlimited or unknown.
fn max_open_files() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// How many clients the fd limit allows, at most [`CLIENTS`].
fn client_count() -> usize {
    let needed = CLIENTS as u64 * FDS_PER_CLIENT + FDS_SPARE;
    match max_open_files() {
        Some(limit) if limit < needed => {
            let n = (limit.saturating_sub(FDS_SPARE) / FDS_PER_CLIENT) as usize;
            println!(
                "load: the open-file limit is {limit}, below the {needed} that {CLIENTS} \
                 clients need: scaling down to {n} clients"
            );
            assert!(
                n >= 10,
                "the open-file limit {limit} is too low for a load test"
            );
            n
        }
        _ => CLIENTS,
    }
}

// ----- the clients -----

enum Msg {
    /// Connected, and the echo service is visible.
    Ready(usize),
    /// Every call answered correctly.
    Done(usize),
    Failed(usize, String),
}

/// What the echo service answers to `(client, seq)`.
fn expected(client: u32, seq: u32) -> (u32, u32, u64) {
    (client, seq, u64::from(client) * 1_000_003 + u64::from(seq))
}

/// Skips failed attempts until the link is Active; returns the peer as it
/// displays.
fn wait_active(conns: &Receiver<ConnectionAnnouncement>) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ann = conns
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no Active link within {WAIT:?}"));
        match ann.state() {
            ConnectionState::Active => {
                return ann
                    .remote_process()
                    .expect("Active names the peer")
                    .to_string()
            }
            ConnectionState::Inactive => {
                assert_eq!(ann.remote_process(), None, "a failed attempt names no peer")
            }
        }
    }
}

/// One client: its own Dispatcher and exchange client; waits for the echo
/// service, reports Ready, waits for the go (the `go` sender dropped),
/// then makes [`CALLS`] calls and checks each answer.
fn client(
    i: usize,
    addr: SocketAddr,
    exchange: &str,
    echo: &ServiceBinding,
    events: &Sender<Msg>,
    go: &Receiver<()>,
) -> Stats {
    let d = Dispatcher::builder()
        .name(&format!("client{i}"))
        .queue_capacity(64)
        .build()
        .expect("build a dispatcher");
    let ex = Exchange::client(&d).connect(addr, RETRY).expect("connect");
    let peer = wait_active(&ex.connections());
    assert!(
        peer.starts_with(exchange),
        "client{i}: linked to {peer}, not to {exchange}"
    );
    let me = d.service("caller").open().expect("open the caller");
    me.monitor_service_name("echo");
    let a = wait_announcement(&me, "echo", None, ServiceStatus::Available);
    assert_eq!(a.binding(), echo, "client{i}: another echo service");
    events.send(Msg::Ready(i)).expect("the test is gone");
    match go.recv_timeout(WAIT) {
        Err(RecvTimeoutError::Disconnected) => {}
        other => panic!("client{i}: no go within {WAIT:?}: {other:?}"),
    }
    let client = i as u32;
    for seq in 0..CALLS {
        let r: (u32, u32, u64) = me
            .call_timeout(echo, "echo", &(client, seq), CALL_TIMEOUT)
            .unwrap_or_else(|e| panic!("client{i}: call {seq} failed: {e:?}"));
        assert_eq!(r, expected(client, seq), "client{i}: call {seq}");
    }
    let stats = d.stats();
    drop(me);
    d.shutdown();
    stats
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    match p.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => match p.downcast::<&str>() {
            Ok(s) => (*s).to_owned(),
            Err(_) => "a panic".to_owned(),
        },
    }
}

/// The next message from the clients; a failure fails the test.
fn next_msg(events: &Receiver<Msg>, timeout: Duration, what: &str) -> Msg {
    match events.recv_timeout(timeout) {
        Ok(Msg::Failed(i, why)) => panic!("client{i} failed: {why}"),
        Ok(m) => m,
        Err(e) => panic!("no {what} within {timeout:?}: {e}"),
    }
}

#[test]
fn two_hundred_clients_call_through_one_exchange_without_more_exchange_threads() {
    let n = client_count();
    let mut exchange = ExchangeProc::start();
    let addr = exchange.addr;
    let exchange_ident = exchange.ident();

    // The echo service, in a dispatcher of its own linked to the exchange.
    let de = Dispatcher::builder().name("echo").build().unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let counter = answered.clone();
    let echo = de
        .service("echo")
        .spawn(move |_svc, ev| {
            if let Event::Request(r) = ev {
                let (client, seq): (u32, u32) = r.decode().expect("decode (client, seq)");
                counter.fetch_add(1, Ordering::SeqCst);
                r.reply(&expected(client, seq)).expect("reply");
            }
        })
        .unwrap();
    let echo_binding = echo.binding().clone();
    let ex = Exchange::client(&de).connect(addr, RETRY).unwrap();
    let peer = wait_active(&ex.connections());
    assert!(peer.starts_with(&exchange_ident), "{peer}");
    exchange.expect_links("ACTIVE", &BTreeSet::from(["echo".to_owned()]));

    #[cfg(target_os = "linux")]
    let threads_before = threads_of(exchange.pid());

    // The clients connect and wait for the echo service.
    let (events_tx, events) = crossbeam_channel::unbounded();
    let (go_tx, go) = crossbeam_channel::bounded::<()>(0);
    let mut threads = Vec::with_capacity(n);
    for i in 0..n {
        let events_tx = events_tx.clone();
        let go = go.clone();
        let echo = echo_binding.clone();
        let ident = exchange_ident.clone();
        let t = thread::Builder::new()
            .name(format!("client{i}"))
            .stack_size(512 << 10)
            .spawn(move || {
                let run = panic::catch_unwind(AssertUnwindSafe(|| {
                    client(i, addr, &ident, &echo, &events_tx, &go)
                }));
                match run {
                    Ok(stats) => {
                        let _ = events_tx.send(Msg::Done(i));
                        Some(stats)
                    }
                    Err(p) => {
                        let _ = events_tx.send(Msg::Failed(i, panic_message(p)));
                        None
                    }
                }
            })
            .expect("spawn a client thread");
        threads.push(t);
    }
    drop(events_tx);
    drop(go);
    let mut ready = BTreeSet::new();
    while ready.len() < n {
        match next_msg(
            &events,
            WAIT,
            &format!("Ready from {} clients", n - ready.len()),
        ) {
            Msg::Ready(i) => assert!(ready.insert(i), "client{i} ready twice"),
            Msg::Done(i) => panic!("client{i} done before the go"),
            Msg::Failed(..) => unreachable!(),
        }
    }
    let names: BTreeSet<String> = (0..n).map(|i| format!("client{i}")).collect();
    exchange.expect_links("ACTIVE", &names);

    // All n+1 links are up: the exchange has the threads it had with one.
    #[cfg(target_os = "linux")]
    assert_eq!(
        threads_of(exchange.pid()),
        threads_before,
        "the exchange's threads with {} links vs 1",
        n + 1
    );

    // Go: every client makes its calls, all at once.
    drop(go_tx);
    let mut done = BTreeSet::new();
    while done.len() < n {
        match next_msg(&events, CALL_TIMEOUT + WAIT, "Done") {
            Msg::Done(i) => assert!(done.insert(i), "client{i} done twice"),
            Msg::Ready(i) => panic!("client{i} ready twice"),
            Msg::Failed(..) => unreachable!(),
        }
    }
    for t in threads {
        let stats = t
            .join()
            .expect("client thread")
            .expect("every client is done");
        assert_eq!(stats.late_replies, 0);
    }
    assert_eq!(answered.load(Ordering::SeqCst), n * CALLS as usize);
    assert_eq!(de.stats().busy_replies, 0);

    // The clients are gone; the exchange saw each go, still with the same
    // threads.
    exchange.expect_links("INACTIVE", &names);
    #[cfg(target_os = "linux")]
    assert_eq!(threads_of(exchange.pid()), threads_before);

    drop(echo);
    de.shutdown();
}
