//! A publisher's reports on their way to its dispatcher: staged in buffers
//! shared with it, not sent one command each.
//!
//! `publish_report` appends the report's subject and payload to its
//! thread's open segment of the service and sends a [`Command::Staged`]
//! only for a segment it opens; the dispatcher, taking that command, takes
//! the segments up to it whole. While the dispatcher is busy, a stream of
//! reports thus costs one command, one lock and no allocation per report
//! (the segments' buffers are reused), where it cost a command, a subject
//! `String` and a payload allocation each, freed on the dispatcher's
//! thread.
//!
//! Order: each publishing thread stages into segments of its own, and
//! appends to its open segment only while it has sent no command (on any
//! link) since the segment's own `Staged`. A `Staged` names its segment
//! and takes every segment up to it, oldest first (earlier ones of other
//! threads too: they were opened before it, after their threads' earlier
//! commands). So a thread's reports and its other commands (a
//! `send_report`, a request, a close) are carried out in the order it made
//! them, as when each report was a command, whatever other threads of the
//! same service do meanwhile. (A segment shared by threads could not keep
//! this: a thread appending to another's segment whose `Staged` is not yet
//! sent would see its next command overtake its report.)
//!
//! Bounds: a segment holds at most [`SEGMENT_REPORTS`] reports or about
//! [`SEGMENT_BYTES`]; every staged report counts as held by its publisher
//! (`Flow::hold`) until the dispatcher has routed it, so a publisher
//! stages at most its queue's capacity before `publish_report` waits.
//!
//! [`Command::Staged`]: super::command::Command::Staged

use std::cell::Cell;
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::event::Lifetime;
use crate::wire::Payload;

/// The most reports one segment holds.
pub(crate) const SEGMENT_REPORTS: usize = 256;

/// A segment takes no more reports once its buffer holds this many bytes.
pub(crate) const SEGMENT_BYTES: usize = 32 * 1024;

/// A payload up to this size is copied into its segment; a larger one is
/// staged as an allocation of its own (as it would be sent anyway).
pub(crate) const COPY_UP_TO: usize = 4096;

/// Emptied segments kept for reuse.
const SPARE: usize = 4;

thread_local! {
    /// This thread's id for staging (from 1, given on first use) and how
    /// many commands it has sent.
    static THREAD: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// The next thread id for staging.
static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);

/// Counts a command the calling thread sends (on any link).
pub(crate) fn count_command() {
    THREAD.with(|t| {
        let (id, sent) = t.get();
        t.set((id, sent.wrapping_add(1)));
    });
}

/// The calling thread's staging id and count of commands sent.
fn this_thread() -> (u64, u64) {
    THREAD.with(|t| {
        let (mut id, sent) = t.get();
        if id == 0 {
            id = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
            t.set((id, sent));
        }
        (id, sent)
    })
}

/// One service's staged reports.
#[derive(Debug, Default)]
pub(crate) struct Staged {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Oldest first; a `Command::Staged` takes those up to its own.
    segments: VecDeque<Segment>,
    /// The id of the next segment opened.
    next_id: u64,
    /// Emptied segments, their buffers kept.
    spare: Vec<Segment>,
}

/// Reports staged together, taken by the dispatcher whole.
#[derive(Debug, Default)]
pub(crate) struct Segment {
    /// Its number, in the order segments are opened.
    id: u64,
    /// The thread that stages into it, and that thread's count of
    /// commands sent when it opened it.
    owner: u64,
    mark: u64,
    items: Vec<Item>,
    /// The subjects and payloads the items point into.
    bytes: Vec<u8>,
}

/// One staged report.
#[derive(Debug, Clone)]
struct Item {
    subject: Range<usize>,
    payload: Stored,
    lifetime: Lifetime,
}

/// Where a staged report's payload is.
#[derive(Debug, Clone)]
enum Stored {
    /// Copied into the segment's bytes.
    Here(Range<usize>),
    /// Shared as it was given (`publish_encoded`: not copied).
    Shared(Payload),
}

