//! Multi-process tests: the example binaries (`exchange`, `publisher`,
//! `subscriber`) run as real child processes linked over 127.0.0.1, and the
//! test process joins in as a client of the exchange.
//!
//! The examples print one flushed line per event; each child's stdout is read
//! by a thread of its own and every wait on it is bounded. Every child is
//! killed (SIGKILL) and reaped when its wrapper is dropped, also on panic.
//!
//! The examples print their link lines (`ACTIVE ...`, `INACTIVE ...`) from a
//! thread of their own and everything else from their main thread, so the
//! two kinds interleave by chance. The wrapper keeps them apart: order is
//! checked strictly within each kind, never between them.
//!
//! `cargo test` builds the examples first; to run this file alone, run
//! `cargo build --examples` before `cargo test --test processes`.

mod util;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use netsvc::{
    codes, ConnectionAnnouncement, ConnectionState, Dispatcher, Error, Exchange, ProcessId,
    ServiceStatus,
};
use util::child::{spawn_example, Out};
use util::*;

/// The reconnect delay of the test process's own exchange clients.
const RETRY: Duration = Duration::from_millis(200);

// ----- child processes -----

/// Which of a child's two output streams.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stream {
    /// `ACTIVE ...` / `INACTIVE ...`, from the examples' link-logging thread.
    Link,
    /// Everything else, from the main thread.
    Main,
}

fn stream_of(line: &str) -> Stream {
    if line.starts_with("ACTIVE ") || line.starts_with("INACTIVE ") {
        Stream::Link
    } else {
        Stream::Main
    }
}

/// A running example binary with its stdout read line by line.
struct Proc {
    name: String,
    child: std::process::Child,
    out: Receiver<Out>,
    /// Lines read but not yet consumed, per stream.
    link: VecDeque<String>,
    main: VecDeque<String>,
    /// Every line read so far, for failure messages.
    seen: Vec<String>,
    eof: bool,
}

impl Proc {
    fn spawn(name: &str, args: &[String]) -> Proc {
        let (child, rx) = spawn_example(name, args);
        Proc {
            name: format!("{name}[{}]", child.id()),
            child,
            out: rx,
            link: VecDeque::new(),
            main: VecDeque::new(),
            seen: Vec::new(),
            eof: false,
        }
    }

