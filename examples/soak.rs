//! Soak: a few processes exchanging calls and reports for a long time, with
//! the memory (RSS) of every process sampled every 10 seconds.
//!
//! `cargo build --release --example soak && target/release/examples/soak --minutes 10`
//! (or `cargo run --release --example soak -- --minutes N`; default 10,
//! fractions allowed). `--secret KEY` and `--group NAME` run the exchange
//! and its clients with that shared secret and in that group; `--help`
//! lists the options; `RUST_LOG` (e.g. `debug`, `netsvc=info`; default
//! `warn`) chooses what every process logs on stderr.
//!
//! It starts, as child processes of itself (its own binary with `--role`):
//!
//! - `exchange`: an exchange server on 127.0.0.1 (port chosen by the OS);
//! - `publisher`: publishes `soak.tick` every 10 ms (not cached), every
//!   10th tick `soak.recent.<n>` (50 subjects in turn, cached for 2 s) and
//!   every 100th `soak.status` (cached for ever); it also serves `echo`;
//! - `subscriber`: subscribes to `soak.*` and counts what arrives (and the
//!   ticks missing from the sequence);
//! - `caller1`, `caller2`: call `echo` in a loop (payloads of 0-4 KiB,
//!   echoed back reversed and checked; every 10th round 8 pipelined
//!   requests; every 100th an unknown method, which must fail with code
//!   55), pausing 1 ms between rounds.
//!
//! Every 10 s it prints a `SAMPLE` line with the VmRSS (from
//! /proc/<pid>/status, Linux) of every process, itself included, and the
//! counts so far; at the end a summary: per process the RSS at 1 minute,
//! at the end and the maximum, whether the exchange's RSS grew after the
//! first minute, calls made and failed, reports published and received.
//! Then it stops every child (closing their stdin; children also stop on
//! SIGINT/SIGTERM, and by themselves if this process dies) and waits for
//! them, at most 10 s each before killing them. Ctrl-C (SIGINT) or SIGTERM
//! stops the run early, with the summary of what was seen.

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use common::say;
use crossbeam_channel::{select, Receiver, RecvTimeoutError, Sender};
use netsvc::{codes, Dispatcher, Error, Event, Exchange, Lifetime, ServiceStatus};

/// Time between two RSS samples.
const SAMPLE: Duration = Duration::from_secs(10);
/// Time between two reports of the publisher.
const TICK: Duration = Duration::from_millis(10);
/// Pause of a caller between two rounds of calls.
const CALL_PAUSE: Duration = Duration::from_millis(1);
/// Timeout of every call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect delay of the clients.
const RETRY: Duration = Duration::from_millis(200);
/// How often each child prints its counters.
const STATS_EVERY: Duration = Duration::from_secs(1);
/// How long the start-up and each child's stop may take.
const START_LIMIT: Duration = Duration::from_secs(30);
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// `--secret` and `--group`, given to the parent and passed on to every
/// child.
static LINK: OnceLock<common::Args> = OnceLock::new();

/// The options, as `--help` prints them.
const USAGE: &str = "Soak: an exchange, a publisher, a subscriber and two callers as child \
processes, exchanging calls and reports for a long time, with the RSS of every process \
sampled every 10 s.

usage: soak [OPTIONS]

options:
  --minutes N    how long to run, fractions allowed (default 10)
  --secret KEY   the exchange's shared secret (default none)
  --group NAME   the exchange group (default none)
  -h, --help     print this help and exit
  (--role ROLE and --connect HOST:PORT are for the child processes)
";

