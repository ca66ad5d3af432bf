//! The [`Dispatcher`]: one thread that owns all routing state.
//!
//! Who owns what, and which way data flows. (Which module may import which
//! is the table in `tests/layers.rs`: the layers below import nothing from
//! those above, and the transports import the core, whose `Core`, `Outbox`
//! and `PeerId`s they use, not the other way round.)
//!
//! ```text
//!  public handles   Dispatcher  Service  Exchange  MemoryLink  PendingReply  RPC
//!                        |  commands (bounded channel) + waker  ^  replies, events
//!                        v                                      |  (oneshots, queues)
//!  event loop       dispatcher/event_loop.rs: polls, takes commands, runs timers,
//!                   hands each to the core or to a transport
//!                        |                                  ^
//!                        v                                  |
//!  routing core     routing/: registry, reports and their cache, pending and
//!                   parked calls, the core's timers; every routing decision,
//!                   no I/O. Knows links as PeerIds.
//!                        |  Outbox: frames to carry,        ^  peer_up, frame,
//!                        v  links to close                  |  peer_down
//!  transports       transport/exchange/ (handshake, auth, heartbeats,
//!                   per-link output and flow control) over transport/stream.rs
//!                   (TCP); transport/memory.rs (two dispatchers, no sockets)
//!                        |                                  ^
//!                        v                                  |
//!  below them       mailbox (Link, Command, Inbox), event, direct, wire
//!                   (encoding), frame, ids, config, stats, error, auth, limits
//! ```
//!
//! Local services are reached by the core through their queues (an event
//! for a full queue is refused, never waited on), and they answer through
//! the commands channel or straight to a local caller (`direct`).
//!
//! The sockets are the exchange transport's, and only the dispatcher
//! thread reads them. A plain TCP link's socket is also written by other
//! threads, through the link's `direct::Outlet`: a caller's request and a
//! handler's reply to a remote caller, whole frames under the outlet's
//! lock, only while nothing the dispatcher holds for the link or any
//! command on its way to it could be overtaken (the `direct` module docs
//! say exactly when). The dispatcher writes its own output under the same
//! lock, after what a thread left unwritten.

mod event_loop;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;

use crate::config::{check_capacity, check_spin, Config, Refusal, NO_LIMIT};
use crate::error::{Error, Result};
use crate::ids::{ProcessId, ServiceBinding};
use crate::mailbox::command::Command;
use crate::mailbox::Link;
use crate::service::ServiceBuilder;
use crate::stats::Stats;

/// Shuts the dispatcher down when the last [`Dispatcher`] handle is dropped.
struct LastHandle(Arc<Link>);

impl Drop for LastHandle {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

impl Dispatcher {
    pub(crate) fn link(&self) -> &Arc<Link> {
        &self.link
    }
}

/// A handle to one dispatcher thread and everything it routes.
///
/// Cheap to clone; every clone is a handle to the same dispatcher. When the
/// last `Dispatcher` handle is dropped the dispatcher shuts down as by
/// [`shutdown`](Self::shutdown). Services, replies and other values the
/// dispatcher handed out do not keep it running.
#[derive(Clone)]
pub struct Dispatcher {
    link: Arc<Link>,
    _last: Arc<LastHandle>,
}

impl fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatcher")
            .field("name", &self.link.config.name)
            .field("process", &self.link.process)
            .finish()
    }
}

impl Dispatcher {
    /// Starts a dispatcher with the default configuration.
    pub fn new() -> Result<Dispatcher> {
        Dispatcher::builder().build()
    }

    /// A builder to configure a dispatcher before starting it.
    pub fn builder() -> DispatcherBuilder {
        DispatcherBuilder::default()
    }

    /// This dispatcher's identity.
    pub fn process_id(&self) -> ProcessId {
        self.link.process.clone()
    }

    /// Starts describing a service named `name`; finish with
    /// [`open`](ServiceBuilder::open) or [`spawn`](ServiceBuilder::spawn).
    pub fn service(&self, name: &str) -> ServiceBuilder {
        ServiceBuilder::new(self.link.clone(), name)
    }

    /// Every service of that name currently visible, in order of appearance.
    /// Empty once the dispatcher has shut down.
    pub fn lookup_service_name(&self, name: &str) -> Vec<ServiceBinding> {
        self.link
            .ask(|reply| Command::LookupName {
                name: name.to_owned(),
                reply,
            })
            .unwrap_or_default()
    }

