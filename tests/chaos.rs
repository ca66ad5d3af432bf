//! Chaos (issue 6): an exchange with 2 publishers, 2 subscribers and 4
//! callers, each in a process of its own, linked over 127.0.0.1. The
//! exchange is killed with SIGKILL and restarted on the same port 5 times,
//! at moments drawn from a seeded PRNG (the seed is printed; set
//! `NETSVC_CHAOS_SEED` to replay a run).
//!
//! Checked throughout:
//! - every call returns Ok or a clear Err within its timeout: a call that
//!   takes longer than timeout + 1 s, or a caller silent for longer than
//!   that, is HUNG; the only Err accepted is "service unavailable" (a link
//!   lost mid-call) or a timeout, and no call fails while everything is up;
//! - after each restart everything resumes without user code: the new
//!   exchange links all 8 clients; each publisher loses both subscriptions
//!   and gets both back; each subscriber hears both publishers withdrawn,
//!   then available again, gets both cached startup reports again and new
//!   time reports from both publishers; each caller links to the new
//!   exchange and then gets an Ok;
//! - no process other than the killed exchange exits (its output never
//!   ends, and `try_wait()` is `None` for every one of them at the end).
//!
//! Publishers, subscribers and the exchange are the example binaries. The
//! callers are this test binary run again in a role: `caller_role` returns
//! at once unless `NETSVC_CHAOS_ROLE=caller` is set.
//!
//! Both publishers display as the same binding (`publisher@N`: agent ids
//! count per dispatcher), so a subscriber's time reports do not say which
//! publisher sent them. But one publisher never sends two time reports
//! stamped with the same second (it publishes `now`, then waits a second),
//! so two reports stamped with the same second, received while both
//! publishers are available, come from both publishers.
//!
//! `cargo test` builds the examples first; to run this file alone, run
//! `cargo build --examples` before `cargo test --test chaos`.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{select, Receiver, Select, TryRecvError};
use netsvc::{
    ConnectionAnnouncement, ConnectionState, Dispatcher, Event, Exchange, ServiceBinding,
    ServiceStatus,
};
use util::child::{example, read_lines, Out};
use util::WAIT;

const ROLE_VAR: &str = "NETSVC_CHAOS_ROLE";
const PORT_VAR: &str = "NETSVC_CHAOS_PORT";
const SEED_VAR: &str = "NETSVC_CHAOS_SEED";

const PUBLISHERS: usize = 2;
const SUBSCRIBERS: usize = 2;
const CALLERS: usize = 4;
const RESTARTS: usize = 5;

/// Each caller's call timeout.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// A call taking longer than this is HUNG: its timeout + 1 s.
const HUNG_AFTER: Duration = Duration::from_secs(3);
/// A caller waiting for a publisher prints `IDLE` this often.
const IDLE_WAIT: Duration = Duration::from_millis(500);
/// A caller silent for longer than this is HUNG (a call, then an idle wait).
const SILENT_AFTER: Duration = Duration::from_millis(3500);
/// The callers' reconnect delay.
const CALLER_RETRY: Duration = Duration::from_millis(200);
/// The pause between two calls of one caller (events are handled during it).
const PACE: Duration = Duration::from_millis(5);
/// A caller stops by itself after this long at most.
const CALLER_BOUND: Duration = Duration::from_secs(60);
/// How long the exchange stays up after everything recovered, then how long
/// it stays down (milliseconds, drawn from the PRNG).
const UPTIME_MS: (u64, u64) = (300, 3500);
const DOWNTIME_MS: (u64, u64) = (0, 1500);

// ----- the caller role (a child process) -----

/// The caller role: returns at once unless this binary was started by
/// `exchange_killed_and_restarted_five_times_everything_resumes` as one of
/// its callers.
#[test]
fn caller_role() {
    let Ok(role) = std::env::var(ROLE_VAR) else {
        return;
    };
    assert_eq!(role, "caller", "unknown {ROLE_VAR}={role}");
    let port: u16 = std::env::var(PORT_VAR)
        .unwrap_or_else(|_| panic!("{PORT_VAR} is not set"))
        .parse()
        .unwrap_or_else(|e| panic!("{PORT_VAR}: {e}"));
    run_caller(port);
}

/// One flushed line on stdout, for the parent to read as it happens.
fn say(line: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.as_ref());
    let _ = out.flush();
}

fn on_link(a: &ConnectionAnnouncement) {
    // Failed attempts (Inactive, no peer) are not worth a line.
    match (a.state(), a.remote_process()) {
        (ConnectionState::Active, Some(p)) => say(format!("LINK ACTIVE {p}")),
        (ConnectionState::Active, None) => say("LINK ACTIVE -"),
        (ConnectionState::Inactive, Some(p)) => say(format!("LINK INACTIVE {p}")),
        (ConnectionState::Inactive, None) => {}
    }
}