    /// An exchange on 127.0.0.1 (port 0: the OS chooses); returns it with
    /// the port it printed in `LISTENING 127.0.0.1:PORT`.
    fn exchange(port: u16) -> (Proc, u16) {
        let mut p = Proc::spawn(
            "exchange",
            &[
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.to_string(),
            ],
        );
        let line = p.next_line(WAIT);
        let addr: SocketAddr = line
            .strip_prefix("LISTENING ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{}: expected LISTENING <address>, got {line:?}", p.name));
        assert_eq!(addr.ip().to_string(), "127.0.0.1", "{line}");
        if port != 0 {
            assert_eq!(addr.port(), port, "{line}");
        }
        (p, addr.port())
    }

    /// A publisher or subscriber example, client of the exchange at `port`.
    fn client(name: &str, port: u16) -> Proc {
        Proc::spawn(
            name,
            &[
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.to_string(),
            ],
        )
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The start of the process identity of its dispatcher,
    /// `<dispatcher name>@<os pid>/` (the examples name their dispatcher
    /// after themselves).
    fn ident(&self, dispatcher: &str) -> String {
        format!("{dispatcher}@{}/", self.pid())
    }

    fn failure(&self, what: &str) -> String {
        format!(
            "{}: {what}; lines seen so far:\n    {}",
            self.name,
            self.seen.join("\n    ")
        )
    }

    fn queue(&mut self, stream: Stream) -> &mut VecDeque<String> {
        match stream {
            Stream::Link => &mut self.link,
            Stream::Main => &mut self.main,
        }
    }

    /// Reads one more line (into its stream's queue) before `deadline`;
    /// false at the end of the output; panics with `what` at the deadline.
    fn pull(&mut self, deadline: Instant, what: &str) -> bool {
        if self.eof {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match self.out.recv_timeout(left) {
            Ok(Out::Line(_, line)) => {
                self.seen.push(line.clone());
                let stream = stream_of(&line);
                self.queue(stream).push_back(line);
                true
            }
            Ok(Out::Eof) | Err(RecvTimeoutError::Disconnected) => {
                self.eof = true;
                false
            }
            Err(RecvTimeoutError::Timeout) => {
                panic!("{}", self.failure(&format!("no {what} in time")))
            }
        }
    }

    /// Consumes lines of `stream` until one matches `pred` and returns it;
    /// panics with the lines seen so far if none does within `timeout`.
    fn expect_in(
        &mut self,
        stream: Stream,
        what: &str,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(line) = self.queue(stream).pop_front() {
                if pred(&line) {
                    return line;
                }
            }
            if !self.pull(deadline, what) {
                panic!("{}", self.failure(&format!("output ended before {what}")));
            }
        }
    }

    /// The first main-thread line matching `pred` (earlier ones skipped).
    fn expect_line(
        &mut self,
        what: &str,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> String {
        self.expect_in(Stream::Main, what, pred, timeout)
    }

    /// The first link line (`ACTIVE`/`INACTIVE`) matching `pred`.
    fn expect_link(
        &mut self,
        what: &str,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> String {
        self.expect_in(Stream::Link, what, pred, timeout)
    }

    /// Link lines starting with each of `prefixes`, in any order (links
    /// of different peers come up in any order); others are skipped.
    fn expect_links_any_order(&mut self, prefixes: &[String]) {
        let deadline = Instant::now() + WAIT;
        let mut missing: Vec<&String> = prefixes.iter().collect();
        while !missing.is_empty() {
            let what = format!("{missing:?}");
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.expect_link(
                &what,
                |l| missing.iter().any(|p| l.starts_with(p.as_str())),
                left,
            );
            missing.retain(|p| !line.starts_with(p.as_str()));
        }
    }

    /// The very next main-thread line, which must come within `timeout`.
    fn next_line(&mut self, timeout: Duration) -> String {
        self.expect_line("next line", |_| true, timeout)
    }

    /// SIGKILL, and reap the process (its sockets are closed afterwards).
    fn sigkill(&mut self) {
        self.child.kill().expect("kill the child");
        self.child.wait().expect("reap the child");
    }

    /// SIGTERM, through kill(1) (no new dependencies).
    fn sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Reads the rest of the output (at most `timeout`), then reaps the
    /// process: its stdout ends when it exits, so the wait is prompt.
    fn expect_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        while self.pull(deadline, "end of output") {}
        self.child.wait().expect("reap the child")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Never outlive the test, also when it panics.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----- what the examples print -----

/// The publisher's binding as it displays (`publisher@N/<process>`), from its
/// `PUBLISHING as publisher@N/<process>` line.
fn publisher_binding(publ: &mut Proc) -> String {
    let line = publ.next_line(WAIT);
    let binding = line
        .strip_prefix("PUBLISHING as ")
        .unwrap_or_else(|| panic!("expected PUBLISHING as ..., got {line:?}"))
        .to_owned();
    assert!(binding.starts_with("publisher@"), "{line}");
    binding
}

/// The subscriber's binding, from the publisher's first line after
/// `PUBLISHING`: `SUBSCRIPTION Requested subscriber@N system.*`.
fn subscription_requested(publ: &mut Proc) -> String {
    let line = publ.next_line(WAIT);
    line.strip_prefix("SUBSCRIPTION Requested ")
        .and_then(|l| l.strip_suffix(" system.*"))
        .filter(|b| b.starts_with("subscriber@"))
        .unwrap_or_else(|| {
            panic!("expected SUBSCRIPTION Requested subscriber@N system.*, got {line:?}")
        })
        .to_owned()
}

/// `HH:MM:SS UTC` as the examples print times.
fn assert_clock(line: &str, text: &str) {
    let t = text
        .strip_suffix(" UTC")
        .unwrap_or_else(|| panic!("{line}"));
    let parts: Vec<u32> = t
        .split(':')
        .map(|p| {
            assert_eq!(p.len(), 2, "{line}");
            p.parse().unwrap_or_else(|_| panic!("{line}"))
        })
        .collect();
    assert_eq!(parts.len(), 3, "{line}");
    assert!(parts[0] < 24 && parts[1] < 60 && parts[2] < 60, "{line}");
}

/// The time in `<binding> <phrase> <HH:MM:SS UTC>`, checked.
fn report_time(line: &str, binding: &str, phrase: &str) -> String {
    let prefix = format!("{binding} {phrase} ");
    let t = line
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("expected {prefix:?}..., got {line:?}"));
    assert_clock(line, t);
    t.to_owned()
}

/// The link to the exchange `ex_ident` at `port` comes up, then the next
/// lines are the publisher `pb` of process `publ_ident` becoming available
/// and its cached startup report. Returns the startup time printed.
fn subscriber_sees_publisher(
    sub: &mut Proc,
    ex_ident: &str,
    port: u16,
    pb: &str,
    publ_ident: &str,
) -> String {
    let active = format!("ACTIVE {ex_ident}");
    let link_end = format!("(127.0.0.1:{port})");
    sub.expect_link(
        "ACTIVE",
        |l| l.starts_with(&active) && l.ends_with(&link_end),
        WAIT,
    );
    let line = sub.next_line(WAIT);
    let available = format!("AVAILABLE {pb} {publ_ident}");
    assert!(
        line.starts_with(&available),
        "expected {available}..., got {line:?}"
    );
    let line = sub.next_line(WAIT);
    report_time(&line, pb, "originally started at")
}

/// The next link announcement of a test-process exchange client.
fn connection(conns: &Receiver<ConnectionAnnouncement>) -> ConnectionAnnouncement {
    conns
        .recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("no connection announcement within {WAIT:?}"))
}

/// Skips failed attempts until the link comes up; returns the peer.
fn wait_active(conns: &Receiver<ConnectionAnnouncement>) -> ProcessId {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ann = conns
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no Active link within {WAIT:?}"));
        match ann.state() {
            ConnectionState::Active => {
                return ann.remote_process().expect("Active names the peer").clone()
            }
            ConnectionState::Inactive => {
                assert_eq!(ann.remote_process(), None, "a failed attempt names no peer")
            }
        }
    }
}

