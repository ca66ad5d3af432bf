//! Attacks on a real exchange process from a hostile peer on a raw socket.
//!
//! Each test starts the `exchange` example as a child process (port 0,
//! 127.0.0.1), links a well-behaved pair of clients to it (tests/util/pair.rs:
//! reports and calls every 20 ms), runs one attack from raw TCP connections
//! speaking the wire protocol by hand (frames from `netsvc::peer_frames`),
//! then checks, all at once so that a failure lists everything the attack
//! did:
//!
//! - the pair kept flowing: no gap of 1 s or more between its reports or
//!   between its successful calls, and at most [`FAILED_CALLS`] failed calls
//!   (the one timing assertion: the exchange must stay responsive);
//! - the exchange's peak resident memory (VmHWM) grew by less than
//!   [`MEMORY_BUDGET_KIB`] during the attack;
//! - where the attack breaks a rule, the offending connection was closed
//!   (EOF or reset within [`CLOSE_WAIT`]) and the exchange counted it in
//!   its stats (`limits_breached`, or `auth_failures`).
//!
//! The tests hold one lock in turn: each loads the machine (an exchange in a
//! debug build, thousands of frames), and the pair's timing must measure the
//! attack, not the tests next to it. Each ends within about 20 s, also when
//! the attack succeeds. `cargo test` builds the example; to run this file
//! alone, `cargo build --examples` first.

mod util;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use netsvc::peer_frames::{self as pf, Key};
use netsvc::{ConnectionState, Dispatcher, Exchange, ServiceBinding};
use util::exchange_proc::{ExchangeProc, StatsMap};
use util::pair::{Pair, PairReport};
use util::raw::read_frame;
use util::WAIT;

/// The most a well-behaved client may wait between reports or calls.
const MAX_GAP: Duration = Duration::from_secs(1);

/// Failed calls of the pair allowed during an attack.
const FAILED_CALLS: u64 = 3;

/// How much an attack may make the exchange's peak resident memory grow:
/// 64 MiB. Every attack here would cost far more if what it sends were kept
/// (or multiplied) without a bound; a bounded exchange stays well within it.
const MEMORY_BUDGET_KIB: u64 = 64 * 1024;

/// How long an offending connection may stay open after its offence.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// The most time an attack spends writing: an exchange that stops reading
/// (stuck, or pushing back) ends the attack, not the test's patience.
const SEND_TIME: Duration = Duration::from_secs(6);

/// The exchange's default limit of subscriptions per connection.
const DEFAULT_MAX_SUBSCRIPTIONS: usize = 100_000;

/// The default limit of connections of a server (`Exchange::server`).
const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Heartbeats a call may bring its caller in a second, whatever period the
/// caller asked for. The library's floor is 50 ms (20 a second); this
/// leaves a wide margin, and an unclamped period of 0 gives some 100,000.
const MAX_PROGRESS_PER_SECOND: u64 = 200;

static SERIAL: Mutex<()> = Mutex::new(());

fn fresh_uid() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() | 1
}

// ----- a hostile peer -----

/// A raw connection that has completed the plain (no secret) handshake. A
/// thread reads everything the exchange sends it, so that the exchange is
/// never held up by it, counts the frames by kind, and says once how the
/// connection ended.
struct RawPeer {
    stream: TcpStream,
    uid: u64,
    frames: Arc<AtomicU64>,
    progress: Arc<AtomicU64>,
    replies: Receiver<()>,
    ended: Receiver<String>,
    /// The first write that failed (the exchange closed the connection).
    write_error: Option<String>,
}

