//! The ways in: into a dispatcher thread, the [`Link`] that every handle
//! shares with it (its command channel and waker, the identities it hands
//! out, its counters and configuration, and the threads to join at
//! shutdown) and the [`Command`]s sent on it; into a service's queue, the
//! [`Inbox`](inbox::Inbox) that local callers put their requests on.

pub(crate) mod command;
pub(crate) mod inbox;
pub(crate) mod staged;

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, TrySendError};

use crate::config::{deadline, Config};
use crate::direct::{DirectCalls, Gate, Waiting};
use crate::error::{Error, Result, ServiceFailure};
use crate::event::Responder;
use crate::ids::{AgentId, ConversationId, ProcessId, ServiceBinding};
use crate::stats::Counters;
use crate::wire::Payload;
use command::Command;

/// The link's log lines keep the target they had when it was part of the
/// dispatcher's module, so that filters and logs naming it still see them.
const LOG_TARGET: &str = "netsvc::dispatcher";

thread_local! {
    /// Set by the dispatcher thread as its loop starts.
    pub(crate) static ON_DISPATCHER: Cell<bool> = const { Cell::new(false) };
}

/// Whether the calling thread is a dispatcher thread.
pub(crate) fn on_dispatcher_thread() -> bool {
    ON_DISPATCHER.with(Cell::get)
}

/// How many commands may wait for the dispatcher before senders block. A
/// sender blocked here is pushed back on, never dropped. (crossbeam makes
/// every slot up front: 65,536 slots cost each dispatcher 11 MiB.)
const COMMAND_CAPACITY: usize = 4096;

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
    /// Commands sent and not yet carried out that may queue frames: while
    /// any is, threads do not write links themselves (`direct::Outlet`).
    pub(crate) gate: Arc<Gate>,
    /// The callers waiting for replies to calls they wrote onto links
    /// themselves (`direct::Outlet`).
    pub(crate) remote_calls: Arc<DirectCalls>,
    /// Which caller waiting for a remote reply may spin (`spin.rs`).
    pub(crate) call_spin: crate::spin::CallSpin,
    pub(crate) process: ProcessId,
    next_id: AtomicU64,
    pub(crate) counters: Counters,
    pub(crate) config: Config,
    /// The secret token the process uid is derived from
    /// (`auth::identity_uid`): shown to the exchanges this dispatcher
    /// connects to, as the proof that the uid is its own.
    pub(crate) identity: Arc<[u8]>,
    /// The counter and the keys conversation ids are made from.
    next_conv: AtomicU64,
    conv_keys: ConvKeys,
    lifecycle: Mutex<Lifecycle>,
    exited: Condvar,
}

impl Link {
    /// A link to a dispatcher that is about to start, with the receiving
    /// end of its command channel, for the dispatcher thread.
    pub(crate) fn new(
        waker: mio::Waker,
        process: ProcessId,
        identity: Vec<u8>,
        config: Config,
    ) -> (Link, Receiver<Command>) {
        let (tx, rx) = crossbeam_channel::bounded(COMMAND_CAPACITY);
        let link = Link {
            commands: tx,
            leftovers: rx.clone(),
            closed: AtomicBool::new(false),
            stop_now: AtomicBool::new(false),
            waker,
            wake_pending: AtomicBool::new(false),
            gate: Arc::default(),
            remote_calls: Arc::default(),
            call_spin: crate::spin::CallSpin::new(config.call_spin),
            process,
            identity: identity.into(),
            next_id: AtomicU64::new(1),
            next_conv: AtomicU64::new(1),
            conv_keys: ConvKeys::default(),
            counters: Counters::default(),
            config,
            lifecycle: Mutex::new(Lifecycle::default()),
            exited: Condvar::new(),
        };
        (link, rx)
    }

    /// Records the dispatcher thread, to be joined at shutdown.
    pub(crate) fn set_thread(&self, handle: JoinHandle<Result<()>>) {
        let mut l = self.lifecycle();
        l.dispatcher_thread = Some(handle.thread().id());
        l.thread = Some(handle);
    }

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

