//! The exchange transport: listeners, connections, the handshake and
//! authentication, heartbeats, and per-link output and flow control, over
//! byte streams (TCP today). It owns every socket and the bytes on it; what
//! a link carries once it is up is the routing core's: the transport hands
//! it each frame ([`Core::frame`]) and carries what the core queued for its
//! links ([`Exchanges::carry`]).
//!
//! Each connection is a state machine (`Connecting` -> `Authorising` ->
//! `Handshaking` -> authentication -> `Active`) driven by poll events,
//! frames and this transport's own timers. A link becomes a peer of the
//! core when it is `Active` ([`Core::peer_up`]), and stops being one when it
//! closes ([`Core::peer_down`]).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use mio::net::TcpListener;
use mio::{Interest, Token};

use crate::auth::{self, Secret, Side};
use crate::dispatcher::command::{Authorise, ExchangeRole, Limits};
use crate::dispatcher::{Counters, Link};
use crate::error::{Error, Result};
use crate::exchange::{ConnectionAnnouncement, ConnectionState, InactiveReason as Why};
use crate::frame::{Fill, ReadBuffer, WriteBuffer};
use crate::ids::ProcessId;
use crate::routing::idmap::IdMap;
use crate::routing::peers::Carry;
use crate::routing::timers::Timers;
use crate::routing::{Core, Kind, LinkCounts, PeerId, PeerInfo, Taken};
use crate::transport::stream::Stream;
use crate::warnings::Warnings;
use crate::wire::{self, Hello, Message};

/// Above this much unsent output a connection is congested: its dispatcher
/// pushes back (takes no commands, reads from no other peer) until it is
/// down to a quarter of it.
pub(crate) fn high_water(max_outbound: usize) -> usize {
    (max_outbound / 8).clamp(64 * 1024, 1 << 20)
}

/// How long a connection may be in its handshake before it counts against
/// its address's handshake slots and may give way to a newer connection: a
/// quarter of the handshake timeout, at most 500 ms.
pub(crate) fn handshake_grace(timeout: Duration) -> Duration {
    (timeout / 4).min(Duration::from_millis(500))
}

/// How many chunks of input (64 KiB each) one connection's turn reads at
/// most before the others are served: a flood is read a chunk a turn.
const CHUNKS_PER_TURN: usize = 1;

/// The largest frame a peer may send before its handshake and
/// authentication are complete (a hello, a challenge, a proof): what an
/// unauthenticated connection can make this process buffer.
pub(crate) const PRE_AUTH_FRAME: usize = 4 * 1024;

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
    stream: Stream,
    peer: SocketAddr,
    state: ConnState,
    /// When it was accepted or its connect began (the oldest handshaking
    /// connection is the first to make room for a new one).
    opened: Instant,
    rbuf: ReadBuffer,
    wbuf: WriteBuffer,
    handshake_timer: Option<crate::routing::timers::TimerId>,
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

/// What the exchange's timers are for.
pub(crate) enum NetTimer {
    /// A client exchange tries to connect again.
    Reconnect(u64),
    /// A connection that has not completed its handshake by now is closed.
    Handshake(usize),
    /// Heartbeats and dead-peer checks on the links.
    Liveness,
}

/// The exchange transport: every exchange (server or client) of one
/// dispatcher, its listeners and its links over byte streams.
pub(crate) struct Exchanges {
    link: Arc<Link>,
    /// Where sockets are registered with the dispatcher's poll.
    poll: mio::Registry,
    /// This transport's timers (the core has its own).
    pub(crate) timers: Timers<NetTimer>,
    exchanges: IdMap<u64, Exch>,
    conns: IdMap<usize, Conn>,
    listeners: IdMap<usize, u64>,
    next_token: usize,
    /// Links whose handshake is complete.
    active: usize,
    /// Connections with output to write at the end of this turn.
    dirty: Vec<usize>,
    rng: u64,
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
    /// Warnings a peer can cause, at most one line a second per kind.
    warnings: Warnings,
}

/// How many accepted connections may wait for the `authorise` callback's
/// thread; one more is refused at once.
const AUTHORISE_QUEUE: usize = 256;