// ----- tests -----

#[test]
fn three_processes_report_and_answer_calls_across_the_exchange() {
    let (mut ex, port) = Proc::exchange(0);
    let ex_ident = ex.ident("exchange");
    let publ_started = Instant::now();
    let mut publ = Proc::client("publisher", port);
    let publ_ident = publ.ident("publisher");
    let pb = publisher_binding(&mut publ);
    let mut sub = Proc::client("subscriber", port);
    let sub_ident = sub.ident("subscriber");

    // The subscriber: link up, the publisher available, its cached startup
    // report, then a time report each second, in that order.
    let started_at = subscriber_sees_publisher(&mut sub, &ex_ident, port, &pb, &publ_ident);
    for _ in 0..2 {
        let line = sub.next_line(WAIT);
        report_time(&line, &pb, "was still alive at");
    }

    // The publisher heard of the subscription, with its pattern.
    subscription_requested(&mut publ);
    let active = format!("ACTIVE {ex_ident}");
    publ.expect_link("ACTIVE", |l| l.starts_with(&active), WAIT);
    // The exchange saw both clients come, each by its process identity.
    ex.expect_links_any_order(&[
        format!("ACTIVE {publ_ident}"),
        format!("ACTIVE {sub_ident}"),
    ]);

    // The test process joins in and calls the publisher in another process.
    let d = Dispatcher::builder().name("tester").build().unwrap();
    let x = Exchange::client(&d)
        .connect(("127.0.0.1", port), RETRY)
        .unwrap();
    let peer = wait_active(&x.connections());
    assert!(peer.as_str().starts_with(&ex_ident), "{peer}");
    let me = d.service("tester").open().unwrap();
    me.monitor_service_name("publisher");
    let a = wait_announcement(&me, "publisher", None, ServiceStatus::Available);
    let target = a.binding().clone();
    assert_eq!(target.to_string(), pb);
    assert!(
        target.process_identity().as_str().starts_with(&publ_ident),
        "{target:?}"
    );
    assert_ne!(target.process_identity(), &d.process_id());

    let uptime: f64 = me.call(&target, "uptime", &()).unwrap();
    // Measured by the publisher after it started, before we got the answer.
    let bound = publ_started.elapsed().as_secs_f64();
    assert!(
        uptime > 0.0 && uptime <= bound,
        "uptime {uptime} not in (0, {bound}]"
    );

    match me.call::<f64, _>(&target, "no_such_method", &()) {
        Err(Error::Service(f)) => {
            assert_eq!(f.code, codes::METHOD_UNAVAILABLE);
            assert_eq!(f.description, "no method no_such_method");
            assert_eq!(f.origin, "publisher");
        }
        other => panic!("expected a METHOD_UNAVAILABLE failure, got {other:?}"),
    }

    // The test process subscribes too: the same cached startup report.
    me.subscribe_reports("publisher", "system.startup");
    let r = wait_for(&me, "startup report", |e| match e {
        netsvc::Event::Report(r) => Some(r),
        _ => None,
    });
    assert_eq!(r.publisher(), &target);
    assert_eq!(r.subject(), "system.startup");
    let secs: u64 = r.decode().unwrap();
    let clock = format!(
        "{:02}:{:02}:{:02} UTC",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    );
    assert_eq!(clock, started_at);
    let line = publ.next_line(WAIT);
    let me_binding = me.binding().to_string();
    assert_eq!(
        line,
        format!("SUBSCRIPTION Requested {me_binding} system.startup")
    );
    d.shutdown();
}

