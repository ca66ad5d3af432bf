//! Calls between services of one dispatcher, straight from the caller's
//! thread onto the callee's queue and back, without the dispatcher thread.
//!
//! The dispatcher still owns routing: it holds the only strong reference to
//! a service's `Inbox` (its queue, in `mailbox/inbox.rs`, made when the
//! service opens). The service's bindings carry a weak one. A caller that
//! holds a binding of a live local service puts the request on its queue
//! itself, and the handler answers the caller itself: two threads instead
//! of three, which on two cores is the difference between a spin and a
//! sleep per hop.
//!
//! What the dispatcher would otherwise do for such a call is done here:
//! the queue's capacity (busy, code 50), the deadline (the caller's own
//! wait), and the prompt failure of calls whose callee is withdrawn
//! ([`DirectCalls::close`], run by the dispatcher as it withdraws the
//! service). Everything else (names, groups, casts, monitored calls)
//! goes through the dispatcher as before.
//!
//! ## Remote calls written by the calling thread
//!
//! A call to an agent of another process, through a plain TCP link, is
//! written onto that link's socket by the calling thread itself, and a
//! remote caller's reply by the thread that answers it, through the link's
//! [`Outlet`]; the dispatcher thread still reads every socket and hands
//! the reply to the caller. Who may touch the socket, and when:
//!
//! - The dispatcher writes its own buffer for the link, under the
//!   outlet's lock, and says while that buffer holds output (`queued`).
//! - Another thread writes a whole frame, under the same lock, only while
//!   the dispatcher's buffer is empty, no earlier thread's bytes wait (the
//!   spill), and no command that could queue a frame is on its way to the
//!   dispatcher (the [`Gate`]). Frames therefore leave in the order they
//!   were made: a report published before a call is written before it.
//! - A caller writes its request itself only while its dispatcher sleeps
//!   in its poll ([`Gate::dispatcher_idle`]); while the dispatcher is
//!   awake (busy, or looking for input before it sleeps: `spin.rs`), the
//!   call goes to it as a command. A caller that wrote beside a preempted
//!   dispatcher woke the exchange on a halted core of this project's VM,
//!   40 us late (`perf sched`); a dispatcher that is awake takes the
//!   command within microseconds.
//! - A socket that takes only part of a frame keeps the rest in the
//!   outlet's spill (at most one frame), which the dispatcher writes
//!   before anything of its own once the socket is writable again.
//!
//! The callers waiting on links wait in one [`DirectCalls`] of the
//! dispatcher (`Link::remote_calls`), each with the link it wrote on. The
//! dispatcher answers them from the replies it reads there (a reply for
//! one of them from another link is refused as forged), fails them when
//! their link goes down or their callee is withdrawn, and with
//! [`Error::Closed`] when it stops; the caller keeps its own deadline, as
//! for a local call. TLS links and in-memory links have no outlet: their
//! calls go through the dispatcher.

use std::any::Any;
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::frame::WriteBuffer;
use crate::ids::{AgentKey, ConversationId, Queue, ServiceBinding};
use crate::stats::Counters;
use crate::wire::Payload;

/// The callers waiting for answers from one service, by conversation.
#[derive(Default)]
pub(crate) struct DirectCalls {
    state: Mutex<CallsState>,
}

#[derive(Default)]
struct CallsState {
    /// Set when the service is withdrawn: no more calls are admitted.
    closed: bool,
    waiting: HashMap<ConversationId, Waiting>,
}

/// A caller waiting for an answer.
pub(crate) struct Waiting {
    pub reply: crate::oneshot::Sender<Result<Payload>>,
    pub deadline: Instant,
    /// For a call written onto a link: that link (the only one that may
    /// answer it, whose loss fails it) and the agent called (whose
    /// withdrawal fails it). `None` for a service of this dispatcher.
    pub via: Option<(usize, AgentKey)>,
}

/// What became of a reply from a link (see [`DirectCalls::answer_from`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answered {
    /// Handed to its caller (or the caller had just given up).
    Taken,
    /// The call went out on another link: a forged reply, dropped.
    Elsewhere,
    /// No such call waits: a late reply.
    Unknown,
}

impl DirectCalls {
    fn state(&self) -> MutexGuard<'_, CallsState> {
        // Only plain inserts and removes happen under the lock; a panic
        // cannot leave it half-changed.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a caller; gives it back if the service was withdrawn.
    pub fn admit(
        &self,
        conv: ConversationId,
        waiting: Waiting,
    ) -> std::result::Result<(), Waiting> {
        self.admit_if(conv, waiting, false)
    }

    /// Registers a caller only if no other waits (the first of a burst of
    /// calls); gives it back otherwise, or once the dispatcher stopped.
    pub fn admit_alone(
        &self,
        conv: ConversationId,
        waiting: Waiting,
    ) -> std::result::Result<(), Waiting> {
        self.admit_if(conv, waiting, true)
    }