impl RawPeer {
    fn connect(addr: SocketAddr) -> RawPeer {
        let seed = fresh_uid();
        let uid = pf::uid(seed);
        let mut stream = TcpStream::connect(addr).expect("raw connect");
        stream.set_read_timeout(Some(WAIT)).expect("read timeout");
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .expect("write timeout");
        stream.write_all(&pf::hello(seed, "")).expect("send hello");
        let hello = read_frame(&mut stream).expect("the exchange's hello");
        assert_eq!(&hello[..6], b"NETSVC");
        stream.set_read_timeout(None).expect("no read timeout");
        let mut reader = stream.try_clone().expect("clone the stream");
        let frames = Arc::new(AtomicU64::new(0));
        let progress = Arc::new(AtomicU64::new(0));
        let (reply_tx, replies) = crossbeam_channel::unbounded();
        let (end_tx, ended) = crossbeam_channel::bounded(1);
        {
            let (frames, progress) = (frames.clone(), progress.clone());
            std::thread::spawn(move || {
                let why = loop {
                    match read_frame(&mut reader) {
                        Ok(body) => {
                            frames.fetch_add(1, Ordering::Relaxed);
                            match pf::kind(&body) {
                                Some("Progress") => {
                                    progress.fetch_add(1, Ordering::Relaxed);
                                }
                                Some("Reply") => {
                                    let _ = reply_tx.send(());
                                }
                                _ => {}
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                            break "EOF".to_owned()
                        }
                        Err(e) => break format!("{e}"),
                    }
                };
                let _ = end_tx.send(why);
            });
        }
        RawPeer {
            stream,
            uid,
            frames,
            progress,
            replies,
            ended,
            write_error: None,
        }
    }

    /// The key of this peer's agent number `agent`.
    fn key(&self, agent: u64) -> Key {
        Key {
            process: self.uid,
            agent,
        }
    }

    /// A binding of this peer's, as it would announce it.
    fn binding(&self, name: &str, agent: u64) -> ServiceBinding {
        pf::binding(name, "*", self.key(agent), &[])
    }

    /// Sends bytes, unless a write already failed, giving up at `deadline`;
    /// false once a write has failed (the exchange closed the connection,
    /// what a fixed exchange does) or could not finish in time (the
    /// exchange stopped reading).
    fn send_by(&mut self, bytes: &[u8], deadline: Instant) -> bool {
        if self.write_error.is_some() {
            return false;
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.write_error = Some("the exchange stopped reading: deadline passed".into());
                return false;
            }
            let _ = self.stream.set_write_timeout(Some(left));
            match self.stream.write(rest) {
                Ok(0) => {
                    self.write_error = Some("write returned 0".into());
                    return false;
                }
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => {
                    self.write_error = Some(e.to_string());
                    return false;
                }
            }
        }
        true
    }

    /// [`send_by`](Self::send_by) with [`SEND_TIME`] to do it.
    fn send(&mut self, bytes: &[u8]) -> bool {
        self.send_by(bytes, Instant::now() + SEND_TIME)
    }

    /// Sends many frames, about 1 MiB at a time, all within [`SEND_TIME`];
    /// returns how many were sent in full (fewer if a write failed or the
    /// time ran out: see `write_error`).
    fn send_all(&mut self, frames: impl Iterator<Item = Vec<u8>>) -> usize {
        let deadline = Instant::now() + SEND_TIME;
        let (mut batch, mut in_batch, mut sent) = (Vec::with_capacity(1 << 20), 0, 0);
        for f in frames {
            batch.extend_from_slice(&f);
            in_batch += 1;
            if batch.len() >= 1 << 20 {
                if !self.send_by(&batch, deadline) {
                    return sent;
                }
                sent += in_batch;
                batch.clear();
                in_batch = 0;
            }
        }
        if batch.is_empty() || self.send_by(&batch, deadline) {
            sent += in_batch;
        }
        sent
    }

    /// A barrier: calls `exchange.stats` and waits for the reply, which
    /// comes after everything sent before it was handled (a connection's
    /// frames are handled in order). False if no reply came within
    /// `within` (the exchange is stuck, or closed the connection).
    fn barrier(&mut self, stats: Key, within: Duration) -> bool {
        while self.replies.try_recv().is_ok() {}
        let me = self.binding("hostile.caller", 999);
        let seq = fresh_uid();
        let f = pf::request(seq, &me, stats, "stats", &pf::payload(&()), 5_000, None);
        self.send(&f) && self.replies.recv_timeout(within).is_ok()
    }

    /// How the connection ended, if it did within `within`.
    fn closed_within(&self, within: Duration) -> Option<String> {
        self.ended.recv_timeout(within).ok()
    }
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

// ----- one attack, and the checks after it -----

/// What a test expects the exchange to have counted.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Counted {
    /// `limits_breached` went up.
    LimitsBreached,
    /// `limits_breached` or `auth_failures` went up.
    LimitOrAuth,
    /// Nothing is required.
    Nothing,
}

