//! The dispatcher's configuration, which its thread and every handle share,
//! what "no limit" means for a duration, and the checks of the builders'
//! settings.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};

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
    /// How long `publish_report` waits for room before it fails with
    /// `Error::Backpressure`.
    pub publish_timeout: Duration,
    /// How long a subscriber may take nothing from a full queue while
    /// reports wait for it, before what waits is dropped and it is told.
    pub stall_limit: Duration,
    /// How long a link's output may stay congested (or, on a server, its
    /// reports wait for credit it does not grant) before it is dropped as
    /// a slow consumer.
    pub slow_consumer_timeout: Duration,
    /// How long the dispatcher polls without sleeping before it sleeps in
    /// its poll (`spin.rs`); zero: never.
    pub idle_spin: Duration,
    /// How long a caller waiting for a remote reply polls before it
    /// sleeps (`spin.rs`); zero: never.
    pub call_spin: Duration,
}

/// The largest event queue a service may have (its reserve as large
/// again): a bound on what one queue may hold, not an allocation.
pub(crate) const MAX_QUEUE_CAPACITY: usize = 1 << 24;

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

/// Records a refusal of a spin window longer than `spin::MAX_SPIN`.
pub(crate) fn check_spin(refusal: &mut Refusal, setting: &str, window: Duration) {
    let max = crate::spin::MAX_SPIN;
    refusal.check(window <= max, || {
        format!("{setting} must be at most {max:?}, got {window:?}")
    });
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
