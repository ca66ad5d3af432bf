//! The [`Dispatcher`]: one thread that owns all routing state.
//!
//! Who owns what, and which way data flows (each layer imports only the
//! layers below it):
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
//!  foundation       wire (encoding), frame, ids, error, auth, limits, pattern
//! ```
//!
//! Local services are reached by the core through their queues (an event
//! for a full queue is refused, never waited on), and they answer through
//! the commands channel or straight to a local caller (`direct`).

pub(crate) mod command;
mod event_loop;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, TrySendError};

use crate::error::{Error, Result};
use crate::ids::{AgentId, ConversationId, ProcessId, ServiceBinding};
use crate::service::ServiceBuilder;
use command::Command;

/// How many commands may wait for the dispatcher before senders block. A
/// sender blocked here is pushed back on, never dropped. (crossbeam makes
/// every slot up front: 65,536 slots cost each dispatcher 11 MiB.)
const COMMAND_CAPACITY: usize = 4096;

/// A duration at least this long (about a century, up to `Duration::MAX`)
/// means "no limit": timeouts, timers and lifetimes that long never end.
pub(crate) const NO_LIMIT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The instant `d` after `now`, never panicking: a duration of [`NO_LIMIT`]
/// or more gives an instant about a century away, which never comes.
pub(crate) fn deadline(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(NO_LIMIT))
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
}

/// Configuration shared by the dispatcher thread and every handle.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub name: String,
    pub queue_capacity: usize,
    pub max_frame_size: usize,
    pub max_outbound_buffer: usize,
    pub default_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub dead_peer_timeout: Duration,
    pub handshake_timeout: Duration,
    /// Longest service name, audience, group and method name, in bytes.
    pub max_name_len: usize,
    /// Longest report subject and subscription pattern, in bytes.
    pub max_subject_len: usize,
}

/// Counters, updated by the dispatcher thread, read by [`Dispatcher::stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub requests_delivered: AtomicU64,
    pub replies_delivered: AtomicU64,
    pub busy_replies: AtomicU64,
    pub late_replies: AtomicU64,
    pub calls_timed_out: AtomicU64,
    pub reports_published: AtomicU64,
    pub reports_delivered: AtomicU64,
    pub reports_dropped: AtomicU64,
    pub events_dropped: AtomicU64,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub reconnects: AtomicU64,
    pub slow_consumers: AtomicU64,
    pub limits_breached: AtomicU64,
    pub auth_failures: AtomicU64,
    pub casts_dropped: AtomicU64,
    pub refused_frames: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Hands an outcome to a waiting caller, counted in `replies_delivered`
    /// before the caller can see it (a caller that reads the stats after
    /// its reply finds it counted); false, and not counted, if the caller
    /// no longer waits.
    pub(crate) fn hand_over(
        &self,
        to: &crate::oneshot::Sender<Result<crate::wire::Payload>>,
        result: Result<crate::wire::Payload>,
    ) -> bool {
        self.replies_delivered.fetch_add(1, Ordering::Relaxed);
        let delivered = to.send(result).is_ok();
        if !delivered {
            self.replies_delivered.fetch_sub(1, Ordering::Relaxed);
        }
        delivered
    }
}

/// A snapshot of the dispatcher's counters, from [`Dispatcher::stats`].
///
/// Every count is since the dispatcher started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Requests put on a service's queue.
    pub requests_delivered: u64,
    /// Replies and failures handed back to a waiting caller.
    pub replies_delivered: u64,
    /// Requests refused with code 50 because the service's queue was full.
    pub busy_replies: u64,
    /// Replies that arrived after their caller had timed out or gone away,
    /// and were dropped.
    pub late_replies: u64,
    /// Calls failed with [`Error::Timeout`].
    pub calls_timed_out: u64,
    /// Reports published (each counted once, whatever its subscribers).
    pub reports_published: u64,
    /// Reports put on a subscriber's queue.
    pub reports_delivered: u64,
    /// Reports dropped because a subscriber's queue was full.
    pub reports_dropped: u64,
    /// Announcements and timer events dropped because a service's queue
    /// was full even counting its reserve (see [`DispatcherBuilder::queue_capacity`]).
    pub events_dropped: u64,
    /// Frames received from exchange connections.
    pub frames_in: u64,
    /// Frames sent on exchange connections.
    pub frames_out: u64,
    /// Exchange client reconnections.
    pub reconnects: u64,
    /// Exchange peers disconnected because their outbound buffer passed its limit.
    pub slow_consumers: u64,
    /// Exchange peers refused or disconnected for passing a limit: a
    /// server's limits per connection (connections, services,
    /// subscriptions, pending calls, groups per service, memory), or the
    /// dispatcher's lengths of names and subjects (any peer).
    pub limits_breached: u64,
    /// Exchange links refused because authentication failed (wrong key, no
    /// key, or a replayed handshake).
    pub auth_failures: u64,
    /// Casts (one-way requests, including notifications) that reached a
    /// full queue after their sender was already told they were sent, and
    /// were dropped: counted and logged here, at the receiving dispatcher.
    pub casts_dropped: u64,
    /// Frames from an exchange peer that it had no right to send, dropped
    /// (and logged, rate-limited): a reply or a heartbeat for a call that
    /// was not sent to it, a request reusing the conversation id of a
    /// call pending here for another caller, or a report in the name of a
    /// publisher the peer did not announce.
    pub refused_frames: u64,
}