    fn admit_if(
        &self,
        conv: ConversationId,
        waiting: Waiting,
        alone: bool,
    ) -> std::result::Result<(), Waiting> {
        let mut s = self.state();
        if s.closed || (alone && !s.waiting.is_empty()) {
            return Err(waiting);
        }
        s.waiting.insert(conv, waiting);
        Ok(())
    }

    /// Takes the caller of a conversation, if it still waits.
    pub fn take(&self, conv: &ConversationId) -> Option<Waiting> {
        self.state().waiting.remove(conv)
    }

    /// Hands an outcome to the caller, counted as delivered; false if it
    /// no longer waits (it timed out, gave up, or was failed when the
    /// service was withdrawn).
    pub fn answer(
        &self,
        conv: &ConversationId,
        result: Result<Payload>,
        counters: &Counters,
    ) -> bool {
        match self.take(conv) {
            Some(w) => counters.hand_over(&w.reply, result),
            None => false,
        }
    }

    /// The service is withdrawn: no more calls are admitted, and with
    /// `fail` the callers still waiting get the error made by `why` (with
    /// a drain they keep waiting for the answers the service still gives).
    pub fn close(&self, fail: Option<&dyn Fn() -> Error>, counters: &Counters) {
        let waiting: Vec<Waiting> = {
            let mut s = self.state();
            s.closed = true;
            match fail {
                Some(_) => s.waiting.drain().map(|(_, w)| w).collect(),
                None => Vec::new(),
            }
        };
        if let Some(why) = fail {
            for w in &waiting {
                counters.hand_over(&w.reply, Err(why()));
            }
        }
    }
}

impl DirectCalls {
    /// A reply that came from `link`: handed to its caller only if the
    /// call went out there.
    pub fn answer_from(
        &self,
        link: usize,
        conv: &ConversationId,
        result: Result<Payload>,
        counters: &Counters,
    ) -> Answered {
        let waiting = {
            let mut s = self.state();
            match s.waiting.get(conv).map(|w| w.via) {
                None | Some(None) => return Answered::Unknown,
                Some(Some((via, _))) if via != link => return Answered::Elsewhere,
                Some(Some(_)) => s.waiting.remove(conv),
            }
        };
        if let Some(w) = waiting {
            counters.hand_over(&w.reply, result);
        }
        Answered::Taken
    }

    /// The link a caller waiting for `conv` wrote its call on.
    pub fn link_of(&self, conv: &ConversationId) -> Option<usize> {
        self.state()
            .waiting
            .get(conv)
            .and_then(|w| w.via)
            .map(|(l, _)| l)
    }

    /// Fails the callers waiting on `link` (all of them, or only those
    /// of `target`) with the error made by `why`.
    pub fn fail_on(
        &self,
        link: usize,
        target: Option<AgentKey>,
        why: &dyn Fn() -> Error,
        counters: &Counters,
    ) {
        let failed: Vec<Waiting> = {
            let mut s = self.state();
            if s.waiting.is_empty() {
                return;
            }
            let convs: Vec<ConversationId> = s
                .waiting
                .iter()
                .filter(|(_, w)| {
                    w.via
                        .is_some_and(|(l, t)| l == link && target.is_none_or(|k| k == t))
                })
                .map(|(c, _)| *c)
                .collect();
            convs.iter().filter_map(|c| s.waiting.remove(c)).collect()
        };
        for w in &failed {
            counters.hand_over(&w.reply, Err(why()));
        }
    }
}

/// What threads that would write a link themselves must know of its
/// dispatcher: how many commands that may queue a frame for a peer (all
/// but the quiet `Done`) are on their way to it (while any is, no thread
/// writes a link itself, so that its frame cannot overtake one of theirs),
/// and whether it waits in its poll.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    in_flight: AtomicUsize,
    idle: AtomicBool,
}