/// An exchange process, the pair watching it, and what was measured before
/// the attack.
struct Scene {
    _serial: MutexGuard<'static, ()>,
    name: &'static str,
    ex: ExchangeProc,
    pair: Option<Pair>,
    stats_key: Key,
    before: StatsMap,
    peak_before_kib: u64,
    started: Instant,
    /// Observations, printed with the verdict.
    notes: Vec<String>,
    /// Broken requirements.
    failures: Vec<String>,
}

impl Scene {
    fn start(name: &'static str) -> Scene {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let ex = ExchangeProc::start(&[]);
        let pair = Pair::start(ex.addr());
        // A publisher and callee that lives in the exchange process, so that
        // an attack through it loads the exchange and nothing else.
        let stats_key = Key::from(ex.stats_binding());
        let before = ex.stats().expect("the exchange's stats before the attack");
        let peak_before_kib = ex.peak_rss_kib();
        Scene {
            _serial: serial,
            name,
            pair: Some(pair),
            stats_key,
            before,
            peak_before_kib,
            started: Instant::now(),
            notes: vec![format!("rss before: {} KiB", ex.rss_kib())],
            ex,
            failures: Vec::new(),
        }
    }

    fn note(&mut self, s: impl Into<String>) {
        let s = s.into();
        eprintln!("{}: {s}", self.name);
        self.notes.push(s);
    }

    fn require(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.failures.push(what.into());
        }
    }

    /// The pair's report, memory and stats after the attack; `closed` is
    /// how the offending connection ended (`None`: still open), `expect_closed`
    /// whether the attack must have been ended by the exchange.
    fn finish(mut self, closed: Option<Option<String>>, counted: Counted) {
        let pair: PairReport = self.pair.take().expect("the pair").stop();
        self.note(format!(
            "pair: max report gap {:?}, max call gap {:?}, {} failed calls, {} reports, {} calls, attack took {:?}",
            pair.max_report_gap,
            pair.max_call_gap,
            pair.failed_calls,
            pair.reports,
            pair.calls,
            self.started.elapsed()
        ));
        self.require(
            pair.max_report_gap < MAX_GAP,
            format!(
                "the pair's reports stopped for {:?} (limit {MAX_GAP:?})",
                pair.max_report_gap
            ),
        );
        self.require(
            pair.max_call_gap < MAX_GAP,
            format!(
                "the pair's calls stopped for {:?} (limit {MAX_GAP:?})",
                pair.max_call_gap
            ),
        );
        self.require(
            pair.failed_calls <= FAILED_CALLS,
            format!(
                "{} of the pair's calls failed (at most {FAILED_CALLS})",
                pair.failed_calls
            ),
        );
        let peak = self.ex.peak_rss_kib();
        let grew = peak.saturating_sub(self.peak_before_kib);
        self.note(format!(
            "memory: peak {} KiB -> {peak} KiB (grew {grew} KiB, budget {MEMORY_BUDGET_KIB} KiB); rss now {} KiB",
            self.peak_before_kib,
            self.ex.rss_kib()
        ));
        self.require(
            grew < MEMORY_BUDGET_KIB,
            format!("the exchange's memory grew by {grew} KiB (budget {MEMORY_BUDGET_KIB} KiB)"),
        );
        if let Some(closed) = closed {
            match &closed {
                Some(how) => self.note(format!("offending connection closed: {how}")),
                None => self.note(format!(
                    "offending connection still open {CLOSE_WAIT:?} after the attack"
                )),
            }
            self.require(
                closed.is_some(),
                format!("the offending connection was not closed within {CLOSE_WAIT:?}"),
            );
        }
        match self.ex.stats() {
            Ok(after) => {
                let delta = |k: &str| {
                    ExchangeProc::stat(&after, k)
                        .saturating_sub(ExchangeProc::stat(&self.before, k))
                };
                let (limits, auth) = (delta("limits_breached"), delta("auth_failures"));
                self.note(format!(
                    "stats: limits_breached +{limits}, auth_failures +{auth}, frames_in +{}, slow_consumers +{}",
                    delta("frames_in"),
                    delta("slow_consumers")
                ));
                match counted {
                    Counted::LimitsBreached => self.require(
                        limits > 0,
                        "the exchange did not count the breach (limits_breached unchanged)",
                    ),
                    Counted::LimitOrAuth => self.require(
                        limits + auth > 0,
                        "the exchange counted nothing (limits_breached and auth_failures unchanged)",
                    ),
                    Counted::Nothing => {}
                }
            }
            Err(e) => {
                self.note(format!("stats after the attack: {e}"));
                self.require(
                    false,
                    format!("the exchange's stats could not be read: {e}"),
                );
            }
        }
        if !self.failures.is_empty() {
            panic!(
                "{}: the attack succeeded:\n  - {}\nobserved:\n  {}",
                self.name,
                self.failures.join("\n  - "),
                self.notes.join("\n  ")
            );
        }
    }
}