    /// Whether the dispatcher has exited (commands are refused).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
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
        if self.is_closed() {
            return Err(Error::Closed);
        }
        // A call's `Done` queues no frame: it does not close the gate.
        // Nor, for an answer that was delivered, need it be taken soon (it
        // only lets the dispatcher forget the call): it does not wake the
        // dispatcher then. (An answer nobody took is counted as late when
        // it is taken.)
        let gated = !matches!(cmd, Command::Done { .. });
        let wake = !matches!(
            cmd,
            Command::Done {
                delivered: true,
                ..
            }
        );
        if gated {
            self.gate.enter();
        }
        staged::count_command();
        let sent = self.enqueue(cmd, by);
        if sent.is_err() && gated {
            self.gate.leave(1);
        }
        if sent.is_err() || !wake {
            return sent;
        }
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            if let Err(e) = self.waker.wake() {
                log::error!(target: LOG_TARGET, "netsvc: cannot wake the dispatcher: {e}");
                return Err(Error::Io(e));
            }
        }
        Ok(())
    }

    /// Puts a command on the queue (see [`send_by`](Self::send_by)).
    fn enqueue(&self, cmd: Command, by: Option<Instant>) -> Result<()> {
        if on_dispatcher_thread() {
            // The dispatcher never waits on itself: a full queue here would
            // be a deadlock, so the command is refused instead.
            match self.commands.try_send(cmd) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    log::warn!(
                        target: LOG_TARGET,
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
                        target: LOG_TARGET,
                        "netsvc: dispatcher {} took no command for {:?}; command not sent",
                        self.process,
                        self.stall_limit()
                    );
                    return Err(Error::Timeout);
                }
                Err(SendTimeoutError::Disconnected(_)) => return Err(Error::Closed),
            }
        }
        if self.is_closed() {
            // The dispatcher left meanwhile: this command (and any other
            // left behind) will never be taken.
            self.drop_leftovers();
            return Err(Error::Closed);
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
                    target: LOG_TARGET,
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

    /// A fresh conversation id: unique in this process (a permutation of
    /// a counter) and unpredictable (keyed with keys only this process
    /// holds), so that no peer can choose or foresee the id of another
    /// caller's next call and take it first.
    pub(crate) fn next_conversation(&self) -> ConversationId {
        let n = self.next_conv.fetch_add(1, Ordering::Relaxed);
        ConversationId::new(self.process.uid(), self.conv_keys.permute(n))
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
    pub(crate) fn mark_exited(&self, failure: Option<String>) {
        self.closed.store(true, Ordering::SeqCst);
        self.drop_leftovers();
        // (Also after a panic: no reply can reach them now.)
        self.remote_calls
            .close(Some(&|| Error::Closed), &self.counters);
        let mut l = self.lifecycle();
        l.exited = true;
        l.failure = failure;
        drop(l);
        self.exited.notify_all();
    }

    /// Why the dispatcher thread failed, once it has exited.
    pub(crate) fn failure(&self) -> Option<String> {
        self.lifecycle().failure.clone()
    }

    /// Stops the dispatcher thread and joins it and every worker thread,
    /// except the calling thread itself. Idempotent.
    pub(crate) fn shutdown(&self) {
        if let Err(Error::Timeout) = self.send(Command::Shutdown) {
            // The queue stayed full: stop at the next turn instead.
            self.stop_now.store(true, Ordering::SeqCst);
            if let Err(e) = self.waker.wake() {
                log::error!(target: LOG_TARGET, "netsvc: cannot wake the dispatcher: {e}");
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
                    target: LOG_TARGET,
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
    pub(crate) fn wait_exited(&self) {
        let mut l = self.lifecycle();
        while !l.exited {
            l = self.exited.wait(l).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Joins a thread, unless it is the calling one (a worker stopping its
/// own service).
pub(crate) fn join_unless_current(id: ThreadId, handle: JoinHandle<()>) {
    if id != std::thread::current().id() && handle.join().is_err() {
        log::error!(target: LOG_TARGET, "netsvc: a worker thread panicked outside its handler");
    }
}

impl Link {
    /// Wakes the dispatcher thread (from another dispatcher's: an
    /// in-memory link carried frames to it), at most once per drain.
    pub(crate) fn wake(&self) {
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            if let Err(e) = self.waker.wake() {
                log::error!(target: LOG_TARGET, "netsvc: cannot wake the dispatcher: {e}");
            }
        }
    }

    /// Set by a sender that woke the dispatcher; the dispatcher clears it
    /// before it drains the commands.
    pub(crate) fn wake_pending(&self) -> &AtomicBool {
        &self.wake_pending
    }

    /// Whether a shutdown asked the dispatcher to stop without a command.
    pub(crate) fn stop_now(&self) -> bool {
        self.stop_now.load(Ordering::SeqCst)
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("process", &self.process)
            .finish()
    }
}

/// A request answers through the dispatcher it came from with commands on
/// this link.
impl Responder for Link {
    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn has_exited(&self) -> bool {
        Link::has_exited(self)
    }

    fn reply(
        &self,
        conv: ConversationId,
        result: std::result::Result<Payload, ServiceFailure>,
    ) -> Result<()> {
        self.send(Command::Reply {
            conv,
            result: result.map_err(Box::new),
        })
    }

    fn has_queued(&self, service: &ServiceBinding) -> bool {
        inbox::Inbox::of(service).is_some_and(|i| !i.events.is_empty())
    }

    fn done(&self, conv: ConversationId, delivered: bool) -> Result<()> {
        self.send(Command::Done { conv, delivered })
    }

    fn forward(
        &self,
        conv: ConversationId,
        to: ServiceBinding,
        method: String,
        payload: Payload,
        sender: ServiceBinding,
        caller: Option<Waiting>,
    ) -> Result<()> {
        self.send(Command::Forward {
            conv,
            to,
            method,
            payload,
            sender,
            caller: caller.map(Box::new),
        })
    }
}

/// A keyed permutation of `u64` (a four-round Feistel network whose round
/// function is SipHash with random keys): distinct counters give distinct
/// ids, and without the keys nobody can tell the next from the last.
#[derive(Default)]
struct ConvKeys(std::collections::hash_map::RandomState);

impl ConvKeys {
    fn permute(&self, x: u64) -> u64 {
        use std::hash::BuildHasher;
        let (mut l, mut r) = ((x >> 32) as u32, x as u32);
        for round in 0u8..4 {
            let f = self.0.hash_one((round, r)) as u32;
            (l, r) = (r, l ^ f);
        }
        (u64::from(l) << 32) | u64::from(r)
    }
}

impl std::fmt::Debug for ConvKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConvKeys(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::ConvKeys;

    #[test]
    fn conversation_ids_are_distinct_and_do_not_follow_each_other() {
        let keys = ConvKeys::default();
        let ids: Vec<u64> = (1..=10_000).map(|n| keys.permute(n)).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len(), "a permutation: no two alike");
        let steps = ids
            .windows(2)
            .filter(|w| w[1] == w[0].wrapping_add(1))
            .count();
        assert!(steps < 3, "{steps} ids followed their predecessor");
        let other = ConvKeys::default();
        assert_ne!(keys.permute(1), other.permute(1), "keyed per process");
    }
}
