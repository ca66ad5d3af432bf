//! # netsvc
//!
//! Service-oriented messaging between threads and processes, synchronous and
//! threaded: no async runtime. It unites OSE netsvc's message exchange (named
//! services, a registry with availability announcements, publish/subscribe
//! reports with a cache for late subscribers, request/reply) with
//! oslo.messaging's RPC.
//!
//! ## The model
//!
//! A [`Dispatcher`] owns one thread that holds all routing state: the
//! registry of services, subscriptions, cached reports, timers and pending
//! calls. Every other thread talks to it through cheap handles that send it
//! commands. Each [`Service`] has a bounded event queue on which the
//! dispatcher puts [`Event`]s: requests, reports, announcements, timers.
//! A service is either *pulled* by your own thread ([`Service::recv`], or
//! `select!` over [`Service::receiver`]) or *spawned* with a handler on a
//! worker thread of its own ([`ServiceBuilder::spawn`]).
//!
//! One shortcut: a call to a service of the same dispatcher, made with its
//! binding, goes from the caller's thread straight onto that service's
//! queue, and its answer straight back, with the same rules (capacity,
//! timeout, failure when the service is withdrawn). The dispatcher thread
//! is not woken for it, which on a small machine is most of a call's cost.
//!
//! ```
//! use netsvc::{Dispatcher, Event, Lifetime, ServiceStatus};
//! use std::time::Duration;
//!
//! # fn main() -> netsvc::Result<()> {
//! let d = Dispatcher::new()?;
//!
//! // A spawned service answering calls on its own thread.
//! let echo = d.service("echo").spawn(|_svc, event| {
//!     if let Event::Request(request) = event {
//!         let text: String = request.decode().unwrap_or_default();
//!         let _ = request.reply(&text.to_uppercase());
//!     }
//! })?;
//!
//! // A pulled service: this thread reads its events.
//! let me = d.service("client").open()?;
//! let answer: String = me.call(echo.binding(), "shout", &"hello")?;
//! assert_eq!(answer, "HELLO");
//!
//! // Reports: a cached report reaches a subscriber that comes later.
//! let publisher = d.service("publisher").open()?;
//! publisher.publish_report("system.startup", &1234u64, Lifetime::Forever)?;
//! me.subscribe_reports("publisher", "system.*");
//! loop {
//!     match me.recv_timeout(Duration::from_secs(5))? {
//!         Some(Event::Publisher(p)) => assert_eq!(p.status(), ServiceStatus::Available),
//!         Some(Event::Report(r)) => {
//!             assert_eq!(r.subject(), "system.startup");
//!             assert_eq!(r.decode::<u64>()?, 1234);
//!             break;
//!         }
//!         other => panic!("unexpected {other:?}"),
//!     }
//! }
//! d.shutdown();
//! # Ok(()) }
//! ```
//!
//! ## Across processes
//!
//! An [`Exchange`] makes the services of other processes look local: one
//! process listens ([`Exchange::server`]), the others connect
//! ([`Exchange::client`]) and reconnect by themselves. Each side sends the
//! other its services (as their audience allows); a link that goes down
//! withdraws what it carried, and calls through it fail at once. Everything
//! above (monitors, subscriptions, calls) works across the link unchanged.
//! The dispatcher thread polls the sockets itself: no thread per connection.
//! A server may require a shared secret ([`ServerBuilder::secret`]) or
//! named [`Credential`]s ([`ServerBuilder::credential`]), each with
//! permissions (which services a client may offer, call and subscribe to,
//! which groups it may join) that the server holds its clients to. Links
//! can run over TLS ([`ServerBuilder::tls`], [`ClientBuilder::tls`]), and
//! with mutual TLS a client's certificate names its identity and selects
//! its credential.
//!
//! ## RPC
//!
//! [`RpcClient`], [`RpcServer`], [`Endpoint`] and [`Target`] follow
//! oslo.messaging: calls and casts to a topic's servers in turn, to one
//! server, or (casts) to all; endpoint dispatch by namespace and version;
//! version caps; retries; [`Error::Remote`] for a method's failure;
//! `call_monitor_timeout` heartbeats. [`Notifier`] and
//! [`NotificationListener`] carry notifications to listener pools. An RPC
//! server is a netsvc service, so all of it works through an exchange.
//!
//! ## Payloads
//!
//! Arguments, replies and reports are encoded with their shape (a tag per
//! value, field and variant names, the sign and width of numbers), so that
//! decoding one as a type of another shape fails with [`Error::Decode`]
//! (code 54 at a service) naming what was expected and what was found,
//! never a wrong value. What must match is the shape, not the type's name:
//! integers of the same sign and a reader at least as wide; tuples of the
//! same length; struct fields by name (unknown ones ignored, missing ones an
//! error unless defaulted or optional); enum variants by name. Any payload
//! decodes as a [`Value`], and a payload built from a `Value` (as a JSON
//! tool would) decodes into typed arguments. The README's "Types" section
//! has the rules, what each schema change does, and the encoding.
//!
//! ## Threads
//!
//! `Dispatcher` is a `Clone + Send + Sync` handle; `Service`, [`Request`] and
//! [`PendingReply`] are `Send`. The dispatcher thread is named
//! `netsvc-dispatcher`, a spawned service's worker `netsvc-svc-<name>`. The
//! dispatcher never blocks on a service: it puts events on queues with
//! `try_send` and applies the policy below when one is full.
//!
//! ## Who writes a link
//!
//! The dispatcher thread reads every socket. On a plain TCP exchange link,
//! a call to a service of another process is written onto the socket by
//! the calling thread itself, and a remote caller's reply by the thread
//! that answers it: one thread hand-off fewer each way. A thread writes
//! only a whole frame, under the link's lock, and only when that cannot
//! reorder anything: nothing queued for the link by the dispatcher, and no
//! command of any thread on its way to it (a report published before a
//! call goes out before it). Otherwise, and for bursts (another such call
//! waiting, more events queued for the answering service), for TLS links
//! and for in-memory links, the dispatcher writes the frame as before; a
//! caller also hands its call to the dispatcher whenever the dispatcher is
//! awake, since then it takes it within microseconds.
//! The guarantees do not change: the dispatcher answers such a call only
//! from the link it went out on, fails it with that link or its callee,
//! and the caller keeps its deadline. [`Stats::frames_written_by_callers`]
//! counts these frames.
//!
//! ## Spinning before sleeping
//!
//! A dispatcher with nothing to do looks for input for up to 100 us
//! before it sleeps in its poll, and one caller at a time of a dispatcher
//! looks for its remote reply for up to 200 us before it sleeps, yielding
//! the CPU between looks. On machines whose idle cores halt (many VMs), a
//! sleeping thread is woken tens of microseconds late, and a call across
//! an exchange wakes several threads in turn. Each spin that catches
//! nothing halves how often the next ones spin (down to one wait in 64),
//! so sparse traffic costs next to nothing; set
//! [`idle_spin`](DispatcherBuilder::idle_spin) and
//! [`call_spin`](DispatcherBuilder::call_spin) to zero to never spin.
//!
//! ## Full queues
//!
//! A service's queue holds [`queue_capacity`](DispatcherBuilder::queue_capacity)
//! requests and reports. Beyond that, a request is refused at once with code
//! 50 (busy), counted in [`Dispatcher::stats`], and a report waits for room,
//! its publisher pushed back on (see
//! [`queue_capacity`](DispatcherBuilder::queue_capacity) and
//! [`stall_limit`](DispatcherBuilder::stall_limit)).
//! Announcements, timers and shutdown events have a reserve of the same size
//! again; past it they are dropped, logged at `warn` and counted.
//!
//! ## Calls always end
//!
//! A call ends with its reply, the service's failure ([`Error::Service`] with
//! an OSE code), [`Error::Timeout`], [`Error::ServiceUnavailable`] as soon as
//! its destination is withdrawn, or [`Error::Closed`] when the dispatcher
//! shuts down (also when the dispatcher thread panics: then
//! [`Dispatcher::wait`] returns [`Error::DispatcherFailed`]). A timeout of
//! a century or more, up to `Duration::MAX`, means no limit. A handle's
//! command that the dispatcher does not take or answer within its stall
//! limit (dead-peer timeout + handshake timeout) fails with
//! [`Error::Timeout`]. A [`Request`] dropped unanswered fails its call with
//! code 58; one dropped by a panicking handler, with 57. A reply for a
//! caller that has gone is dropped and counted.
//!
//! ## Shutdown
//!
//! [`Dispatcher::shutdown`] (also run when the last `Dispatcher` handle is
//! dropped) withdraws every service, fails every pending call with
//! [`Error::Closed`], and joins the dispatcher thread and every spawned
//! worker. [`Dispatcher::shutdown_after`] first delivers [`Event::Shutdown`]
//! to every service.
//!
//! ## Log levels
//!
//! Through the `log` facade only; netsvc never prints. `error`: a thread
//! failed or a handler panicked; `warn`: an event was discarded; `debug`:
//! services coming and going, the dispatcher starting and stopping; `trace`:
//! per message.
#![deny(missing_docs, missing_debug_implementations)]
#![forbid(unsafe_code)]