// ----- the attacks -----

/// One Available whose binding is in 20,000 groups: the exchange must
/// refuse a binding with that many groups and close the connection.
#[test]
fn available_with_20000_groups() {
    let mut s = Scene::start("available_with_20000_groups");
    let mut peer = RawPeer::connect(s.ex.addr());
    let names: Vec<String> = (0..20_000).map(|i| format!("hostile.group.{i}")).collect();
    let groups: Vec<&str> = names.iter().map(String::as_str).collect();
    let frame = pf::available("hostile.groups", "*", peer.key(1), &groups);
    s.note(format!("sent one Available of {} bytes", frame.len()));
    peer.send(&frame);
    let closed = peer.closed_within(CLOSE_WAIT);
    s.finish(Some(closed), Counted::LimitsBreached);
}

/// 100,000 Subscribe frames (distinct patterns, to a publisher in the
/// exchange process) from one connection: at the default limit. The
/// exchange must stay responsive with its memory bounded, and get through
/// them (a call sent after them is answered) unless it closes the
/// connection first (a lower limit): which of the two is its choice.
#[test]
fn subscribe_flood_100000() {
    let mut s = Scene::start("subscribe_flood_100000");
    let mut peer = RawPeer::connect(s.ex.addr());
    let me = peer.binding("hostile.subscriber", 2);
    let publisher = s.stats_key;
    let n = DEFAULT_MAX_SUBSCRIPTIONS;
    let sent =
        peer.send_all((0..n).map(|i| pf::subscribe(&me, publisher, &format!("p.{i}"), true)));
    let handled = sent == n && peer.barrier(s.stats_key, CLOSE_WAIT);
    let closed = peer.closed_within(Duration::ZERO);
    s.note(format!(
        "sent {sent} of {n} frames; all handled (a call after them answered): {handled}; closed: {closed:?}; write error: {:?}",
        peer.write_error
    ));
    s.require(
        handled || closed.is_some(),
        format!("the exchange neither got through {n} subscriptions nor closed the connection within {:?}", SEND_TIME + CLOSE_WAIT),
    );
    s.finish(None, Counted::Nothing);
}

/// A Subscribe with a 100,000-character glob pattern, then a Report on a
/// 220,000-character subject from the same peer's publisher: matching the
/// one against the other must not stall the exchange; both are beyond any
/// sensible length and must be refused, closing the connection.
#[test]
fn long_pattern_and_subject() {
    let mut s = Scene::start("long_pattern_and_subject");
    let mut peer = RawPeer::connect(s.ex.addr());
    let publisher = peer.key(3);
    let me = peer.binding("hostile.subscriber", 2);
    let pattern = format!("*{}b", "a".repeat(100_000 - 2));
    let subject = "a".repeat(220_000);
    peer.send(&pf::available("hostile.publisher", "*", publisher, &[]));
    peer.send(&pf::subscribe(&me, publisher, &pattern, true));
    peer.send(&pf::report(publisher, None, &subject, &pf::payload(&1u64)));
    s.note(format!(
        "sent a {}-character pattern and a {}-character subject; write error: {:?}",
        pattern.len(),
        subject.len(),
        peer.write_error
    ));
    let closed = peer.closed_within(CLOSE_WAIT);
    s.finish(Some(closed), Counted::LimitsBreached);
}

