//! The way into a service's queue: the [`Inbox`] a local service's events
//! go to, which the dispatcher holds while the service is open and which
//! callers of the same dispatcher reach through the service's bindings (see
//! `direct.rs`).

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Instant;

use crossbeam_channel::Sender;

use crate::direct::DirectCalls;
use crate::event::Event;
use crate::ids::{Queue, ServiceBinding};

/// Where a local service's events go, for callers in the same dispatcher.
pub(crate) struct Inbox {
    /// The process (dispatcher) uid the service belongs to: a binding used
    /// with another dispatcher's service goes through that dispatcher.
    pub process: u64,
    pub events: Sender<Event>,
    /// Requests are refused as busy once this many events are queued.
    pub capacity: usize,
    pub calls: Arc<DirectCalls>,
    /// Shared with the service's handle: see [`Flow`].
    pub flow: Arc<Flow>,
}

impl Inbox {
    /// The queue of the binding's agent, if it is a service of this process
    /// and still open.
    pub(crate) fn of(binding: &ServiceBinding) -> Option<Arc<Inbox>> {
        let queue: Arc<dyn Any + Send + Sync> = binding.queue()?;
        queue.downcast::<Inbox>().ok()
    }

    /// No event of any kind is queued beyond this many: the capacity and
    /// its reserve (as large again, at least 64 in all).
    pub(crate) fn limit(&self) -> usize {
        self.capacity.saturating_mul(2).max(64)
    }

    /// The weak reference a binding of the service carries, which
    /// [`of`](Self::of) upgrades.
    pub(crate) fn downgrade(inbox: &Arc<Inbox>) -> Weak<Queue> {
        Arc::downgrade(inbox) as Weak<Queue>
    }
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("queued", &self.events.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// What a service's handle and its dispatcher share about the flow of its
/// reports: whether the dispatcher waits for room on the service's queue
/// (reports held for it), and how many of the service's own published
/// reports are held somewhere because a subscriber's queue or a link's
/// credit has no room (the publisher waits while too many are).
#[derive(Debug, Default)]
pub(crate) struct Flow {
    /// Set by the dispatcher when it holds reports for this service; the
    /// thread that takes an event off the queue wakes the dispatcher once
    /// room is back.
    pub wants_room: AtomicBool,
    /// This service's published reports not yet delivered everywhere.
    held: AtomicUsize,
    waiters: AtomicUsize,
    lock: Mutex<()>,
    room: Condvar,
    /// A waiting publisher goes on once this many or fewer are held: half
    /// its queue's capacity.
    pub low: usize,
    /// The service's published reports not yet taken by the dispatcher
    /// (each counted in `held` meanwhile).
    pub staged: super::staged::Staged,
}

impl Flow {
    /// The flow of a service whose queue holds `capacity` events.
    pub(crate) fn new(capacity: usize) -> Flow {
        Flow {
            low: capacity / 2,
            ..Flow::default()
        }
    }

    /// One more of this publisher's reports is held.
    pub(crate) fn hold(&self) {
        self.held.fetch_add(1, Ordering::SeqCst);
    }

    /// One of this publisher's held reports is delivered (or dropped): a
    /// publisher waiting for room is woken once `low` or fewer are held
    /// (see [`wait_below`](Self::wait_below): woken once per half queue,
    /// not once per report).
    pub(crate) fn release(&self, low: usize) {
        self.release_n(1, low);
    }

    /// `n` of this publisher's held reports are let go at once (a staged
    /// segment the dispatcher has routed): one check for a waiting
    /// publisher for all of them.
    ///
    /// Only the release that brings the count down to `low` wakes anyone:
    /// a waiter registers before it reads the count, so either it reads
    /// that release's count or that release sees it registered (both are
    /// `SeqCst`), and a count that rises again above `low` comes down to it
    /// by another such release. The releases after it, while the woken
    /// publisher has yet to run (a burst of backlogged reports let go
    /// together), cost no lock and no system call each.
    pub(crate) fn release_n(&self, n: usize, low: usize) {
        if n == 0 {
            return;
        }
        let before = self.held.fetch_sub(n, Ordering::SeqCst);
        let held = before - n;
        if held <= low && before > low && self.waiters.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.room.notify_all();
        }
    }

    /// How many of this publisher's reports are held.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// Called once `limit` or more of this publisher's reports are held:
    /// waits until `low` or fewer are (so a publisher held back goes on a
    /// batch at a time), at most until `deadline`; false if the deadline
    /// passed first.
    pub(crate) fn wait_below(&self, limit: usize, low: usize, deadline: Instant) -> bool {
        if self.held.load(Ordering::Acquire) < limit {
            return true;
        }
        let mut guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let ok = loop {
            if self.held.load(Ordering::SeqCst) <= low {
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            guard = match self.room.wait_timeout(guard, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        };
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        drop(guard);
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Starts a publisher waiting on `flow` (as `wait_to_publish` does
    /// once `limit` are held) and returns once it has registered.
    fn waiting(flow: &Arc<Flow>, limit: usize) -> std::thread::JoinHandle<bool> {
        let f = Arc::clone(flow);
        let waiter = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            f.wait_below(limit, f.low, deadline)
        });
        // (Registered under the lock before it reads the count: from then
        // on, a release that brings the count to `low` wakes it.)
        let deadline = Instant::now() + Duration::from_secs(10);
        while flow.waiters.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the publisher never waited");
            std::thread::yield_now();
        }
        waiter
    }

    #[test]
    fn a_waiting_publisher_is_woken_by_the_release_that_brings_the_count_to_low() {
        let flow = Arc::new(Flow::new(8)); // low 4
        for _ in 0..8 {
            flow.hold();
        }
        let waiter = waiting(&flow, 8);
        // One at a time: only the fourth reaches `low`; those after it
        // (the waiter may not have run yet) notify no one.
        for _ in 0..8 {
            flow.release(flow.low);
        }
        assert_eq!(waiter.join().ok(), Some(true), "woken before its deadline");
        assert_eq!(flow.held(), 0);
        assert_eq!(flow.waiters.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_count_that_rises_again_past_low_wakes_a_later_waiter_when_it_comes_down() {
        let flow = Arc::new(Flow::new(8)); // low 4
        for _ in 0..8 {
            flow.hold();
        }
        flow.release_n(6, flow.low); // down to 2, past low, no one waiting
        for _ in 0..6 {
            flow.hold(); // up to 8 again: a publisher now waits
        }
        let waiter = waiting(&flow, 8);
        flow.release_n(3, flow.low); // 5: not yet
        flow.release_n(2, flow.low); // 3: past low again
        assert_eq!(waiter.join().ok(), Some(true), "woken before its deadline");
    }
}