fn on_event(publishers: &mut Vec<ServiceBinding>, e: Event) {
    if let Event::Announcement(a) = e {
        if a.group().is_some() || a.binding().service_name() != "publisher" {
            return;
        }
        match a.status() {
            ServiceStatus::Available => {
                if !publishers.contains(a.binding()) {
                    publishers.push(a.binding().clone());
                }
            }
            ServiceStatus::Withdrawn => publishers.retain(|b| b != a.binding()),
        }
    }
}

/// Calls `uptime` on the available publishers in turn, one line per call:
/// `CALL OK <ms>` or `CALL ERR <ms> <error>`; `LINK ACTIVE|INACTIVE
/// <exchange>` as its link comes and goes (from this same thread, so a
/// `CALL OK` after `LINK ACTIVE x` is a call made while linked to x);
/// `IDLE` while waiting (bounded) for a publisher. Stops when stdin closes,
/// or after [`CALLER_BOUND`].
fn run_caller(port: u16) {
    let (stdin_open, stdin_closed) = crossbeam_channel::bounded::<()>(0);
    thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        drop(stdin_open);
    });
    // Ends a `test caller_role ... ` line the harness may have left open.
    say("");
    say("CALLER START");
    let d = Dispatcher::builder()
        .name("caller")
        .build()
        .expect("the caller's dispatcher");
    let ex = Exchange::client(&d)
        .connect(("127.0.0.1", port), CALLER_RETRY)
        .expect("the caller's exchange client");
    let links = ex.connections();
    let me = d.service("caller").open().expect("the caller's service");
    me.monitor_service_name("publisher");

    let mut publishers: Vec<ServiceBinding> = Vec::new();
    let (mut ok, mut err, mut turn) = (0u64, 0u64, 0usize);
    let bound = Instant::now() + CALLER_BOUND;
    'calls: loop {
        while let Ok(a) = links.try_recv() {
            on_link(&a);
        }
        while let Some(e) = me.try_recv() {
            on_event(&mut publishers, e);
        }
        if stdin_closed.try_recv() == Err(TryRecvError::Disconnected) || Instant::now() >= bound {
            break;
        }
        if publishers.is_empty() {
            select! {
                recv(me.receiver()) -> e => match e {
                    Ok(e) => on_event(&mut publishers, e),
                    Err(_) => break 'calls,
                },
                recv(links) -> a => if let Ok(a) = a { on_link(&a) },
                recv(stdin_closed) -> _ => break 'calls,
                default(IDLE_WAIT) => say("IDLE"),
            }
            continue;
        }
        let target = publishers[turn % publishers.len()].clone();
        turn += 1;
        let started = Instant::now();
        let r = me.call_timeout::<f64, _>(&target, "uptime", &(), CALL_TIMEOUT);
        let ms = started.elapsed().as_millis();
        match r {
            Ok(up) if up.is_finite() && up > 0.0 => {
                ok += 1;
                say(format!("CALL OK {ms}"));
            }
            Ok(up) => {
                err += 1;
                say(format!("CALL ERR {ms} bad uptime {up}"));
            }
            Err(e) => {
                err += 1;
                say(format!("CALL ERR {ms} {e}"));
            }
        }
        select! {
            recv(me.receiver()) -> e => match e {
                Ok(e) => on_event(&mut publishers, e),
                Err(_) => break 'calls,
            },
            recv(links) -> a => if let Ok(a) = a { on_link(&a) },
            recv(stdin_closed) -> _ => break 'calls,
            default(PACE) => {},
        }
    }
    say(format!("CALLER DONE ok={ok} err={err}"));
    d.shutdown();
}

// ----- child processes (the wrapper of tests/processes.rs) -----

