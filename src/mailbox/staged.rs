//! A publisher's reports on their way to its dispatcher: staged in buffers
//! shared with it, not sent one command each.
//!
//! `publish_report` appends the report's subject and payload to the
//! newest open segment of its service and sends a [`Command::Staged`]
//! only for a segment it opens; the dispatcher, taking that command, takes
//! the oldest segment whole. While the dispatcher is busy, a stream of
//! reports thus costs one command, one lock and no allocation per report
//! (the segments' buffers are reused), where it cost a command, a subject
//! `String` and a payload allocation each, freed on the dispatcher's
//! thread.
//!
//! Order: a report is appended to a segment only while no command has
//! been sent on the link since the segment was opened, but its own
//! `Staged` (see [`Staged::stage`]). So a thread's reports and its other
//! commands (a `send_report`, a request, a close) are carried out in the
//! order it made them, as when each report was a command. Each `Staged`
//! takes one segment, and segments are taken in the order they were
//! opened, so one thread's reports stay in order.
//!
//! Bounds: a segment holds at most [`SEGMENT_REPORTS`] reports or about
//! [`SEGMENT_BYTES`]; every staged report counts as held by its publisher
//! (`Flow::hold`) until the dispatcher has routed it, so a publisher
//! stages at most its queue's capacity before `publish_report` waits.
//!
//! [`Command::Staged`]: super::command::Command::Staged

use std::collections::VecDeque;
use std::ops::Range;
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

/// One service's staged reports.
#[derive(Debug, Default)]
pub(crate) struct Staged {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Oldest first; each is taken by one `Command::Staged`.
    segments: VecDeque<Segment>,
    /// Emptied segments, their buffers kept.
    spare: Vec<Segment>,
}

/// Reports staged together, taken by the dispatcher whole.
#[derive(Debug, Default)]
pub(crate) struct Segment {
    /// The link's count of commands sent when the segment was opened.
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

/// A staged report's payload, as the dispatcher reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StagedPayload<'a> {
    /// Bytes in the segment: a subscriber's queue gets a copy.
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

/// What a report's payload is staged as: copied into the segment, or
/// shared as it is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ToStage<'a> {
    Copy(&'a [u8]),
    Share(&'a Payload),
}

impl Staged {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // (Nothing panics while holding it; a poisoned lock's data is
        // consistent.)
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stages a report. `sent` is the link's count of commands sent, read
    /// just before: the newest segment takes the report if no command was
    /// sent since it was opened but (at most) its own `Staged`. True if a
    /// segment was opened: the caller then sends one `Command::Staged`.
    pub(crate) fn stage(
        &self,
        sent: u64,
        subject: &str,
        payload: ToStage<'_>,
        lifetime: Lifetime,
    ) -> bool {
        let mut inner = self.lock();
        let open = match inner.segments.back() {
            Some(s) => {
                sent <= s.mark + 1
                    && s.items.len() < SEGMENT_REPORTS
                    && s.bytes.len() < SEGMENT_BYTES
            }
            None => false,
        };
        if !open {
            let mut segment = inner.spare.pop().unwrap_or_default();
            segment.mark = sent;
            inner.segments.push_back(segment);
        }
        let Some(segment) = inner.segments.back_mut() else {
            return false; // (just pushed)
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
            ToStage::Copy(bytes) => {
                let at = segment.bytes.len();
                segment.bytes.extend_from_slice(bytes);
                Stored::Here(at..segment.bytes.len())
            }
            ToStage::Share(p) => Stored::Shared(p.clone()),
        };
        segment.items.push(Item {
            subject,
            payload,
            lifetime,
        });
        !open
    }

    /// The oldest segment, for the dispatcher (`None` only if the service
    /// was gone when its reports were staged).
    pub(crate) fn take(&self) -> Option<Segment> {
        self.lock().segments.pop_front()
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
    /// lifetime. (A subject was a `&str` when staged; a segment's bytes
    /// are not changed since, so it still is.)
    pub(crate) fn reports(&self) -> impl Iterator<Item = (&str, StagedPayload<'_>, Lifetime)> + '_ {
        self.items.iter().map(|i| {
            let subject = std::str::from_utf8(&self.bytes[i.subject.clone()]).unwrap_or("");
            let payload = match &i.payload {
                Stored::Here(r) => StagedPayload::Bytes(&self.bytes[r.clone()]),
                Stored::Shared(p) => StagedPayload::Shared(p),
            };
            (subject, payload, i.lifetime)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_staged_in_segments_that_close_on_any_other_command() {
        let s = Staged::default();
        // Opened at count 10; its own Staged makes 11: still open.
        assert!(s.stage(10, "a.b", ToStage::Copy(b"1"), Lifetime::None));
        assert!(!s.stage(10, "a.b", ToStage::Copy(b"2"), Lifetime::None));
        assert!(!s.stage(11, "a.c", ToStage::Copy(b"3"), Lifetime::Forever));
        // Another command was sent (12): a new segment.
        assert!(s.stage(12, "a.c", ToStage::Copy(b"4"), Lifetime::None));
        let first = s.take().unwrap();
        let got: Vec<_> = first.reports().collect();
        assert_eq!(
            got,
            [
                ("a.b", StagedPayload::Bytes(b"1"), Lifetime::None),
                ("a.b", StagedPayload::Bytes(b"2"), Lifetime::None),
                ("a.c", StagedPayload::Bytes(b"3"), Lifetime::Forever),
            ]
        );
        // A subject repeated is stored once.
        assert_eq!(first.bytes, b"a.b12a.c3");
        s.give_back(first);
        let second = s.take().unwrap();
        assert_eq!(
            second.reports().collect::<Vec<_>>(),
            [("a.c", StagedPayload::Bytes(b"4"), Lifetime::None)]
        );
        assert!(s.take().is_none());
        // Taken: the next report opens a segment again (a spare one).
        s.give_back(second);
        assert!(s.stage(13, "x", ToStage::Copy(b"5"), Lifetime::None));
        assert_eq!(s.lock().spare.len(), 1);
    }

    #[test]
    fn a_segment_is_bounded_in_reports_and_bytes() {
        let s = Staged::default();
        let opened = (0..SEGMENT_REPORTS * 2)
            .filter(|_| s.stage(0, "s", ToStage::Copy(b"x"), Lifetime::None))
            .count();
        assert_eq!(opened, 2);
        let big = vec![0u8; SEGMENT_BYTES];
        assert!(s.stage(0, "s", ToStage::Copy(&big), Lifetime::None));
        assert!(s.stage(0, "s", ToStage::Copy(b"x"), Lifetime::None));
        let lens: Vec<usize> = std::iter::from_fn(|| s.take()).map(|g| g.len()).collect();
        assert_eq!(lens, [SEGMENT_REPORTS, SEGMENT_REPORTS, 1, 1]);
    }
}
