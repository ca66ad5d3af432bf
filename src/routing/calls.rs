//! The pending calls, with how many each exchange connection holds: what
//! [`ServerBuilder::max_pending_calls_per_connection`](crate::ServerBuilder::max_pending_calls_per_connection)
//! is checked against, kept exact in O(1) per change.

use std::collections::hash_map::Keys;
use std::collections::{HashMap, HashSet};

use super::{Caller, PeerId, Pending};
use crate::ids::{AgentKey, ConversationId};

/// A map of pending calls by conversation, indexed by the connection a
/// remote caller is on and by the agent handling each call, so that a
/// connection's loss or an agent's withdrawal costs what it concerns, not
/// every pending call. The same methods as the `HashMap` it wraps; the
/// target is changed only through [`set_target`](Self::set_target).
#[derive(Default)]
pub(super) struct Calls {
    map: HashMap<ConversationId, Pending>,
    by_conn: HashMap<PeerId, HashSet<ConversationId>>,
    by_target: HashMap<AgentKey, HashSet<ConversationId>>,
}

/// Adds or removes `conv` in the set under `key`, dropping empty sets.
fn index<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, HashSet<ConversationId>>,
    key: K,
    conv: ConversationId,
    up: bool,
) {
    if up {
        map.entry(key).or_default().insert(conv);
    } else if let Some(set) = map.get_mut(&key) {
        set.remove(&conv);
        if set.is_empty() {
            map.remove(&key);
        }
    }
}

impl Calls {
    fn indexed(&mut self, conv: ConversationId, p: &Pending, up: bool) {
        if let Caller::Remote(token) = p.caller {
            index(&mut self.by_conn, token, conv, up);
        }
        if let Some(target) = p.target {
            index(&mut self.by_target, target, conv, up);
        }
    }

    pub(super) fn insert(&mut self, conv: ConversationId, p: Pending) -> Option<Pending> {
        let old = self.remove(&conv);
        self.indexed(conv, &p, true);
        self.map.insert(conv, p);
        old
    }

    pub(super) fn remove(&mut self, conv: &ConversationId) -> Option<Pending> {
        let p = self.map.remove(conv)?;
        self.indexed(*conv, &p, false);
        Some(p)
    }

    /// Records the agent now handling a call.
    pub(super) fn set_target(&mut self, conv: ConversationId, to: AgentKey) {
        let Some(p) = self.map.get_mut(&conv) else {
            return;
        };
        let old = p.target.replace(to);
        if let Some(old) = old {
            index(&mut self.by_target, old, conv, false);
        }
        index(&mut self.by_target, to, conv, true);
    }

    /// The calls that agent is handling.
    pub(super) fn targeting(&self, key: &AgentKey) -> Vec<ConversationId> {
        self.by_target
            .get(key)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The calls whose caller is on that connection.
    pub(super) fn callers_on(&self, token: PeerId) -> Vec<ConversationId> {
        self.by_conn
            .get(&token)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    pub(super) fn get(&self, conv: &ConversationId) -> Option<&Pending> {
        self.map.get(conv)
    }

    /// (Neither the caller nor the target of an entry is changed through
    /// this.)
    pub(super) fn get_mut(&mut self, conv: &ConversationId) -> Option<&mut Pending> {
        self.map.get_mut(conv)
    }

    pub(super) fn contains_key(&self, conv: &ConversationId) -> bool {
        self.map.contains_key(conv)
    }

    pub(super) fn keys(&self) -> Keys<'_, ConversationId, Pending> {
        self.map.keys()
    }

    /// Takes every pending call out.
    pub(super) fn drain(
        &mut self,
    ) -> std::collections::hash_map::Drain<'_, ConversationId, Pending> {
        self.by_conn.clear();
        self.by_target.clear();
        self.map.drain()
    }

    /// How many pending calls came through that connection.
    pub(super) fn of_conn(&self, token: PeerId) -> usize {
        self.by_conn.get(&token).map_or(0, HashSet::len)
    }
}