/// A running child with its stdout read line by line on a thread of its
/// own; killed (SIGKILL) and reaped when dropped, also on panic.
struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    out: Receiver<Out>,
    /// Every line read so far, for failure messages.
    seen: Vec<String>,
    eof: bool,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, piped_stdin: bool) -> Proc {
        let mut child = cmd
            .stdin(if piped_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdin = child.stdin.take();
        let rx = read_lines(name, &mut child);
        Proc {
            name: format!("{name}[{}]", child.id()),
            child,
            stdin,
            out: rx,
            seen: Vec::new(),
            eof: false,
        }
    }

    /// An example binary, linked to (or listening on) 127.0.0.1:`port`.
    fn example(name: &str, port: u16) -> Proc {
        let mut cmd = Command::new(example(name));
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
        Proc::spawn(name, cmd, false)
    }

    /// This test binary again, in the caller role.
    fn caller(port: u16) -> Proc {
        let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
        cmd.args(["--exact", "caller_role", "--nocapture"])
            .env(ROLE_VAR, "caller")
            .env(PORT_VAR, port.to_string());
        Proc::spawn("caller", cmd, true)
    }

    /// The start of its dispatcher's process identity,
    /// `<dispatcher name>@<os pid>/`.
    fn ident(&self, dispatcher: &str) -> String {
        format!("{dispatcher}@{}/", self.child.id())
    }

    /// The last lines it printed, for failure messages.
    fn tail(&self, n: usize) -> String {
        let from = self.seen.len().saturating_sub(n);
        format!(
            "{} (last {} of {} lines):\n    {}",
            self.name,
            self.seen.len() - from,
            self.seen.len(),
            self.seen[from..].join("\n    ")
        )
    }

    /// SIGKILL, and reap the process (its sockets are closed afterwards).
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

/// `ACTIVE|INACTIVE <process> (<address>)`, an Inactive line followed by
/// `: <reason>: <detail>`: (active, process).
fn link_line(line: &str) -> Option<(bool, &str)> {
    let (active, rest) = if let Some(rest) = line.strip_prefix("ACTIVE ") {
        (true, rest)
    } else {
        (false, line.strip_prefix("INACTIVE ")?)
    };
    let (process, addr) = rest.split_once(' ')?;
    let closed = addr.ends_with(')') || (!active && addr.contains("): "));
    (addr.starts_with('(') && closed).then_some((active, process))
}

/// `HH:MM:SS UTC`, checked.
fn clock(line: &str, text: &str) -> String {
    let t = text
        .strip_suffix(" UTC")
        .unwrap_or_else(|| panic!("no HH:MM:SS UTC in {line:?}"));
    let parts: Vec<&str> = t.split(':').collect();
    assert!(
        parts.len() == 3
            && parts
                .iter()
                .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit())),
        "no HH:MM:SS UTC in {line:?}"
    );
    t.to_owned()
}

/// The deterministic PRNG of the kill and restart moments (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn millis(&mut self, (lo, hi): (u64, u64)) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo + 1))
    }
}

// ----- what the parent knows of each child -----

struct ExchangeState {
    /// None while it is dead.
    proc: Option<Proc>,
    /// `exchange@<pid>/` of the live one.
    ident: Option<String>,
    listening: Option<SocketAddr>,
    /// The clients (their idents) whose link it announced Active.
    links: BTreeSet<String>,
    ready_at: Option<Instant>,
}

struct PublisherState {
    proc: Proc,
    ident: String,
    /// `publisher@N/<process>`, from its `PUBLISHING as ...` line.
    binding: Option<String>,
    /// Subscriptions Requested minus Withdrawn.
    subscriptions: i64,
    /// Since the last kill, its subscriptions all went away.
    lost_all: bool,
    /// The exchange process its link is up with.
    link: Option<String>,
    ready_at: Option<Instant>,
}

struct SubscriberState {
    proc: Proc,
    ident: String,
    available: [bool; PUBLISHERS],
    /// Since the last kill, it heard every publisher withdrawn.
    lost_all: bool,
    /// Cached startup reports since it lost all publishers.
    startups: Vec<String>,
    /// The startup reports of the first connection, sorted.
    expected_startups: Option<Vec<String>>,
    /// Time reports per second stamp, since the last change of `available`.
    alive_by_second: BTreeMap<String, usize>,
    /// Two time reports with one stamp since the last change: both
    /// publishers are delivering.
    both_delivering: bool,
    link: Option<String>,
    reports: u64,
    startup_reports: u64,
    ready_at: Option<Instant>,
}

#[derive(Default)]
struct Calls {
    ok: u64,
    err: u64,
    err_kinds: BTreeMap<String, u64>,
    max_ms: u64,
    hung: Vec<String>,
}

struct CallerState {
    proc: Proc,
    ident: String,
    started: bool,
    last_line: Instant,
    calls: Calls,
    /// The exchange process its link is up with (from its own thread).
    link: Option<String>,
    /// Ok calls since `link` came up.
    ok_on_link: u64,
    done: Option<String>,
    /// Its stdin was closed: it is expected to stop.
    closing: bool,
    ready_at: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
enum Who {
    Exchange,
    Publisher(usize),
    Subscriber(usize),
    Caller(usize),
}

struct RoundRecord {
    uptime: Duration,
    downtime: Duration,
    links: Duration,
    publishers: Duration,
    subscribers: Duration,
    callers: Duration,
    all: Duration,
}

struct World {
    port: u16,
    ex: ExchangeState,
    dead: Vec<Proc>,
    pubs: Vec<PublisherState>,
    subs: Vec<SubscriberState>,
    callers: Vec<CallerState>,
    /// Everything recovered since the last restart, and not killed since.
    all_up: bool,
}

impl World {
    fn proc(&self, who: Who) -> Option<&Proc> {
        match who {
            Who::Exchange => self.ex.proc.as_ref(),
            Who::Publisher(i) => Some(&self.pubs[i].proc),
            Who::Subscriber(i) => Some(&self.subs[i].proc),
            Who::Caller(i) => Some(&self.callers[i].proc),
        }
    }

    fn proc_mut(&mut self, who: Who) -> Option<&mut Proc> {
        match who {
            Who::Exchange => self.ex.proc.as_mut(),
            Who::Publisher(i) => Some(&mut self.pubs[i].proc),
            Who::Subscriber(i) => Some(&mut self.subs[i].proc),
            Who::Caller(i) => Some(&mut self.callers[i].proc),
        }
    }

