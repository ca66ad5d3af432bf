//! Spinning before sleeping, where something is likely to come soon.
//!
//! Why: on a machine whose idle cores halt (a VM without guest halt
//! polling, this project's bench machine), a thread that sleeps is woken
//! tens of microseconds late whenever it lands on a halted core (about
//! 40 us here, from `perf sched`), and a round trip across an exchange
//! wakes six threads in three processes. A thread that polls for a short
//! while before it sleeps keeps its core awake and sees what comes at
//! once; it yields the CPU between looks, so that whatever else is
//! runnable on its core runs first.
//!
//! What it costs: CPU, up to the window for each wait in which nothing
//! comes. So the spin is adaptive ([`Backoff`]): each spin that ends with
//! nothing (a miss) halves how often the next waits spin, down to one in
//! 64, and one that catches something (a hit) makes every wait spin
//! again. A process whose traffic is sparse spends at most a window in 64
//! waits; one with a steady exchange of calls spins and gains. Two places
//! spin: a dispatcher before it sleeps in its poll
//! ([`DispatcherBuilder::idle_spin`](crate::DispatcherBuilder::idle_spin)),
//! and one caller at a time of a dispatcher, waiting for a remote reply
//! ([`DispatcherBuilder::call_spin`](crate::DispatcherBuilder::call_spin)).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// After this many misses in a row, one wait in 2^MAX_MISSES spins.
const MAX_MISSES: u32 = 6;

/// The longest spin a builder accepts: past it, a spin is a busy loop.
pub(crate) const MAX_SPIN: Duration = Duration::from_millis(10);

/// Whether the next wait spins, from how the last spins ended.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    /// Spins in a row that caught nothing (at most [`MAX_MISSES`]).
    misses: u32,
    /// Waits since the last spin.
    skipped: u32,
}

impl Backoff {
    /// Whether this wait spins: every wait after a hit; after `n` misses
    /// in a row, one in 2^n.
    pub(crate) fn should_spin(&mut self) -> bool {
        if self.skipped + 1 >= 1 << self.misses {
            self.skipped = 0;
            true
        } else {
            self.skipped += 1;
            false
        }
    }

    /// How a spin ended: it caught what it waited for, or not.
    pub(crate) fn record(&mut self, hit: bool) {
        self.misses = if hit {
            0
        } else {
            (self.misses + 1).min(MAX_MISSES)
        };
    }
}

/// The callers of one dispatcher waiting for remote replies: at most one
/// of them spins at a time (more would only take the CPU from each other
/// and from the threads that bring the replies), the others sleep at once.
#[derive(Debug)]
pub(crate) struct CallSpin {
    window: Duration,
    /// Held by the caller that spins: `try_lock` is the token.
    backoff: Mutex<Backoff>,
}

impl CallSpin {
    /// Callers spinning for at most `window` (zero: never).
    pub(crate) fn new(window: Duration) -> Self {
        CallSpin {
            window,
            backoff: Mutex::new(Backoff::default()),
        }
    }

    /// Runs `poll` with the window if this caller may spin now (no other
    /// caller spins, and the backoff allows it); `poll` says whether its
    /// answer came.
    pub(crate) fn spin(&self, poll: impl FnOnce(Duration) -> bool) {
        if self.window.is_zero() {
            return;
        }
        let Ok(mut backoff) = self.backoff.try_lock() else {
            return;
        };
        if backoff.should_spin() {
            backoff.record(poll(self.window));
        }
    }
}

/// Polls `ready` for up to `window` (at most [`MAX_SPIN`] in use; not past
/// `until`): a few rounds
/// of spin hints, then yields of the CPU between looks. Whether it became
/// ready.
pub(crate) fn poll_until(
    window: Duration,
    until: Option<Instant>,
    mut ready: impl FnMut() -> bool,
) -> bool {
    for step in 0..=6u32 {
        if ready() {
            return true;
        }
        for _ in 0..1u32 << step {
            std::hint::spin_loop();
        }
    }
    let now = Instant::now();
    let end = now.checked_add(window).unwrap_or(now);
    let end = until.map_or(end, |u| u.min(end));
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many of `n` waits spin, each spin ending as `hit` says.
    fn spins(b: &mut Backoff, n: u32, hit: bool) -> u32 {
        let mut spun = 0;
        for _ in 0..n {
            if b.should_spin() {
                spun += 1;
                b.record(hit);
            }
        }
        spun
    }

    #[test]
    fn hits_keep_every_wait_spinning() {
        let mut b = Backoff::default();
        assert_eq!(spins(&mut b, 100, true), 100);
    }

    #[test]
    fn misses_back_off_to_one_wait_in_64_and_a_hit_restores() {
        let mut b = Backoff::default();
        // 1 + 2 + 4 + 8 + 16 + 32 = 63 waits for the first six misses.
        assert_eq!(spins(&mut b, 63, false), 6);
        // From then on, one in 64.
        assert_eq!(spins(&mut b, 64 * 10, false), 10);
        // A hit at the next spin: every wait spins again.
        assert_eq!(spins(&mut b, 64, true), 1);
        assert_eq!(spins(&mut b, 10, true), 10);
    }

    #[test]
    fn one_caller_spins_at_a_time_and_zero_never_spins() {
        let s = CallSpin::new(Duration::from_micros(10));
        let mut inner = false;
        s.spin(|_| {
            // Another caller, meanwhile, does not spin.
            s.spin(|_| {
                inner = true;
                true
            });
            true
        });
        assert!(!inner);
        let mut ran = false;
        s.spin(|_| {
            ran = true;
            true
        });
        assert!(ran);
        let never = CallSpin::new(Duration::ZERO);
        never.spin(|_| panic!("a zero window spins"));
    }

    #[test]
    fn polling_ends_at_the_window_or_when_ready() {
        let mut looks = 0;
        assert!(poll_until(Duration::from_secs(5), None, || {
            looks += 1;
            looks == 20
        }));
        assert!(!poll_until(Duration::from_micros(200), None, || false));
        let past = Instant::now();
        assert!(!poll_until(Duration::from_secs(5), Some(past), || false));
    }
}
