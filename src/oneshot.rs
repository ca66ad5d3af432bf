//! The slot a caller waits on for the outcome of its call: one value, from
//! whichever of its senders answers first, to one receiver.
//!
//! Why not a crossbeam channel of one: its receive spins, then yields the
//! CPU a few times, before it sleeps. For a call that crosses processes,
//! which takes a hundred microseconds or more, that is pure cost: with
//! eight threads calling at once on two cores, the yields were 45% of the
//! calling process's CPU (perf, W4). Here the receiver sleeps at once,
//! unless it polls first ([`Receiver::poll_for`]) because it expects its
//! answer soon (see `spin.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Makes a slot: its first sender, and its receiver.
pub(crate) fn slot<T>() -> (Sender<T>, Receiver<T>) {
    let inner = Arc::new(Inner {
        state: Mutex::new(State {
            value: None,
            delivered: false,
            senders: 1,
            receiver: true,
        }),
        ready: Condvar::new(),
        filled: AtomicBool::new(false),
    });
    (Sender(inner.clone()), Receiver(inner))
}

struct Inner<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    /// Set with the value; read without the lock by a spinning receiver.
    filled: AtomicBool,
}

struct State<T> {
    value: Option<T>,
    /// A value was put in (taken or not): later ones are refused.
    delivered: bool,
    senders: usize,
    receiver: bool,
}

impl<T> Inner<T> {
    fn state(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics while the lock is held.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why [`Receiver::recv_deadline`] returned without a value.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Empty {
    /// Every sender is gone without sending.
    Disconnected,
    /// Nothing came by the deadline (or yet, for `try_recv`).
    Timeout,
}

/// The answering side; clones share the one slot.
pub(crate) struct Sender<T>(Arc<Inner<T>>);

impl<T> Sender<T> {
    /// Puts the value in, unless one was already put in or the receiver is
    /// gone; then the value comes back.
    pub fn send(&self, value: T) -> Result<(), T> {
        let mut s = self.0.state();
        if s.delivered || !s.receiver {
            return Err(value);
        }
        s.value = Some(value);
        s.delivered = true;
        self.0.filled.store(true, Ordering::Release);
        drop(s);
        self.0.ready.notify_one();
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.state().senders += 1;
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut s = self.0.state();
        s.senders -= 1;
        if s.senders == 0 {
            drop(s);
            self.0.ready.notify_one();
        }
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("oneshot::Sender")
    }
}

/// The waiting side.
pub(crate) struct Receiver<T>(Arc<Inner<T>>);

impl<T> Receiver<T> {
    /// Waits for the value until `deadline` (`None`: for as long as a
    /// sender lives).
    pub fn recv_deadline(&self, deadline: Option<Instant>) -> Result<T, Empty> {
        let mut s = self.0.state();
        loop {
            if let Some(v) = s.value.take() {
                return Ok(v);
            }
            if s.senders == 0 {
                return Err(Empty::Disconnected);
            }
            s = match deadline {
                None => self.0.ready.wait(s).unwrap_or_else(|e| e.into_inner()),
                Some(at) => {
                    let now = Instant::now();
                    if now >= at {
                        return Err(Empty::Timeout);
                    }
                    match self.0.ready.wait_timeout(s, at - now) {
                        Ok((s, _)) => s,
                        Err(e) => e.into_inner().0,
                    }
                }
            };
        }
    }

    /// The value if it is there.
    pub fn try_recv(&self) -> Result<T, Empty> {
        let mut s = self.0.state();
        match s.value.take() {
            Some(v) => Ok(v),
            None if s.senders == 0 => Err(Empty::Disconnected),
            None => Err(Empty::Timeout),
        }
    }

    /// Whether no value waits to be taken.
    pub fn is_empty(&self) -> bool {
        self.0.state().value.is_none()
    }

    /// Polls the slot for up to `window`, not past `until`, without
    /// sleeping (see `spin::poll_until`): whether a value came.
    pub fn poll_for(&self, window: Duration, until: Option<Instant>) -> bool {
        crate::spin::poll_until(window, until, || self.0.filled.load(Ordering::Acquire))
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.0.state().receiver = false;
    }
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("oneshot::Receiver")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn first_value_wins_and_later_ones_come_back() {
        let (tx, rx) = slot::<u32>();
        let tx2 = tx.clone();
        assert_eq!(tx.send(1), Ok(()));
        assert_eq!(tx2.send(2), Err(2));
        assert_eq!(rx.recv_deadline(None), Ok(1));
        // Taken: still refused, the slot is one-shot.
        assert_eq!(tx.send(3), Err(3));
        assert_eq!(rx.try_recv(), Err(Empty::Timeout));
    }

    #[test]
    fn receiver_wakes_when_every_sender_is_gone() {
        let (tx, rx) = slot::<u32>();
        let tx2 = tx.clone();
        let t = std::thread::spawn(move || rx.recv_deadline(None));
        drop(tx);
        drop(tx2);
        assert_eq!(t.join().ok(), Some(Err(Empty::Disconnected)));
    }

    #[test]
    fn value_from_another_thread_reaches_a_sleeping_or_spinning_receiver() {
        for spin in [false, true] {
            let (tx, rx) = slot::<u32>();
            let t = std::thread::spawn(move || tx.send(7));
            if spin {
                // Whether the poll caught it or not, the value is there.
                rx.poll_for(Duration::from_micros(50), None);
            }
            assert_eq!(rx.recv_deadline(None), Ok(7));
            assert_eq!(t.join().ok(), Some(Ok(())));
        }
    }

    #[test]
    fn deadline_passes_without_a_value() {
        let (_tx, rx) = slot::<u32>();
        let at = Instant::now() + Duration::from_millis(20);
        assert_eq!(rx.recv_deadline(Some(at)), Err(Empty::Timeout));
        assert!(Instant::now() >= at);
    }

    #[test]
    fn send_to_a_dropped_receiver_comes_back() {
        let (tx, rx) = slot::<u32>();
        drop(rx);
        assert_eq!(tx.send(1), Err(1));
    }
}