    fn everyone(&self) -> Vec<Who> {
        let mut all = vec![Who::Exchange];
        all.extend((0..self.pubs.len()).map(Who::Publisher));
        all.extend((0..self.subs.len()).map(Who::Subscriber));
        all.extend((0..self.callers.len()).map(Who::Caller));
        all
    }

    /// Every client's process identity prefix.
    fn client_idents(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.pubs.iter().map(|p| p.ident.as_str()).collect();
        v.extend(self.subs.iter().map(|s| s.ident.as_str()));
        v.extend(self.callers.iter().map(|c| c.ident.as_str()));
        v
    }

    /// Fails the test, with `who`'s recent output.
    fn fail(&self, who: Who, what: &str) -> ! {
        let tail = self
            .proc(who)
            .map(|p| p.tail(40))
            .unwrap_or_else(|| "(dead)".to_owned());
        panic!("{what}\n{tail}\n{}", self.state());
    }

    /// One line per child: what it is waiting for.
    fn state(&self) -> String {
        let e = &self.ex;
        let mut s = format!(
            "state: exchange {:?} listening {:?}, links {}/{} ready {}\n",
            e.ident,
            e.listening,
            e.links.len(),
            self.client_idents().len(),
            e.ready_at.is_some()
        );
        for p in &self.pubs {
            s += &format!(
                "  {}: binding {:?} subscriptions {} lost_all {} link {:?} ready {}\n",
                p.proc.name,
                p.binding,
                p.subscriptions,
                p.lost_all,
                p.link,
                p.ready_at.is_some()
            );
        }
        for b in &self.subs {
            s += &format!(
                "  {}: available {:?} lost_all {} startups {:?} (expected {:?}) \
                 both delivering {} link {:?} ready {}\n",
                b.proc.name,
                b.available,
                b.lost_all,
                b.startups,
                b.expected_startups,
                b.both_delivering,
                b.link,
                b.ready_at.is_some()
            );
        }
        for c in &self.callers {
            s += &format!(
                "  {}: started {} link {:?} ok on link {} ok {} err {} ready {}\n",
                c.proc.name,
                c.started,
                c.link,
                c.ok_on_link,
                c.calls.ok,
                c.calls.err,
                c.ready_at.is_some()
            );
        }
        s
    }

    /// Handles at most one line (or end of output) from any child, waiting
    /// until `until` at most; then checks that no caller is silent.
    fn pump(&mut self, until: Instant) {
        let mut rxs: Vec<(Who, Receiver<Out>)> = Vec::new();
        for who in self.everyone() {
            if let Some(p) = self.proc(who) {
                if !p.eof {
                    rxs.push((who, p.out.clone()));
                }
            }
        }
        let wake = until.min(Instant::now() + Duration::from_millis(200));
        let mut sel = Select::new();
        for (_, rx) in &rxs {
            sel.recv(rx);
        }
        if let Ok(op) = sel.select_deadline(wake) {
            let (who, rx) = &rxs[op.index()];
            let out = op.recv(rx).unwrap_or(Out::Eof);
            self.handle(*who, out);
        }
        self.check_silence();
    }

    /// Handles lines for `d` (the chaos itself: events go on meanwhile).
    fn pump_for(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.pump(until);
        }
    }

    /// Handles lines until `cond` holds; fails after `timeout`.
    fn wait_until(&mut self, what: &str, timeout: Duration, cond: impl Fn(&World) -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond(self) {
            if Instant::now() >= deadline {
                let tails: Vec<String> = self
                    .everyone()
                    .into_iter()
                    .filter_map(|w| self.proc(w).map(|p| p.tail(12)))
                    .collect();
                panic!(
                    "no {what} within {timeout:?}\n{}\n{}",
                    self.state(),
                    tails.join("\n")
                );
            }
            self.pump(deadline);
        }
    }

    fn check_silence(&self) {
        for (i, c) in self.callers.iter().enumerate() {
            if c.started && c.done.is_none() && c.last_line.elapsed() > SILENT_AFTER {
                self.fail(
                    Who::Caller(i),
                    &format!(
                        "HUNG: {} printed nothing for {:?} (a call takes {CALL_TIMEOUT:?} at most)",
                        c.proc.name,
                        c.last_line.elapsed()
                    ),
                );
            }
        }
    }

    fn handle(&mut self, who: Who, out: Out) {
        let (at, line) = match out {
            Out::Line(at, line) => (at, line),
            Out::Eof => {
                let p = self.proc_mut(who).expect("a live child");
                p.eof = true;
                let status = p.child.try_wait();
                if let Who::Caller(i) = who {
                    if self.callers[i].closing {
                        return;
                    }
                }
                self.fail(
                    who,
                    &format!(
                        "a child exited on its own (only the killed exchange may): {status:?}"
                    ),
                );
            }
        };
        self.proc_mut(who)
            .expect("a live child")
            .seen
            .push(line.clone());
        match who {
            Who::Exchange => self.exchange_line(&line),
            Who::Publisher(i) => self.publisher_line(i, &line),
            Who::Subscriber(i) => self.subscriber_line(i, &line),
            Who::Caller(i) => self.caller_line(i, at, &line),
        }
        self.check_ready(who, at);
    }