/// A staged report's payload: as given to [`Staged::stage`] (bytes to
/// copy into the segment, or a payload to share as it is), and as the
/// dispatcher reads it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StagedPayload<'a> {
    /// Bytes (in the segment, once staged): a subscriber's queue gets a
    /// copy.
    Bytes(&'a [u8]),
    /// Bytes already shared: shared on.
    Shared(&'a Payload),
}

impl StagedPayload<'_> {
    /// The encoded bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            StagedPayload::Bytes(b) => b,
            StagedPayload::Shared(p) => p.as_bytes(),
        }
    }

    /// The payload, to be kept (a copy of a segment's bytes).
    pub(crate) fn to_payload(self) -> Payload {
        match self {
            StagedPayload::Bytes(b) => Payload::from(b),
            StagedPayload::Shared(p) => p.clone(),
        }
    }
}

impl Staged {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // (Nothing panics while holding it; a poisoned lock's data is
        // consistent.)
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stages a report from the calling thread: into its open segment if
    /// it has sent no command since that segment's own `Staged`, else
    /// into a new one, whose id is returned: the caller then sends one
    /// `Command::Staged` naming it.
    pub(crate) fn stage(
        &self,
        subject: &str,
        payload: StagedPayload<'_>,
        lifetime: Lifetime,
    ) -> Option<u64> {
        let (thread, sent) = this_thread();
        let mut inner = self.lock();
        let mine = inner.segments.iter().rposition(|s| s.owner == thread);
        let open = mine.filter(|&i| {
            let s = &inner.segments[i];
            sent == s.mark.wrapping_add(1)
                && s.items.len() < SEGMENT_REPORTS
                && s.bytes.len() < SEGMENT_BYTES
        });
        let (at, opened) = match open {
            Some(i) => (i, None),
            None => {
                let mut segment = inner.spare.pop().unwrap_or_default();
                segment.id = inner.next_id;
                inner.next_id += 1;
                segment.owner = thread;
                segment.mark = sent;
                let id = segment.id;
                inner.segments.push_back(segment);
                (inner.segments.len() - 1, Some(id))
            }
        };
        let Some(segment) = inner.segments.get_mut(at) else {
            return opened; // (just found or pushed)
        };
        // A subject like the previous report's is not written again.
        let subject = match segment.items.last() {
            Some(last) if segment.bytes[last.subject.clone()] == *subject.as_bytes() => {
                last.subject.clone()
            }
            _ => {
                let at = segment.bytes.len();
                segment.bytes.extend_from_slice(subject.as_bytes());
                at..segment.bytes.len()
            }
        };
        let payload = match payload {
            StagedPayload::Bytes(bytes) => {
                let at = segment.bytes.len();
                segment.bytes.extend_from_slice(bytes);
                Stored::Here(at..segment.bytes.len())
            }
            StagedPayload::Shared(p) => Stored::Shared(p.clone()),
        };
        segment.items.push(Item {
            subject,
            payload,
            lifetime,
        });
        opened
    }

    /// The oldest segment if it is `upto` or older, for the dispatcher
    /// carrying out the `Staged` of `upto` (called until `None`).
    pub(crate) fn take(&self, upto: u64) -> Option<Segment> {
        let mut inner = self.lock();
        if inner.segments.front()?.id <= upto {
            inner.segments.pop_front()
        } else {
            None
        }
    }

    /// Whether a segment waits for the dispatcher to take it.
    pub(crate) fn pending(&self) -> bool {
        !self.lock().segments.is_empty()
    }

    /// A segment whose reports are routed, its buffers kept for reuse.
    pub(crate) fn give_back(&self, mut segment: Segment) {
        if segment.bytes.capacity() > 4 * SEGMENT_BYTES {
            return; // (a large payload's buffer is not kept)
        }
        segment.items.clear(); // (shared payloads let go)
        segment.bytes.clear();
        let mut inner = self.lock();
        if inner.spare.len() < SPARE {
            inner.spare.push(segment);
        }
    }
}