impl Gate {
    /// A command is being sent.
    pub fn enter(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    /// `n` commands were handled and what they queued is in the links'
    /// buffers (or a command was not sent after all).
    pub fn leave(&self, n: usize) {
        if n > 0 {
            self.in_flight.fetch_sub(n, Ordering::SeqCst);
        }
    }

    /// Whether no such command is on its way.
    fn is_open(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0
    }

    /// The dispatcher goes to wait in its poll (`true`), or is back.
    pub fn set_idle(&self, idle: bool) {
        self.idle.store(idle, Ordering::Relaxed);
    }

    /// Whether the dispatcher waits in its poll (a hint: it may wake any
    /// moment). A caller writes its own request only then; while the
    /// dispatcher is still busy with its turn, the request goes through
    /// it (see `Service::outlet_for` for why).
    pub fn dispatcher_idle(&self) -> bool {
        self.idle.load(Ordering::Relaxed)
    }
}

/// A plain TCP link's way out for threads other than the dispatcher (see
/// the module docs): its socket, and the bytes a thread could not write at
/// once.
pub(crate) struct Outlet {
    /// The link (its peer id), which callers wait on.
    pub link: usize,
    state: Mutex<OutletState>,
    /// Set by the dispatcher while its own buffer for the link holds
    /// output; cleared by it, under the lock, once that is all written.
    queued: AtomicBool,
    gate: Arc<Gate>,
}

struct OutletState {
    /// A second handle to the link's socket; `None` once the link closed.
    socket: Option<std::net::TcpStream>,
    /// The rest of a frame a thread began to write: written by the
    /// dispatcher before anything else.
    spill: WriteBuffer,
}

/// How a thread's frame went.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Written {
    /// On its way (all written, or the rest in the spill for the
    /// dispatcher), or lost with the link, which the dispatcher finds
    /// broken: a caller's call then fails with it.
    Taken,
    /// Not written: the dispatcher must carry it.
    NotNow,
}

impl Outlet {
    /// An outlet of `link` writing `socket` (another handle to the link's
    /// own), closed while the dispatcher's `gate` is.
    pub fn new(link: usize, socket: std::net::TcpStream, gate: Arc<Gate>) -> Arc<Outlet> {
        Arc::new(Outlet {
            link,
            state: Mutex::new(OutletState {
                socket: Some(socket),
                spill: WriteBuffer::default(),
            }),
            queued: AtomicBool::new(false),
            gate,
        })
    }

    /// The outlet of the link a binding's agent was learned through, if
    /// that link is still up.
    pub fn of(binding: &ServiceBinding) -> Option<Arc<Outlet>> {
        let queue: Arc<dyn Any + Send + Sync> = binding.queue()?;
        queue.downcast::<Outlet>().ok()
    }

    /// Whether it is a link of the dispatcher whose commands `gate` counts.
    pub fn serves(&self, gate: &Arc<Gate>) -> bool {
        Arc::ptr_eq(&self.gate, gate)
    }

    /// The weak reference the bindings learned through the link carry,
    /// which [`of`](Self::of) upgrades.
    pub fn downgrade(outlet: &Arc<Outlet>) -> Weak<Queue> {
        Arc::downgrade(outlet) as Weak<Queue>
    }

    fn state(&self) -> MutexGuard<'_, OutletState> {
        // Writes and buffer moves only: a panic cannot leave it half-changed.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes one whole frame from a thread other than the dispatcher, if
    /// it may go now (see the module docs).
    pub fn write(&self, frame: &[u8]) -> Written {
        let mut s = self.state();
        if !self.gate.is_open() || self.queued.load(Ordering::SeqCst) || s.spill.pending() > 0 {
            return Written::NotNow;
        }
        let OutletState { socket, spill } = &mut *s;
        let Some(socket) = socket.as_ref() else {
            return Written::NotNow;
        };
        let mut at = 0;
        while at < frame.len() {
            match (&*socket).write(&frame[at..]) {
                Ok(0) => break,
                Ok(n) => at += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // Full: it turns writable again later, and the
                    // dispatcher (registered for that) writes the rest.
                    spill.push_encoded(&frame[at..]);
                    return Written::Taken;
                }
                Err(_) => break,
            }
        }
        // A write that failed before any byte left: the dispatcher writes
        // it, and finds the link broken itself.
        if at == 0 {
            Written::NotNow
        } else {
            Written::Taken
        }
    }

    /// The dispatcher's side: the lock, held while it writes the link.
    pub fn hold(&self) -> Held<'_> {
        Held {
            outlet: self,
            state: self.state(),
        }
    }

    /// The dispatcher queued output for the link.
    pub fn mark_queued(&self) {
        if !self.queued.load(Ordering::Relaxed) {
            self.queued.store(true, Ordering::SeqCst);
        }
    }

    /// The link is closing: no thread writes it from now on, and the
    /// socket handle is let go.
    pub fn close(&self) {
        self.state().socket = None;
    }
}

/// The outlet's lock, held by the dispatcher around its writes.
pub(crate) struct Held<'a> {
    outlet: &'a Outlet,
    state: MutexGuard<'a, OutletState>,
}