impl Exchanges {
    pub(crate) fn new(link: Arc<Link>, poll: mio::Registry) -> Self {
        Exchanges {
            link,
            poll,
            timers: Timers::new(),
            exchanges: IdMap::default(),
            conns: IdMap::default(),
            listeners: IdMap::default(),
            next_token: 0,
            active: 0,
            dirty: Vec::new(),
            rng: 0,
            liveness_armed: false,
            scratch: Vec::new(),
            congested: IdMap::default(),
            stalled: Vec::new(),
            warnings: Warnings::default(),
        }
    }

    /// A new token: a peer id of this transport (also used for listeners).
    fn token(&mut self) -> usize {
        self.next_token += 1;
        PeerId::new(Kind::Stream, self.next_token).0
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

    /// Whether a peer's backlog holds everything back.
    pub(crate) fn congested(&self) -> bool {
        !self.congested.is_empty()
    }

    /// Whether there is output to flush or input to read that no socket
    /// event will announce: frames queued after this turn's flush (by the
    /// reading of stalled peers), or stalled peers no longer held back.
    pub(crate) fn has_work(&self) -> bool {
        !self.dirty.is_empty() || (!self.congested() && !self.stalled.is_empty())
    }

    /// How the links stand.
    pub(crate) fn counts(&self) -> LinkCounts {
        let down = self
            .exchanges
            .values()
            .filter(|e| matches!(e.role, Role::Client { conn: None, .. }))
            .count();
        LinkCounts {
            exchanges: self.exchanges.len(),
            up: self.active,
            handshaking: self.conns.len() - self.active,
            down,
        }
    }

    /// When the next of this transport's timers is due.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Runs the timers that are due.
    pub(crate) fn fire_due(&mut self, now: Instant, core: &mut Core) {
        while let Some((_, kind)) = self.timers.pop_due(now) {
            match kind {
                NetTimer::Reconnect(id) => self.reconnect_due(id),
                NetTimer::Handshake(token) => self.handshake_expired(token, core),
                NetTimer::Liveness => self.liveness(core),
            }
        }
    }

    /// Carries out what the core asked of this transport's links, in order.
    pub(crate) fn carry(&mut self, core: &mut Core) {
        while core.out.has(Kind::Stream) {
            let queue = core.out.take(Kind::Stream);
            for item in &queue.items {
                match item {
                    Carry::Frame { peer, bytes } => self.push(peer.0, &queue.bytes[bytes.clone()]),
                    Carry::Close { peer, why, reason } => {
                        self.close_conn(peer.0, *why, reason, core)
                    }
                }
            }
            core.out.put_back(Kind::Stream, queue);
        }
    }
}

impl Exchanges {
    // ----- exchanges -----