/// What the thread that shuts down needs: the threads to join.
#[derive(Default)]
struct Lifecycle {
    thread: Option<JoinHandle<Result<()>>>,
    dispatcher_thread: Option<ThreadId>,
    exited: bool,
    /// Why the dispatcher thread failed (panicked, or its poll failed).
    failure: Option<String>,
    workers: HashMap<AgentId, Vec<JoinHandle<()>>>,
}

/// What every handle shares with the dispatcher thread: the command channel,
/// the waker, identities, counters and the threads to join.
pub(crate) struct Link {
    commands: Sender<Command>,
    /// The same channel's receiving end: once the dispatcher has exited,
    /// whoever finds a command stuck in it drops it, so that the answer
    /// channels it carries disconnect and their waiters return.
    leftovers: Receiver<Command>,
    /// Set as the dispatcher thread leaves (on every path, a panic
    /// included): commands are refused from then on.
    closed: AtomicBool,
    /// Set by a shutdown that could not queue its command: the dispatcher
    /// stops at its next turn.
    stop_now: AtomicBool,
    waker: mio::Waker,
    /// Set by a sender that woke the dispatcher; cleared by the dispatcher
    /// before it drains the commands, so a wake is issued at most once per drain.
    wake_pending: AtomicBool,
    pub(crate) process: ProcessId,
    next_id: AtomicU64,
    pub(crate) counters: Counters,
    pub(crate) config: Config,
    lifecycle: Mutex<Lifecycle>,
    exited: Condvar,
}

impl Link {
    /// How long a user thread waits for the dispatcher to take a command
    /// or answer one: the longest it can legitimately stall (a congested
    /// peer holds it for at most the dead-peer timeout) plus the handshake
    /// timeout as a margin.
    pub(crate) fn stall_limit(&self) -> Duration {
        self.config
            .dead_peer_timeout
            .saturating_add(self.config.handshake_timeout)
    }

    /// Drops every command left in the channel after the dispatcher exited.
    fn drop_leftovers(&self) {
        while let Ok(cmd) = self.leftovers.try_recv() {
            drop(cmd);
        }
    }

    /// Sends a command to the dispatcher and wakes it if it may be asleep.
    ///
    /// [`Error::Closed`] at once if the dispatcher has exited;
    /// [`Error::Timeout`] if its queue stays full for the
    /// [`stall_limit`](Self::stall_limit).
    pub(crate) fn send(&self, cmd: Command) -> Result<()> {
        self.send_by(cmd, None)
    }