fn main() {
    common::init_logger();
    let mut link = common::Args {
        host: "127.0.0.1".to_owned(),
        port: 0,
        server: String::new(),
        secret: None,
        group: String::new(),
        tls_cert: None,
        tls_key: None,
        tls_client_ca: None,
        tls_ca: None,
        tls_server_name: None,
        count: 0,
    };
    let mut minutes = 10.0f64;
    let mut role = None;
    let mut connect: Option<SocketAddr> = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |what: &str| {
            it.next()
                .unwrap_or_else(|| usage(&format!("{a} takes {what}")))
        };
        match a.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}{}", common::LOG_HELP);
                std::process::exit(0);
            }
            "--secret" => link.secret = Some(value("a key")),
            "--group" => link.group = value("a name"),
            "--minutes" => {
                minutes = value("a number")
                    .parse()
                    .ok()
                    .filter(|m: &f64| *m > 0.0 && m.is_finite())
                    .unwrap_or_else(|| usage("--minutes takes a positive number"))
            }
            "--role" => role = Some(value("a role")),
            "--connect" => {
                connect = Some(
                    value("an address")
                        .parse()
                        .unwrap_or_else(|_| usage("--connect takes host:port")),
                )
            }
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let _ = LINK.set(link);
    let result = match role.as_deref() {
        None => {
            run(Duration::from_secs_f64(minutes * 60.0));
            return;
        }
        Some("exchange") => exchange(),
        Some(r) => {
            let addr = connect.unwrap_or_else(|| usage("a client role needs --connect"));
            match r {
                "publisher" => publisher(addr),
                "subscriber" => subscriber(addr),
                "caller1" => caller(addr, 1),
                "caller2" => caller(addr, 2),
                other => usage(&format!("unknown role {other}")),
            }
        }
    };
    if let Err(e) = result {
        say(format!("ERROR {e}"));
        std::process::exit(1);
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("{problem}\n\n{USAGE}");
    std::process::exit(2)
}

// ===================== the children =====================

/// A channel that gets a message when the child should stop: its stdin
/// ends (the parent closed it, or died) or SIGINT/SIGTERM arrives.
fn stop_channel() -> Receiver<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let (tx, rx) = crossbeam_channel::unbounded();
    let on_eof = tx.clone();
    thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 64];
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        let _ = on_eof.send(());
    });
    match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
        Ok(mut signals) => {
            thread::spawn(move || {
                if signals.forever().next().is_some() {
                    let _ = tx.send(());
                }
            });
        }
        Err(e) => say(format!("ERROR cannot catch signals: {e}")),
    }
    rx
}

/// `STATS k=v ...` on one line, then the dispatcher's own counters.
fn stats_line(d: &Dispatcher, mine: &[(&str, u64)]) -> String {
    let s = d.stats();
    let mut line = String::from("STATS");
    for (k, v) in mine.iter().chain(&[
        ("frames_in", s.frames_in),
        ("frames_out", s.frames_out),
        ("reconnects", s.reconnects),
        ("reports_dropped", s.reports_dropped),
        ("events_dropped", s.events_dropped),
        ("busy_replies", s.busy_replies),
        ("late_replies", s.late_replies),
        ("slow_consumers", s.slow_consumers),
    ]) {
        line.push_str(&format!(" {k}={v}"));
    }
    line
}

/// The `--secret` and `--group` of this run.
fn link() -> &'static common::Args {
    LINK.get().expect("set in main")
}

fn client_dispatcher(name: &str, addr: SocketAddr) -> netsvc::Result<(Dispatcher, Exchange)> {
    let d = Dispatcher::builder().name(name).build()?;
    let ex = link().client_builder(&d)?.connect(addr, RETRY)?;
    Ok((d, ex))
}

fn exchange() -> netsvc::Result<()> {
    let stop = stop_channel();
    let d = Dispatcher::builder().name("exchange").build()?;
    let ex = link().server_builder(&d)?.listen("127.0.0.1:0")?;
    say(format!("LISTENING {}", ex.local_addr()));
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(STATS_EVERY) {
        say(stats_line(&d, &[]));
    }
    say(stats_line(&d, &[]));
    d.shutdown();
    say("STOPPED");
    Ok(())
}

/// The payload of round `seq`: 0 to 4095 bytes.
fn payload(seq: u64) -> Vec<u8> {
    let len = (seq.wrapping_mul(2_654_435_761) % 4096) as usize;
    (0..len).map(|i| (seq as usize + i) as u8).collect()
}