    /// Every service currently in that group, in order of joining. Empty
    /// once the dispatcher has shut down.
    pub fn lookup_service_group(&self, group: &str) -> Vec<ServiceBinding> {
        self.link
            .ask(|reply| Command::LookupGroup {
                group: group.to_owned(),
                reply,
            })
            .unwrap_or_default()
    }

    /// Withdraws every service, fails every pending call with
    /// [`Error::Closed`], stops the dispatcher thread and joins it and every
    /// spawned service thread (except the calling thread, if it is one).
    /// Idempotent; returns when all of that is done. It never waits on a
    /// full command queue: if the shutdown cannot be queued within the
    /// stall limit (dead-peer timeout + handshake timeout), the dispatcher
    /// stops at its next turn anyway. After the dispatcher thread panicked
    /// it returns at once (see [`wait`](Self::wait) for the reason).
    pub fn shutdown(&self) {
        self.link.shutdown();
    }

    /// Delivers [`Event::Shutdown`](crate::Event::Shutdown) to every service
    /// now, then after `delay` shuts down as [`shutdown`](Self::shutdown)
    /// does. Returns at once; [`wait`](Self::wait) blocks until it is done.
    pub fn shutdown_after(&self, delay: Duration) {
        let _ = self.link.send(Command::ShutdownAfter { delay });
    }

    /// Blocks until the dispatcher has shut down (by [`shutdown`](Self::shutdown),
    /// [`shutdown_after`](Self::shutdown_after) or another handle), then joins
    /// its threads.
    ///
    /// [`Error::DispatcherFailed`] if the dispatcher thread ended by
    /// failing (it panicked, or polling its sockets failed) rather than by
    /// a shutdown; every call it held failed with [`Error::Closed`].
    pub fn wait(&self) -> Result<()> {
        self.link.wait_exited();
        self.link.shutdown();
        match self.link.failure() {
            None => Ok(()),
            Some(why) => Err(Error::DispatcherFailed(why)),
        }
    }

    /// The dispatcher's counters.
    pub fn stats(&self) -> Stats {
        let c = &self.link.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            requests_delivered: get(&c.requests_delivered),
            replies_delivered: get(&c.replies_delivered),
            busy_replies: get(&c.busy_replies),
            late_replies: get(&c.late_replies),
            calls_timed_out: get(&c.calls_timed_out),
            reports_published: get(&c.reports_published),
            reports_delivered: get(&c.reports_delivered),
            reports_dropped: get(&c.reports_dropped),
            events_dropped: get(&c.events_dropped),
            frames_in: get(&c.frames_in),
            frames_out: get(&c.frames_out),
            reconnects: get(&c.reconnects),
            slow_consumers: get(&c.slow_consumers),
            limits_breached: get(&c.limits_breached),
            auth_failures: get(&c.auth_failures),
            casts_dropped: get(&c.casts_dropped),
            refused_frames: get(&c.refused_frames),
            permission_denied: get(&c.permission_denied),
            tls_failures: get(&c.tls_failures),
            publish_timeouts: get(&c.publish_timeouts),
            subscribers_stalled: get(&c.subscribers_stalled),
            frames_written_by_callers: get(&c.frames_written_by_callers),
            identities: c.identities(),
        }
    }

    /// The default timeout of [`Service::call`](crate::Service::call).
    pub fn default_timeout(&self) -> Duration {
        self.link.config.default_timeout
    }
}

/// The smallest frame limit: below it not even a handshake or a service
/// table fits.
const MIN_FRAME_SIZE: usize = 1024;

/// Configures and starts a [`Dispatcher`].
///
/// Each setting that cannot work (a zero capacity or timeout, for
/// instance) is refused by [`build`](Self::build) with
/// [`Error::InvalidArgument`] naming the first such setting. Durations of
/// a century or more (up to `Duration::MAX`) mean "no limit".
#[derive(Debug, Clone)]
pub struct DispatcherBuilder {
    config: Config,
    refusal: Refusal,
}

impl Default for DispatcherBuilder {
    fn default() -> Self {
        DispatcherBuilder {
            config: Config {
                name: "netsvc".to_owned(),
                queue_capacity: 1024,
                max_frame_size: 16 << 20,
                max_outbound_buffer: 64 << 20,
                heartbeat_interval: Duration::from_secs(5),
                dead_peer_timeout: Duration::from_secs(15),
                handshake_timeout: Duration::from_secs(3),
                default_timeout: Duration::from_secs(30),
                max_name_len: crate::limits::MAX_NAME_LEN,
                max_subject_len: crate::limits::MAX_SUBJECT_LEN,
                publish_timeout: Duration::from_secs(10),
                stall_limit: Duration::from_secs(2),
                slow_consumer_timeout: Duration::from_secs(3),
                idle_spin: Duration::from_micros(100),
                call_spin: Duration::from_micros(200),
            },
            refusal: Refusal::default(),
        }
    }
}