impl Segment {
    /// How many reports it holds.
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Its reports in the order they were staged: subject, payload,
    /// lifetime. (A subject was a `&str` when staged and a segment's bytes
    /// are not changed since, so it still is; it is checked once per run
    /// of reports that share it, not per report.)
    pub(crate) fn reports(&self) -> impl Iterator<Item = (&str, StagedPayload<'_>, Lifetime)> + '_ {
        let mut last: (Range<usize>, &str) = (0..0, "");
        self.items.iter().map(move |i| {
            if i.subject != last.0 {
                let subject = std::str::from_utf8(&self.bytes[i.subject.clone()]).unwrap_or("");
                last = (i.subject.clone(), subject);
            }
            let payload = match &i.payload {
                Stored::Here(r) => StagedPayload::Bytes(&self.bytes[r.clone()]),
                Stored::Shared(p) => StagedPayload::Shared(p),
            };
            (last.1, payload, i.lifetime)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stages as `Service::publish_report` does: a segment opened is
    /// followed by its `Staged` command (counted here).
    fn stage(s: &Staged, subject: &str, payload: &[u8], lifetime: Lifetime) -> Option<u64> {
        let opened = s.stage(subject, StagedPayload::Bytes(payload), lifetime);
        if opened.is_some() {
            count_command();
        }
        opened
    }

    fn contents(g: &Segment) -> Vec<(String, Vec<u8>, Lifetime)> {
        g.reports()
            .map(|(s, p, l)| (s.to_owned(), p.bytes().to_vec(), l))
            .collect()
    }

    #[test]
    fn a_threads_segment_closes_on_any_other_command_it_sends() {
        let s = Staged::default();
        let first = stage(&s, "a.b", b"1", Lifetime::None).unwrap();
        assert_eq!(stage(&s, "a.b", b"2", Lifetime::None), None);
        assert_eq!(stage(&s, "a.c", b"3", Lifetime::Forever), None);
        // Another command sent by this thread: a new segment.
        count_command();
        let second = stage(&s, "a.c", b"4", Lifetime::None).unwrap();
        assert!(second > first);
        // Taken up to the first: the first only.
        let g = s.take(first).unwrap();
        assert_eq!(
            contents(&g),
            [
                ("a.b".to_owned(), b"1".to_vec(), Lifetime::None),
                ("a.b".to_owned(), b"2".to_vec(), Lifetime::None),
                ("a.c".to_owned(), b"3".to_vec(), Lifetime::Forever),
            ]
        );
        // A subject repeated is stored once.
        assert_eq!(g.bytes, b"a.b12a.c3");
        assert!(s.take(first).is_none());
        s.give_back(g);
        let g = s.take(second).unwrap();
        assert_eq!(
            contents(&g),
            [("a.c".to_owned(), b"4".to_vec(), Lifetime::None)]
        );
        // Taken: the next report opens a segment again (a spare one).
        s.give_back(g);
        assert!(stage(&s, "x", b"5", Lifetime::None).is_some());
        assert_eq!(s.lock().spare.len(), 1);
    }

    #[test]
    fn threads_stage_into_segments_of_their_own_taken_in_the_order_opened() {
        let s = std::sync::Arc::new(Staged::default());
        let mine = stage(&s, "t", b"a1", Lifetime::None).unwrap();
        // Another thread does not append to this thread's open segment
        // (whose Staged it has not seen), and this one not to its.
        let s2 = s.clone();
        let theirs = std::thread::spawn(move || {
            let id = stage(&s2, "t", b"b1", Lifetime::None).unwrap();
            assert_eq!(stage(&s2, "t", b"b2", Lifetime::None), None);
            id
        })
        .join()
        .unwrap();
        assert!(theirs > mine);
        assert_eq!(stage(&s, "t", b"a2", Lifetime::None), None);
        // Taken up to the other thread's: both, oldest first.
        let got: Vec<Vec<u8>> = std::iter::from_fn(|| s.take(theirs))
            .flat_map(|g| contents(&g).into_iter().map(|(_, p, _)| p))
            .collect();
        assert_eq!(
            got,
            [
                b"a1".to_vec(),
                b"a2".to_vec(),
                b"b1".to_vec(),
                b"b2".to_vec()
            ]
        );
    }

    #[test]
    fn a_segment_is_bounded_in_reports_and_bytes() {
        let s = Staged::default();
        let opened = (0..SEGMENT_REPORTS * 2)
            .filter(|_| stage(&s, "s", b"x", Lifetime::None).is_some())
            .count();
        assert_eq!(opened, 2);
        let big = vec![0u8; SEGMENT_BYTES];
        assert!(stage(&s, "s", &big, Lifetime::None).is_some());
        assert!(stage(&s, "s", b"x", Lifetime::None).is_some());
        let lens: Vec<usize> = std::iter::from_fn(|| s.take(u64::MAX))
            .map(|g| g.len())
            .collect();
        assert_eq!(lens, [SEGMENT_REPORTS, SEGMENT_REPORTS, 1, 1]);
    }
}