    pub(crate) fn exchange_open(
        &mut self,
        id: u64,
        group: String,
        role: ExchangeRole,
        secret: Option<Secret>,
        announce: Sender<ConnectionAnnouncement>,
    ) -> Result<()> {
        if self.exchanges.values().any(|e| e.group == group) {
            return Err(Error::InvalidTarget(format!(
                "this dispatcher already has an exchange for group {group:?}"
            )));
        }
        if self.rng == 0 {
            self.rng = self.link.process.uid() | 1;
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
                let token = self.token();
                self.poll
                    .register(&mut listener, Token(token), Interest::READABLE)?;
                self.listeners.insert(token, id);
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
        self.exchanges.insert(
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

    pub(crate) fn exchange_close(&mut self, id: u64, core: &mut Core) {
        let Some(exch) = self.exchanges.get_mut(&id) else {
            return;
        };
        if let Role::Client { retry, .. } = &mut exch.role {
            *retry = None; // no reconnect after the closes below
        }
        for token in exch.conns.clone() {
            self.close_conn(token, Why::Closed, "exchange closed", core);
        }
        if let Some(mut exch) = self.exchanges.remove(&id) {
            if let Role::Server {
                listener, token, ..
            } = &mut exch.role
            {
                let _ = self.poll.deregister(listener);
                self.listeners.remove(token);
            }
        }
        log::debug!("netsvc: exchange {id} closed");
    }

    pub(crate) fn exchange_local_addr(&self, id: u64) -> Option<SocketAddr> {
        let exch = self.exchanges.get(&id)?;
        match &exch.role {
            Role::Server { listener, .. } => listener.local_addr().ok(),
            Role::Client { conn, .. } => conn
                .and_then(|t| self.conns.get(&t))
                .and_then(|c| c.stream.local_addr().ok()),
        }
    }

    /// Closes every exchange: the end of the dispatcher. Output already
    /// queued (such as the withdrawals of the services) is written if the
    /// sockets take it at once.
    pub(crate) fn stop(&mut self, core: &mut Core) {
        self.carry(core);
        self.flush_dirty(core);
        let ids: Vec<u64> = self.exchanges.keys().copied().collect();
        for id in ids {
            self.exchange_close(id, core);
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
        let Some(exch) = self.exchanges.get(&exchange) else {
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

    // ----- connecting -----

    fn connect_attempt(&mut self, id: u64) {
        let token = self.token();
        let Some(exch) = self.exchanges.get_mut(&id) else {
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
        let stream = Stream::connect(addr).and_then(|mut s| {
            self.poll.register(
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
        let Some(exch) = self.exchanges.get(&id) else {
            return;
        };
        if let Role::Client {
            retry: Some(delay), ..
        } = exch.role
        {
            let delay = self.jitter(delay);
            self.timers
                .start(Instant::now() + delay, NetTimer::Reconnect(id));
        }
    }

    fn reconnect_due(&mut self, id: u64) {
        let idle = matches!(
            self.exchanges.get(&id).map(|e| &e.role),
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

    fn accept(&mut self, id: u64, core: &mut Core) {
        loop {
            let Some(exch) = self.exchanges.get(&id) else {
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
                Ok((s, peer)) => (Stream::Tcp(s), peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors, for instance: the listener stays,
                    // the next readiness event tries again.
                    log::error!("netsvc: accept failed: {e}");
                    return;
                }
            };
            if !self.make_room(id, peer, &limits, core) {
                Counters::bump(&self.link.counters.limits_breached);
                let n = limits.max_connections;
                self.warnings.warn(
                    "refused",
                    format_args!("connection from {peer} refused: the server has its maximum of {n} connections"),
                );
                continue;
            }
            let token = self.token();
            if let Err(e) = self.poll.register(
                &mut stream,
                Token(token),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                log::error!("netsvc: cannot register connection from {peer}: {e}");
                continue;
            }
            stream.set_nodelay();
            let authorise = match self.exchanges.get(&id).map(|e| &e.role) {
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
            if let Some(exch) = self.exchanges.get_mut(&id) {
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
                            core,
                        );
                    }
                }
                None => self.send_hello(token, core),
            }
        }
    }

    /// Makes room for a connection from `peer`: true if it may be taken.
    /// Connections still in their handshake are bounded per address and
    /// give way, oldest first, to newer ones (so silent connections cannot
    /// hold every slot until their timeout); established links never do.
    fn make_room(&mut self, id: u64, peer: SocketAddr, limits: &Limits, core: &mut Core) -> bool {
        let Some(exch) = self.exchanges.get(&id) else {
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
            let Some(c) = self.conns.get(t) else {
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
                    core,
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
                        .send(crate::dispatcher::command::Command::Authorised { token, allowed })
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
    pub(crate) fn authorised(&mut self, token: usize, allowed: bool, core: &mut Core) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return; // closed meanwhile (its handshake time ran out)
        };
        if conn.state != ConnState::Authorising {
            return;
        }
        if !allowed {
            let peer = conn.peer;
            log::info!("netsvc: connection from {peer} refused by authorise");
            self.close_conn(
                token,
                Why::Refused,
                "refused by the authorise callback",
                core,
            );
            return;
        }
        conn.state = ConnState::Handshaking;
        self.send_hello(token, core);
        // What arrived meanwhile was left in the socket (edge-triggered
        // readiness will not say so again).
        self.read_conn(token, core);
    }

    /// Registers a new connection, with its handshake deadline. Keepalive
    /// lets the kernel notice a dead peer too, beside our heartbeats.
    fn add_conn(
        &mut self,
        token: usize,
        exchange: u64,
        stream: Stream,
        peer: SocketAddr,
        state: ConnState,
    ) {
        if let Err(e) = stream.set_keepalive(self.link.config.dead_peer_timeout) {
            log::debug!("netsvc: keepalive not set on the connection to {peer}: {e}");
        }
        let now = Instant::now();
        let timer = self.timers.start(
            now + self.link.config.handshake_timeout,
            NetTimer::Handshake(token),
        );
        let conn = Conn {
            exchange,
            stream,
            peer,
            state,
            opened: now,
            rbuf: ReadBuffer::default(),
            wbuf: WriteBuffer::default(),
            handshake_timer: Some(timer),
            last_in: now,
            last_out: now,
            write_blocked: false,
            listed: false,
        };
        self.conns.insert(token, conn);
    }

    fn send_hello(&mut self, token: usize, core: &mut Core) {
        let Some(conn) = self.conns.get(&token) else {
            return;
        };
        let (group, auth) = self
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
                if let Some(conn) = self.conns.get_mut(&token) {
                    conn.wbuf.push_frame(&body);
                    Counters::bump(&self.link.counters.frames_out);
                    self.dirty.push(token);
                }
            }
            Err(e) => self.close_conn(token, Why::Io, &format!("cannot encode hello: {e}"), core),
        }
    }

    fn handshake_expired(&mut self, token: usize, core: &mut Core) {
        let Some(state) = self.conns.get(&token).map(|c| c.state.clone()) else {
            return;
        };
        let limit = self.link.config.handshake_timeout;
        match state {
            ConnState::Active { .. } => {}
            ConnState::Connecting => self.close_conn(
                token,
                Why::Unreachable,
                &format!("connect did not complete within {limit:?}"),
                core,
            ),
            _ => self.close_conn(
                token,
                Why::HandshakeTimeout,
                &format!("no handshake within {limit:?}"),
                core,
            ),
        }
    }

    // ----- readiness -----

    /// A poll event for one of this transport's tokens.
    pub(crate) fn on_event(&mut self, event: &mio::event::Event, core: &mut Core) {
        let token = event.token().0;
        if let Some(&id) = self.listeners.get(&token) {
            self.accept(id, core);
            return;
        }
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if conn.state == ConnState::Authorising {
            return; // read once the callback has decided
        }
        if conn.state == ConnState::Connecting {
            match conn.stream.take_error() {
                Ok(Some(e)) | Err(e) => {
                    self.close_conn(
                        token,
                        connect_why(&e),
                        &format!("connect failed: {e}"),
                        core,
                    );
                    return;
                }
                Ok(None) => {}
            }
            match conn.stream.peer_addr() {
                Ok(_) => {
                    conn.stream.set_nodelay();
                    conn.state = ConnState::Handshaking;
                    log::debug!("netsvc: connected to {}", conn.peer);
                    self.send_hello(token, core);
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    if event.is_error() || event.is_write_closed() {
                        self.close_conn(token, Why::Unreachable, "connect failed", core);
                    }
                    return; // still in progress
                }
                Err(e) => {
                    self.close_conn(
                        token,
                        connect_why(&e),
                        &format!("connect failed: {e}"),
                        core,
                    );
                    return;
                }
            }
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            if self.congested() && !self.congested.contains_key(&token) {
                // Leave it in the socket: TCP pushes back on that sender.
                if !self.stalled.contains(&token) {
                    self.stalled.push(token);
                }
            } else {
                self.read_conn(token, core);
            }
        }
        if event.is_writable() {
            if let Some(conn) = self.conns.get_mut(&token) {
                conn.write_blocked = false;
                self.dirty.push(token);
            }
        }
    }

    fn read_conn(&mut self, token: usize, core: &mut Core) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let mut rbuf = std::mem::take(&mut conn.rbuf);
        let mut chunks = 0;
        loop {
            let Some(conn) = self.conns.get_mut(&token) else {
                return;
            };
            chunks += 1;
            if self.scratch.is_empty() {
                self.scratch = vec![0u8; crate::frame::READ_CHUNK];
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
            let fill = match rbuf.fill(&mut conn.stream, max, &mut self.scratch) {
                Ok((fill, 0)) => fill,
                Ok((fill, _)) => {
                    // Bytes arrived: the peer is alive, whole frame or not.
                    conn.last_in = Instant::now();
                    fill
                }
                Err(e) => {
                    self.close_conn(token, io_why(&e), &format!("read failed: {e}"), core);
                    return;
                }
            };
            loop {
                // The handshake may have completed on the frame before:
                // looked up only until it has (not per frame of a link).
                if !active {
                    active = self
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
                        self.close_conn(token, why, &format!("bad input: {e}"), core);
                        return;
                    }
                };
                Counters::bump(&self.link.counters.frames_in);
                if !self.on_frame(token, body, core) {
                    return;
                }
            }
            match fill {
                Fill::WouldBlock => break,
                Fill::Full if self.congested() && !self.congested.contains_key(&token) => {
                    // Leave the rest in the socket until the backlog drains.
                    if !self.stalled.contains(&token) {
                        self.stalled.push(token);
                    }
                    break;
                }
                Fill::Full if chunks >= CHUNKS_PER_TURN => {
                    // Fair shares: one peer's flood is read a few chunks a
                    // turn, and every other peer, command and timer is
                    // served between them.
                    if !self.stalled.contains(&token) {
                        self.stalled.push(token);
                    }
                    break;
                }
                Fill::Full => continue,
                Fill::Closed => {
                    self.close_conn(token, Why::ClosedByPeer, "peer closed the connection", core);
                    return;
                }
            }
        }
        if let Some(conn) = self.conns.get_mut(&token) {
            conn.rbuf = rbuf;
        }
    }

    /// Handles one frame; false if the connection was closed.
    fn on_frame(&mut self, token: usize, body: &[u8], core: &mut Core) -> bool {
        let Some(conn) = self.conns.get(&token) else {
            return false;
        };
        if conn.state == ConnState::Handshaking {
            match wire::decode_hello(body) {
                Ok(hello) => self.handshake_done(token, hello, core),
                Err(e) => {
                    self.close_conn(token, e.why(), &format!("handshake refused: {e}"), core);
                    return false;
                }
            }
            return self.conns.contains_key(&token);
        }
        if matches!(conn.state, ConnState::Active { .. }) {
            match core.frame(PeerId(token), body) {
                Taken::Done => {}
                Taken::Link(message) => self.link_message(token, message, core),
            }
            // What it asked for goes out now: a relay that congests an
            // output stops this reading in time.
            if core.out.has(Kind::Stream) {
                self.carry(core);
            }
            return self.conns.contains_key(&token);
        }
        // Authenticating: the steps of the handshake, or a reason to close.
        match wire::decode::<Message>(body) {
            Ok(Message::Closing { reason }) => {
                self.peer_closing(token, &reason, core);
                false
            }
            Ok(message) => self.authenticate(token, message, core),
            Err(e) => {
                self.close_conn(token, Why::BadInput, &format!("bad frame: {e}"), core);
                false
            }
        }
    }

    /// A message about the link itself, on an active link.
    fn link_message(&mut self, token: usize, message: Message, core: &mut Core) {
        match message {
            Message::Closing { reason } => self.peer_closing(token, &reason, core),
            Message::Challenge { .. } | Message::Response { .. } | Message::Proof { .. } => {
                Counters::bump(&self.link.counters.auth_failures);
                self.close_conn(
                    token,
                    Why::AuthenticationFailed,
                    "the peer requires authentication, and this exchange has no secret",
                    core,
                );
            }
            // (Heartbeats: their arrival is what counts, seen as it was read.)
            _ => {}
        }
    }

    fn handshake_done(&mut self, token: usize, hello: Hello, core: &mut Core) {
        let Some(conn) = self.conns.get(&token) else {
            return;
        };
        let exchange = conn.exchange;
        let group = self
            .exchanges
            .get(&exchange)
            .map(|e| e.group.clone())
            .unwrap_or_default();
        if hello.group != group {
            let reason = format!(
                "handshake refused: peer's exchange group is {:?}, ours is {group:?}",
                hello.group
            );
            self.close_conn(token, Why::GroupMismatch, &reason, core);
            return;
        }
        if hello.process == self.link.process {
            self.close_conn(
                token,
                Why::BadInput,
                "handshake refused: connected to itself",
                core,
            );
            return;
        }
        let secret = self.exchanges.get(&exchange).and_then(|e| e.secret.clone());
        let is_server = self
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
            self.close_conn(token, Why::AuthenticationFailed, reason, core);
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
            if let Some(conn) = self.conns.get_mut(&token) {
                conn.state = state;
            }
            return;
        }
        self.activate(token, hello.process, core);
    }

    /// The peer closes the link and said why.
    fn peer_closing(&mut self, token: usize, reason: &str, core: &mut Core) {
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
        self.close_conn(token, why, &detail, core);
    }

    /// One authentication step; false if the connection was closed.
    fn authenticate(&mut self, token: usize, message: Message, core: &mut Core) -> bool {
        let Some(conn) = self.conns.get(&token) else {
            return false;
        };
        let Some(secret) = self
            .exchanges
            .get(&conn.exchange)
            .and_then(|e| e.secret.clone())
        else {
            return false;
        };
        let me = self.link.process.uid();
        let state = conn.state.clone();
        // Counted in close_conn: any link lost while authenticating is.
        let refuse = |this: &mut Self, core: &mut Core, why: &str| {
            this.close_conn(
                token,
                Why::AuthenticationFailed,
                &format!("authentication failed: {why}"),
                core,
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
                if let Some(conn) = self.conns.get_mut(&token) {
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
                    return refuse(self, core, "the client's proof is wrong (another key?)");
                }
                let proof = auth::prove(&secret, Side::Server, &theirs, &nonce, me, remote.uid());
                self.send(token, &Message::Proof { mac: proof });
                self.activate(token, remote, core);
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
                    return refuse(self, core, "the server's proof is wrong (another key?)");
                }
                self.activate(token, remote, core);
                true
            }
            (ConnState::AwaitChallenge { .. }, _) => {
                refuse(self, core, "the server did not authenticate itself")
            }
            (_, _) => refuse(self, core, "the peer did not follow the handshake"),
        }
    }

    /// The link is up: announced, and handed to the core (which sends it
    /// our table).
    fn activate(&mut self, token: usize, remote: ProcessId, core: &mut Core) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let (exchange, peer) = (conn.exchange, conn.peer);
        conn.state = ConnState::Active {
            remote: remote.clone(),
        };
        self.active += 1;
        if let Some(t) = conn.handshake_timer.take() {
            self.timers.cancel(t);
        }
        log::debug!("netsvc: exchange link to {remote} ({peer}) active");
        self.arm_liveness();
        self.announce_connection(
            exchange,
            ConnectionState::Active,
            Some(remote.clone()),
            peer,
            None,
        );
        let Some(exch) = self.exchanges.get(&exchange) else {
            return;
        };
        let limits = match &exch.role {
            Role::Server { limits, .. } => Some(*limits),
            Role::Client { .. } => None,
        };
        let info = PeerInfo {
            remote,
            exchange,
            group: exch.group.clone(),
            limits,
        };
        core.peer_up(PeerId(token), info);
        self.carry(core);
    }

    // ----- output -----

    /// Encodes and queues a message on one connection.
    fn send(&mut self, token: usize, message: &Message) {
        match wire::encode_frame(message) {
            Ok(frame) => self.push(token, &frame),
            Err(e) => log::error!("netsvc: cannot encode a frame: {e}"),
        }
    }

    /// Queues an already encoded frame (with its prefix) on a connection.
    fn push(&mut self, token: usize, frame: &[u8]) {
        if let Some(conn) = self.conns.get_mut(&token) {
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
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if !conn.listed {
            conn.listed = true;
            self.dirty.push(token);
        }
        if conn.wbuf.pending() >= crate::frame::READ_CHUNK
            && !conn.write_blocked
            && conn.state != ConnState::Connecting
        {
            let _ = conn.write_out();
        }
        if conn.wbuf.pending() > high {
            self.congested.entry(token).or_insert_with(Instant::now);
        }
    }

    /// Writes what each connection has queued, in as few writes as the
    /// sockets allow; drops a peer whose backlog passes the limit.
    pub(crate) fn flush_dirty(&mut self, core: &mut Core) {
        if self.dirty.is_empty() {
            return;
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        let limit = self.link.config.max_outbound_buffer;
        let high = high_water(limit);
        for token in dirty.drain(..) {
            let Some(conn) = self.conns.get_mut(&token) else {
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
                        self.congested.entry(token).or_insert_with(Instant::now);
                    } else if pending <= high / 4 {
                        self.congested.remove(&token);
                    }
                    if pending > limit {
                        Counters::bump(&self.link.counters.slow_consumers);
                        let reason = format!(
                            "slow consumer: {} bytes waiting, limit {limit}",
                            conn.wbuf.pending()
                        );
                        self.close_conn(token, Why::SlowConsumer, &reason, core);
                    }
                }
                Err(e) => self.close_conn(token, io_why(&e), &format!("write failed: {e}"), core),
            }
        }
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Reads the next share of the input left unread (a fair share taken,
    /// or congestion now over); once a turn, after the turn's events.
    pub(crate) fn read_stalled(&mut self, core: &mut Core) {
        if !self.congested() && !self.stalled.is_empty() {
            for token in std::mem::take(&mut self.stalled) {
                self.read_conn(token, core);
            }
        }
    }

    // ----- liveness -----

    fn arm_liveness(&mut self) {
        if !self.liveness_armed {
            self.liveness_armed = true;
            let period = self.liveness_period();
            self.timers
                .start(Instant::now() + period, NetTimer::Liveness);
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
    fn liveness(&mut self, core: &mut Core) {
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
                core,
            );
        }
        for (token, conn) in &self.conns {
            if !matches!(conn.state, ConnState::Active { .. }) || self.stalled.contains(token) {
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
            self.read_conn(token, core);
            let alive = self
                .conns
                .get(&token)
                .is_none_or(|c| Instant::now().saturating_duration_since(c.last_in) < dead);
            if alive {
                continue;
            }
            let reason = format!("peer silent for {dead:?}: presumed dead");
            self.close_conn(token, Why::HeartbeatTimeout, &reason, core);
        }
        for token in quiet {
            self.send(token, &Message::Heartbeat);
        }
        if self.conns.is_empty() {
            self.liveness_armed = false;
        } else {
            let period = self.liveness_period();
            self.timers.start(now + period, NetTimer::Liveness);
        }
    }

    // ----- closing -----

    /// Closes a connection: every binding learned through it is withdrawn,
    /// calls through it fail, and a client schedules its reconnection.
    fn close_conn(&mut self, token: usize, why: Why, reason: &str, core: &mut Core) {
        let unexpected = why != Why::Closed;
        let Some(mut conn) = self.conns.remove(&token) else {
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
        self.congested.remove(&token);
        self.stalled.retain(|t| *t != token);
        let _ = self.poll.deregister(&mut conn.stream);
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
        if conn.state != ConnState::Connecting && conn.wbuf.pending() > 0 {
            // What is queued goes if the socket takes it at once: a hello
            // not yet flushed lets the peer see for itself why it is
            // refused (a handshake can fail in the turn it starts).
            let _ = conn.write_out();
        }
        if unexpected && conn.state != ConnState::Connecting {
            let peer = conn.peer;
            self.warnings.warn(
                "closing",
                format_args!("closing connection to {peer}: {reason}"),
            );
        } else {
            log::debug!("netsvc: closing connection to {}: {reason}", conn.peer);
        }
        if remote.is_some() {
            // Everything learned through it goes (and the other clients of
            // a server hear of it).
            self.active -= 1;
            core.peer_down(PeerId(token), &format!("connection to {} lost", conn.peer));
            self.carry(core);
        }
        let exchange = conn.exchange;
        let was_client = if let Some(exch) = self.exchanges.get_mut(&exchange) {
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
}