fn publisher(addr: SocketAddr) -> netsvc::Result<()> {
    let stop = stop_channel();
    let (d, ex) = client_dispatcher("publisher", addr)?;
    let echo = d.service("echo").spawn(|_svc, ev| {
        if let Event::Request(r) = ev {
            if r.method() != "echo" {
                let m = r.method().to_owned();
                let _ = r.fail(codes::METHOD_UNAVAILABLE, format!("no method {m}"));
                return;
            }
            match r.decode::<(u32, u64, Vec<u8>)>() {
                Ok((caller, seq, mut data)) => {
                    data.reverse();
                    let _ = r.reply(&(caller, seq, data));
                }
                Err(e) => {
                    let _ = r.fail(codes::REQUEST_DECODING_ERROR, e.to_string());
                }
            }
        }
    })?;
    let publ = d.service("publisher").open()?;
    let links = ex.connections();
    wait_active(&links, &stop)?;
    say("READY");
    let mut seq = 0u64;
    let mut published = 0u64;
    let mut subscriptions = 0u64;
    // The ticks start when the subscriber has subscribed, so that it
    // receives every report published.
    let mut next = Instant::now();
    let mut ticking = false;
    let mut last_stats = Instant::now();
    loop {
        select! {
            recv(stop) -> _ => break,
            recv(links) -> _ => {}
            recv(publ.receiver()) -> ev => match ev {
                Ok(Event::Timer(_)) => {
                    seq += 1;
                    let body = (seq, payload(seq % 512));
                    publ.publish_report("soak.tick", &body, Lifetime::None)?;
                    published += 1;
                    if seq % 10 == 0 {
                        let subject = format!("soak.recent.{}", seq / 10 % 50);
                        publ.publish_report(&subject, &seq, Lifetime::For(Duration::from_secs(2)))?;
                        published += 1;
                    }
                    if seq % 100 == 0 {
                        publ.publish_report("soak.status", &seq, Lifetime::Forever)?;
                        published += 1;
                    }
                    next += TICK;
                    let now = Instant::now();
                    if next < now {
                        next = now; // fell behind: do not burst to catch up
                    }
                    publ.start_timer(next - now, 1);
                    if last_stats.elapsed() >= STATS_EVERY {
                        last_stats = Instant::now();
                        say(stats_line(&d, &[("published", published), ("subscriptions", subscriptions)]));
                    }
                }
                Ok(Event::Subscription(s)) => {
                    subscriptions += 1;
                    if !ticking && s.status() == netsvc::SubscriptionStatus::Requested {
                        ticking = true;
                        next = Instant::now() + TICK;
                        publ.start_timer(TICK, 1);
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    say(stats_line(
        &d,
        &[("published", published), ("subscriptions", subscriptions)],
    ));
    drop(publ);
    drop(echo);
    d.shutdown();
    say("STOPPED");
    Ok(())
}

/// Waits for the exchange link (or the stop).
fn wait_active(
    links: &Receiver<netsvc::ConnectionAnnouncement>,
    stop: &Receiver<()>,
) -> netsvc::Result<()> {
    let deadline = Instant::now() + START_LIMIT;
    loop {
        select! {
            recv(stop) -> _ => return Err(Error::Closed),
            recv(links) -> ann => match ann {
                Ok(a) if a.state() == netsvc::ConnectionState::Active => return Ok(()),
                Ok(_) => {}
                Err(_) => return Err(Error::Closed),
            },
            default(deadline.saturating_duration_since(Instant::now())) => return Err(Error::Timeout),
        }
    }
}

fn subscriber(addr: SocketAddr) -> netsvc::Result<()> {
    let stop = stop_channel();
    let (d, _ex) = client_dispatcher("subscriber", addr)?;
    let sub = d.service("subscriber").open()?;
    sub.subscribe_reports("publisher", "soak.*");
    let mut reports = 0u64;
    let mut ticks = 0u64;
    let mut gaps = 0u64;
    let mut bad = 0u64;
    let mut last_tick = 0u64; // the ticks start at 1
    let mut publishers = 0u64;
    let mut ready = false;
    let mut last_stats = Instant::now();
    loop {
        select! {
            recv(stop) -> _ => break,
            recv(sub.receiver()) -> ev => match ev {
                Ok(Event::Report(r)) => {
                    reports += 1;
                    if r.subject() == "soak.tick" {
                        match r.decode::<(u64, Vec<u8>)>() {
                            Ok((seq, data)) if data == payload(seq % 512) => {
                                ticks += 1;
                                let last = last_tick;
                                if seq > last + 1 {
                                    gaps += seq - last - 1;
                                } else if seq <= last {
                                    bad += 1;
                                    say(format!("ERROR tick {seq} after {last}"));
                                }
                                last_tick = seq;
                                if !ready {
                                    ready = true;
                                    say("READY");
                                }
                            }
                            other => {
                                bad += 1;
                                say(format!("ERROR bad tick: {other:?}"));
                            }
                        }
                    }
                }
                Ok(Event::Publisher(p)) if p.status() == ServiceStatus::Available => publishers += 1,
                Ok(_) => {}
                Err(_) => break,
            },
            default(STATS_EVERY) => {}
        }
        if last_stats.elapsed() >= STATS_EVERY {
            last_stats = Instant::now();
            say(stats_line(
                &d,
                &[
                    ("reports", reports),
                    ("ticks", ticks),
                    ("gaps", gaps),
                    ("bad", bad),
                    ("publishers", publishers),
                ],
            ));
        }
    }
    say(stats_line(
        &d,
        &[
            ("reports", reports),
            ("ticks", ticks),
            ("gaps", gaps),
            ("bad", bad),
            ("publishers", publishers),
        ],
    ));
    drop(sub);
    d.shutdown();
    say("STOPPED");
    Ok(())
}

fn caller(addr: SocketAddr, id: u32) -> netsvc::Result<()> {
    let stop = stop_channel();
    let (d, _ex) = client_dispatcher(&format!("caller{id}"), addr)?;
    let me = d.service(&format!("caller{id}")).open()?;
    me.monitor_service_name("echo");
    let mut echo = None;
    let mut calls = 0u64;
    let mut failed = 0u64;
    let mut seq = 0u64;
    let mut round = 0u64;
    let mut ready = false;
    let mut last_stats = Instant::now();
    let report = |calls: u64, failed: u64| {
        say(stats_line(&d, &[("calls", calls), ("failed", failed)]));
    };
    while stop.try_recv().is_err() {
        // The echo service's comings and goings.
        while let Some(ev) = me.try_recv() {
            if let Event::Announcement(a) = ev {
                match a.status() {
                    ServiceStatus::Available => echo = Some(a.binding().clone()),
                    ServiceStatus::Withdrawn => {
                        if echo.as_ref() == Some(a.binding()) {
                            echo = None
                        }
                    }
                }
            }
        }
        let Some(to) = echo.clone() else {
            if let Ok(Some(Event::Announcement(a))) = me.recv_timeout(Duration::from_millis(100)) {
                if a.status() == ServiceStatus::Available {
                    echo = Some(a.binding().clone());
                }
            }
            continue;
        };
        if !ready {
            ready = true;
            say("READY");
        }
        round += 1;
        let stopping = || !stop.is_empty();
        let mut fail = |what: String| {
            // A call cut short by the stop is not a failure.
            if !stopping() {
                failed += 1;
                say(format!("ERROR {what}"));
            }
        };
        if round % 100 == 0 {
            calls += 1;
            match me.call_timeout::<(), _>(&to, "nope", &(), CALL_TIMEOUT) {
                Err(Error::Service(f)) if f.code == codes::METHOD_UNAVAILABLE => {}
                other => fail(format!("unknown method: {other:?}")),
            }
        } else if round % 10 == 0 {
            let mut pending = Vec::new();
            for _ in 0..8 {
                seq += 1;
                let args = (id, seq, payload(seq));
                match me.request_timeout::<(u32, u64, Vec<u8>), _>(&to, "echo", &args, CALL_TIMEOUT)
                {
                    Ok(p) => pending.push((seq, p)),
                    Err(e) => {
                        calls += 1;
                        fail(format!("request {seq}: {e}"));
                    }
                }
            }
            for (s, p) in pending {
                calls += 1;
                check(id, s, p.wait(), &mut fail);
            }
        } else {
            seq += 1;
            calls += 1;
            let args = (id, seq, payload(seq));
            let r = me.call_timeout::<(u32, u64, Vec<u8>), _>(&to, "echo", &args, CALL_TIMEOUT);
            check(id, seq, r, &mut fail);
        }
        if last_stats.elapsed() >= STATS_EVERY {
            last_stats = Instant::now();
            report(calls, failed);
        }
        thread::sleep(CALL_PAUSE);
    }
    report(calls, failed);
    drop(me);
    d.shutdown();
    say("STOPPED");
    Ok(())
}

fn check(id: u32, seq: u64, r: netsvc::Result<(u32, u64, Vec<u8>)>, fail: &mut impl FnMut(String)) {
    match r {
        Ok((i, s, mut data)) => {
            data.reverse();
            if i != id || s != seq || data != payload(seq) {
                fail(format!(
                    "call {seq}: wrong answer ({i}, {s}, {} bytes)",
                    data.len()
                ));
            }
        }
        Err(e) => fail(format!("call {seq}: {e}")),
    }
}

// ===================== the parent =====================

/// (seconds since the start, VmRSS in kB if it could be read).
type Sample = (u64, Option<u64>);

enum Out {
    Line(usize, String),
    Eof(usize),
}

struct Kid {
    role: &'static str,
    child: std::process::Child,
    stdin: Option<ChildStdin>,
    pid: u32,
    /// The latest `STATS` counters.
    stats: BTreeMap<String, u64>,
    ready: bool,
    eof: bool,
    exit: Option<ExitStatus>,
    /// (seconds since the start, VmRSS in kB).
    rss: Vec<Sample>,
}

fn spawn_kid(
    index: usize,
    role: &'static str,
    connect: Option<SocketAddr>,
    out: &Sender<Out>,
) -> Kid {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args(["--role", role]);
    let link = link();
    if let Some(key) = &link.secret {
        cmd.args(["--secret", key]);
    }
    if !link.group.is_empty() {
        cmd.args(["--group", &link.group]);
    }
    if let Some(addr) = connect {
        cmd.args(["--connect", &addr.to_string()]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the {role}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let stdin = child.stdin.take();
    let out = out.clone();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if out.send(Out::Line(index, line)).is_err() {
                return;
            }
        }
        let _ = out.send(Out::Eof(index));
    });
    Kid {
        role,
        pid: child.id(),
        child,
        stdin,
        stats: BTreeMap::new(),
        ready: false,
        eof: false,
        exit: None,
        rss: Vec::new(),
    }
}

/// VmRSS of a process in kB (Linux); None if it cannot be read.
fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

struct Parent {
    kids: Vec<Kid>,
    out: Receiver<Out>,
    signals: Receiver<()>,
    interrupted: bool,
    listening: Option<SocketAddr>,
    /// The parent's own RSS samples.
    own_rss: Vec<Sample>,
}

impl Parent {
    /// Handles children's output until `deadline` or `until` holds; false
    /// if a signal came.
    fn pump(&mut self, deadline: Instant, until: impl Fn(&Parent) -> bool) -> bool {
        loop {
            if until(self) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            select! {
                recv(self.signals) -> _ => {
                    self.interrupted = true;
                    return false;
                }
                recv(self.out) -> m => match m {
                    Ok(m) => self.handle(m),
                    Err(_) => return true,
                },
                default(left) => return true,
            }
        }
    }

    fn handle(&mut self, m: Out) {
        match m {
            Out::Line(i, line) => {
                let kid = &mut self.kids[i];
                if let Some(rest) = line.strip_prefix("STATS") {
                    for kv in rest.split_whitespace() {
                        if let Some((k, v)) = kv.split_once('=') {
                            if let Ok(v) = v.parse() {
                                kid.stats.insert(k.to_owned(), v);
                            }
                        }
                    }
                } else if line == "READY" {
                    kid.ready = true;
                } else if let Some(addr) = line.strip_prefix("LISTENING ") {
                    self.listening = addr.parse().ok();
                    kid.ready = true;
                } else if line != "STOPPED" {
                    say(format!("[{}] {line}", kid.role));
                }
            }
            Out::Eof(i) => self.kids[i].eof = true,
        }
    }

    fn stat(&self, role: &str, key: &str) -> u64 {
        self.kids
            .iter()
            .filter(|k| k.role.starts_with(role))
            .map(|k| k.stats.get(key).copied().unwrap_or(0))
            .sum()
    }

    fn sample(&mut self, t: u64) {
        let mut line = format!("SAMPLE {t:>5} s  RSS kB:");
        for kid in &mut self.kids {
            if kid.exit.is_none() {
                if let Ok(Some(status)) = kid.child.try_wait() {
                    kid.exit = Some(status);
                    say(format!("[{}] EXITED unexpectedly: {status}", kid.role));
                }
            }
            let rss = if kid.exit.is_none() {
                rss_kb(kid.pid)
            } else {
                None
            };
            kid.rss.push((t, rss));
            line.push_str(&format!(" {} {}", kid.role, show(rss)));
        }
        let own = rss_kb(std::process::id());
        self.own_rss.push((t, own));
        line.push_str(&format!(" soak {}", show(own)));
        line.push_str(&format!(
            " | calls {} failed {} | reports published {} received {}",
            self.stat("caller", "calls"),
            self.stat("caller", "failed"),
            self.stat("publisher", "published"),
            self.stat("subscriber", "reports"),
        ));
        say(line);
    }

    /// Closes the child's stdin and waits (at most [`STOP_LIMIT`]) for it
    /// to end; kills it after that.
    fn stop(&mut self, i: usize) {
        drop(self.kids[i].stdin.take());
        let deadline = Instant::now() + STOP_LIMIT;
        self.pump(deadline, |p| p.kids[i].eof);
        let kid = &mut self.kids[i];
        if !kid.eof {
            say(format!(
                "[{}] did not stop within {STOP_LIMIT:?}: killed",
                kid.role
            ));
            let _ = kid.child.kill();
        }
        if let Ok(status) = kid.child.wait() {
            kid.exit.get_or_insert(status);
        }
    }
}

fn show(rss: Option<u64>) -> String {
    rss.map(|r| r.to_string()).unwrap_or_else(|| "-".to_owned())
}

fn signals() -> Receiver<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).expect("catch SIGINT and SIGTERM");
    thread::spawn(move || {
        for _ in signals.forever() {
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    rx
}

fn run(duration: Duration) {
    let (out_tx, out) = crossbeam_channel::unbounded();
    let mut p = Parent {
        kids: Vec::new(),
        out,
        signals: signals(),
        interrupted: false,
        listening: None,
        own_rss: Vec::new(),
    };
    say(format!(
        "SOAK for {:.1} min: an exchange, a publisher (a report every {TICK:?}), a subscriber, \
         2 callers; RSS sampled every {SAMPLE:?}",
        duration.as_secs_f64() / 60.0
    ));
    let start_deadline = Instant::now() + START_LIMIT;
    p.kids.push(spawn_kid(0, "exchange", None, &out_tx));
    let mut started = p.pump(start_deadline, |p| p.listening.is_some() || p.kids[0].eof);
    if let (true, Some(addr)) = (started, p.listening) {
        for role in ["publisher", "subscriber", "caller1", "caller2"] {
            let i = p.kids.len();
            p.kids.push(spawn_kid(i, role, Some(addr), &out_tx));
        }
        started = p.pump(start_deadline, |p| p.kids.iter().all(|k| k.ready || k.eof));
    }
    let all_ready = p.kids.len() == 5 && p.kids.iter().all(|k| k.ready);
    let start = Instant::now();
    let mut elapsed = 0u64;
    if started && all_ready {
        say(format!(
            "STARTED {}",
            p.kids
                .iter()
                .map(|k| format!("{}={}", k.role, k.pid))
                .collect::<Vec<_>>()
                .join(" ")
        ));
        p.sample(0);
        let mut next = start + SAMPLE.min(duration);
        loop {
            if !p.pump(next, |_| false) {
                say("INTERRUPTED");
                elapsed = start.elapsed().as_secs();
                break;
            }
            elapsed = (next - start).as_secs();
            p.sample(elapsed);
            if next - start >= duration {
                break;
            }
            next = (next + SAMPLE).min(start + duration);
        }
    } else if !p.interrupted {
        say(format!(
            "ERROR the processes did not all start within {START_LIMIT:?}: {}",
            p.kids
                .iter()
                .map(|k| format!("{} {}", k.role, if k.ready { "ready" } else { "not ready" }))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // Stop the callers first (so that no call fails because its echo
    // service went), then the publisher, then the subscriber (so that it
    // receives every report published), the exchange last.
    for i in [4, 3, 1, 2, 0] {
        if i < p.kids.len() {
            p.stop(i);
        }
    }
    summary(&p, elapsed);
    let clean = p.kids.iter().all(|k| k.exit.is_some_and(|s| s.success()));
    if !(started && all_ready && clean)
        || p.stat("caller", "failed") > 0
        || p.stat("subscriber", "bad") > 0
    {
        std::process::exit(1);
    }
}

fn at(rss: &[Sample], t: u64) -> Option<u64> {
    rss.iter().find(|(s, _)| *s == t).and_then(|(_, r)| *r)
}

fn summary(p: &Parent, elapsed: u64) {
    say(format!(
        "SUMMARY after {elapsed} s{}",
        if p.interrupted { " (interrupted)" } else { "" }
    ));
    say(format!(
        "  {:<11} {:>8} {:>12} {:>12} {:>12}",
        "process", "pid", "RSS@1min kB", "RSS@end kB", "max kB"
    ));
    let mut rows: Vec<(&str, u32, &[Sample])> = p
        .kids
        .iter()
        .map(|k| (k.role, k.pid, k.rss.as_slice()))
        .collect();
    rows.push(("soak", std::process::id(), p.own_rss.as_slice()));
    for (role, pid, rss) in &rows {
        let end = rss.last().and_then(|(_, r)| *r);
        let max = rss.iter().filter_map(|(_, r)| *r).max();
        say(format!(
            "  {:<11} {:>8} {:>12} {:>12} {:>12}",
            role,
            pid,
            show(at(rss, 60)),
            show(end),
            show(max)
        ));
    }
    if let Some(ex) = p.kids.first() {
        let one = at(&ex.rss, 60);
        let end = ex.rss.last().and_then(|(_, r)| *r);
        let max_after = ex
            .rss
            .iter()
            .filter(|(t, _)| *t > 60)
            .filter_map(|(_, r)| *r)
            .max();
        match (one, end, max_after) {
            (Some(one), Some(end), Some(max_after)) => say(format!(
                "  exchange RSS after the first minute: {one} kB at 1 min, {end} kB at the end \
                 ({:+} kB), max {max_after} kB after 1 min ({:+} kB): grew: {}",
                end as i64 - one as i64,
                max_after as i64 - one as i64,
                if end > one { "YES" } else { "no" }
            )),
            _ => say("  exchange RSS after the first minute: not enough samples (run >= 70 s)"),
        }
    }
    let failed = p.stat("caller", "failed");
    say(format!(
        "  calls made {} (caller1 {}, caller2 {}), failed {failed}",
        p.stat("caller", "calls"),
        p.stat("caller1", "calls"),
        p.stat("caller2", "calls"),
    ));
    say(format!(
        "  reports published {}, received {} (ticks {}, ticks missing {}, bad {})",
        p.stat("publisher", "published"),
        p.stat("subscriber", "reports"),
        p.stat("subscriber", "ticks"),
        p.stat("subscriber", "gaps"),
        p.stat("subscriber", "bad"),
    ));
    say(format!(
        "  exchange frames in {} out {}, slow consumers {}, reports dropped {}, events dropped {}",
        p.stat("exchange", "frames_in"),
        p.stat("exchange", "frames_out"),
        p.stat("exchange", "slow_consumers"),
        p.stat("exchange", "reports_dropped"),
        p.stat("exchange", "events_dropped"),
    ));
    let reconnects: u64 = p
        .kids
        .iter()
        .map(|k| k.stats.get("reconnects").copied().unwrap_or(0))
        .sum();
    say(format!("  client reconnects {reconnects}"));
    for kid in &p.kids {
        let how = match kid.exit {
            Some(s) if s.success() => "exited 0".to_owned(),
            Some(s) => format!("exited: {s}"),
            None => "still running?".to_owned(),
        };
        say(format!("  {} ({}): {how}", kid.role, kid.pid));
    }
}
