//! The summary the chaos test prints at the end: the seed, how long each
//! recovery took, and what each caller and subscriber saw.

use std::time::Duration;

use super::world::World;
use crate::HUNG_AFTER;

/// One kill and restart: how long the exchange was up, then down, and
/// how long after the restart each kind of child had recovered.
pub struct RoundRecord {
    pub uptime: Duration,
    pub downtime: Duration,
    pub links: Duration,
    pub publishers: Duration,
    pub subscribers: Duration,
    pub callers: Duration,
    pub all: Duration,
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// The summary of a run of `total` with `seed`: everything was up
/// `first` after the start, then `rounds`; `w` as it ended.
pub fn summary(
    seed: u64,
    total: Duration,
    first: Duration,
    rounds: &[RoundRecord],
    w: &World,
) -> String {
    let mut summary = format!("chaos summary (seed {seed}, {} in all)\n", secs(total));
    summary += &format!("  first start: everything up after {}\n", secs(first));
    for (i, r) in rounds.iter().enumerate() {
        summary += &format!(
            "  restart {}: killed after {} up, restarted after {} down; recovered in {} \
             (links {}, publishers {}, subscribers {}, callers {})\n",
            i + 1,
            secs(r.uptime),
            secs(r.downtime),
            secs(r.all),
            secs(r.links),
            secs(r.publishers),
            secs(r.subscribers),
            secs(r.callers)
        );
    }
    let mut max_ms = 0;
    for c in &w.callers {
        max_ms = max_ms.max(c.calls.max_ms);
        summary += &format!(
            "  {}: {} ok, {} err {:?}, longest call {} ms, {}\n",
            c.proc.name,
            c.calls.ok,
            c.calls.err,
            c.calls.err_kinds,
            c.calls.max_ms,
            c.done.as_deref().unwrap_or("")
        );
    }
    for s in &w.subs {
        summary += &format!(
            "  {}: {} time reports, {} cached startup reports\n",
            s.proc.name, s.reports, s.startup_reports
        );
    }
    summary += &format!("  longest call of all: {max_ms} ms (HUNG after {HUNG_AFTER:?})\n");
    summary
}
