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
use crate::connection::{ConnectionAnnouncement, ConnectionState, InactiveReason as Why};
use crate::credentials::{Credentials, Identity};
use crate::direct::Outlet;
use crate::error::{Error, Result};
use crate::frame::{Fill, ReadBuffer, WriteBuffer};
use crate::ids::ProcessId;
use crate::mailbox::command::{Authorise, ExchangeRole, Limits};
use crate::mailbox::Link;
use crate::routing::idmap::IdMap;
use crate::routing::peers::Carry;
use crate::routing::timers::Timers;
use crate::routing::{Core, Kind, LinkCounts, PeerId, PeerInfo, Taken};
use crate::stats::Counters;
use crate::transport::stream::Stream;
use crate::warnings::Warnings;
use crate::wire::{self, Hello, Message};

mod accept;
mod connect;
mod handshake;
mod links;

/// Above this much unsent output a connection is congested until it is down
/// to a quarter of it; congested for the slow-consumer timeout, it is
/// dropped. While it is congested, its input is read only as long as it
/// asks for nothing (see [`Congestion`]).
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

/// Why a read or write failed, by its error (a TLS refusal carries its own).
fn io_why(e: &io::Error) -> Why {
    if let Some(failure) = crate::transport::tls::failure(e) {
        return failure.why;
    }
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => Why::ClosedByPeer,
        _ => Why::Io,
    }
}

