//! Where a publisher's reports of one subject go, remembered.
//!
//! Working that out takes a pattern match against every subscription to the
//! publisher and a routing-table lookup per subscriber, with SipHash on
//! keys a peer chooses: it was the bulk of the dispatcher's time per report
//! in profiles of a report stream. Reports come in runs of the same
//! publisher and subject, so the answer is kept for the last few, and
//! thrown away as soon as the routing table, the subscriptions or the
//! subscribers known through the exchange change.

use std::sync::Arc;

use super::registry::Route;
use super::{Core, PeerId};
use crate::ids::{AgentId, AgentKey, ServiceBinding};

/// How many publisher-and-subject answers are kept.
const ENTRIES: usize = 8;

/// Where the reports of one publisher and subject go.
pub(super) struct Fanout {
    publisher: AgentKey,
    /// The subject, shared by every report of it that is delivered here.
    pub subject: Arc<str>,
    /// The publisher's binding, as the routing table has it.
    pub binding: ServiceBinding,
    /// Local subscribers, each once.
    pub locals: Vec<AgentId>,
    /// Connections leading to remote subscribers, each once.
    pub remotes: Vec<PeerId>,
    /// The connection the publisher was learned through (`None` for a
    /// local one): the only one its reports may come from.
    pub from: Option<PeerId>,
}

/// The remembered answers, valid for one state of the routing table, the
/// subscriptions and the exchange's subscribers.
#[derive(Default)]
pub(super) struct FanoutCache {
    stamp: (u64, u64, u64),
    entries: Vec<Fanout>,
    /// The entry to replace next once all are in use.
    victim: usize,
}

impl Core {
    /// The state everything a fan-out depends on is in.
    fn fanout_stamp(&self) -> (u64, u64, u64) {
        (
            self.registry.generation(),
            self.reports.generation(),
            self.peers.hidden_generation,
        )
    }

    /// Runs `f` with where the reports of `publisher` with that subject go
    /// (matching subscriptions, routed), worked out only if not remembered;
    /// `None` if the publisher is not in the routing table. `binding` is the
    /// publisher's binding when the caller has it.
    pub(super) fn with_fanout<R>(
        &mut self,
        publisher: AgentKey,
        binding: Option<&ServiceBinding>,
        subject: &str,
        f: impl FnOnce(&mut Self, &Fanout) -> R,
    ) -> Option<R> {
        let stamp = self.fanout_stamp();
        if self.fanouts.stamp != stamp {
            self.fanouts.stamp = stamp;
            self.fanouts.entries.clear();
            self.fanouts.victim = 0;
        }
        let found = self
            .fanouts
            .entries
            .iter()
            .position(|f| f.publisher == publisher && *f.subject == *subject);
        let i = match found {
            Some(i) => i,
            None => {
                let entry = self.fanout_entry(publisher, binding, subject)?;
                let cache = &mut self.fanouts;
                if cache.entries.len() < ENTRIES {
                    cache.entries.push(entry);
                    cache.entries.len() - 1
                } else {
                    let i = cache.victim;
                    cache.victim = (i + 1) % ENTRIES;
                    cache.entries[i] = entry;
                    i
                }
            }
        };
        // Lent out while `f` delivers (a fan-out asked for meanwhile is
        // worked out afresh, and not kept).
        let entries = std::mem::take(&mut self.fanouts.entries);
        let r = f(self, &entries[i]);
        if self.fanouts.stamp == stamp {
            self.fanouts.entries = entries;
        }
        Some(r)
    }

    fn fanout_entry(
        &mut self,
        publisher: AgentKey,
        binding: Option<&ServiceBinding>,
        subject: &str,
    ) -> Option<Fanout> {
        let entry = self.registry.get(&publisher);
        let from = match entry.map(|e| e.route) {
            Some(Route::Remote(t)) => Some(t),
            _ => None,
        };
        let binding = match binding {
            Some(b) => b.clone(),
            None => entry?.binding.clone(),
        };
        let mut subscribers = std::mem::take(&mut self.scratch);
        subscribers.clear();
        self.reports
            .matching(publisher, binding.service_name(), subject, &mut subscribers);
        let mut locals = Vec::new();
        let mut remotes = Vec::new();
        for s in &subscribers {
            match self.route_of(s) {
                Some(Route::Local(agent)) if !locals.contains(&agent) => locals.push(agent),
                Some(Route::Remote(token)) if !remotes.contains(&token) => remotes.push(token),
                _ => {}
            }
        }
        self.scratch = subscribers;
        Some(Fanout {
            publisher,
            subject: subject.into(),
            binding,
            locals,
            remotes,
            from,
        })
    }
}
