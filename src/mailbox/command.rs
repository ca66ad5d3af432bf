//! Commands from handles to the dispatcher thread. A command that needs an
//! answer carries its own reply `Sender`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::inbox::Inbox;
use crate::connection::ConnectionAnnouncement;
use crate::credentials::Credentials;
use crate::direct::Waiting;
use crate::error::{Result, ServiceFailure};
use crate::ids::{AgentId, ConversationId, ProcessId, ServiceBinding};
use crate::wire::Payload;

/// Whose reports a subscription asks for.
#[derive(Debug, Clone)]
pub(crate) enum PublisherSpec {
    /// Every agent of that service name, now and later.
    Name(String),
    /// That one agent, until it is withdrawn.
    Binding(ServiceBinding),
}

/// What a monitor watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MonitorKind {
    Name,
    Group,
}

/// Where a call goes.
#[derive(Debug, Clone)]
pub(crate) enum Destination {
    /// That agent.
    Agent(ServiceBinding),
    /// One agent of that service name, in turn.
    Name(String),
    /// One member of that group, in turn.
    Group(String),
    /// Every member of that group (one-way only).
    AllOf(String),
    /// One agent of that name per pool, an agent's pool being its first
    /// group, or itself if it has none (one-way only: notifications).
    Pools(String),
}

/// A call on its way to the dispatcher.
#[derive(Debug)]
pub(crate) struct OutgoingCall {
    pub conv: ConversationId,
    pub from: AgentId,
    pub to: Destination,
    pub method: String,
    pub payload: Payload,
    pub reply: crate::oneshot::Sender<Result<Payload>>,
    pub timeout: Duration,
    /// A cast: completed once delivered; the receiver sends no answer.
    pub oneway: bool,
    /// With no agent for a name or group yet, how long to wait for one
    /// (`None`: fail at once with DeliveryFailure).
    pub wait: Option<Duration>,
    /// Fail the call if the callee's dispatcher is silent this long; it
    /// sends heartbeats while the request is being handled.
    pub monitor: Option<Duration>,
}

/// A server's check of a connecting client's address.
pub(crate) type Authorise = Arc<dyn Fn(&SocketAddr) -> bool + Send + Sync>;

/// What one client of a server may use; a client that goes past a limit
/// is disconnected.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_connections: usize,
    pub max_services: usize,
    pub max_subscriptions: usize,
    pub max_handshakes_per_address: usize,
    pub max_pending_calls: usize,
    pub max_groups: usize,
    pub max_memory: usize,
}

impl Default for Limits {
    /// A server's limits unless its builder says otherwise.
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_services: 10_000,
            max_subscriptions: 100_000,
            max_handshakes_per_address: 16,
            max_pending_calls: crate::limits::MAX_PENDING_CALLS,
            max_groups: crate::limits::MAX_GROUPS,
            max_memory: crate::limits::MAX_CONNECTION_MEMORY,
        }
    }
}

/// One end of an in-memory link between two dispatchers of one process
/// (`transport::memory`): what its dispatcher needs to carry the link.
pub(crate) struct MemoryEnd {
    /// The link's id, the same at both ends.
    pub link: u64,
    /// The dispatcher at the other end.
    pub remote: ProcessId,
    /// The exchange group the link shows.
    pub group: String,
    /// Whether this end is the server's (it relays between its links and
    /// holds them to its limits).
    pub server: bool,
    /// Frame bodies to the other end, and from it.
    pub tx: Sender<Vec<u8>>,
    pub rx: crossbeam_channel::Receiver<Vec<u8>>,
    /// Bytes sent by this end and not yet taken by the other, and the
    /// other way round: each end's output budget.
    pub sent: Arc<std::sync::atomic::AtomicUsize>,
    pub received: Arc<std::sync::atomic::AtomicUsize>,
    /// The other dispatcher, to wake when frames are sent to it.
    pub other: std::sync::Weak<super::Link>,
}

impl std::fmt::Debug for MemoryEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemoryEnd(link {}, to {})", self.link, self.remote)
    }
}

/// What an exchange does.
pub(crate) enum ExchangeRole {
    /// Accepts clients on a bound listener.
    Server {
        listener: mio::net::TcpListener,
        authorise: Option<Authorise>,
        limits: Limits,
        /// Proofs cover the addresses each side sees.
        bind: bool,
        /// The named credentials it accepts (beside its shared secret).
        credentials: Credentials,
        /// TLS on every connection, if it has any.
        tls: Option<crate::tls::ServerTls>,
    },
    /// Connects to a server; reconnects after `retry` if given.
    Client {
        addrs: Vec<SocketAddr>,
        retry: Option<Duration>,
        /// The name of the credential whose secret it proves (the
        /// exchange's secret); empty for the shared secret.
        credential: String,
        /// TLS on every connection, if it has any.
        tls: Option<crate::tls::ClientTls>,
    },
}

