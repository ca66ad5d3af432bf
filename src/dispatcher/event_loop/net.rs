//! The exchange inside the dispatcher: listeners, connections, the
//! handshake, and the translation between the routing table and frames.
//!
//! Each connection is a state machine (`Connecting` → `Handshaking` →
//! `Active`) driven by poll events, frames and timers. Remote agents enter
//! the routing table with `Route::Remote(token)`; everything else (monitors,
//! subscriptions, pending calls) then works as for local agents.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};

use super::{Caller, Class, EventLoop, Pending, RouteOpts, TimerKind, MIN_PROGRESS};
use crate::auth::{self, Secret, Side};
use crate::connection::{ConnectionAnnouncement, ConnectionState, InactiveReason as Why};
use crate::dispatcher::idmap::IdMap;
use crate::error::{Error, Result};
use crate::event::{Event, Report};
use crate::frame::{Fill, ReadBuffer, WriteBuffer};
use crate::ids::{AgentKey, ConversationId, ProcessId, ServiceBinding};
use crate::limits;
use crate::mailbox::command::{Authorise, ExchangeRole, Limits};
use crate::registry::{Ordered, Route};
use crate::stats::Counters;
use crate::wire::{self, Hello, Incoming, Message, Payload, ReportRef};

/// Above this much unsent output a connection is congested: its dispatcher
/// pushes back (takes no commands, reads from no other peer) until it is
/// down to a quarter of it.
pub(super) fn high_water(max_outbound: usize) -> usize {
    (max_outbound / 8).clamp(64 * 1024, 1 << 20)
}

/// Whether a binding of that audience is visible through an exchange of
/// that group: `"*"` everywhere, `""` nowhere, a group name in that group.
pub(super) fn visible(audience: &str, group: &str) -> bool {
    audience == "*" || (!audience.is_empty() && audience == group)
}

/// How long a connection may be in its handshake before it counts against
/// its address's handshake slots and may give way to a newer connection: a
/// quarter of the handshake timeout, at most 500 ms.
pub(super) fn handshake_grace(timeout: Duration) -> Duration {
    (timeout / 4).min(Duration::from_millis(500))
}

/// How many chunks of input (64 KiB each) one connection's turn reads at
/// most before the others are served: a flood is read a chunk a turn.
const CHUNKS_PER_TURN: usize = 1;

/// The largest frame a peer may send before its handshake and
/// authentication are complete (a hello, a challenge, a proof): what an
/// unauthenticated connection can make this process buffer.
pub(super) const PRE_AUTH_FRAME: usize = 4 * 1024;

/// Tells a peer that speaks the protocol why its link is being closed:
/// one frame, written at once if the socket takes it (never waited for).
fn tell_why(conn: &mut Conn, why: Why, reason: &str) {
    let speaks = !matches!(
        conn.state,
        ConnState::Connecting | ConnState::Authorising | ConnState::Handshaking
    );
    if !speaks || matches!(why, Why::ClosedByPeer | Why::Io | Why::SlowConsumer) {
        return; // (nobody to tell, or no way to reach it)
    }
    let message = Message::Closing {
        reason: format!("{why}: {reason}"),
    };
    if let Ok(frame) = wire::encode_frame(&message) {
        conn.wbuf.push_encoded(&frame);
        let _ = conn.write_out();
    }
}

/// At most this much of a peer's stated reason for closing is kept.
const PEER_REASON_MAX: usize = 512;

/// Why a connect failed, by its error.
fn connect_why(e: &io::Error) -> Why {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Why::Refused,
        _ => Why::Unreachable,
    }
}

/// Why a read or write failed, by its error.
fn io_why(e: &io::Error) -> Why {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => Why::ClosedByPeer,
        _ => Why::Io,
    }
}