#[test]
fn exchange_killed_and_restarted() {
    let (mut ex, port) = Proc::exchange(0);
    let old_ex_ident = ex.ident("exchange");
    let mut publ = Proc::client("publisher", port);
    let publ_ident = publ.ident("publisher");
    let pb = publisher_binding(&mut publ);
    let mut sub = Proc::client("subscriber", port);
    let sub_ident = sub.ident("subscriber");
    let started_at = subscriber_sees_publisher(&mut sub, &old_ex_ident, port, &pb, &publ_ident);
    let line = sub.next_line(WAIT);
    report_time(&line, &pb, "was still alive at");
    let sub_binding = subscription_requested(&mut publ);

    // The test process: a caller on one dispatcher, a "holder" that never
    // answers on another, both clients of the exchange.
    let da = Dispatcher::builder().name("caller").build().unwrap();
    let xa = Exchange::client(&da)
        .connect(("127.0.0.1", port), RETRY)
        .unwrap();
    let conns_a = xa.connections();
    let db = Dispatcher::builder().name("holder").build().unwrap();
    let xb = Exchange::client(&db)
        .connect(("127.0.0.1", port), RETRY)
        .unwrap();
    let first_a = wait_active(&conns_a);
    let first_b = wait_active(&xb.connections());
    assert!(first_a.as_str().starts_with(&old_ex_ident), "{first_a}");
    assert_eq!(first_a, first_b);

    let holder = db.service("holder").open().unwrap();
    let caller = Arc::new(da.service("caller").open().unwrap());
    caller.monitor_service_name("holder");
    let a = wait_announcement(&caller, "holder", None, ServiceStatus::Available);
    assert_eq!(a.binding(), holder.binding());
    let target = a.binding().clone();

    let (tx, rx) = crossbeam_channel::bounded(1);
    let calling = {
        let caller = caller.clone();
        let target = target.clone();
        thread::spawn(move || {
            let r = caller.call_timeout::<u64, _>(&target, "hold", &7u64, Duration::from_secs(30));
            let _ = tx.send((r, Instant::now()));
        })
    };
    let held = request(&holder);
    assert_eq!(held.method(), "hold");
    assert_eq!(held.sender(), caller.binding());
    assert_eq!(held.decode::<u64>().unwrap(), 7);

    // SIGKILL the exchange: no goodbye on any link.
    let killed = Instant::now();
    ex.sigkill();

    let (result, ended) = rx
        .recv_timeout(WAIT)
        .expect("the pending call did not end after the exchange died");
    calling.join().unwrap();
    match result {
        Err(Error::ServiceUnavailable(_)) => {}
        other => panic!("expected ServiceUnavailable, got {other:?}"),
    }
    let failed_after = ended.duration_since(killed);
    assert!(
        failed_after < Duration::from_secs(5),
        "the 30 s call failed only after {failed_after:?}"
    );
    wait_announcement(&caller, "holder", None, ServiceStatus::Withdrawn);
    let lost = connection(&conns_a);
    assert_eq!(lost.state(), ConnectionState::Inactive);
    assert_eq!(lost.remote_process(), Some(&first_a));

    // The subscriber: the link and the publisher go.
    let inactive = format!("INACTIVE {old_ex_ident}");
    sub.expect_link("INACTIVE", |l| l.starts_with(&inactive), WAIT);
    let withdrawn = format!("WITHDRAWN {pb} {publ_ident}");
    let line = sub.expect_line(
        "WITHDRAWN",
        |l| !l.starts_with(&format!("{pb} was still alive at ")),
        WAIT,
    );
    assert!(
        line.starts_with(&withdrawn),
        "expected {withdrawn}..., got {line:?}"
    );
    // The publisher: the link goes, and with it the subscriber and its
    // subscription.
    publ.expect_link("INACTIVE", |l| l.starts_with(&inactive), WAIT);
    let line = publ.next_line(WAIT);
    assert_eq!(
        line,
        format!("SUBSCRIPTION Withdrawn {sub_binding} system.*")
    );

    // A new exchange on the same port: everything comes back by itself.
    let restarted = Instant::now();
    let (mut ex2, port2) = Proc::exchange(port);
    assert_eq!(port2, port);
    let new_ex_ident = ex2.ident("exchange");
    assert_ne!(new_ex_ident, old_ex_ident);

    let again = subscriber_sees_publisher(&mut sub, &new_ex_ident, port, &pb, &publ_ident);
    let reports_back = restarted.elapsed();
    // The very report cached before, delivered again.
    assert_eq!(again, started_at);
    let line = sub.next_line(WAIT);
    report_time(&line, &pb, "was still alive at");
    eprintln!(
        "exchange restarted: cached report again after {reports_back:?}, \
         time report after {:?}",
        restarted.elapsed()
    );

    let active = format!("ACTIVE {new_ex_ident}");
    publ.expect_link("ACTIVE", |l| l.starts_with(&active), WAIT);
    assert_eq!(subscription_requested(&mut publ), sub_binding);
    ex2.expect_links_any_order(&[
        format!("ACTIVE {publ_ident}"),
        format!("ACTIVE {sub_ident}"),
    ]);

    // The test process's links are back too, and calls go through again.
    let back = wait_active(&conns_a);
    assert!(back.as_str().starts_with(&new_ex_ident), "{back}");
    assert_ne!(back, first_a);
    let a = wait_announcement(&caller, "holder", None, ServiceStatus::Available);
    assert_eq!(a.binding(), holder.binding());
    drop(held); // its caller was told already: nobody hears of it
    let pending = caller
        .request_timeout::<u64, _>(&target, "again", &8u64, WAIT)
        .unwrap();
    let r = request(&holder);
    assert_eq!(r.method(), "again");
    assert_eq!(r.decode::<u64>().unwrap(), 8);
    r.reply(&80u64).unwrap();
    assert_eq!(pending.wait_timeout(WAIT).unwrap(), 80);
    da.shutdown();
    db.shutdown();
}