impl DispatcherBuilder {
    /// A name for the dispatcher, used in its [`ProcessId`] and in logs.
    pub fn name(mut self, name: &str) -> Self {
        self.config.name = name.to_owned();
        self
    }

    /// The default capacity of each service's event queue (default 1024).
    ///
    /// When a service's queue holds this many events, further requests are
    /// refused with code 50 (busy), and further reports wait for room
    /// (their publishers pushed back on: see
    /// [`publish_timeout`](Self::publish_timeout) and
    /// [`stall_limit`](Self::stall_limit)). Announcements, timers and
    /// shutdown events may use a reserve of the same size again beyond
    /// that; past the reserve they are dropped, logged and counted in
    /// [`Stats::events_dropped`].
    ///
    /// Refused by [`build`](Self::build): 0 (nothing could be delivered),
    /// and more than 16,777,216. A queue's memory follows what it holds,
    /// not its capacity: a large capacity costs nothing until it is used.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        check_capacity(&mut self.refusal, "queue_capacity", capacity);
        self.config.queue_capacity = capacity;
        self
    }

    /// How long [`Service::publish_report`](crate::Service::publish_report)
    /// waits for room (default 10 s) while as many of the publisher's
    /// reports as its queue's capacity wait for subscribers (a full queue,
    /// or a link out of credit); then it fails with
    /// [`Error::Backpressure`](crate::Error::Backpressure), the report not
    /// published. 0 is refused by [`build`](Self::build).
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.refusal.check(!timeout.is_zero(), || {
            "publish_timeout must be more than 0".to_owned()
        });
        self.config.publish_timeout = timeout.min(NO_LIMIT);
        self
    }

    /// How long a subscriber may take nothing from its full queue while
    /// reports wait for it (default 2 s). Reports wait for a slow
    /// subscriber, and their publishers with them, as long as it takes
    /// events; one that takes none for this long is stalled: the reports
    /// waiting for it are dropped, and so are those that come before half
    /// its queue is free again, and it is then told how many with
    /// [`Event::Dropped`](crate::Event::Dropped). So a stalled subscriber
    /// holds up its publishers, and the other subscribers of its links, for
    /// at most this long. 0 is refused by [`build`](Self::build); a
    /// century or more means never (reports then wait for as long as the
    /// subscriber takes nothing, and publishers fail with
    /// [`Error::Backpressure`](crate::Error::Backpressure)).
    pub fn stall_limit(mut self, limit: Duration) -> Self {
        self.refusal.check(!limit.is_zero(), || {
            "stall_limit must be more than 0".to_owned()
        });
        self.config.stall_limit = limit.min(NO_LIMIT);
        self
    }

    /// How long an exchange peer may keep this process's output to it
    /// congested (default 3 s): more than the high-water mark unsent
    /// (1/8 of [`max_outbound_buffer`](Self::max_outbound_buffer), between
    /// 64 KiB and 1 MiB) without ever draining to a quarter of it. It is
    /// then dropped alone as a slow consumer (counted in
    /// [`Stats::slow_consumers`], and told in its
    /// [`ConnectionAnnouncement`](crate::ConnectionAnnouncement) as
    /// [`SlowConsumer`](crate::InactiveReason::SlowConsumer)). On a server,
    /// a client whose reports have waited this long for credit it does not
    /// grant is dropped the same way. 0 is refused by [`build`](Self::build).
    pub fn slow_consumer_timeout(mut self, timeout: Duration) -> Self {
        self.refusal.check(!timeout.is_zero(), || {
            "slow_consumer_timeout must be more than 0".to_owned()
        });
        self.config.slow_consumer_timeout = timeout.min(NO_LIMIT);
        self
    }

    /// How long the dispatcher thread, with nothing to do, keeps looking
    /// for new input and commands before it sleeps in its poll (default
    /// 100 us; zero: it sleeps at once). It yields the CPU between looks.
    ///
    /// On a machine whose idle cores halt (a VM without halt polling, as
    /// many are), a thread woken on a halted core runs tens of
    /// microseconds late, and a call across an exchange wakes several
    /// dispatchers in turn: looking a little longer keeps the core awake
    /// for the answer that is on its way. The spin adapts: each one that
    /// catches nothing halves how often the next idle moments spin, down
    /// to one in 64, so a process whose traffic is sparse spends almost
    /// nothing on it; a steady exchange of calls keeps it spinning, at
    /// the price of CPU time while it waits. See the README's Speed
    /// section for what it gains and costs. Refused by
    /// [`build`](Self::build): more than 10 ms.
    pub fn idle_spin(mut self, window: Duration) -> Self {
        check_spin(&mut self.refusal, "idle_spin", window);
        self.config.idle_spin = window;
        self
    }

    /// How long a thread waiting for the reply to a call across an
    /// exchange keeps looking for it before it sleeps (default 200 us;
    /// zero: it sleeps at once). One caller of a dispatcher at a time
    /// does (the others sleep at once), with the same adaptive backoff
    /// as [`idle_spin`](Self::idle_spin). A call to a service of the same
    /// dispatcher always looks for 50 us first, whatever this says.
    /// Refused by [`build`](Self::build): more than 10 ms.
    pub fn call_spin(mut self, window: Duration) -> Self {
        check_spin(&mut self.refusal, "call_spin", window);
        self.config.call_spin = window;
        self
    }

    /// The largest frame accepted from an exchange peer (default 16 MiB).
    /// A peer announcing a larger one is disconnected before anything is
    /// allocated for it.
    ///
    /// Refused by [`build`](Self::build): less than 1 KiB (not even a
    /// handshake fits) and more than 4 GiB - 1 (a frame's length is 32 bits).
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.refusal.check(bytes >= MIN_FRAME_SIZE, || {
            format!("max_frame_size must be at least {MIN_FRAME_SIZE} bytes, got {bytes}")
        });
        self.refusal.check(bytes <= u32::MAX as usize, || {
            format!(
                "max_frame_size must be at most {} bytes, got {bytes}",
                u32::MAX
            )
        });
        self.config.max_frame_size = bytes.min(u32::MAX as usize);
        self
    }

    /// How many bytes may wait to be written to one exchange peer before it
    /// is disconnected as a slow consumer (default 64 MiB); counted in
    /// [`Stats::slow_consumers`].
    ///
    /// Before that, above an eighth of it (at most 1 MiB), the peer is
    /// *congested* until its backlog is down to a quarter of that mark:
    /// once its input asks for more (a request, a subscription, report
    /// credit), that input is not read (what asks for nothing, such as
    /// replies, is read on, so that two peers cannot each wait for the
    /// other), nor the input of peers whose requests were relayed to it,
    /// so TCP pushes back on those senders alone; every other peer, the
    /// commands and the timers are served as ever. A peer congested for
    /// the [`slow_consumer_timeout`](Self::slow_consumer_timeout) is
    /// disconnected as a slow consumer, so congestion always ends.
    ///
    /// Refused by [`build`](Self::build): less than 1 KiB (every peer
    /// would be disconnected at its first message).
    pub fn max_outbound_buffer(mut self, bytes: usize) -> Self {
        self.refusal.check(bytes >= MIN_FRAME_SIZE, || {
            format!("max_outbound_buffer must be at least {MIN_FRAME_SIZE} bytes, got {bytes}")
        });
        self.config.max_outbound_buffer = bytes;
        self
    }

    /// Exchange link liveness: each link sends a heartbeat when it has sent
    /// nothing for `interval` (default 5 s), and a peer heard nothing from
    /// for `dead_peer_timeout` (default 15 s) is dropped as dead, its
    /// services withdrawn and, on a client, reconnection started. This is
    /// what detects a half-open TCP peer. The timers are the dispatcher's,
    /// so busy services never delay them.
    ///
    /// Refused by [`build`](Self::build): an interval of zero (a heartbeat
    /// on every turn), and a dead-peer timeout shorter than the interval
    /// (every quiet peer would be dropped between two heartbeats).
    pub fn heartbeat(mut self, interval: Duration, dead_peer_timeout: Duration) -> Self {
        self.refusal.check(!interval.is_zero(), || {
            "heartbeat interval must be more than zero, got 0".to_owned()
        });
        self.refusal.check(dead_peer_timeout >= interval, || {
            format!(
                "heartbeat dead_peer_timeout must be at least the interval ({interval:?}), \
                 got {dead_peer_timeout:?}"
            )
        });
        self.config.heartbeat_interval = interval.min(NO_LIMIT);
        self.config.dead_peer_timeout = dead_peer_timeout.min(NO_LIMIT);
        self
    }

    /// How long a new exchange connection may take to connect and complete
    /// its handshake before it is closed (default 3 s, like the 2 s NATS
    /// gives a client to authenticate: a connection that has not proved
    /// anything holds a slot no longer than this).
    ///
    /// Refused by [`build`](Self::build): zero (no connection could complete).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.refusal.check(!timeout.is_zero(), || {
            "handshake_timeout must be more than zero, got 0".to_owned()
        });
        self.config.handshake_timeout = timeout.min(NO_LIMIT);
        self
    }

    /// The timeout of [`Service::call`](crate::Service::call) (default 30 s;
    /// a century or more, up to `Duration::MAX`: no limit).
    ///
    /// Refused by [`build`](Self::build): zero (every call would time out).
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.refusal.check(!timeout.is_zero(), || {
            "default_timeout must be more than zero, got 0".to_owned()
        });
        self.config.default_timeout = timeout;
        self
    }

    /// The longest service name, audience, group name and method name, in
    /// bytes (default 255, like RabbitMQ's names).
    ///
    /// A local service with a longer name, audience or group fails to open
    /// and a call with a longer method name fails, with an error;
    /// [`Service::join_group`](crate::Service::join_group) and the monitors,
    /// which return nothing, log a warning and ignore such a name. An
    /// exchange peer (client or server) sending one is disconnected, logged
    /// and counted in [`Stats::limits_breached`].
    pub fn max_name_len(mut self, bytes: usize) -> Self {
        self.config.max_name_len = bytes;
        self
    }

    /// The longest report subject and subscription pattern, in bytes
    /// (default 1024, comparable to NATS).
    ///
    /// Publishing or sending a report with a longer subject fails with an
    /// error; the subscription calls and
    /// [`Service::expire_reports`](crate::Service::expire_reports), which
    /// return nothing, log a warning and ignore a longer pattern. An
    /// exchange peer sending one is disconnected, logged and counted in
    /// [`Stats::limits_breached`].
    pub fn max_subject_len(mut self, bytes: usize) -> Self {
        self.config.max_subject_len = bytes;
        self
    }

    /// Starts the dispatcher thread.
    ///
    /// [`Error::InvalidArgument`] names the first setting that cannot work
    /// (see each setting); nothing is started then.
    pub fn build(self) -> Result<Dispatcher> {
        self.refusal.result()?;
        let poll = mio::Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), event_loop::WAKER)?;
        // The identity: a token only this dispatcher holds, and the uid it
        // stands for. No random source, no dispatcher (never a guessable one).
        let identity = crate::auth::random(crate::auth::IDENTITY)?;
        let uid = crate::auth::identity_uid(&identity);
        let process = ProcessId::with_uid(&self.config.name, uid);
        let (link, rx) = Link::new(waker, process, identity, self.config);
        let link = Arc::new(link);
        let thread_link = link.clone();
        let handle = std::thread::Builder::new()
            .name("netsvc-dispatcher".to_owned())
            .spawn(move || {
                // Whatever happens in the loop, a panic included, the exit
                // is marked and every caller released (the loop's drop
                // fails the calls it held).
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    event_loop::EventLoop::new(thread_link.clone(), poll, rx)?.run()
                }));
                let failure = match run {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(panic) => Some(format!(
                        "the dispatcher thread panicked: {}",
                        crate::event::panic_message(panic.as_ref())
                    )),
                };
                if let Some(why) = &failure {
                    log::error!("netsvc: dispatcher {} failed: {why}", thread_link.process);
                }
                thread_link.mark_exited(failure.clone());
                match failure {
                    None => Ok(()),
                    Some(why) => Err(Error::DispatcherFailed(why)),
                }
            })?;
        link.set_thread(handle);
        log::debug!("netsvc: dispatcher {} started", link.process);
        Ok(Dispatcher {
            _last: Arc::new(LastHandle(link.clone())),
            link,
        })
    }
}

/// Makes the dispatcher thread of `d` panic, as a bug in it would: for
/// tests of what follows (every pending call fails with [`Error::Closed`],
/// [`Dispatcher::wait`] returns [`Error::DispatcherFailed`], dropping the
/// last handle returns). Exists for tests only; never call it otherwise.
#[doc(hidden)]
pub fn panic_dispatcher(d: &Dispatcher) {
    let _ = d.link.send(Command::Panic);
}

/// Blocks the dispatcher thread of `d` until `release` receives (or its
/// sender is dropped), as a stall would: for tests of what a stalled
/// dispatcher does to its callers, and of what it reads and judges once it
/// runs again. Exists for tests only; never call it otherwise.
#[doc(hidden)]
pub fn stall_dispatcher(d: &Dispatcher, release: Receiver<()>) -> Result<()> {
    d.link.send(Command::Stall(release))
}

#[allow(dead_code)]
fn _ensure_send_sync() {
    fn check<T: Send + Sync + Clone>() {}
    check::<Dispatcher>();
}