impl Held<'_> {
    /// Writes what a thread left in the spill to `dst` (the link's
    /// socket), before anything of the dispatcher's: `Ok(true)` once it is
    /// all out.
    pub fn flush_spill(&mut self, dst: &mut impl Write) -> std::io::Result<bool> {
        if self.state.spill.pending() == 0 {
            return Ok(true);
        }
        self.state.spill.flush(dst)
    }

    /// How many bytes of a thread's frame wait in the spill: part of the
    /// link's unsent output, which its congestion is judged by.
    pub fn spilled(&self) -> usize {
        self.state.spill.pending()
    }

    /// Says whether the dispatcher's own buffer still holds output.
    pub fn set_queued(&mut self, queued: bool) {
        self.outlet.queued.store(queued, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Outlet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outlet")
            .field("link", &self.link)
            .field("queued", &self.queued.load(Ordering::Relaxed))
            .finish()
    }
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting")
            .field("deadline", &self.deadline)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    /// A connected pair over loopback: the writing end non-blocking, as
    /// the dispatcher's sockets are.
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let writer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (reader, _) = listener.accept().unwrap();
        writer.set_nonblocking(true).unwrap();
        (writer, reader)
    }

    /// Reads exactly `n` bytes (the reader blocks; the test's own bytes).
    fn read_n(reader: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut got = vec![0u8; n];
        reader.read_exact(&mut got).unwrap();
        got
    }

    #[test]
    fn a_frame_the_socket_cannot_take_whole_is_finished_by_the_dispatcher_first() {
        let (writer, mut reader) = pair();
        let gate = Arc::new(Gate::default());
        let outlet = Outlet::new(1, writer.try_clone().unwrap(), gate.clone());
        // Far larger than a loopback socket's buffers: it cannot go at once.
        let big: Vec<u8> = (0..16 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        assert_eq!(outlet.write(&big), Written::Taken);
        // The rest waits in the spill: no other thread may write now.
        assert_eq!(outlet.write(b"later"), Written::NotNow);
        // The dispatcher writes the spill before anything of its own, as
        // the socket takes it; the reader sees the frame whole, in order.
        let mut dispatcher = writer;
        let reading = std::thread::spawn(move || read_n(&mut reader, big.len() + 4));
        loop {
            let mut held = outlet.hold();
            match held.flush_spill(&mut dispatcher) {
                Ok(true) => break,
                Ok(false) => {
                    drop(held);
                    std::thread::yield_now();
                }
                Err(e) => panic!("{e}"),
            }
        }
        let mut own = WriteBuffer::default();
        own.push_encoded(b"own!");
        while !own.flush(&mut dispatcher).unwrap() {
            std::thread::yield_now();
        }
        let got = reading.join().unwrap();
        let expected: Vec<u8> = (0..16 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        assert!(
            got[..expected.len()] == expected[..],
            "the frame arrived changed"
        );
        assert_eq!(&got[expected.len()..], b"own!");
        // Spill written: threads may write again.
        assert_eq!(outlet.write(b"next"), Written::Taken);
    }

    #[test]
    fn no_thread_writes_while_a_command_is_on_its_way_or_the_dispatcher_has_output() {
        let (writer, _reader) = pair();
        let gate = Arc::new(Gate::default());
        let outlet = Outlet::new(1, writer, gate.clone());
        gate.enter();
        assert_eq!(outlet.write(b"x"), Written::NotNow);
        gate.leave(1);
        outlet.mark_queued();
        assert_eq!(outlet.write(b"x"), Written::NotNow);
        outlet.hold().set_queued(false);
        assert_eq!(outlet.write(b"x"), Written::Taken);
        outlet.close();
        assert_eq!(outlet.write(b"x"), Written::NotNow);
        // And an outlet serves only its own dispatcher's threads.
        assert!(outlet.serves(&gate));
        assert!(!outlet.serves(&Arc::new(Gate::default())));
    }

    #[test]
    fn a_reply_is_taken_only_from_the_link_its_call_went_out_on() {
        let calls = DirectCalls::default();
        let counters = Counters::default();
        let key = AgentKey {
            process: 7,
            agent: crate::ids::AgentId(1),
        };
        let conv = ConversationId::new(1, 1);
        let (tx, rx) = crate::oneshot::slot();
        let waiting = Waiting {
            reply: tx,
            deadline: Instant::now(),
            via: Some((5, key)),
        };
        calls.admit_alone(conv, waiting).unwrap();
        let (tx2, _rx2) = crate::oneshot::slot();
        let second = Waiting {
            reply: tx2,
            deadline: Instant::now(),
            via: Some((5, key)),
        };
        assert!(calls
            .admit_alone(ConversationId::new(1, 2), second)
            .is_err());
        let forged = calls.answer_from(6, &conv, Ok(Payload::unit()), &counters);
        assert_eq!(forged, Answered::Elsewhere);
        assert_eq!(calls.link_of(&conv), Some(5));
        let honest = calls.answer_from(5, &conv, Ok(Payload::unit()), &counters);
        assert_eq!(honest, Answered::Taken);
        assert!(matches!(rx.try_recv(), Ok(Ok(_))));
        let late = calls.answer_from(5, &conv, Ok(Payload::unit()), &counters);
        assert_eq!(late, Answered::Unknown);
    }
}
