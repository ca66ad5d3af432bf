//! Rate-limited warnings, for what peers can cause in any number.

use std::time::{Duration, Instant};

/// Warnings that peers can cause in any number (refused and closed
/// connections), rate-limited: the first of a kind is logged, then at most
/// one line a second with the count of those not shown. Each one is
/// still logged at debug level.
#[derive(Default)]
pub(crate) struct Warnings {
    kinds: Vec<(&'static str, Instant, u64)>,
}

impl Warnings {
    pub(crate) fn warn(&mut self, kind: &'static str, line: std::fmt::Arguments<'_>) {
        let now = Instant::now();
        let i = match self.kinds.iter().position(|(k, _, _)| *k == kind) {
            Some(i) => i,
            None => {
                self.kinds.push((kind, now - Duration::from_secs(2), 0));
                self.kinds.len() - 1
            }
        };
        let (_, last, suppressed) = &mut self.kinds[i];
        if now.saturating_duration_since(*last) >= Duration::from_secs(1) {
            if *suppressed > 0 {
                log::warn!("netsvc: {line} (and {suppressed} more like it in the last second or more, at debug level)");
            } else {
                log::warn!("netsvc: {line}");
            }
            *last = now;
            *suppressed = 0;
        } else {
            *suppressed += 1;
            log::debug!("netsvc: {line}");
        }
    }
}