    /// [`send`](Self::send), waiting for room in the queue until `by`
    /// (`None`: the stall limit from now).
    fn send_by(&self, cmd: Command, by: Option<Instant>) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        if event_loop::on_dispatcher_thread() {
            // The dispatcher never waits on itself: a full queue here would
            // be a deadlock, so the command is refused instead.
            match self.commands.try_send(cmd) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    log::warn!(
                        "netsvc: command queue full on the dispatcher thread; command dropped"
                    );
                    return Err(Error::Closed);
                }
                Err(TrySendError::Disconnected(_)) => return Err(Error::Closed),
            }
        } else {
            let sent = match self.commands.try_send(cmd) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(cmd)) => {
                    let by = by.unwrap_or_else(|| deadline(Instant::now(), self.stall_limit()));
                    self.commands.send_deadline(cmd, by)
                }
                Err(TrySendError::Disconnected(cmd)) => Err(SendTimeoutError::Disconnected(cmd)),
            };
            match sent {
                Ok(()) => {}
                Err(SendTimeoutError::Timeout(_)) => {
                    log::warn!(
                        "netsvc: dispatcher {} took no command for {:?}; command not sent",
                        self.process,
                        self.stall_limit()
                    );
                    return Err(Error::Timeout);
                }
                Err(SendTimeoutError::Disconnected(_)) => return Err(Error::Closed),
            }
        }
        if self.closed.load(Ordering::SeqCst) {
            // The dispatcher left meanwhile: this command (and any other
            // left behind) will never be taken.
            self.drop_leftovers();
            return Err(Error::Closed);
        }
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            if let Err(e) = self.waker.wake() {
                log::error!("netsvc: cannot wake the dispatcher: {e}");
                return Err(Error::Io(e));
            }
        }
        Ok(())
    }

    /// [`send`](Self::send) for paths that have nobody to report to (drops).
    pub(crate) fn send_quiet(&self, cmd: Command) {
        let _ = self.send(cmd);
    }

    /// Sends a command that carries its own answer channel and waits for
    /// it, at most the [`stall_limit`](Self::stall_limit) in all:
    /// [`Error::Timeout`] past it, [`Error::Closed`] as soon as the
    /// dispatcher has exited.
    pub(crate) fn ask<T>(&self, make: impl FnOnce(Sender<T>) -> Command) -> Result<T> {
        let by = deadline(Instant::now(), self.stall_limit());
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send_by(make(tx), Some(by))?;
        match rx.recv_deadline(by) {
            Ok(answer) => Ok(answer),
            Err(RecvTimeoutError::Disconnected) => Err(Error::Closed),
            Err(RecvTimeoutError::Timeout) => {
                log::warn!(
                    "netsvc: dispatcher {} did not answer within {:?}",
                    self.process,
                    self.stall_limit()
                );
                Err(Error::Timeout)
            }
        }
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn next_agent(&self) -> AgentId {
        AgentId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) fn next_conversation(&self) -> ConversationId {
        ConversationId::new(
            self.process.uid(),
            self.next_id.fetch_add(1, Ordering::Relaxed),
        )
    }

    fn lifecycle(&self) -> MutexGuard<'_, Lifecycle> {
        // A panic while holding this lock leaves plain data behind: go on.
        self.lifecycle.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn add_worker(&self, agent: AgentId, handle: JoinHandle<()>) {
        let mut l = self.lifecycle();
        if l.exited {
            // Shut down meanwhile: the worker ends as soon as its queue
            // disconnects; join it here so that no thread is left behind.
            drop(l);
            join_unless_current(handle.thread().id(), handle);
        } else {
            l.workers.entry(agent).or_default().push(handle);
        }
    }

    pub(crate) fn take_workers(&self, agent: AgentId) -> Vec<JoinHandle<()>> {
        self.lifecycle().workers.remove(&agent).unwrap_or_default()
    }

    /// Called by the dispatcher thread as it leaves, on every path: no
    /// command is taken from now on, those left are dropped (their waiters
    /// return), and whoever waits for the exit is told, with `failure`.
    fn mark_exited(&self, failure: Option<String>) {
        self.closed.store(true, Ordering::SeqCst);
        self.drop_leftovers();
        let mut l = self.lifecycle();
        l.exited = true;
        l.failure = failure;
        drop(l);
        self.exited.notify_all();
    }

    /// Why the dispatcher thread failed, once it has exited.
    fn failure(&self) -> Option<String> {
        self.lifecycle().failure.clone()
    }

    /// Stops the dispatcher thread and joins it and every worker thread,
    /// except the calling thread itself. Idempotent.
    pub(crate) fn shutdown(&self) {
        if let Err(Error::Timeout) = self.send(Command::Shutdown) {
            // The queue stayed full: stop at the next turn instead.
            self.stop_now.store(true, Ordering::SeqCst);
            if let Err(e) = self.waker.wake() {
                log::error!("netsvc: cannot wake the dispatcher: {e}");
            }
        }
        let me = std::thread::current().id();
        let mut l = self.lifecycle();
        if l.dispatcher_thread == Some(me) {
            return; // a drop on the dispatcher thread: it is leaving anyway
        }
        if let Some(handle) = l.thread.take() {
            drop(l);
            // The thread logged its own failure, if any.
            if let Err(p) = handle.join() {
                log::error!(
                    "netsvc: dispatcher thread panicked outside its loop: {}",
                    crate::event::panic_message(p.as_ref())
                );
            }
            l = self.lifecycle();
        }
        while !l.exited {
            l = self.exited.wait(l).unwrap_or_else(|e| e.into_inner());
        }
        let workers: Vec<_> = l.workers.drain().flat_map(|(_, h)| h).collect();
        drop(l);
        for handle in workers {
            join_unless_current(handle.thread().id(), handle);
        }
    }

    /// Whether the dispatcher thread has left its loop.
    pub(crate) fn has_exited(&self) -> bool {
        self.lifecycle().exited
    }

    /// Blocks until the dispatcher thread has left its loop.
    fn wait_exited(&self) {
        let mut l = self.lifecycle();
        while !l.exited {
            l = self.exited.wait(l).unwrap_or_else(|e| e.into_inner());
        }
    }
}