    fn exchange_line(&mut self, line: &str) {
        let who = Who::Exchange;
        if let Some(addr) = line.strip_prefix("LISTENING ") {
            let addr: SocketAddr = addr
                .parse()
                .unwrap_or_else(|_| self.fail(who, &format!("bad address in {line:?}")));
            if addr.ip().to_string() != "127.0.0.1" || (self.port != 0 && addr.port() != self.port)
            {
                self.fail(
                    who,
                    &format!("expected 127.0.0.1:{}, got {line:?}", self.port),
                );
            }
            self.ex.listening = Some(addr);
        } else if let Some((active, process)) = link_line(line) {
            if !active {
                // Only a caller told to stop may go.
                let stopping = self
                    .callers
                    .iter()
                    .any(|c| c.closing && process.starts_with(&c.ident));
                if !stopping {
                    self.fail(
                        who,
                        &format!("a client's link dropped with the exchange up: {line:?}"),
                    );
                }
                return;
            }
            let Some(client) = self
                .client_idents()
                .into_iter()
                .find(|c| process.starts_with(c))
                .map(str::to_owned)
            else {
                self.fail(who, &format!("a link from an unknown process: {line:?}"));
            };
            if !self.ex.links.insert(client) {
                self.fail(who, &format!("a second link from one client: {line:?}"));
            }
        } else {
            self.fail(who, &format!("unexpected line {line:?}"));
        }
    }

    fn publisher_line(&mut self, i: usize, line: &str) {
        let who = Who::Publisher(i);
        let p = &mut self.pubs[i];
        if let Some((active, process)) = link_line(line) {
            if active {
                p.link = Some(process.to_owned());
            } else if process != "-" {
                if p.ready_at.is_some() {
                    self.fail(who, &format!("link lost with everything up: {line:?}"));
                }
                p.link = None;
            }
        } else if let Some(b) = line.strip_prefix("PUBLISHING as ") {
            if p.binding.is_some() || !b.starts_with("publisher@") {
                self.fail(who, &format!("unexpected {line:?}"));
            }
            p.binding = Some(b.to_owned());
        } else if let Some(rest) = line.strip_prefix("SUBSCRIPTION ") {
            let (requested, sub) = if let Some(s) = rest.strip_prefix("Requested ") {
                (true, s)
            } else if let Some(s) = rest.strip_prefix("Withdrawn ") {
                (false, s)
            } else {
                self.fail(who, &format!("unexpected {line:?}"));
            };
            let well_formed = sub
                .strip_suffix(" system.*")
                .is_some_and(|b| b.starts_with("subscriber@"));
            if !well_formed {
                self.fail(who, &format!("not a subscriber's system.* in {line:?}"));
            }
            if requested {
                p.subscriptions += 1;
                if p.subscriptions > SUBSCRIBERS as i64 {
                    self.fail(who, "more subscriptions than subscribers");
                }
            } else {
                if p.ready_at.is_some() {
                    self.fail(who, "a subscription withdrawn with everything up");
                }
                p.subscriptions -= 1;
                if p.subscriptions < 0 {
                    self.fail(who, "a subscription withdrawn twice");
                }
                if p.subscriptions == 0 {
                    p.lost_all = true;
                }
            }
        } else {
            self.fail(who, &format!("unexpected line {line:?}"));
        }
    }

    /// The publisher of process `process` (and display `binding`).
    fn publisher_of(&self, who: Who, binding: &str, process: &str, line: &str) -> usize {
        let i = self
            .pubs
            .iter()
            .position(|p| process.starts_with(&p.ident))
            .unwrap_or_else(|| self.fail(who, &format!("no such publisher in {line:?}")));
        if self.pubs[i].binding.as_deref() != Some(binding) {
            self.fail(
                who,
                &format!(
                    "{line:?}: that publisher is {:?}",
                    self.pubs[i].binding.as_deref()
                ),
            );
        }
        i
    }

    /// The stamp of `<publisher binding> <phrase> <HH:MM:SS UTC>`.
    fn stamp(&self, who: Who, line: &str, phrase: &str) -> Option<String> {
        let (binding, t) = line.split_once(phrase)?;
        if !self
            .pubs
            .iter()
            .any(|p| p.binding.as_deref() == Some(binding))
        {
            self.fail(
                who,
                &format!("a report from an unknown publisher: {line:?}"),
            );
        }
        Some(clock(line, t))
    }