/// What a failed read or write is said to be: a TLS refusal says it
/// itself; otherwise `what` failed, with the error.
fn io_detail(what: &str, e: &io::Error) -> String {
    match crate::transport::tls::failure(e) {
        Some(failure) => failure.detail.clone(),
        None => format!("{what} failed: {e}"),
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
    /// While the handshake lasts: what the proofs will cover (gone once
    /// the link is up: an idle server holds thousands of links).
    handshake: Option<Box<Transcript>>,
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
    /// On a server, the credential the client proved (set once its proof
    /// checked): the link's identity and permissions.
    identity: Option<Arc<Identity>>,
    /// Once a plain TCP link is up: how other threads write frames onto it
    /// (see `direct.rs`), shared with them.
    outlet: Option<Arc<Outlet>>,
    /// What a thread left of a frame in the outlet's spill, as the last
    /// write found it: unsent output too.
    spilled: usize,
}

impl Conn {
    /// Writes what is queued, as far as the socket takes it; remembers
    /// when output last went out and whether the socket refused some.
    /// With an outlet, under its lock, after what a thread left in its
    /// spill.
    fn write_out(&mut self) -> std::io::Result<bool> {
        if self.wbuf.pending() > 0 {
            self.last_out = Instant::now();
        }
        let written = match &self.outlet {
            None => self.wbuf.flush(&mut self.stream),
            Some(outlet) => {
                let mut held = outlet.hold();
                let written = match held.flush_spill(&mut self.stream) {
                    Ok(true) => self.wbuf.flush(&mut self.stream),
                    other => other,
                };
                held.set_queued(self.wbuf.pending() > 0);
                self.spilled = held.spilled();
                written
            }
        };
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
        /// The named credentials it accepts, beside its shared secret.
        credentials: Credentials,
        /// TLS on every connection, if it has any.
        tls: Option<crate::tls::ServerTls>,
    },
    Client {
        addrs: Vec<SocketAddr>,
        next_addr: usize,
        retry: Option<Duration>,
        conn: Option<usize>,
        attempts: u64,
        /// The name of the credential its secret is for ("" for the
        /// shared secret).
        credential: String,
        /// TLS on every connection, if it has any.
        tls: Option<crate::tls::ClientTls>,
    },
}

struct Exch {
    group: String,
    /// A server's shared secret; a client's key (the shared secret, or
    /// its credential's).
    secret: Option<Secret>,
    /// A server's: proofs cover the addresses each side sees (see
    /// `ServerBuilder::bind_proofs_to_addresses`).
    bind: bool,
    role: Role,
    announce: Sender<ConnectionAnnouncement>,
    conns: Vec<usize>,
}

/// A server refuses connections from an address that failed to
/// authenticate this many times within [`AUTH_WINDOW`], until that window
/// ends: guessing a secret costs at least a window per that many guesses.
/// (Honest clients behind the same address are refused too while it lasts.)
pub(crate) const AUTH_FAILURES: u32 = 32;

/// See [`AUTH_FAILURES`].
pub(crate) const AUTH_WINDOW: Duration = Duration::from_secs(10);

/// At most this many addresses are remembered (the oldest windows go
/// first): what a flood of addresses can make a server hold.
const AUTH_ADDRESSES: usize = 4096;

/// Failed authentications by address, in windows of [`AUTH_WINDOW`].
#[derive(Default)]
pub(crate) struct FailedAuth {
    by_ip: std::collections::HashMap<std::net::IpAddr, (u32, Instant)>,
}

impl FailedAuth {
    /// One more failure from `ip`.
    fn note(&mut self, ip: std::net::IpAddr, now: Instant) {
        if self.by_ip.len() >= AUTH_ADDRESSES && !self.by_ip.contains_key(&ip) {
            self.by_ip
                .retain(|_, (_, since)| now.saturating_duration_since(*since) < AUTH_WINDOW);
            if self.by_ip.len() >= AUTH_ADDRESSES {
                let oldest = self.by_ip.iter().min_by_key(|(_, (_, since))| *since);
                if let Some(ip) = oldest.map(|(ip, _)| *ip) {
                    self.by_ip.remove(&ip);
                }
            }
        }
        let (count, since) = self.by_ip.entry(ip).or_insert((0, now));
        if now.saturating_duration_since(*since) >= AUTH_WINDOW {
            *count = 0;
            *since = now;
        }
        *count += 1;
    }

    /// Whether connections from `ip` are refused now.
    fn blocked(&mut self, ip: std::net::IpAddr, now: Instant) -> bool {
        match self.by_ip.get(&ip) {
            Some((_, since)) if now.saturating_duration_since(*since) >= AUTH_WINDOW => {
                self.by_ip.remove(&ip);
                false
            }
            Some((count, _)) => *count >= AUTH_FAILURES,
            None => false,
        }
    }
}

/// The hello this side sent, as it was sent, and once the peer's came, the
/// handshake's transcript (`auth::transcript`): what the proofs of the
/// shared-secret handshake cover.
#[derive(Default)]
struct Transcript {
    hello: Vec<u8>,
    transcript: Vec<u8>,
}

impl Exch {
    /// Whether its links authenticate: a secret, or named credentials
    /// with secrets.
    fn authenticates(&self) -> bool {
        self.secret.is_some()
            || matches!(&self.role, Role::Server { credentials, .. } if credentials.has_secrets())
    }

    /// A client's key, with the name of its credential ("" for the shared
    /// secret).
    fn own_key(&self) -> Option<(Secret, String)> {
        match &self.role {
            Role::Client { credential, .. } => Some((self.secret.clone()?, credential.clone())),
            Role::Server { .. } => None,
        }
    }

    /// A server's key for a client naming `credential`: the shared secret
    /// for "", a named credential's secret with its identity; `None` for
    /// a name it does not have (or "" without a shared secret).
    fn key_for(&self, credential: &str) -> Option<(Secret, Option<Arc<Identity>>)> {
        let Role::Server { credentials, .. } = &self.role else {
            return None;
        };
        if credential.is_empty() {
            return self.secret.clone().map(|s| (s, None));
        }
        credentials
            .get(credential)
            .map(|(s, i)| (s.clone(), Some(i.clone())))
    }
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
    /// when they got there. Such a connection's own input is left unread
    /// once it asks for more, and so is the input of connections whose
    /// requests were relayed to it (`held`): the pressure goes back to the
    /// senders, and only them.
    congested: IdMap<usize, Congestion>,
    /// Connections with input left unread (a fair share taken, congested,
    /// or held).
    stalled: Vec<usize>,
    /// Connections not read because requests they sent were relayed to
    /// these congested ones: read again once none of them is.
    held: IdMap<usize, Vec<usize>>,
    /// The connection being read, and the connections its requests were
    /// relayed to meanwhile.
    reading: Option<usize>,
    fed: Vec<usize>,
    /// Warnings a peer can cause, at most one line a second per kind.
    warnings: Warnings,
    /// Failed authentications by address (a server's).
    failed_auth: FailedAuth,
}

/// A connection whose output is above the high-water mark.
///
/// Its input is read on while it asks for nothing (replies to requests it
/// was sent, reports): two peers that each waited for the other to read
/// before reading would never read again (a client answering a flood of
/// requests relayed to it, its replies unread by a server waiting for it
/// to read the requests). Once a chunk of its input asks for more (a
/// request, a subscription, report credit: see `Core::asked`), whose
/// answers would add to its output, it is left in the socket until its
/// output drains, and TCP pushes back on it alone.
#[derive(Debug)]
struct Congestion {
    /// When it got there (and has not been down to a quarter of it since).
    since: Instant,
    /// Whether its input asked for more meanwhile: it is then not read
    /// until its output drains.
    feeds_itself: bool,
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
            held: IdMap::default(),
            reading: None,
            fed: Vec::new(),
            warnings: Warnings::default(),
            failed_auth: FailedAuth::default(),
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

    /// Whether this connection's output is congested.
    pub(crate) fn is_congested(&self, token: usize) -> bool {
        self.congested.contains_key(&token)
    }

    /// Whether this connection's input is left in its socket: its output is
    /// congested and its input asked for more (TCP pushes back on it
    /// alone).
    pub(crate) fn is_shut(&self, token: usize) -> bool {
        self.congested.get(&token).is_some_and(|c| c.feeds_itself)
    }

    /// Marks a connection congested (from now, unless it already was).
    fn congest(&mut self, token: usize) {
        self.congested.entry(token).or_insert_with(|| Congestion {
            since: Instant::now(),
            feeds_itself: false,
        });
    }

    /// Whether there is output to flush or input to read that no socket
    /// event will announce: frames queued after this turn's flush (by the
    /// reading of stalled peers), or stalled peers no longer held back.
    pub(crate) fn has_work(&self) -> bool {
        !self.dirty.is_empty()
            || self
                .stalled
                .iter()
                .any(|t| !self.is_shut(*t) && !self.is_held(*t))
    }

    /// Whether this connection is not read because requests it sent went
    /// to a connection that is still congested.
    pub(crate) fn is_held(&self, token: usize) -> bool {
        self.held
            .get(&token)
            .is_some_and(|on| on.iter().any(|t| self.is_congested(*t)))
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
                    Carry::Frame {
                        peer,
                        bytes,
                        request,
                    } => {
                        if *request
                            && self.reading.is_some_and(|r| r != peer.0)
                            && !self.fed.contains(&peer.0)
                        {
                            self.fed.push(peer.0);
                        }
                        self.push(peer.0, &queue.bytes[bytes.clone()])
                    }
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
        let mut bind = false;
        let role = match role {
            ExchangeRole::Server {
                mut listener,
                authorise,
                limits,
                bind: b,
                credentials,
                tls,
            } => {
                bind = b;
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
                    credentials,
                    tls,
                }
            }
            ExchangeRole::Client {
                addrs,
                retry,
                credential,
                tls,
            } => Role::Client {
                addrs,
                next_addr: 0,
                retry,
                conn: None,
                attempts: 0,
                credential,
                tls,
            },
        };
        let is_client = matches!(role, Role::Client { .. });
        self.exchanges.insert(
            id,
            Exch {
                group,
                secret,
                bind,
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
        identity: Option<&Identity>,
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
            identity: identity.map(|i| i.name.clone()),
        };
        if exch.announce.try_send(ann).is_err() {
            // Nobody reads the announcements (or not fast enough): they are
            // a notice, not state, so dropping them harms nothing else.
            log::debug!("netsvc: connection announcement dropped, its queue is full");
        }
    }
}