impl std::fmt::Debug for ExchangeRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExchangeRole::Server { listener, .. } => {
                write!(f, "Server({:?})", listener.local_addr())
            }
            ExchangeRole::Client { addrs, retry, .. } => {
                write!(f, "Client({addrs:?}, retry {retry:?})")
            }
        }
    }
}

#[derive(Debug)]
pub(crate) enum Command {
    ExchangeOpen {
        id: u64,
        group: String,
        /// (Boxed, as is a call: a command is moved through the channel
        /// whole, and publishing sends one per report.)
        role: Box<ExchangeRole>,
        secret: Option<crate::auth::Secret>,
        announce: Sender<ConnectionAnnouncement>,
        ack: Sender<Result<()>>,
    },
    ExchangeClose {
        id: u64,
        ack: Sender<()>,
    },
    ExchangeLocalAddr {
        id: u64,
        reply: Sender<Option<SocketAddr>>,
    },
    Open {
        binding: ServiceBinding,
        inbox: Arc<Inbox>,
        ack: Sender<()>,
    },
    Close {
        agent: AgentId,
        /// Let the calls it is handling finish: they stay pending until
        /// answered instead of failing as unavailable.
        drain: bool,
    },
    Group {
        agent: AgentId,
        group: String,
        join: bool,
    },
    Monitor {
        agent: AgentId,
        kind: MonitorKind,
        key: String,
        on: bool,
    },
    Subscribe {
        agent: AgentId,
        publisher: PublisherSpec,
        pattern: String,
        on: bool,
        /// What its reports do while the subscriber's queue is full.
        overflow: crate::event::Overflow,
    },
    /// Take the service's staged segments up to `upto` and publish their
    /// reports (see `staged.rs`).
    Staged {
        agent: AgentId,
        upto: u64,
    },
    SendReport {
        agent: AgentId,
        to: ServiceBinding,
        subject: String,
        payload: Payload,
    },
    /// Expires cached reports matching the pattern; `None` purges them all.
    Expire {
        agent: AgentId,
        pattern: Option<String>,
    },
    Call(Box<OutgoingCall>),
    Reply {
        conv: ConversationId,
        /// (A failure boxed: see `ExchangeOpen`.)
        result: std::result::Result<Payload, Box<ServiceFailure>>,
    },
    /// A local caller was answered directly (and counted, if it still
    /// waited): forget the call.
    Done {
        conv: ConversationId,
        delivered: bool,
    },
    Forward {
        conv: ConversationId,
        to: ServiceBinding,
        method: String,
        payload: Payload,
        sender: ServiceBinding,
        /// A caller that called the forwarding service directly: from now
        /// on the dispatcher tracks its call. (Boxed: see `ExchangeOpen`.)
        caller: Option<Box<Waiting>>,
    },
    Cancel {
        conv: ConversationId,
    },
    StartTimer {
        agent: AgentId,
        /// The deadline, computed by the caller when it asked.
        at: Instant,
        tag: u64,
    },
    CancelTimer {
        agent: AgentId,
        tag: u64,
    },
    LookupName {
        name: String,
        reply: Sender<Vec<ServiceBinding>>,
    },
    LookupGroup {
        group: String,
        reply: Sender<Vec<ServiceBinding>>,
    },
    ShutdownAfter {
        delay: Duration,
    },
    /// Joins an in-memory link (`MemoryLink::join`).
    MemoryOpen {
        /// (Boxed: see `ExchangeOpen`.)
        end: Box<MemoryEnd>,
        ack: Sender<()>,
    },
    /// Closes an in-memory link.
    MemoryClose {
        link: u64,
    },
    /// A server's `authorise` callback decided on a connection (it runs
    /// on a thread of its own, not on the dispatcher's).
    Authorised {
        token: usize,
        allowed: bool,
    },
    Shutdown,
    /// Blocks the dispatcher thread until the receiver receives or
    /// disconnects (`stall_dispatcher`, for tests only).
    Stall(crossbeam_channel::Receiver<()>),
    /// Panics the dispatcher thread (`panic_dispatcher`, for tests only).
    Panic,
}
#[cfg(test)]
mod tests {
    use super::Command;

    /// A command is moved whole into the channel and out of it again, and
    /// a publisher sends one per report: the rare large ones are boxed so
    /// that a `Publish` does not carry 248 bytes (as it did) to the
    /// dispatcher. (Copying them out of the channel was 5% of the
    /// publisher's dispatcher in a profile of W2.)
    #[test]
    fn a_command_stays_small() {
        assert!(
            std::mem::size_of::<Command>() <= 96,
            "{}",
            std::mem::size_of::<Command>()
        );
    }
}