    fn subscriber_line(&mut self, i: usize, line: &str) {
        let who = Who::Subscriber(i);
        if let Some((active, process)) = link_line(line) {
            let s = &mut self.subs[i];
            if active {
                s.link = Some(process.to_owned());
            } else if process != "-" {
                if s.ready_at.is_some() {
                    self.fail(who, &format!("link lost with everything up: {line:?}"));
                }
                s.link = None;
            }
        } else if let Some(rest) = line
            .strip_prefix("AVAILABLE ")
            .or_else(|| line.strip_prefix("WITHDRAWN "))
        {
            let available = line.starts_with("AVAILABLE ");
            let (binding, process) = rest
                .split_once(' ')
                .unwrap_or_else(|| self.fail(who, &format!("unexpected {line:?}")));
            let k = self.publisher_of(who, binding, process, line);
            let s = &mut self.subs[i];
            if s.available[k] == available {
                self.fail(who, &format!("{line:?} twice in a row"));
            }
            if !available && s.ready_at.is_some() {
                self.fail(who, "a publisher withdrawn with everything up");
            }
            s.available[k] = available;
            s.alive_by_second.clear();
            s.both_delivering = false;
            if s.available.iter().all(|a| !a) {
                s.lost_all = true;
            }
        } else if let Some(t) = self.stamp(who, line, " originally started at ") {
            let s = &mut self.subs[i];
            s.startup_reports += 1;
            if !s.lost_all {
                self.fail(who, "a cached report again without a reconnection");
            }
            s.startups.push(t);
            if s.startups.len() > PUBLISHERS {
                self.fail(who, "more cached startup reports than publishers");
            }
        } else if let Some(t) = self.stamp(who, line, " was still alive at ") {
            let s = &mut self.subs[i];
            s.reports += 1;
            if s.available.iter().all(|a| !a) {
                self.fail(who, "a time report with no publisher available");
            }
            if s.available.iter().all(|a| *a) {
                let n = s.alive_by_second.entry(t).or_default();
                *n += 1;
                if *n > PUBLISHERS {
                    self.fail(
                        who,
                        "more time reports with one stamp than publishers: a duplicate",
                    );
                }
                if *n == PUBLISHERS {
                    s.both_delivering = true;
                }
            }
        } else {
            self.fail(who, &format!("unexpected line {line:?}"));
        }
    }

    fn caller_line(&mut self, i: usize, at: Instant, line: &str) {
        let who = Who::Caller(i);
        let all_up = self.all_up;
        let c = &mut self.callers[i];
        c.last_line = at;
        // The harness may print `test caller_role ... ` before the test.
        let line = line.strip_prefix("test caller_role ... ").unwrap_or(line);
        if line == "CALLER START" {
            c.started = true;
        } else if line == "IDLE" {
        } else if let Some(p) = line.strip_prefix("LINK ACTIVE ") {
            c.link = Some(p.to_owned());
            c.ok_on_link = 0;
        } else if line.starts_with("LINK INACTIVE ") {
            if c.ready_at.is_some() {
                self.fail(who, &format!("link lost with everything up: {line:?}"));
            }
            c.link = None;
            c.ok_on_link = 0;
        } else if let Some(rest) = line.strip_prefix("CALL ") {
            let (ok, rest) = if let Some(r) = rest.strip_prefix("OK ") {
                (true, r)
            } else if let Some(r) = rest.strip_prefix("ERR ") {
                (false, r)
            } else {
                self.fail(who, &format!("unexpected {line:?}"));
            };
            let (ms, error) = rest.split_once(' ').unwrap_or((rest, ""));
            let Ok(ms) = ms.parse::<u64>() else {
                self.fail(who, &format!("no duration in {line:?}"));
            };
            let c = &mut self.callers[i];
            c.calls.max_ms = c.calls.max_ms.max(ms);
            if ms > HUNG_AFTER.as_millis() as u64 {
                c.calls.hung.push(line.to_owned());
            }
            if ok {
                if !error.is_empty() {
                    self.fail(who, &format!("unexpected {line:?}"));
                }
                c.calls.ok += 1;
                if c.link.is_some() {
                    c.ok_on_link += 1;
                }
            } else {
                c.calls.err += 1;
                let kind = error.split(':').next().unwrap_or("").to_owned();
                *c.calls.err_kinds.entry(kind.clone()).or_default() += 1;
                if kind != "service unavailable" && kind != "request timed out" {
                    self.fail(who, &format!("not a clear error: {line:?}"));
                }
                if all_up {
                    self.fail(who, &format!("a call failed with everything up: {line:?}"));
                }
            }
        } else if line.starts_with("CALLER DONE ") {
            if !c.closing {
                self.fail(who, "the caller stopped before its stdin closed");
            }
            c.done = Some(line.to_owned());
        }
        // Anything else is the test harness's own output.
    }

    fn on_current_exchange(&self, link: &Option<String>) -> bool {
        match (&self.ex.ident, link) {
            (Some(e), Some(l)) => l.starts_with(e.as_str()),
            _ => false,
        }
    }