/// 2,000 services with 300-character names from one connection, within
/// the default service limit (10,000). A name is bounded (300 is past the
/// 255 bytes a name may be), so the exchange must refuse the first of them,
/// close the connection and count the breach, and its memory must not grow
/// with what the peer announces.
#[test]
fn many_services_with_long_names() {
    let mut s = Scene::start("many_services_with_long_names");
    let mut peer = RawPeer::connect(s.ex.addr());
    let n = 2_000;
    let keys: Vec<Key> = (0..n).map(|i| peer.key(10 + i)).collect();
    let sent = peer.send_all(keys.iter().enumerate().map(|(i, k)| {
        let name = format!("{i:06}{}", "n".repeat(294));
        pf::available(&name, "*", *k, &[])
    }));
    let handled = sent == n as usize && peer.barrier(s.stats_key, CLOSE_WAIT);
    s.note(format!(
        "sent {sent} of {n} Available frames; all handled (a call after them answered): {handled}; write error: {:?}",
        peer.write_error
    ));
    let closed = peer.closed_within(CLOSE_WAIT);
    s.finish(Some(closed), Counted::LimitsBreached);
}

/// The subscription count must follow what is subscribed, not the frames:
/// 60,000 subscriptions, then 60,000 unsubscribes of patterns never
/// subscribed, then 60,000 more subscriptions. That is 120,000 subscriptions
/// held, past the default limit (100,000), so the exchange must close the
/// connection and count the breach (earlier, if its limit is lower), and
/// stay responsive meanwhile.
///
/// (The issue's 20,000 + 20,000 never passes the default limit, and the
/// example has no option to lower it; the numbers are raised instead so
/// that the default is passed only if never-subscribed unsubscribes are
/// not allowed to cancel real subscriptions out.)
#[test]
fn unsubscribes_do_not_cancel_subscriptions() {
    let mut s = Scene::start("unsubscribes_do_not_cancel_subscriptions");
    let mut peer = RawPeer::connect(s.ex.addr());
    let me = peer.binding("hostile.subscriber", 2);
    let publisher = s.stats_key;
    let n = 60_000;
    let phase = |prefix: &'static str, on: bool| {
        let me = me.clone();
        (0..n).map(move |i| pf::subscribe(&me, publisher, &format!("{prefix}.{i}"), on))
    };
    let frames = phase("p", true)
        .chain(phase("never", false))
        .chain(phase("r", true));
    let sent = peer.send_all(frames);
    s.note(format!(
        "sent {sent} of {} frames; write error: {:?}",
        3 * n,
        peer.write_error
    ));
    let closed = peer.closed_within(CLOSE_WAIT);
    s.finish(Some(closed), Counted::LimitsBreached);
}

/// 30 connections that never complete a hello, each sending 16 MiB of one
/// frame (announced at the largest size allowed, one byte short of
/// complete): before the handshake an exchange should hold a few KiB per
/// connection, not a frame's worth, and close such a connection.
#[test]
fn unauthenticated_large_frames() {
    let mut s = Scene::start("unauthenticated_large_frames");
    let size: usize = 16 << 20;
    let body = vec![0u8; size - 1];
    let mut conns = Vec::new();
    let mut refused_early = 0;
    for _ in 0..30 {
        let mut c = TcpStream::connect(s.ex.addr()).expect("connect");
        c.set_write_timeout(Some(Duration::from_secs(5)))
            .expect("write timeout");
        let ok = c.write_all(&(size as u32).to_be_bytes()).is_ok() && c.write_all(&body).is_ok();
        if !ok {
            refused_early += 1;
        }
        conns.push(c);
    }
    s.note(format!(
        "30 connections sent 16 MiB each without a hello; {refused_early} writes failed (closed by the exchange)"
    ));
    // Each must end within CLOSE_WAIT of now (all together).
    let deadline = Instant::now() + CLOSE_WAIT;
    let open = open_at(&conns, deadline);
    s.note(format!("{open} of 30 still open after {CLOSE_WAIT:?}"));
    s.require(
        open == 0,
        format!("{open} of 30 connections without a hello were still open"),
    );
    let closed = Some(if open == 0 {
        Some("all 30 closed".to_owned())
    } else {
        None
    });
    s.finish(closed, Counted::LimitOrAuth);
}