mod auth;
mod bounded;
mod config;
mod connection;
mod credentials;
mod direct;
mod dispatcher;
mod error;
mod event;
mod exchange;
mod frame;
#[doc(hidden)]
pub mod fuzzing;
mod fuzzing_frames;
mod ids;
mod limits;
mod mailbox;
mod memory;
mod methods;
mod oneshot;
mod pattern;
#[doc(hidden)]
pub mod peer_frames;
mod reply;
mod routing;
mod rpc;
mod service;
mod shape;
mod spin;
mod stats;
mod tls;
mod transport;
mod warnings;
mod wire;

pub use connection::{ConnectionAnnouncement, ConnectionState, InactiveReason};
pub use credentials::Credential;
#[doc(hidden)]
pub use dispatcher::{panic_dispatcher, stall_dispatcher};
pub use dispatcher::{Dispatcher, DispatcherBuilder};
pub use error::{codes, Error, RemoteError, Result, ServiceFailure};
pub use event::{
    Confirmed, DropReason, Dropped, Event, Lifetime, Overflow, PublisherAnnouncement, Report,
    Request, ServiceAnnouncement, ServiceStatus, SubscriptionAnnouncement, SubscriptionStatus,
};
pub use exchange::{ClientBuilder, Exchange, ServerBuilder};
pub use ids::{AgentId, ConversationId, ProcessId, ServiceBinding};
pub use memory::MemoryLink;
pub use methods::Methods;
pub use reply::PendingReply;
pub use rpc::{
    Context, Endpoint, Notification, NotificationListener, NotificationListenerHandle, Notifier,
    Prepare, Priority, RpcClient, RpcFailure, RpcServer, RpcServerHandle, Serializer, Target,
    Value, DEFAULT_EXCHANGE,
};
pub use service::{Service, ServiceBuilder, ServiceHandle};
pub use stats::Stats;
pub use tls::{TlsClientConfig, TlsServerConfig};

/// Encodes a value as netsvc encodes payloads: what
/// [`Service::publish_encoded`] takes, and what [`Report::bytes`] gives.
pub fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    wire::encode(value).map(|p| p.as_bytes().to_vec())
}

/// Decodes a payload's bytes (a report's [`bytes`](Report::bytes), or what
/// [`encode`] made) as a `T`; every byte must be used. Bytes of another
/// shape than `T`, or of another format, are [`Error::Decode`] (see
/// "Payloads" above); [`Value`] reads any payload.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    wire::decode(bytes)
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
