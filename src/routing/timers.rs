//! A timer heap with cancellation, for the dispatcher's poll timeout.
//!
//! Cancelled timers stay in the heap until they reach the top or the heap is
//! compacted, which happens when stale entries outnumber live ones, so the
//! heap stays within a small multiple of the live timers.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::idmap::IdMap;

/// Names one started timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TimerId(u64);

pub(crate) struct Timers<K> {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    live: IdMap<u64, K>,
    next: u64,
}

impl<K> Timers<K> {
    pub(crate) fn new() -> Self {
        Timers {
            heap: BinaryHeap::new(),
            live: IdMap::default(),
            next: 0,
        }
    }

    pub(crate) fn start(&mut self, at: Instant, kind: K) -> TimerId {
        let id = self.next;
        self.next += 1;
        self.heap.push(Reverse((at, id)));
        self.live.insert(id, kind);
        if self.heap.len() > 1024 + 2 * self.live.len() {
            let live = &self.live;
            self.heap.retain(|Reverse((_, id))| live.contains_key(id));
        }
        TimerId(id)
    }

    pub(crate) fn cancel(&mut self, id: TimerId) -> Option<K> {
        self.live.remove(&id.0)
    }

    /// The earliest live deadline.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.heap.peek() {
            if self.live.contains_key(id) {
                return Some(*at);
            }
            self.heap.pop();
        }
        None
    }

    /// The next timer due at `now`, removed, in deadline order (ties in
    /// order of starting).
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(TimerId, K)> {
        while let Some(Reverse((at, id))) = self.heap.peek() {
            if *at > now {
                return None;
            }
            let id = *id;
            self.heap.pop();
            if let Some(kind) = self.live.remove(&id) {
                return Some((TimerId(id), kind));
            }
        }
        None
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fires_in_order_and_skips_cancelled() {
        let mut t = Timers::new();
        let now = Instant::now();
        t.start(now + Duration::from_millis(30), "c");
        let b = t.start(now + Duration::from_millis(20), "b");
        t.start(now + Duration::from_millis(10), "a");
        t.start(now + Duration::from_millis(10), "a2");
        assert_eq!(t.cancel(b), Some("b"));
        assert_eq!(t.next_deadline(), Some(now + Duration::from_millis(10)));
        let later = now + Duration::from_millis(100);
        let fired: Vec<_> = std::iter::from_fn(|| t.pop_due(later).map(|(_, k)| k)).collect();
        assert_eq!(fired, ["a", "a2", "c"]);
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn compaction_bounds_the_heap() {
        let mut t = Timers::new();
        let at = Instant::now() + Duration::from_secs(60);
        for _ in 0..100_000 {
            let id = t.start(at, ());
            t.cancel(id);
        }
        assert!(t.heap.len() <= 1025, "heap holds {}", t.heap.len());
        assert_eq!(t.len(), 0);
    }
}