#[test]
fn publisher_killed_and_restarted() {
    let (mut ex, port) = Proc::exchange(0);
    let ex_ident = ex.ident("exchange");
    let mut publ = Proc::client("publisher", port);
    let old_ident = publ.ident("publisher");
    let pb = publisher_binding(&mut publ);
    let mut sub = Proc::client("subscriber", port);
    subscriber_sees_publisher(&mut sub, &ex_ident, port, &pb, &old_ident);

    publ.sigkill();
    // The exchange notices the lost link...
    let inactive = format!("INACTIVE {old_ident}");
    ex.expect_link("INACTIVE publisher", |l| l.starts_with(&inactive), WAIT);
    // ...and the subscriber hears the publisher is gone (after any time
    // reports it sent before it died).
    let withdrawn = format!("WITHDRAWN {pb} {old_ident}");
    let line = sub.expect_line(
        "WITHDRAWN",
        |l| !l.starts_with(&format!("{pb} was still alive at ")),
        WAIT,
    );
    assert!(
        line.starts_with(&withdrawn),
        "expected {withdrawn}..., got {line:?}"
    );

    let mut publ2 = Proc::client("publisher", port);
    let new_ident = publ2.ident("publisher");
    assert_ne!(new_ident, old_ident);
    let pb2 = publisher_binding(&mut publ2);
    // AVAILABLE names the new process, then come its own startup report
    // and its time reports: the subscription by name needed no renewing.
    let line = sub.next_line(WAIT);
    let available = format!("AVAILABLE {pb2} {new_ident}");
    assert!(
        line.starts_with(&available),
        "expected {available}..., got {line:?}"
    );
    let line = sub.next_line(WAIT);
    report_time(&line, &pb2, "originally started at");
    let line = sub.next_line(WAIT);
    report_time(&line, &pb2, "was still alive at");
    subscription_requested(&mut publ2);
}