pub(crate) fn join_unless_current(id: ThreadId, handle: JoinHandle<()>) {
    if id != std::thread::current().id() && handle.join().is_err() {
        log::error!("netsvc: a worker thread panicked outside its handler");
    }
}

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
        }
    }

    /// The default timeout of [`Service::call`](crate::Service::call).
    pub fn default_timeout(&self) -> Duration {
        self.link.config.default_timeout
    }
}

/// The largest event queue a service may have: its channel is made up
/// front, twice this size (the reserve), so a larger one cannot work.
pub(crate) const MAX_QUEUE_CAPACITY: usize = 1 << 24;

/// The smallest frame limit: below it not even a handshake or a service
/// table fits.
const MIN_FRAME_SIZE: usize = 1024;

/// The first setting of a builder that cannot work, kept until the
/// builder's finishing call refuses it with [`Error::InvalidArgument`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Refusal(Option<String>);

impl Refusal {
    /// Records `why` unless `ok` (the first refusal wins).
    pub(crate) fn check(&mut self, ok: bool, why: impl FnOnce() -> String) {
        if !ok && self.0.is_none() {
            self.0 = Some(why());
        }
    }

    /// The refusal, if any, as an error.
    pub(crate) fn result(&self) -> Result<()> {
        match &self.0 {
            None => Ok(()),
            Some(why) => Err(Error::InvalidArgument(why.clone())),
        }
    }
}

/// Refuses a queue capacity of 0 or above [`MAX_QUEUE_CAPACITY`].
pub(crate) fn check_capacity(refusal: &mut Refusal, setting: &str, capacity: usize) {
    refusal.check(capacity >= 1, || {
        format!("{setting} must be at least 1, got 0")
    });
    refusal.check(capacity <= MAX_QUEUE_CAPACITY, || {
        format!("{setting} must be at most {MAX_QUEUE_CAPACITY}, got {capacity}")
    });
}

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
    /// refused with code 50 (busy) and further reports are dropped; both are
    /// counted in [`Stats`]. Announcements, timers and shutdown events may
    /// use a reserve of the same size again beyond that; past the reserve
    /// they are dropped, logged and counted in [`Stats::events_dropped`].
    ///
    /// Refused by [`build`](Self::build): 0 (nothing could be delivered),
    /// and more than 16,777,216 (the queue is allocated up front).
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        check_capacity(&mut self.refusal, "queue_capacity", capacity);
        self.config.queue_capacity = capacity;
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
    /// *congested*: the dispatcher takes no commands and reads from no
    /// other peer until the backlog is down to a quarter of that mark. The
    /// pressure so reaches the senders (through TCP, and on the bounded
    /// command queue, where a fast publisher blocks) instead of piling up
    /// here. A peer congested
    /// for the dead-peer timeout (see [`heartbeat`](Self::heartbeat)) is
    /// disconnected as a slow consumer, so congestion always ends; commands
    /// (also [`Dispatcher::shutdown`]) wait for it at most that long.
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
        let (tx, rx): (Sender<Command>, Receiver<Command>) =
            crossbeam_channel::bounded(COMMAND_CAPACITY);
        let process = ProcessId::new(&self.config.name);
        let link = Arc::new(Link {
            commands: tx,
            leftovers: rx.clone(),
            closed: AtomicBool::new(false),
            stop_now: AtomicBool::new(false),
            waker,
            wake_pending: AtomicBool::new(false),
            process,
            next_id: AtomicU64::new(1),
            counters: Counters::default(),
            config: self.config,
            lifecycle: Mutex::new(Lifecycle::default()),
            exited: Condvar::new(),
        });
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
        {
            let mut l = link.lifecycle();
            l.dispatcher_thread = Some(handle.thread().id());
            l.thread = Some(handle);
        }
        log::debug!("netsvc: dispatcher {} started", link.process);
        Ok(Dispatcher {
            _last: Arc::new(LastHandle(link.clone())),
            link,
        })
    }
}

impl Link {
    /// Wakes the dispatcher thread (from another dispatcher's: an
    /// in-memory link carried frames to it), at most once per drain.
    pub(crate) fn wake(&self) {
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            if let Err(e) = self.waker.wake() {
                log::error!("netsvc: cannot wake the dispatcher: {e}");
            }
        }
    }

    pub(crate) fn wake_pending(&self) -> &AtomicBool {
        &self.wake_pending
    }

    /// Whether a shutdown asked the dispatcher to stop without a command.
    pub(crate) fn stop_now(&self) -> bool {
        self.stop_now.load(Ordering::SeqCst)
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