    /// Marks `who` recovered when everything it should see since the last
    /// restart is there.
    fn check_ready(&mut self, who: Who, at: Instant) {
        let ready = match who {
            Who::Exchange => {
                self.ex.listening.is_some() && self.ex.links.len() == self.client_idents().len()
            }
            Who::Publisher(i) => {
                let p = &self.pubs[i];
                p.binding.is_some()
                    && p.lost_all
                    && p.subscriptions == SUBSCRIBERS as i64
                    && self.on_current_exchange(&p.link)
            }
            Who::Subscriber(i) => {
                let s = &self.subs[i];
                let mut got = s.startups.clone();
                got.sort();
                let startups_back = match &s.expected_startups {
                    Some(expected) => &got == expected,
                    None => got.len() == PUBLISHERS,
                };
                s.lost_all
                    && s.available.iter().all(|a| *a)
                    && startups_back
                    && s.both_delivering
                    && self.on_current_exchange(&s.link)
            }
            Who::Caller(i) => {
                let c = &self.callers[i];
                c.ok_on_link > 0 && self.on_current_exchange(&c.link)
            }
        };
        if !ready {
            return;
        }
        match who {
            Who::Exchange => {
                self.ex.ready_at.get_or_insert(at);
            }
            Who::Publisher(i) => {
                self.pubs[i].ready_at.get_or_insert(at);
            }
            Who::Subscriber(i) => {
                let s = &mut self.subs[i];
                if s.expected_startups.is_none() {
                    let mut got = s.startups.clone();
                    got.sort();
                    s.expected_startups = Some(got);
                }
                s.ready_at.get_or_insert(at);
            }
            Who::Caller(i) => {
                self.callers[i].ready_at.get_or_insert(at);
            }
        }
    }

    fn recovered(&self) -> bool {
        self.ex.ready_at.is_some()
            && self.pubs.iter().all(|p| p.ready_at.is_some())
            && self.subs.iter().all(|s| s.ready_at.is_some())
            && self.callers.iter().all(|c| c.ready_at.is_some())
    }

    /// Starts an exchange on `self.port` (0: the OS chooses) and waits for
    /// its `LISTENING` line.
    fn start_exchange(&mut self) {
        assert!(self.ex.proc.is_none());
        let p = Proc::example("exchange", self.port);
        self.ex.ident = Some(p.ident("exchange"));
        self.ex.proc = Some(p);
        self.ex.listening = None;
        self.ex.links.clear();
        self.ex.ready_at = None;
        self.wait_until("LISTENING from the exchange", WAIT, |w| {
            w.ex.listening.is_some()
        });
        self.port = self.ex.listening.expect("listening").port();
    }

    /// SIGKILL the exchange; from now on everything must recover again.
    fn kill_exchange(&mut self) {
        let mut p = self.ex.proc.take().expect("a live exchange");
        p.sigkill();
        self.dead.push(p);
        self.all_up = false;
        self.ex.ident = None;
        self.ex.listening = None;
        self.ex.links.clear();
        self.ex.ready_at = None;
        for p in &mut self.pubs {
            p.lost_all = false;
            p.ready_at = None;
        }
        for s in &mut self.subs {
            s.lost_all = false;
            s.startups.clear();
            s.ready_at = None;
        }
        for c in &mut self.callers {
            c.ready_at = None;
        }
    }