#[test]
fn sigterm_stops_each_example_cleanly() {
    let (mut ex, port) = Proc::exchange(0);
    let ex_ident = ex.ident("exchange");
    let mut publ = Proc::client("publisher", port);
    let publ_ident = publ.ident("publisher");
    let pb = publisher_binding(&mut publ);
    let mut sub = Proc::client("subscriber", port);
    subscriber_sees_publisher(&mut sub, &ex_ident, port, &pb, &publ_ident);

    // The publisher stops: it withdraws itself, the subscriber hears it.
    publ.sigterm();
    publ.expect_line("STOPPED", |l| l == "STOPPED", WAIT);
    let status = publ.expect_exit(WAIT);
    assert!(status.success(), "publisher exited with {status}");
    let withdrawn = format!("WITHDRAWN {pb} {publ_ident}");
    let line = sub.expect_line(
        "WITHDRAWN",
        |l| !l.starts_with(&format!("{pb} was still alive at ")),
        WAIT,
    );
    assert!(
        line.starts_with(&withdrawn),
        "expected {withdrawn}..., got {line:?}"
    );

    // The exchange stops with the subscriber still connected.
    ex.sigterm();
    ex.expect_line("STOPPED", |l| l == "STOPPED", WAIT);
    let status = ex.expect_exit(WAIT);
    assert!(status.success(), "exchange exited with {status}");
    let inactive = format!("INACTIVE {ex_ident}");
    sub.expect_link("INACTIVE", |l| l.starts_with(&inactive), WAIT);

    // The subscriber stops while it is trying to reconnect.
    sub.sigterm();
    let line = sub.next_line(WAIT);
    assert_eq!(line, "STOPPED");
    let status = sub.expect_exit(WAIT);
    assert!(status.success(), "subscriber exited with {status}");
}