/// Whether the exchange has closed this connection (EOF or an error),
/// looking without waiting; whatever it sent first is read and dropped.
fn closed_now(mut c: &TcpStream) -> bool {
    if c.set_nonblocking(true).is_err() {
        return true;
    }
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// How many of `conns` the exchange has not closed by `deadline`: they are
/// looked at in rounds (every 50 ms) until all are closed or the time is
/// up, so that one open connection does not use up the wait of the others.
fn open_at(conns: &[TcpStream], deadline: Instant) -> usize {
    let mut open: Vec<&TcpStream> = conns.iter().collect();
    loop {
        open.retain(|c| !closed_now(c));
        if open.is_empty() || Instant::now() >= deadline {
            return open.len();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// 2,000 connections from 127.0.0.1 that send nothing: afterwards a new
/// well-behaved client must get its link within a few seconds (a bound on
/// handshakes per address and a short handshake timeout), the silent ones
/// must be gone as soon, and the exchange must not write a warning per
/// connection (fewer than 50 stderr lines mention the handshake).
///
/// 2,000 descriptors in the test process: `ulimit -n` is 20,000 here; where
/// the soft limit is lower the connections that fail are counted and the
/// test goes on with those that opened.
#[test]
fn silent_connections() {
    let mut s = Scene::start("silent_connections");
    let mut conns = Vec::new();
    let mut failed = 0;
    let t0 = Instant::now();
    for _ in 0..2_000 {
        match TcpStream::connect(s.ex.addr()) {
            Ok(c) => conns.push(c),
            Err(_) => failed += 1,
        }
    }
    // Both checks below count from here.
    let deadline = Instant::now() + CLOSE_WAIT;
    s.note(format!(
        "{} silent connections opened in {:?}, {failed} failed to connect (the default connection limit is {DEFAULT_MAX_CONNECTIONS})",
        conns.len(),
        t0.elapsed()
    ));
    // A new, well-behaved client.
    let d = Dispatcher::builder()
        .name("late")
        .build()
        .expect("dispatcher");
    let link = Exchange::client(&d)
        .connect(s.ex.addr(), Duration::from_millis(100))
        .expect("link");
    let rx = link.connections();
    let mut active = None;
    while let Ok(ann) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if ann.state() == ConnectionState::Active {
            active = Some(t0.elapsed());
            break;
        }
    }
    s.note(format!(
        "a new client got its link {active:?} after the attack began (wanted within {CLOSE_WAIT:?} of its end)"
    ));
    s.require(
        active.is_some(),
        format!("a new client got no link within {CLOSE_WAIT:?} of the silent connections"),
    );
    drop(link);
    d.shutdown();
    let open = open_at(&conns, deadline);
    s.note(format!(
        "{open} silent connections still open {CLOSE_WAIT:?} after the last was opened"
    ));
    let closed = Some(if open == 0 {
        Some(format!("all {} closed", conns.len()))
    } else {
        None
    });
    let lines = s.ex.stderr_lines();
    let handshake = lines
        .iter()
        .filter(|l| l.to_ascii_lowercase().contains("handshake"))
        .count();
    s.note(format!(
        "stderr: {} lines, {handshake} mention the handshake",
        lines.len()
    ));
    s.require(
        handshake < 50,
        format!("{handshake} stderr lines mention the handshake (fewer than 50 wanted: rate-limit them)"),
    );
    s.finish(closed, Counted::LimitsBreached);
}

/// A call with a peer-chosen heartbeat period of 0 to a service that never
/// answers (`pair.sink`): heartbeats must not go out as fast as the
/// dispatcher can send them. Fewer than [`MAX_PROGRESS_PER_SECOND`]
/// Progress frames may reach the caller in one second.
#[test]
fn zero_heartbeat_period() {
    let mut s = Scene::start("zero_heartbeat_period");
    let mut peer = RawPeer::connect(s.ex.addr());
    let me = peer.binding("hostile.caller", 4);
    let sink = Key::from(s.pair.as_ref().expect("the pair").sink());
    let before = peer.progress.load(Ordering::Relaxed);
    let f = pf::request(1, &me, sink, "hold", &pf::payload(&()), 3_000, Some(0));
    peer.send(&f);
    std::thread::sleep(Duration::from_secs(1));
    let progress = peer.progress.load(Ordering::Relaxed) - before;
    s.note(format!(
        "{progress} Progress frames in 1 s ({} frames in all); sink holds {}",
        peer.frames.load(Ordering::Relaxed),
        s.pair.as_ref().map(|p| p.held()).unwrap_or(0)
    ));
    s.require(
        progress < MAX_PROGRESS_PER_SECOND,
        format!(
            "{progress} Progress frames reached the caller in one second \
             (fewer than {MAX_PROGRESS_PER_SECOND} wanted)"
        ),
    );
    s.finish(None, Counted::Nothing);
}