    /// Waits until everything recovered; the times since `since`.
    fn wait_recovered(&mut self, what: &str, since: Instant) -> [Duration; 5] {
        self.wait_until(what, WAIT, World::recovered);
        self.all_up = true;
        let after = |t: Option<Instant>| t.expect("ready").saturating_duration_since(since);
        let links = after(self.ex.ready_at);
        let pubs = self.pubs.iter().map(|p| after(p.ready_at)).max().unwrap();
        let subs = self.subs.iter().map(|s| after(s.ready_at)).max().unwrap();
        let callers = self
            .callers
            .iter()
            .map(|c| after(c.ready_at))
            .max()
            .unwrap();
        let all = links.max(pubs).max(subs).max(callers);
        [links, pubs, subs, callers, all]
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

#[test]
fn exchange_killed_and_restarted_five_times_everything_resumes() {
    if std::env::var_os(ROLE_VAR).is_some() {
        return; // a caller process runs only its role
    }
    let seed = match std::env::var(SEED_VAR) {
        Ok(s) => s.parse().unwrap_or_else(|e| panic!("{SEED_VAR}: {e}")),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_nanos() as u64,
    };
    println!("chaos seed {seed} (replay with {SEED_VAR}={seed})");
    let mut rng = Rng(seed);
    let test_started = Instant::now();

    let mut w = World {
        port: 0,
        ex: ExchangeState {
            proc: None,
            ident: None,
            listening: None,
            links: BTreeSet::new(),
            ready_at: None,
        },
        dead: Vec::new(),
        pubs: Vec::new(),
        subs: Vec::new(),
        callers: Vec::new(),
        all_up: false,
    };
    w.start_exchange();
    let port = w.port;

    for _ in 0..PUBLISHERS {
        let proc = Proc::example("publisher", port);
        w.pubs.push(PublisherState {
            ident: proc.ident("publisher"),
            proc,
            binding: None,
            subscriptions: 0,
            lost_all: true,
            link: None,
            ready_at: None,
        });
    }
    // The subscribers map the publishers' bindings: know them first.
    w.wait_until("PUBLISHING from each publisher", WAIT, |w| {
        w.pubs.iter().all(|p| p.binding.is_some())
    });
    for _ in 0..SUBSCRIBERS {
        let proc = Proc::example("subscriber", port);
        w.subs.push(SubscriberState {
            ident: proc.ident("subscriber"),
            proc,
            available: [false; PUBLISHERS],
            lost_all: true,
            startups: Vec::new(),
            expected_startups: None,
            alive_by_second: BTreeMap::new(),
            both_delivering: false,
            link: None,
            reports: 0,
            startup_reports: 0,
            ready_at: None,
        });
    }
    for _ in 0..CALLERS {
        let proc = Proc::caller(port);
        w.callers.push(CallerState {
            ident: proc.ident("caller"),
            proc,
            started: false,
            last_line: Instant::now(),
            calls: Calls::default(),
            link: None,
            ok_on_link: 0,
            done: None,
            closing: false,
            ready_at: None,
        });
    }
    let first = w.wait_recovered("first start", test_started);

    let mut rounds: Vec<RoundRecord> = Vec::new();
    for round in 1..=RESTARTS {
        let uptime = rng.millis(UPTIME_MS);
        let downtime = rng.millis(DOWNTIME_MS);
        w.pump_for(uptime);
        w.kill_exchange();
        w.pump_for(downtime);
        let restarted = Instant::now();
        w.start_exchange();
        assert_eq!(w.port, port, "the exchange restarts on its port");
        let [links, publishers, subscribers, callers, all] =
            w.wait_recovered(&format!("recovery after restart {round}"), restarted);
        rounds.push(RoundRecord {
            uptime,
            downtime,
            links,
            publishers,
            subscribers,
            callers,
            all,
        });
    }

    // No process but the killed exchanges exited.
    for who in w.everyone() {
        let p = w.proc_mut(who).expect("a live child");
        let status = p.child.try_wait().expect("try_wait");
        let name = p.name.clone();
        if status.is_some() {
            w.fail(who, &format!("{name} exited: {status:?}"));
        }
    }
    assert_eq!(w.dead.len(), RESTARTS);

    // The callers stop when their stdin closes, after their current call.
    for c in &mut w.callers {
        c.closing = true;
        drop(c.proc.stdin.take());
    }
    w.wait_until("CALLER DONE from every caller, then its exit", WAIT, |w| {
        w.callers.iter().all(|c| c.done.is_some() && c.proc.eof)
    });
    for (i, c) in w.callers.iter_mut().enumerate() {
        let status = c.proc.child.wait().expect("reap a caller");
        assert!(status.success(), "caller {i} exited with {status}");
    }

    // The summary.
    let total = test_started.elapsed();
    let mut summary = format!("chaos summary (seed {seed}, {} in all)\n", secs(total));
    summary += &format!("  first start: everything up after {}\n", secs(first[4]));
    for (i, r) in rounds.iter().enumerate() {
        summary += &format!(
            "  restart {}: killed after {} up, restarted after {} down; recovered in {} \
             (links {}, publishers {}, subscribers {}, callers {})\n",
            i + 1,
            secs(r.uptime),
            secs(r.downtime),
            secs(r.all),
            secs(r.links),
            secs(r.publishers),
            secs(r.subscribers),
            secs(r.callers)
        );
    }
    let mut max_ms = 0;
    for c in &w.callers {
        max_ms = max_ms.max(c.calls.max_ms);
        summary += &format!(
            "  {}: {} ok, {} err {:?}, longest call {} ms, {}\n",
            c.proc.name,
            c.calls.ok,
            c.calls.err,
            c.calls.err_kinds,
            c.calls.max_ms,
            c.done.as_deref().unwrap_or("")
        );
    }
    for s in &w.subs {
        summary += &format!(
            "  {}: {} time reports, {} cached startup reports\n",
            s.proc.name, s.reports, s.startup_reports
        );
    }
    summary += &format!("  longest call of all: {max_ms} ms (HUNG after {HUNG_AFTER:?})\n");
    println!("{summary}");

    // What the summary says must hold.
    for c in &w.callers {
        assert!(
            c.calls.hung.is_empty(),
            "{}: HUNG calls (over {HUNG_AFTER:?}): {:?}",
            c.proc.name,
            c.calls.hung
        );
        assert_eq!(
            format!("CALLER DONE ok={} err={}", c.calls.ok, c.calls.err),
            c.done.clone().unwrap(),
            "{}: its count and ours differ",
            c.proc.name
        );
    }
    for s in &w.subs {
        // Each connection: both cached startup reports again.
        assert_eq!(
            s.startup_reports,
            ((RESTARTS + 1) * PUBLISHERS) as u64,
            "{}",
            s.proc.name
        );
    }
}