/// Why a frame was refused (the only cause today: too large, a limit).
fn frame_why(e: &crate::frame::FrameError) -> Why {
    match e {
        crate::frame::FrameError::TooLarge { .. } => Why::LimitBreached,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ConnState {
    /// A client's connect is in progress.
    Connecting,
    /// Accepted; the server's `authorise` callback is deciding on it (on
    /// its own thread). Nothing is read or sent meanwhile.
    Authorising,
    /// Connected; waiting for the peer's hello.
    Handshaking,
    /// A client with a secret waits for the server's challenge.
    AwaitChallenge { remote: ProcessId },
    /// A server sent its challenge and waits for the client's proof.
    AwaitResponse { remote: ProcessId, nonce: Vec<u8> },
    /// A client sent its proof and waits for the server's.
    AwaitProof {
        remote: ProcessId,
        theirs: Vec<u8>,
        mine: Vec<u8>,
    },
    /// Hello exchanged: frames flow.
    Active { remote: ProcessId },
}

struct Conn {
    exchange: u64,
    stream: TcpStream,
    peer: SocketAddr,
    state: ConnState,
    /// When it was accepted or its connect began (the oldest handshaking
    /// connection is the first to make room for a new one).
    opened: Instant,
    rbuf: ReadBuffer,
    wbuf: WriteBuffer,
    /// Agents learned through this connection, in order.
    learned: Ordered<AgentKey>,
    /// What the peer made this process hold, in bytes, beyond what the
    /// reports and the pending calls count for it.
    usage: Usage,
    handshake_timer: Option<super::TimerId>,
    /// When something was last received from, and last sent to, the peer.
    last_in: Instant,
    last_out: Instant,
    /// The socket refused part of a write: no early write until it is
    /// writable again or the end-of-turn flush emptied the buffer.
    write_blocked: bool,
    /// On the list of connections to flush: a frame queued after the first
    /// does not add it again (a long turn of reports would grow that list
    /// by one entry per frame).
    listed: bool,
}

/// Bytes of state a peer made this process hold, counted against its
/// connection's memory budget (with its subscriptions and pending calls).
#[derive(Debug, Default)]
struct Usage {
    /// The bindings learned through it, with their groups.
    learned_bytes: usize,
    /// Its hidden subscribers (see `Net::subscribers`).
    hidden_bytes: usize,
}

impl Conn {
    /// Writes what is queued, as far as the socket takes it; remembers
    /// when output last went out and whether the socket refused some.
    fn write_out(&mut self) -> std::io::Result<bool> {
        if self.wbuf.pending() > 0 {
            self.last_out = Instant::now();
        }
        let written = self.wbuf.flush(&mut self.stream);
        self.write_blocked = !matches!(written, Ok(true));
        written
    }
}

enum Role {
    Server {
        listener: TcpListener,
        token: usize,
        /// Connections for the `authorise` callback's thread to decide on.
        authorise: Option<Sender<(usize, SocketAddr)>>,
        limits: Limits,
    },
    Client {
        addrs: Vec<SocketAddr>,
        next_addr: usize,
        retry: Option<Duration>,
        conn: Option<usize>,
        attempts: u64,
    },
}

struct Exch {
    group: String,
    secret: Option<Secret>,
    role: Role,
    announce: Sender<ConnectionAnnouncement>,
    conns: Vec<usize>,
}

/// The dispatcher's network state.
#[derive(Default)]
pub(super) struct Net {
    exchanges: IdMap<u64, Exch>,
    conns: IdMap<usize, Conn>,
    listeners: IdMap<usize, u64>,
    next_token: usize,
    /// Connections with output to write at the end of this turn.
    dirty: Vec<usize>,
    rng: u64,
    /// Remote agents known only as subscribers (their audience hides them
    /// from the registry): where to send their reports.
    subscribers: HashMap<AgentKey, (ServiceBinding, usize)>,
    /// Changes whenever `subscribers` does.
    subscribers_generation: u64,
    /// Connections being closed, with their exchange, while what they
    /// carried is withdrawn (so that the withdrawals are still relayed).
    closing: IdMap<usize, u64>,
    /// Whether the liveness timer runs (it does while any link exists).
    liveness_armed: bool,
    /// Where every connection's reads land first (one buffer for all).
    scratch: Vec<u8>,
    /// Connections whose unsent output is above the high-water mark, with
    /// when they got there. While any is, the dispatcher takes no commands
    /// and reads from no other peer: the pressure goes back to the senders.
    congested: IdMap<usize, Instant>,
    /// Connections with input left unread while congested.
    stalled: Vec<usize>,
    /// Where a report's frame is encoded before it is queued.
    frame: Vec<u8>,
    /// Warnings a peer can cause, at most one line a second per kind.
    pub(super) warnings: Warnings,
}

/// How many accepted connections may wait for the `authorise` callback's
/// thread; one more is refused at once.
const AUTHORISE_QUEUE: usize = 256;

/// Warnings that peers can cause in any number (refused and closed
/// connections), rate-limited: the first of a kind is logged, then at most
/// one line a second with the count of those not shown. Each one is
/// still logged at debug level.
#[derive(Default)]
pub(super) struct Warnings {
    kinds: Vec<(&'static str, Instant, u64)>,
}

impl Warnings {
    pub(super) fn warn(&mut self, kind: &'static str, line: std::fmt::Arguments<'_>) {
        let now = Instant::now();
        let i = match self.kinds.iter().position(|(k, _, _)| *k == kind) {
            Some(i) => i,
            None => {
                self.kinds.push((kind, now - Duration::from_secs(2), 0));
                self.kinds.len() - 1
            }
        };
        let (_, last, suppressed) = &mut self.kinds[i];
        if now.saturating_duration_since(*last) >= Duration::from_secs(1) {
            if *suppressed > 0 {
                log::warn!("netsvc: {line} (and {suppressed} more like it in the last second or more, at debug level)");
            } else {
                log::warn!("netsvc: {line}");
            }
            *last = now;
            *suppressed = 0;
        } else {
            *suppressed += 1;
            log::debug!("netsvc: {line}");
        }
    }
}

impl Net {
    fn token(&mut self) -> usize {
        self.next_token += 1;
        self.next_token
    }

    fn jitter(&mut self, base: Duration) -> Duration {
        // xorshift64: cheap, and enough to keep clients from reconnecting in step.
        let mut x = self.rng.max(1);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        let span = (base / 10).min(Duration::from_millis(250));
        if span.is_zero() {
            return base;
        }
        base + Duration::from_nanos(x % span.as_nanos() as u64)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.exchanges.is_empty()
    }

    /// A number that changes whenever the subscribers known only through
    /// their subscriptions do.
    pub(super) fn subscribers_generation(&self) -> u64 {
        self.subscribers_generation
    }

    /// Whether a peer's backlog holds everything back.
    pub(super) fn congested(&self) -> bool {
        !self.congested.is_empty()
    }

    /// Whether there is output to flush or input to read that no socket
    /// event will announce: frames queued after this turn's flush (by the
    /// reading of stalled peers), or stalled peers no longer held back.
    pub(super) fn has_work(&self) -> bool {
        !self.dirty.is_empty() || (!self.congested() && !self.stalled.is_empty())
    }
}

impl EventLoop {
    // ----- exchanges -----

    pub(super) fn exchange_open(
        &mut self,
        id: u64,
        group: String,
        role: ExchangeRole,
        secret: Option<Secret>,
        announce: Sender<ConnectionAnnouncement>,
    ) -> Result<()> {
        if self.net.exchanges.values().any(|e| e.group == group) {
            return Err(Error::InvalidTarget(format!(
                "this dispatcher already has an exchange for group {group:?}"
            )));
        }
        if self.net.rng == 0 {
            self.net.rng = self.link.process.uid() | 1;
        }
        let role = match role {
            ExchangeRole::Server {
                mut listener,
                authorise,
                limits,
            } => {
                let authorise = match authorise {
                    Some(check) => Some(self.spawn_authoriser(check)?),
                    None => None,
                };
                let token = self.net.token();
                self.poll
                    .registry()
                    .register(&mut listener, Token(token), Interest::READABLE)?;
                self.net.listeners.insert(token, id);
                Role::Server {
                    listener,
                    token,
                    authorise,
                    limits,
                }
            }
            ExchangeRole::Client { addrs, retry } => Role::Client {
                addrs,
                next_addr: 0,
                retry,
                conn: None,
                attempts: 0,
            },
        };
        let is_client = matches!(role, Role::Client { .. });
        self.net.exchanges.insert(
            id,
            Exch {
                group,
                secret,
                role,
                announce,
                conns: Vec::new(),
            },
        );
        if is_client {
            self.connect_attempt(id);
        }
        Ok(())
    }

    pub(super) fn exchange_close(&mut self, id: u64) {
        let Some(exch) = self.net.exchanges.get_mut(&id) else {
            return;
        };
        if let Role::Client { retry, .. } = &mut exch.role {
            *retry = None; // no reconnect after the closes below
        }
        for token in exch.conns.clone() {
            self.close_conn(token, Why::Closed, "exchange closed");
        }
        if let Some(mut exch) = self.net.exchanges.remove(&id) {
            if let Role::Server {
                listener, token, ..
            } = &mut exch.role
            {
                let _ = self.poll.registry().deregister(listener);
                self.net.listeners.remove(token);
            }
        }
        log::debug!("netsvc: exchange {id} closed");
    }

    pub(super) fn exchange_local_addr(&self, id: u64) -> Option<SocketAddr> {
        let exch = self.net.exchanges.get(&id)?;
        match &exch.role {
            Role::Server { listener, .. } => listener.local_addr().ok(),
            Role::Client { conn, .. } => conn
                .and_then(|t| self.net.conns.get(&t))
                .and_then(|c| c.stream.local_addr().ok()),
        }
    }

    /// Closes every exchange: the end of the dispatcher. Output already
    /// queued (such as the withdrawals of the services) is written if the
    /// sockets take it at once.
    pub(super) fn net_stop(&mut self) {
        self.flush_dirty();
        let ids: Vec<u64> = self.net.exchanges.keys().copied().collect();
        for id in ids {
            self.exchange_close(id);
        }
    }

    fn announce_connection(
        &self,
        exchange: u64,
        state: ConnectionState,
        remote: Option<ProcessId>,
        addr: SocketAddr,
        why: Option<(Why, &str)>,
    ) {
        let Some(exch) = self.net.exchanges.get(&exchange) else {
            return;
        };
        let ann = ConnectionAnnouncement {
            state,
            remote_process: remote,
            remote_address: addr,
            reason: why.map(|(w, _)| w),
            detail: why.map(|(_, d)| d.to_owned()).unwrap_or_default(),
        };
        if exch.announce.try_send(ann).is_err() {
            // Nobody reads the announcements (or not fast enough): they are
            // a notice, not state, so dropping them harms nothing else.
            log::debug!("netsvc: connection announcement dropped, its queue is full");
        }
    }

    /// The state of this dispatcher's exchange links, for errors: for
    /// instance "exchange links: 1 up, 1 connecting" or "no exchange".
    pub(super) fn links_state(&self) -> String {
        if self.net.exchanges.is_empty() {
            return "this dispatcher has no exchange".to_owned();
        }
        let up = self
            .net
            .conns
            .values()
            .filter(|c| matches!(c.state, ConnState::Active { .. }))
            .count();
        let other = self.net.conns.len() - up;
        let down = self
            .net
            .exchanges
            .values()
            .filter(|e| matches!(e.role, Role::Client { conn: None, .. }))
            .count();
        format!(
            "exchange links: {up} up, {other} in their handshake, {down} client exchanges not connected"
        )
    }

    // ----- connecting -----

    fn connect_attempt(&mut self, id: u64) {
        let token = self.net.token();
        let Some(exch) = self.net.exchanges.get_mut(&id) else {
            return;
        };
        let Role::Client {
            addrs,
            next_addr,
            conn,
            attempts,
            ..
        } = &mut exch.role
        else {
            return;
        };
        if addrs.is_empty() {
            return;
        }
        let addr = addrs[*next_addr % addrs.len()];
        *next_addr += 1;
        *attempts += 1;
        if *attempts > 1 {
            Counters::bump(&self.link.counters.reconnects);
        }
        let stream = TcpStream::connect(addr).and_then(|mut s| {
            self.poll.registry().register(
                &mut s,
                Token(token),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(s)
        });
        match stream {
            Ok(stream) => {
                *conn = Some(token);
                exch.conns.push(token);
                self.add_conn(token, id, stream, addr, ConnState::Connecting);
                log::debug!("netsvc: connecting to {addr}");
            }
            Err(e) => {
                log::debug!("netsvc: connect to {addr} failed at once: {e}");
                let detail = format!("connect failed: {e}");
                let why = Some((connect_why(&e), detail.as_str()));
                self.announce_connection(id, ConnectionState::Inactive, None, addr, why);
                self.schedule_reconnect(id);
            }
        }
    }

    fn schedule_reconnect(&mut self, id: u64) {
        let Some(exch) = self.net.exchanges.get(&id) else {
            return;
        };
        if let Role::Client {
            retry: Some(delay), ..
        } = exch.role
        {
            let delay = self.net.jitter(delay);
            self.timers
                .start(Instant::now() + delay, TimerKind::Reconnect(id));
        }
    }

    pub(super) fn reconnect_due(&mut self, id: u64) {
        let idle = matches!(
            self.net.exchanges.get(&id).map(|e| &e.role),
            Some(Role::Client {
                conn: None,
                retry: Some(_),
                ..
            })
        );
        if idle {
            self.connect_attempt(id);
        }
    }

    fn accept(&mut self, id: u64) {
        loop {
            let Some(exch) = self.net.exchanges.get(&id) else {
                return;
            };
            let Role::Server {
                listener, limits, ..
            } = &exch.role
            else {
                return;
            };
            let limits = *limits;
            let (mut stream, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors, for instance: the listener stays,
                    // the next readiness event tries again.
                    log::error!("netsvc: accept failed: {e}");
                    return;
                }
            };
            if !self.make_room(id, peer, &limits) {
                Counters::bump(&self.link.counters.limits_breached);
                let n = limits.max_connections;
                self.net.warnings.warn(
                    "refused",
                    format_args!("connection from {peer} refused: the server has its maximum of {n} connections"),
                );
                continue;
            }
            let token = self.net.token();
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Token(token),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                log::error!("netsvc: cannot register connection from {peer}: {e}");
                continue;
            }
            let _ = stream.set_nodelay(true);
            let authorise = match self.net.exchanges.get(&id).map(|e| &e.role) {
                Some(Role::Server {
                    authorise: Some(tx),
                    ..
                }) => Some(tx.clone()),
                _ => None,
            };
            let state = match authorise {
                Some(_) => ConnState::Authorising,
                None => ConnState::Handshaking,
            };
            self.add_conn(token, id, stream, peer, state);
            if let Some(exch) = self.net.exchanges.get_mut(&id) {
                exch.conns.push(token);
            }
            log::debug!("netsvc: accepted connection from {peer}");
            match authorise {
                Some(tx) => {
                    if tx.try_send((token, peer)).is_err() {
                        // Its queue is full (the callback is slow) or gone.
                        self.close_conn(
                            token,
                            Why::LimitBreached,
                            "refused: too many connections wait for the authorise callback",
                        );
                    }
                }
                None => self.send_hello(token),
            }
        }
    }

    /// Makes room for a connection from `peer`: true if it may be taken.
    /// Connections still in their handshake are bounded per address and
    /// give way, oldest first, to newer ones (so silent connections cannot
    /// hold every slot until their timeout); established links never do.
    fn make_room(&mut self, id: u64, peer: SocketAddr, limits: &Limits) -> bool {
        let Some(exch) = self.net.exchanges.get(&id) else {
            return false;
        };
        // A handshake holds a slot only once it has had time to complete:
        // a burst of honest clients (all of one host reconnecting after a
        // restart) is all fresh, and none of it gives way to the rest.
        let grace = handshake_grace(self.link.config.handshake_timeout);
        let now = Instant::now();
        let mut oldest_any: Option<(Instant, usize)> = None;
        let mut oldest_here: Option<(Instant, usize)> = None;
        let mut here = 0;
        for t in &exch.conns {
            let Some(c) = self.net.conns.get(t) else {
                continue;
            };
            let fresh = now.saturating_duration_since(c.opened) < grace;
            if matches!(c.state, ConnState::Active { .. }) || fresh {
                continue;
            }
            let entry = Some((c.opened, *t));
            if oldest_any.is_none_or(|(at, _)| c.opened < at) {
                oldest_any = entry;
            }
            if c.peer.ip() == peer.ip() {
                here += 1;
                if oldest_here.is_none_or(|(at, _)| c.opened < at) {
                    oldest_here = entry;
                }
            }
        }
        let full = exch.conns.len() >= limits.max_connections;
        let evict = if here >= limits.max_handshakes_per_address {
            oldest_here
        } else if full {
            oldest_any
        } else {
            return true;
        };
        // (Nothing stale to evict: a full server refuses; below the
        // maximum, fresh handshakes of one address are all taken.)
        if evict.is_none() && !full {
            return true;
        }
        match evict {
            Some((_, t)) => {
                Counters::bump(&self.link.counters.limits_breached);
                self.close_conn(
                    t,
                    Why::LimitBreached,
                    "handshake not complete, and a newer connection needed its slot",
                );
                true
            }
            None => false,
        }
    }

    /// Starts the thread that runs a server's `authorise` callback, so
    /// that a slow callback delays only the connections it decides on.
    /// Its decisions come back as commands; it ends when the exchange does.
    fn spawn_authoriser(&mut self, check: Authorise) -> Result<Sender<(usize, SocketAddr)>> {
        let (tx, rx) = crossbeam_channel::bounded::<(usize, SocketAddr)>(AUTHORISE_QUEUE);
        let link = self.link.clone();
        let handle = std::thread::Builder::new()
            .name("netsvc-authorise".to_owned())
            .spawn(move || {
                for (token, peer) in rx.iter() {
                    let allowed =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&peer)))
                            .unwrap_or_else(|_| {
                                log::error!(
                                    "netsvc: the authorise callback panicked; refusing {peer}"
                                );
                                false
                            });
                    if link
                        .send(crate::mailbox::command::Command::Authorised { token, allowed })
                        .is_err()
                    {
                        return; // the dispatcher has stopped
                    }
                }
            })?;
        self.link.add_worker(self.link.next_agent(), handle);
        Ok(tx)
    }

    /// The `authorise` callback's decision on a connection.
    pub(super) fn authorised(&mut self, token: usize, allowed: bool) {
        let Some(conn) = self.net.conns.get_mut(&token) else {
            return; // closed meanwhile (its handshake time ran out)
        };
        if conn.state != ConnState::Authorising {
            return;
        }
        if !allowed {
            let peer = conn.peer;
            log::info!("netsvc: connection from {peer} refused by authorise");
            self.close_conn(token, Why::Refused, "refused by the authorise callback");
            return;
        }
        conn.state = ConnState::Handshaking;
        self.send_hello(token);
        // What arrived meanwhile was left in the socket (edge-triggered
        // readiness will not say so again).
        self.read_conn(token);
    }

    /// Registers a new connection, with its handshake deadline. Keepalive
    /// lets the kernel notice a dead peer too, beside our heartbeats.
    fn add_conn(
        &mut self,
        token: usize,
        exchange: u64,
        stream: TcpStream,
        peer: SocketAddr,
        state: ConnState,
    ) {
        let idle = self.link.config.dead_peer_timeout;
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval((idle / 3).max(Duration::from_secs(1)));
        if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
            log::debug!("netsvc: keepalive not set on the connection to {peer}: {e}");
        }
        let now = Instant::now();
        let timer = self.timers.start(
            now + self.link.config.handshake_timeout,
            TimerKind::Handshake(token),
        );
        let conn = Conn {
            exchange,
            stream,
            peer,
            state,
            opened: now,
            rbuf: ReadBuffer::default(),
            wbuf: WriteBuffer::default(),
            learned: Ordered::default(),
            usage: Usage::default(),
            handshake_timer: Some(timer),
            last_in: now,
            last_out: now,
            write_blocked: false,
            listed: false,
        };
        self.net.conns.insert(token, conn);
    }

    fn send_hello(&mut self, token: usize) {
        let Some(conn) = self.net.conns.get(&token) else {
            return;
        };
        let (group, auth) = self
            .net
            .exchanges
            .get(&conn.exchange)
            .map(|e| (e.group.clone(), e.secret.is_some()))
            .unwrap_or_default();
        let hello = Hello {
            process: self.link.process.clone(),
            group,
            auth,
        };
        match wire::encode_hello(&hello) {
            Ok(body) => {
                if let Some(conn) = self.net.conns.get_mut(&token) {
                    conn.wbuf.push_frame(&body);
                    Counters::bump(&self.link.counters.frames_out);
                    self.net.dirty.push(token);
                }
            }
            Err(e) => self.close_conn(token, Why::Io, &format!("cannot encode hello: {e}")),
        }
    }

    pub(super) fn handshake_expired(&mut self, token: usize) {
        let Some(state) = self.net.conns.get(&token).map(|c| c.state.clone()) else {
            return;
        };
        let limit = self.link.config.handshake_timeout;
        match state {
            ConnState::Active { .. } => {}
            ConnState::Connecting => self.close_conn(
                token,
                Why::Unreachable,
                &format!("connect did not complete within {limit:?}"),
            ),
            _ => self.close_conn(
                token,
                Why::HandshakeTimeout,
                &format!("no handshake within {limit:?}"),
            ),
        }
    }

    // ----- readiness -----

    pub(super) fn net_event(&mut self, event: &mio::event::Event) {
        let token = event.token().0;
        if let Some(&id) = self.net.listeners.get(&token) {
            self.accept(id);
            return;
        }
        let Some(conn) = self.net.conns.get_mut(&token) else {
            return;
        };
        if conn.state == ConnState::Authorising {
            return; // read once the callback has decided
        }
        if conn.state == ConnState::Connecting {
            match conn.stream.take_error() {
                Ok(Some(e)) | Err(e) => {
                    self.close_conn(token, connect_why(&e), &format!("connect failed: {e}"));
                    return;
                }
                Ok(None) => {}
            }
            match conn.stream.peer_addr() {
                Ok(_) => {
                    let _ = conn.stream.set_nodelay(true);
                    conn.state = ConnState::Handshaking;
                    log::debug!("netsvc: connected to {}", conn.peer);
                    self.send_hello(token);
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    if event.is_error() || event.is_write_closed() {
                        self.close_conn(token, Why::Unreachable, "connect failed");
                    }
                    return; // still in progress
                }
                Err(e) => {
                    self.close_conn(token, connect_why(&e), &format!("connect failed: {e}"));
                    return;
                }
            }
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            if self.net.congested() && !self.net.congested.contains_key(&token) {
                // Leave it in the socket: TCP pushes back on that sender.
                if !self.net.stalled.contains(&token) {
                    self.net.stalled.push(token);
                }
            } else {
                self.read_conn(token);
            }
        }
        if event.is_writable() {
            if let Some(conn) = self.net.conns.get_mut(&token) {
                conn.write_blocked = false;
                self.net.dirty.push(token);
            }
        }
    }

    fn read_conn(&mut self, token: usize) {
        let Some(conn) = self.net.conns.get_mut(&token) else {
            return;
        };
        let mut rbuf = std::mem::take(&mut conn.rbuf);
        let mut chunks = 0;
        loop {
            let Some(conn) = self.net.conns.get_mut(&token) else {
                return;
            };
            chunks += 1;
            if self.net.scratch.is_empty() {
                self.net.scratch = vec![0u8; crate::frame::READ_CHUNK];
            }
            // A chunk at a time (or the whole of a larger frame), each
            // handled before the next is read: what is read is relayed
            // before more comes in, and a relay that congests an output
            // stops the reading below. Before the handshake and
            // authentication are done, a peer gets a few KiB, no more.
            let mut active = matches!(conn.state, ConnState::Active { .. });
            let (mut limit, max) = if active {
                let limit = self.link.config.max_frame_size;
                (limit, crate::frame::READ_CHUNK.max(rbuf.wanted(limit)))
            } else {
                let limit = PRE_AUTH_FRAME.min(self.link.config.max_frame_size);
                (limit, limit + crate::frame::PREFIX)
            };
            let fill = match rbuf.fill(&mut conn.stream, max, &mut self.net.scratch) {
                Ok((fill, 0)) => fill,
                Ok((fill, _)) => {
                    // Bytes arrived: the peer is alive, whole frame or not.
                    conn.last_in = Instant::now();
                    fill
                }
                Err(e) => {
                    self.close_conn(token, io_why(&e), &format!("read failed: {e}"));
                    return;
                }
            };
            loop {
                // The handshake may have completed on the frame before:
                // looked up only until it has (not per frame of a link).
                if !active {
                    active = self
                        .net
                        .conns
                        .get(&token)
                        .is_some_and(|c| matches!(c.state, ConnState::Active { .. }));
                    if active {
                        limit = self.link.config.max_frame_size;
                    }
                }
                let body = match rbuf.next_frame(limit) {
                    Ok(Some(body)) => body,
                    Ok(None) => break,
                    Err(e) => {
                        // Before the handshake, a huge first length is most
                        // likely another protocol's text ("HTTP" is 1.2 GB).
                        // A frame over the limit is counted as a limit
                        // breached, whatever it is.
                        Counters::bump(&self.link.counters.limits_breached);
                        let why = match frame_why(&e) {
                            Why::LimitBreached if !active => Why::NotNetsvc,
                            why => why,
                        };
                        self.close_conn(token, why, &format!("bad input: {e}"));
                        return;
                    }
                };
                Counters::bump(&self.link.counters.frames_in);
                if !self.on_frame(token, body) {
                    return;
                }
            }
            match fill {
                Fill::WouldBlock => break,
                Fill::Full if self.net.congested() && !self.net.congested.contains_key(&token) => {
                    // Leave the rest in the socket until the backlog drains.
                    if !self.net.stalled.contains(&token) {
                        self.net.stalled.push(token);
                    }
                    break;
                }
                Fill::Full if chunks >= CHUNKS_PER_TURN => {
                    // Fair shares: one peer's flood is read a few chunks a
                    // turn, and every other peer, command and timer is
                    // served between them.
                    if !self.net.stalled.contains(&token) {
                        self.net.stalled.push(token);
                    }
                    break;
                }
                Fill::Full => continue,
                Fill::Closed => {
                    self.close_conn(token, Why::ClosedByPeer, "peer closed the connection");
                    return;
                }
            }
        }
        if let Some(conn) = self.net.conns.get_mut(&token) {
            conn.rbuf = rbuf;
        }
    }

    /// Handles one frame; false if the connection was closed.
    fn on_frame(&mut self, token: usize, body: &[u8]) -> bool {
        let Some(conn) = self.net.conns.get(&token) else {
            return false;
        };
        if conn.state == ConnState::Handshaking {
            match wire::decode_hello(body) {
                Ok(hello) => self.handshake_done(token, hello),
                Err(e) => {
                    self.close_conn(token, e.why(), &format!("handshake refused: {e}"));
                    return false;
                }
            }
            return self.net.conns.contains_key(&token);
        }
        let authenticating = matches!(
            conn.state,
            ConnState::AwaitChallenge { .. }
                | ConnState::AwaitResponse { .. }
                | ConnState::AwaitProof { .. }
        );
        let decoded = if authenticating {
            wire::decode::<Message>(body).map(Incoming::Other)
        } else {
            wire::decode_message(body)
        };
        match decoded {
            Ok(Incoming::Other(Message::Closing { reason })) => {
                self.peer_closing(token, &reason);
                return false;
            }
            Ok(Incoming::Other(message)) if authenticating => {
                return self.authenticate(token, message)
            }
            Ok(Incoming::Other(message)) => self.on_message(token, message, body),
            Ok(Incoming::Report(report)) => self.remote_report(token, report, body),
            Err(e) => {
                self.close_conn(token, Why::BadInput, &format!("bad frame: {e}"));
                return false;
            }
        }
        self.net.conns.contains_key(&token)
    }

    fn handshake_done(&mut self, token: usize, hello: Hello) {
        let Some(conn) = self.net.conns.get(&token) else {
            return;
        };
        let exchange = conn.exchange;
        let group = self
            .net
            .exchanges
            .get(&exchange)
            .map(|e| e.group.clone())
            .unwrap_or_default();
        if hello.group != group {
            let reason = format!(
                "handshake refused: peer's exchange group is {:?}, ours is {group:?}",
                hello.group
            );
            self.close_conn(token, Why::GroupMismatch, &reason);
            return;
        }
        if hello.process == self.link.process {
            self.close_conn(
                token,
                Why::BadInput,
                "handshake refused: connected to itself",
            );
            return;
        }
        let secret = self
            .net
            .exchanges
            .get(&exchange)
            .and_then(|e| e.secret.clone());
        let is_server = self
            .net
            .exchanges
            .get(&exchange)
            .is_some_and(|e| matches!(e.role, Role::Server { .. }));
        if hello.auth != secret.is_some() {
            // Found out now, before either side announces a link.
            let reason = if hello.auth {
                "authentication failed: the peer requires a shared secret, and this side has none"
            } else {
                "authentication failed: this side requires a shared secret, and the peer has none"
            };
            self.close_conn(token, Why::AuthenticationFailed, reason);
            return;
        }
        if secret.is_some() {
            // Nothing about the services crosses before both sides proved
            // they hold the key.
            let state = if is_server {
                let nonce = auth::nonce();
                self.send(
                    token,
                    &Message::Challenge {
                        nonce: nonce.clone(),
                    },
                );
                ConnState::AwaitResponse {
                    remote: hello.process,
                    nonce,
                }
            } else {
                ConnState::AwaitChallenge {
                    remote: hello.process,
                }
            };
            if let Some(conn) = self.net.conns.get_mut(&token) {
                conn.state = state;
            }
            return;
        }
        self.activate(token, hello.process);
    }

    /// The peer closes the link and said why.
    fn peer_closing(&mut self, token: usize, reason: &str) {
        let mut end = reason.len().min(PEER_REASON_MAX);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let detail = format!("the peer closed the link: {}", &reason[..end]);
        let why = if reason.starts_with(Why::AuthenticationFailed.as_str()) {
            Why::AuthenticationFailed
        } else {
            Why::ClosedByPeer
        };
        self.close_conn(token, why, &detail);
    }

    /// One authentication step; false if the connection was closed.
    fn authenticate(&mut self, token: usize, message: Message) -> bool {
        let Some(conn) = self.net.conns.get(&token) else {
            return false;
        };
        let Some(secret) = self
            .net
            .exchanges
            .get(&conn.exchange)
            .and_then(|e| e.secret.clone())
        else {
            return false;
        };
        let me = self.link.process.uid();
        let state = conn.state.clone();
        // Counted in close_conn: any link lost while authenticating is.
        let refuse = |this: &mut Self, why: &str| {
            this.close_conn(
                token,
                Why::AuthenticationFailed,
                &format!("authentication failed: {why}"),
            );
            false
        };
        match (state, message) {
            (ConnState::AwaitChallenge { remote }, Message::Challenge { nonce: theirs }) => {
                let mine = auth::nonce();
                let mac = auth::prove(&secret, Side::Client, &theirs, &mine, me, remote.uid());
                self.send(
                    token,
                    &Message::Response {
                        nonce: mine.clone(),
                        mac,
                    },
                );
                if let Some(conn) = self.net.conns.get_mut(&token) {
                    conn.state = ConnState::AwaitProof {
                        remote,
                        theirs,
                        mine,
                    };
                }
                true
            }
            (
                ConnState::AwaitResponse { remote, nonce },
                Message::Response { nonce: theirs, mac },
            ) => {
                if !auth::check(
                    &secret,
                    Side::Client,
                    &mac,
                    &nonce,
                    &theirs,
                    remote.uid(),
                    me,
                ) {
                    return refuse(self, "the client's proof is wrong (another key?)");
                }
                let proof = auth::prove(&secret, Side::Server, &theirs, &nonce, me, remote.uid());
                self.send(token, &Message::Proof { mac: proof });
                self.activate(token, remote);
                true
            }
            (
                ConnState::AwaitProof {
                    remote,
                    theirs,
                    mine,
                },
                Message::Proof { mac },
            ) => {
                if !auth::check(
                    &secret,
                    Side::Server,
                    &mac,
                    &mine,
                    &theirs,
                    remote.uid(),
                    me,
                ) {
                    return refuse(self, "the server's proof is wrong (another key?)");
                }
                self.activate(token, remote);
                true
            }
            (ConnState::AwaitChallenge { .. }, _) => {
                refuse(self, "the server did not authenticate itself")
            }
            (_, _) => refuse(self, "the peer did not follow the handshake"),
        }
    }

    /// The link is up: announced, and our table sent.
    fn activate(&mut self, token: usize, remote: ProcessId) {
        let Some(conn) = self.net.conns.get_mut(&token) else {
            return;
        };
        let (exchange, peer) = (conn.exchange, conn.peer);
        conn.state = ConnState::Active {
            remote: remote.clone(),
        };
        if let Some(t) = conn.handshake_timer.take() {
            self.timers.cancel(t);
        }
        log::debug!("netsvc: exchange link to {remote} ({peer}) active");
        self.arm_liveness();
        self.announce_connection(exchange, ConnectionState::Active, Some(remote), peer, None);
        // Our whole table: local services, and on a server those learned
        // from its other clients.
        let bindings: Vec<ServiceBinding> = self
            .registry
            .all()
            .filter(|(b, route)| self.shown_on(b, *route, token))
            .map(|(b, _)| b.clone())
            .collect();
        for binding in bindings {
            self.send(token, &Message::Available { binding });
        }
    }

    /// Whether a binding reached through `route` is announced on connection `token`.
    fn shown_on(&self, binding: &ServiceBinding, route: Route, token: usize) -> bool {
        let Some(conn) = self.net.conns.get(&token) else {
            return false;
        };
        if !matches!(conn.state, ConnState::Active { .. }) {
            return false;
        }
        let Some(exch) = self.net.exchanges.get(&conn.exchange) else {
            return false;
        };
        if !visible(binding.service_audience(), &exch.group) {
            return false;
        }
        match route {
            Route::Local(_) => true,
            // A server relays between its own clients, never back.
            Route::Remote(from) => {
                let from_exchange = self
                    .net
                    .conns
                    .get(&from)
                    .map(|c| c.exchange)
                    .or_else(|| self.net.closing.get(&from).copied());
                from != token
                    && matches!(exch.role, Role::Server { .. })
                    && from_exchange == Some(conn.exchange)
            }
        }
    }

    // ----- output -----

    /// Encodes and queues a message on one connection.
    pub(super) fn send(&mut self, token: usize, message: &Message) {
        match wire::encode_frame(message) {
            Ok(frame) => self.push(token, &frame),
            Err(e) => log::error!("netsvc: cannot encode a frame: {e}"),
        }
    }

    /// Queues a frame body as it came from a peer (its prefix is added).
    fn push_body(&mut self, token: usize, body: &[u8]) {
        if let Some(conn) = self.net.conns.get_mut(&token) {
            conn.wbuf.push_frame(body);
            self.queued(token);
        }
    }

    /// Queues an already encoded frame (with its prefix) on a connection.
    fn push(&mut self, token: usize, frame: &[u8]) {
        if let Some(conn) = self.net.conns.get_mut(&token) {
            conn.wbuf.push_encoded(frame);
            self.queued(token);
        }
    }

    /// A frame was queued on a connection: it is written at the end of the
    /// turn, or at once when a chunk's worth is waiting, so that a stream of
    /// small frames (a publisher's turn of 4,096 reports, an exchange relaying
    /// a chunk it read) goes out a chunk per write while the bytes are still in
    /// cache, and the buffer stays about a chunk long rather than growing to a
    /// turn's output and being shrunk again (that showed as page faults in the
    /// profiles). Errors are the end-of-turn flush's to handle. A backlog
    /// past the mark congests the connection at once, not only at the next
    /// flush, so that the reading of the frames that fill it stops in time.
    fn queued(&mut self, token: usize) {
        Counters::bump(&self.link.counters.frames_out);
        let high = high_water(self.link.config.max_outbound_buffer);
        let Some(conn) = self.net.conns.get_mut(&token) else {
            return;
        };
        if !conn.listed {
            conn.listed = true;
            self.net.dirty.push(token);
        }
        if conn.wbuf.pending() >= crate::frame::READ_CHUNK
            && !conn.write_blocked
            && conn.state != ConnState::Connecting
        {
            let _ = conn.write_out();
        }
        if conn.wbuf.pending() > high {
            self.net.congested.entry(token).or_insert_with(Instant::now);
        }
    }

    /// Tells every connection that shows the binding about a change of it.
    pub(super) fn broadcast(&mut self, binding: &ServiceBinding, route: Route, message: &Message) {
        if self.net.conns.is_empty() {
            return;
        }
        let targets: Vec<usize> = self
            .net
            .conns
            .keys()
            .copied()
            .filter(|t| self.shown_on(binding, route, *t))
            .collect();
        if targets.is_empty() {
            return;
        }
        match wire::encode_frame(message) {
            Ok(frame) => {
                for t in targets {
                    self.push(t, &frame);
                }
            }
            Err(e) => log::error!("netsvc: cannot encode a frame: {e}"),
        }
    }

    /// Writes what each connection has queued, in as few writes as the
    /// sockets allow; drops a peer whose backlog passes the limit.
    pub(super) fn flush_dirty(&mut self) {
        if self.net.dirty.is_empty() {
            return;
        }
        let mut dirty = std::mem::take(&mut self.net.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        let limit = self.link.config.max_outbound_buffer;
        let high = high_water(limit);
        for token in dirty.drain(..) {
            let Some(conn) = self.net.conns.get_mut(&token) else {
                continue;
            };
            conn.listed = false;
            if conn.state == ConnState::Connecting {
                continue;
            }
            match conn.write_out() {
                Ok(_) => {
                    let pending = conn.wbuf.pending();
                    if pending > high {
                        self.net.congested.entry(token).or_insert_with(Instant::now);
                    } else if pending <= high / 4 {
                        self.net.congested.remove(&token);
                    }
                    if pending > limit {
                        Counters::bump(&self.link.counters.slow_consumers);
                        let reason = format!(
                            "slow consumer: {} bytes waiting, limit {limit}",
                            conn.wbuf.pending()
                        );
                        self.close_conn(token, Why::SlowConsumer, &reason);
                    }
                }
                Err(e) => self.close_conn(token, io_why(&e), &format!("write failed: {e}")),
            }
        }
        if self.net.dirty.is_empty() {
            self.net.dirty = dirty;
        }
    }

    /// Reads the next share of the input left unread (a fair share taken,
    /// or congestion now over); once a turn, after the turn's events.
    pub(super) fn read_stalled(&mut self) {
        if !self.net.congested() && !self.net.stalled.is_empty() {
            for token in std::mem::take(&mut self.net.stalled) {
                self.read_conn(token);
            }
        }
    }

    // ----- liveness -----

    fn arm_liveness(&mut self) {
        if !self.net.liveness_armed {
            self.net.liveness_armed = true;
            let period = self.liveness_period();
            self.timers
                .start(Instant::now() + period, TimerKind::Liveness);
        }
    }

    /// The liveness check runs often enough for both the heartbeat interval
    /// and the dead-peer timeout.
    fn liveness_period(&self) -> Duration {
        let c = &self.link.config;
        (c.heartbeat_interval / 2)
            .min(c.dead_peer_timeout / 4)
            .max(Duration::from_millis(1))
    }

    /// Every active link: a heartbeat if it has been quiet, closed if the
    /// peer has been silent past the dead-peer timeout.
    pub(super) fn liveness(&mut self) {
        let now = Instant::now();
        let (interval, dead) = (
            self.link.config.heartbeat_interval,
            self.link.config.dead_peer_timeout,
        );
        let mut quiet = Vec::new();
        let mut silent = Vec::new();
        // A peer that has held everything back for a dead-peer timeout is
        // dropped as a slow consumer, so that congestion always ends.
        let stuck: Vec<usize> = self
            .net
            .congested
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(**since) >= dead)
            .map(|(t, _)| *t)
            .collect();
        for token in stuck {
            Counters::bump(&self.link.counters.slow_consumers);
            self.close_conn(
                token,
                Why::SlowConsumer,
                &format!("slow consumer: backlog not drained for {dead:?}"),
            );
        }
        for (token, conn) in &self.net.conns {
            if !matches!(conn.state, ConnState::Active { .. }) || self.net.stalled.contains(token) {
                continue; // (a stalled peer's input is ours to read, not its silence)
            }
            if now.saturating_duration_since(conn.last_in) >= dead {
                silent.push(*token);
            } else if now.saturating_duration_since(conn.last_out) >= interval {
                quiet.push(*token);
            }
        }
        for token in silent {
            // Judged on what arrived: input may be waiting in the socket
            // after a long turn, and a peer that sent it is alive.
            self.read_conn(token);
            let alive = self
                .net
                .conns
                .get(&token)
                .is_none_or(|c| Instant::now().saturating_duration_since(c.last_in) < dead);
            if alive {
                continue;
            }
            let reason = format!("peer silent for {dead:?}: presumed dead");
            self.close_conn(token, Why::HeartbeatTimeout, &reason);
        }
        for token in quiet {
            self.send(token, &Message::Heartbeat);
        }
        if self.net.conns.is_empty() {
            self.net.liveness_armed = false;
        } else {
            let period = self.liveness_period();
            self.timers.start(now + period, TimerKind::Liveness);
        }
    }

    // ----- closing -----

    /// Closes a connection: every binding learned through it is withdrawn,
    /// calls through it fail, and a client schedules its reconnection.
    pub(super) fn close_conn(&mut self, token: usize, why: Why, reason: &str) {
        let unexpected = why != Why::Closed;
        let Some(mut conn) = self.net.conns.remove(&token) else {
            return;
        };
        let authenticating = matches!(
            conn.state,
            ConnState::AwaitChallenge { .. }
                | ConnState::AwaitResponse { .. }
                | ConnState::AwaitProof { .. }
        );
        // A peer that hangs up in the middle of authentication refused it
        // (a wrong key): say so rather than "closed by peer".
        let why = match why {
            Why::ClosedByPeer if authenticating => Why::AuthenticationFailed,
            other => other,
        };
        let adjusted;
        let reason = if why == Why::AuthenticationFailed && !reason.starts_with("authentication") {
            adjusted =
                format!("authentication failed: {reason} while authenticating (a wrong secret?)");
            adjusted.as_str()
        } else {
            reason
        };
        self.net.congested.remove(&token);
        self.net.stalled.retain(|t| *t != token);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        if let Some(t) = conn.handshake_timer.take() {
            self.timers.cancel(t);
        }
        let remote = match &conn.state {
            ConnState::Active { remote } => Some(remote.clone()),
            _ => None,
        };
        if authenticating || (why == Why::AuthenticationFailed && remote.is_none()) {
            Counters::bump(&self.link.counters.auth_failures);
        }
        // (Counted first: a peer told why may look at the counters.)
        tell_why(&mut conn, why, reason);
        if unexpected && conn.state != ConnState::Connecting {
            let peer = conn.peer;
            self.net.warnings.warn(
                "closing",
                format_args!("closing connection to {peer}: {reason}"),
            );
        } else {
            log::debug!("netsvc: closing connection to {}: {reason}", conn.peer);
        }
        // Everything learned through it goes, newest first (and the other
        // clients of a server hear of it).
        self.net.closing.insert(token, conn.exchange);
        for key in conn.learned.iter().rev() {
            if matches!(self.registry.get(key).map(|e| e.route), Some(Route::Remote(t)) if t == token)
            {
                self.remove_agent(*key, &format!("connection to {} lost", conn.peer), true);
            }
        }
        self.net.closing.remove(&token);
        let hidden: Vec<(AgentKey, ServiceBinding)> = self
            .net
            .subscribers
            .iter()
            .filter(|(_, (_, t))| *t == token)
            .map(|(k, (b, _))| (*k, b.clone()))
            .collect();
        for (key, binding) in hidden {
            self.net.subscribers.remove(&key);
            self.net.subscribers_generation += 1;
            self.subscriber_vanished(key, &binding);
        }
        // Calls that came through it have nobody to answer to.
        for conv in self.pending.callers_on(token) {
            self.forget(conv);
        }
        let exchange = conn.exchange;
        let was_client = if let Some(exch) = self.net.exchanges.get_mut(&exchange) {
            exch.conns.retain(|t| *t != token);
            if let Role::Client { conn: c, .. } = &mut exch.role {
                *c = None;
                true
            } else {
                false
            }
        } else {
            false
        };
        // Inactive for a lost link, and on a client for a failed attempt.
        if remote.is_some() || was_client {
            let state = ConnectionState::Inactive;
            self.announce_connection(exchange, state, remote, conn.peer, Some((why, reason)));
        }
        if was_client {
            self.schedule_reconnect(exchange);
        }
    }

    // ----- messages from a peer -----

    fn on_message(&mut self, token: usize, message: Message, raw: &[u8]) {
        let max_name = self.link.config.max_name_len;
        let max_groups = self.server_limits(token).map(|l| l.max_groups);
        match message {
            Message::Available { binding } => {
                if let Err(e) = limits::check_binding(&binding, max_name, max_groups) {
                    return self.breach(token, &e);
                }
                let key = binding.key();
                if key.process == self.link.process.uid() || self.registry.get(&key).is_some() {
                    return; // ours, or known already by another path
                }
                let Some(conn) = self.net.conns.get_mut(&token) else {
                    return;
                };
                conn.learned.insert(key);
                conn.usage.learned_bytes += limits::binding_bytes(&binding);
                let learned = conn.learned.len();
                if self.limit(token, |l| l.max_services, learned, "services")
                    || self.over_budget(token)
                {
                    return;
                }
                self.drop_hidden(&key);
                self.add_agent(binding, Route::Remote(token));
            }
            Message::Withdrawn { agent, draining } => {
                if self.learned_via(&agent, token) {
                    let bytes = self
                        .registry
                        .get(&agent)
                        .map_or(0, |e| limits::binding_bytes(&e.binding));
                    if let Some(conn) = self.net.conns.get_mut(&token) {
                        conn.learned.remove(&agent);
                        conn.usage.learned_bytes = conn.usage.learned_bytes.saturating_sub(bytes);
                    }
                    self.remove_agent(agent, "withdrawn", !draining);
                }
            }
            Message::Group {
                agent,
                group,
                joined,
            } => {
                if let Err(e) = limits::check_name("group name", &group, max_name) {
                    return self.breach(token, &e);
                }
                if !self.learned_via(&agent, token) {
                    return;
                }
                let before = self.registry.group_count(&agent);
                if let Some(max) = max_groups.filter(|max| joined && before >= *max) {
                    if !self.registry.member(&agent, &group) {
                        let e = format!("{} groups in one binding, at most {max}", before + 1);
                        return self.breach(token, &e);
                    }
                }
                self.change_group(agent, &group, joined);
                let after = self.registry.group_count(&agent);
                if let Some(conn) = self.net.conns.get_mut(&token) {
                    let cost = group.len() + limits::GROUP_OVERHEAD;
                    let u = &mut conn.usage.learned_bytes;
                    *u = match after.cmp(&before) {
                        std::cmp::Ordering::Greater => *u + cost,
                        std::cmp::Ordering::Less => u.saturating_sub(cost),
                        std::cmp::Ordering::Equal => *u,
                    };
                }
                self.over_budget(token);
            }
            Message::Request {
                conv,
                sender,
                to,
                method,
                payload,
                timeout_ms,
                oneway,
                heartbeat_ms,
            } => {
                if let Err(e) = limits::check_name("method name", &method, max_name)
                    .and_then(|()| limits::check_binding(&sender, max_name, max_groups))
                {
                    return self.breach(token, &e);
                }
                // The period is the caller's to choose, above a floor: a
                // period of 0 would make this side send without pause.
                let opts = RouteOpts {
                    oneway,
                    heartbeat: heartbeat_ms.map(|ms| Duration::from_millis(ms).max(MIN_PROGRESS)),
                };
                if self.pending.contains_key(&conv) && !self.sent_to(conv, token) {
                    // Another caller's call: the id is not this peer's to
                    // reuse (a request forwarded back through here comes
                    // from the link the call was sent to, and is kept).
                    self.refuse_frame(token, "a request reusing a pending conversation id");
                    return;
                }
                if !oneway && !self.pending.contains_key(&conv) {
                    // A forwarded request coming through us again keeps its
                    // entry (and caller); route_request updates the target.
                    let deadline =
                        crate::config::deadline(Instant::now(), Duration::from_millis(timeout_ms));
                    let timer = self.timers.start(deadline, TimerKind::Call(conv));
                    let pending = Pending::new(Caller::Remote(token), Some(to), timer, deadline);
                    self.pending.insert(conv, pending);
                    let calls = self.pending.of_conn(token);
                    if self.limit(token, |l| l.max_pending_calls, calls, "pending calls")
                        || self.over_budget(token)
                    {
                        return; // (closing the connection dropped its calls)
                    }
                }
                self.route_request(conv, to, method, payload, sender, Some((token, raw)), opts);
            }
            // Heartbeats of a call come from where the call went, or not at all.
            Message::Progress { conv } if self.sent_to(conv, token) => self.progress(conv),
            // (A late one, for a call already over, is no one's business.)
            Message::Progress { conv } if !self.pending.contains_key(&conv) => {}
            Message::Progress { .. } => {
                self.refuse_frame(token, "a heartbeat for a call not sent to it")
            }
            Message::Heartbeat => {}
            // (Taken by on_frame; here for completeness.)
            Message::Closing { reason } => self.peer_closing(token, &reason),
            Message::Challenge { .. } | Message::Response { .. } | Message::Proof { .. } => {
                Counters::bump(&self.link.counters.auth_failures);
                self.close_conn(
                    token,
                    Why::AuthenticationFailed,
                    "the peer requires authentication, and this exchange has no secret",
                );
            }
            Message::Reply { conv, result } => {
                // Only the link the call went out on may answer it.
                if self.sent_to(conv, token) {
                    self.complete(conv, result.map_err(Error::from));
                } else {
                    self.refuse_frame(token, "a reply for a call not sent to it");
                }
            }
            Message::Subscribe {
                subscriber,
                publisher,
                pattern,
                on,
            } => self.remote_subscribe(token, subscriber, publisher, &pattern, on),
            // (Read in place by on_frame; kept for completeness.)
            Message::Report {
                publisher,
                to,
                subject,
                payload,
            } => {
                let report = ReportRef {
                    publisher,
                    to,
                    subject: &subject,
                    payload: payload.as_bytes(),
                };
                self.remote_report(token, report, raw);
            }
        }
    }

    /// A subscription from a peer starts or ends (part of `on_message`).
    ///
    /// The subscriber must be the peer's: an agent learned through this
    /// connection, or one hidden from this exchange that this connection
    /// named (a "hidden subscriber", kept in `net.subscribers` while it
    /// holds subscriptions). A frame naming an agent of this process, one
    /// learned through another connection or another connection's hidden
    /// subscriber is ignored: it would act for someone else. A hidden
    /// subscriber is remembered only when a subscription is really added for
    /// it, and forgotten when it holds none; a subscription counts against
    /// the connection only while it is really held.
    fn remote_subscribe(
        &mut self,
        token: usize,
        subscriber: ServiceBinding,
        publisher: AgentKey,
        pattern: &str,
        on: bool,
    ) {
        let max_groups = self.server_limits(token).map(|l| l.max_groups);
        let config = &self.link.config;
        if let Err(e) = limits::check_name("subscription pattern", pattern, config.max_subject_len)
            .and_then(|()| limits::check_binding(&subscriber, config.max_name_len, max_groups))
        {
            return self.breach(token, &e);
        }
        let key = subscriber.key();
        let hidden = self.net.subscribers.get(&key).map(|(_, t)| *t);
        let theirs = match (self.registry.get(&key).map(|e| e.route), hidden) {
            (Some(Route::Remote(t)), _) => t == token,
            (Some(Route::Local(_)), _) => false,
            (None, Some(t)) => t == token,
            (None, None) => on && key.process != self.link.process.uid(),
        };
        if !theirs {
            log::debug!(
                "netsvc: a subscription from {token} for {subscriber}, not its own, ignored"
            );
            return;
        }
        let adds = on
            && self.registry.get(&publisher).is_some()
            && !self.reports.holds_agent(key, publisher, pattern);
        if adds {
            let (held, _) = self.reports.owned(token);
            if self.limit(token, |l| l.max_subscriptions, held + 1, "subscriptions") {
                return;
            }
        }
        let fresh = self.registry.get(&key).is_none() && hidden.is_none();
        if fresh && adds {
            if let Some(conn) = self.net.conns.get_mut(&token) {
                conn.usage.hidden_bytes += limits::binding_bytes(&subscriber);
            }
            self.net.subscribers.insert(key, (subscriber, token));
            self.net.subscribers_generation += 1;
        }
        self.subscribe_agent(key, publisher, pattern, on, Some(token));
        if self.net.subscribers.contains_key(&key) && !self.reports.holds_any(key) {
            self.drop_hidden(&key);
        }
        self.over_budget(token);
    }

    /// Forgets a hidden subscriber (it holds no subscription, or it became
    /// visible): its bytes no longer count against its connection.
    fn drop_hidden(&mut self, key: &AgentKey) {
        if let Some((binding, t)) = self.net.subscribers.remove(key) {
            self.net.subscribers_generation += 1;
            if let Some(conn) = self.net.conns.get_mut(&t) {
                let bytes = limits::binding_bytes(&binding);
                conn.usage.hidden_bytes = conn.usage.hidden_bytes.saturating_sub(bytes);
            }
        }
    }

    /// A server's limits for this connection; `None` on a client (see
    /// [`ServerBuilder::max_connection_memory`](crate::ServerBuilder::max_connection_memory)
    /// for why a client applies only the lengths).
    fn server_limits(&self, token: usize) -> Option<Limits> {
        let conn = self.net.conns.get(&token)?;
        match self.net.exchanges.get(&conn.exchange).map(|e| &e.role) {
            Some(Role::Server { limits, .. }) => Some(*limits),
            _ => None,
        }
    }

    /// Closes a connection whose peer passed a limit, logged and counted.
    fn breach(&mut self, token: usize, what: &str) {
        Counters::bump(&self.link.counters.limits_breached);
        self.close_conn(
            token,
            Why::LimitBreached,
            &format!("limit breached: {what}"),
        );
    }

    /// Closes a server's connection that has passed one of its limits
    /// (`used` of `what`, at most what `max` says); true if it did.
    fn limit(
        &mut self,
        token: usize,
        max: impl Fn(&Limits) -> usize,
        used: usize,
        what: &str,
    ) -> bool {
        let Some(limits) = self.server_limits(token) else {
            return false;
        };
        let max = max(&limits);
        if used <= max {
            return false;
        }
        self.breach(token, &format!("{used} {what}, at most {max}"));
        true
    }

    /// The bytes of state a connection's peer has made this process hold:
    /// the bindings it announced (with their groups), its subscriptions, its
    /// pending calls and its hidden subscribers.
    fn connection_memory(&self, token: usize) -> usize {
        let Some(conn) = self.net.conns.get(&token) else {
            return 0;
        };
        conn.usage.learned_bytes
            + conn.usage.hidden_bytes
            + self.reports.owned(token).1
            + self.pending.of_conn(token) * limits::PENDING_OVERHEAD
    }

    /// Closes a server's connection past its memory budget; true if it did.
    fn over_budget(&mut self, token: usize) -> bool {
        let used = self.connection_memory(token);
        self.limit(token, |l| l.max_memory, used, "bytes of connection memory")
    }

    /// Whether the pending call `conv` is being handled through the
    /// connection `token` (its request went out there).
    fn sent_to(&self, conv: ConversationId, token: usize) -> bool {
        self.pending.get(&conv).and_then(|p| p.via) == Some(token)
    }

    /// Drops a frame the peer had no right to send: counted and logged.
    fn refuse_frame(&mut self, token: usize, what: &str) {
        Counters::bump(&self.link.counters.refused_frames);
        let peer = self.net.conns.get(&token).map(|c| c.peer);
        self.net.warnings.warn(
            "refused frame",
            format_args!("dropped from {peer:?}: {what}"),
        );
    }

    fn learned_via(&self, key: &AgentKey, token: usize) -> bool {
        matches!(self.registry.get(key).map(|e| e.route), Some(Route::Remote(t)) if t == token)
    }

    /// Where a key's events go: the registry first, then the subscribers
    /// known only through their subscriptions.
    pub(super) fn route_of(&self, key: &AgentKey) -> Option<Route> {
        self.registry.get(key).map(|e| e.route).or_else(|| {
            self.net
                .subscribers
                .get(key)
                .map(|(_, t)| Route::Remote(*t))
        })
    }

    pub(super) fn binding_of(&self, key: &AgentKey) -> Option<ServiceBinding> {
        self.registry
            .get(key)
            .map(|e| e.binding.clone())
            .or_else(|| self.net.subscribers.get(key).map(|(b, _)| b.clone()))
    }

    /// Sends an event meant for a remote agent as the frame that carries it;
    /// announcements a remote agent makes for itself are not sent.
    pub(super) fn deliver_remote(&mut self, token: usize, key: AgentKey, event: Event) {
        match event {
            Event::Subscription(s) => {
                let message = Message::Subscribe {
                    subscriber: s.subscriber,
                    publisher: key,
                    pattern: s.subject,
                    on: s.status == crate::SubscriptionStatus::Requested,
                };
                self.send(token, &message);
            }
            Event::Report(r) => {
                let publisher = r.publisher.key();
                self.send_report_frame(&[token], publisher, Some(key), &r.subject, &r.payload);
            }
            // The subscriber's own dispatcher announces publishers to it.
            _ => {}
        }
    }

    /// Sends a request to a remote agent (re-using the frame as it came when
    /// relaying).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn request_remote(
        &mut self,
        token: usize,
        conv: ConversationId,
        to: AgentKey,
        method: String,
        payload: Payload,
        sender: ServiceBinding,
        relay: Option<&[u8]>,
        opts: RouteOpts,
    ) {
        if let Some(p) = self.pending.get_mut(&conv) {
            if !opts.oneway {
                p.via = Some(token);
            }
        }
        match relay {
            Some(raw) => self.push_body(token, raw),
            None => {
                let timeout_ms = self
                    .pending
                    .get(&conv)
                    .map(|p| p.deadline.saturating_duration_since(Instant::now()))
                    .unwrap_or_default()
                    .as_millis() as u64;
                let message = Message::Request {
                    conv,
                    sender,
                    to,
                    method,
                    payload,
                    timeout_ms,
                    oneway: opts.oneway,
                    heartbeat_ms: opts.heartbeat.map(|d| d.as_millis() as u64),
                };
                self.send(token, &message);
            }
        }
        Counters::bump(&self.link.counters.requests_delivered);
    }

    /// Sends a report to peers: one frame, encoded once (into a buffer kept
    /// for it), for every connection in `tokens`; `to` names the one
    /// subscriber it is for, if it is for one.
    pub(super) fn send_report_frame(
        &mut self,
        tokens: &[usize],
        publisher: AgentKey,
        to: Option<AgentKey>,
        subject: &str,
        payload: &Payload,
    ) {
        let mut frame = std::mem::take(&mut self.net.frame);
        frame.clear();
        match wire::encode_report_frame(&mut frame, publisher, to, subject, payload) {
            Ok(()) => {
                for t in tokens {
                    self.push(*t, &frame);
                }
            }
            Err(e) => log::error!("netsvc: cannot encode a report: {e}"),
        }
        if frame.capacity() <= crate::frame::READ_CHUNK {
            self.net.frame = frame; // (a large one is not kept)
        }
    }

    /// A report from a peer: onto the queues of local subscribers, and on
    /// to other peers as the frame it came in (with its prefix, copied
    /// straight into their write buffers).
    fn remote_report(&mut self, token: usize, report: ReportRef<'_>, raw: &[u8]) {
        let max = self.link.config.max_subject_len;
        if let Err(e) = limits::check_name("report subject", report.subject, max) {
            return self.breach(token, &e);
        }
        if let Some(to) = report.to {
            return self.remote_report_to(token, to, report, raw);
        }
        let genuine = self.with_fanout(report.publisher, None, report.subject, |this, fanout| {
            if fanout.from != Some(token) {
                return false; // in the name of a publisher not of this link
            }
            if !fanout.locals.is_empty() {
                let payload = Payload::from(report.payload);
                this.deliver_reports(&fanout.locals, &fanout.binding, &fanout.subject, &payload);
            }
            for &t in &fanout.remotes {
                if t != token {
                    this.push_body(t, raw);
                }
            }
            true
        });
        // (None: a publisher withdrawn meanwhile, nobody to deliver for.)
        if genuine == Some(false) {
            self.refuse_frame(token, "a report in the name of a publisher not of its link");
        }
    }

    /// A report for one subscriber (`send_report` on the far side).
    fn remote_report_to(&mut self, token: usize, to: AgentKey, report: ReportRef<'_>, raw: &[u8]) {
        let Some((publisher, route)) = self
            .registry
            .get(&report.publisher)
            .map(|e| (e.binding.clone(), e.route))
        else {
            return; // withdrawn meanwhile
        };
        if route != Route::Remote(token) {
            return self.refuse_frame(token, "a report in the name of a publisher not of its link");
        }
        match self.route_of(&to) {
            Some(Route::Local(agent)) => {
                let r = Report {
                    publisher,
                    subject: report.subject.into(),
                    payload: report.payload.into(),
                };
                self.deliver(agent, Event::Report(r), Class::Data);
            }
            Some(Route::Remote(t)) if t != token => self.push_body(t, raw),
            _ => {}
        }
    }
}
