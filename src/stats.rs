//! The dispatcher's counters: [`Counters`], which the dispatcher thread and
//! the handles bump, and [`Stats`], the public snapshot of them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::ids::ProcessId;

use crate::oneshot;

/// Counters, updated by the dispatcher thread, read by
/// [`Dispatcher::stats`](crate::Dispatcher::stats).
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
    pub permission_denied: AtomicU64,
    pub tls_failures: AtomicU64,
    pub publish_timeouts: AtomicU64,
    pub subscribers_stalled: AtomicU64,
    pub frames_written_by_callers: AtomicU64,
    /// The named identities of the links up (see [`Stats::identities`]),
    /// by link: changed by the dispatcher thread as links come and go.
    pub identities: Mutex<Vec<(usize, String, ProcessId)>>,
}

impl Counters {
    /// A link with a named identity came up.
    pub(crate) fn identity_up(&self, link: usize, name: &str, process: &ProcessId) {
        let mut ids = self.identities.lock().unwrap_or_else(|e| e.into_inner());
        ids.push((link, name.to_owned(), process.clone()));
    }

    /// A link went down (whether or not it had a named identity).
    pub(crate) fn identity_down(&self, link: usize) {
        let mut ids = self.identities.lock().unwrap_or_else(|e| e.into_inner());
        ids.retain(|(l, _, _)| *l != link);
    }

    /// The named identities of the links up, sorted by name.
    pub(crate) fn identities(&self) -> Vec<(String, ProcessId)> {
        let ids = self.identities.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<(String, ProcessId)> =
            ids.iter().map(|(_, n, p)| (n.clone(), p.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.uid().cmp(&b.1.uid())));
        v
    }
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        Counters::add(counter, 1);
    }

    /// Adds `n` to one counter.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Hands an outcome to a waiting caller, counted in `replies_delivered`
    /// before the caller can see it (a caller that reads the stats after
    /// its reply finds it counted); false, and not counted, if the caller
    /// no longer waits.
    pub(crate) fn hand_over<T>(&self, to: &oneshot::Sender<T>, outcome: T) -> bool {
        self.replies_delivered.fetch_add(1, Ordering::Relaxed);
        let delivered = to.send(outcome).is_ok();
        if !delivered {
            self.replies_delivered.fetch_sub(1, Ordering::Relaxed);
        }
        delivered
    }
}

/// A snapshot of the dispatcher's counters, from
/// [`Dispatcher::stats`](crate::Dispatcher::stats).
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
    /// Calls failed with [`Error::Timeout`](crate::Error::Timeout).
    pub calls_timed_out: u64,
    /// Reports published (each counted once, whatever its subscribers).
    pub reports_published: u64,
    /// Reports put on a subscriber's queue.
    pub reports_delivered: u64,
    /// Reports dropped: by a subscription's drop policy, or because their
    /// subscriber was stalled (see
    /// [`DispatcherBuilder::stall_limit`](crate::DispatcherBuilder::stall_limit)).
    /// Each drop is also told to the subscriber ([`Event::Dropped`](crate::Event::Dropped)).
    /// Also counted here, and logged, with no subscriber to tell: reports
    /// from an exchange peer in the name of a publisher not known here
    /// (one it never announced, or withdrew before them).
    pub reports_dropped: u64,
    /// Announcements and timer events dropped because a service's queue
    /// was full even counting its reserve (see
    /// [`DispatcherBuilder::queue_capacity`](crate::DispatcherBuilder::queue_capacity)).
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
    /// key, a credential name the server does not have, or a replayed
    /// handshake).
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
    /// What an exchange client sent that its credential does not permit
    /// (see [`Credential`](crate::Credential)), refused without closing its
    /// link: a service it may not offer, a group it may not join, a call
    /// it may not make (failed with
    /// [`codes::PERMISSION_DENIED`](crate::codes::PERMISSION_DENIED)), a
    /// subscription it may not hold. Counted by the server that refused
    /// it, once per refused frame, and logged there (rate-limited).
    pub permission_denied: u64,
    /// Exchange connections refused or lost by TLS, on either side: a
    /// failed handshake (an unknown CA, a wrong server name, an expired
    /// certificate, a missing client certificate...), TLS on one side
    /// only, or a malformed record (see the `InactiveReason`s for which
    /// [`is_tls`](crate::InactiveReason::is_tls) is true). Each is also
    /// logged, with its reason.
    pub tls_failures: u64,
    /// Publishes that failed with
    /// [`Error::Backpressure`](crate::Error::Backpressure): their
    /// publisher's reports waited for room past its
    /// [`publish_timeout`](crate::DispatcherBuilder::publish_timeout).
    pub publish_timeouts: u64,
    /// Times a subscriber was found stalled (see
    /// [`DispatcherBuilder::stall_limit`](crate::DispatcherBuilder::stall_limit)).
    pub subscribers_stalled: u64,
    /// Of [`frames_out`](Self::frames_out), the calls and replies written
    /// onto a plain TCP link by the thread that made them rather than by
    /// the dispatcher thread (see the crate docs, "Who writes a link").
    pub frames_written_by_callers: u64,
    /// The links up on this dispatcher's exchange servers whose clients
    /// authenticated with a named credential or a client certificate: the
    /// credential's name or the certificate's common name (the link's
    /// identity, as in
    /// [`ConnectionAnnouncement::identity`](crate::ConnectionAnnouncement::identity))
    /// and the client's process, one entry per link, sorted by name.
    pub identities: Vec<(String, ProcessId)>,
}
