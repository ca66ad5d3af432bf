//! The pending calls, with how many each exchange connection holds: what
//! [`ServerBuilder::max_pending_calls_per_connection`](crate::ServerBuilder::max_pending_calls_per_connection)
//! is checked against, kept exact in O(1) per change.

use std::collections::hash_map::{Iter, Keys};
use std::collections::HashMap;

use super::{Caller, Pending};
use crate::ids::ConversationId;

/// A map of pending calls by conversation, counting those whose caller is
/// remote, per connection. The same methods as the `HashMap` it wraps.
#[derive(Default)]
pub(super) struct Calls {
    map: HashMap<ConversationId, Pending>,
    by_conn: HashMap<usize, usize>,
}

impl Calls {
    fn counted(&mut self, p: &Pending, up: bool) {
        if let Caller::Remote(token) = p.caller {
            if up {
                *self.by_conn.entry(token).or_default() += 1;
            } else if let Some(n) = self.by_conn.get_mut(&token) {
                *n -= 1;
                if *n == 0 {
                    self.by_conn.remove(&token);
                }
            }
        }
    }

    pub(super) fn insert(&mut self, conv: ConversationId, p: Pending) -> Option<Pending> {
        self.counted(&p, true);
        let old = self.map.insert(conv, p);
        if let Some(o) = &old {
            self.counted(o, false);
        }
        old
    }

    pub(super) fn remove(&mut self, conv: &ConversationId) -> Option<Pending> {
        let p = self.map.remove(conv)?;
        self.counted(&p, false);
        Some(p)
    }

    pub(super) fn get(&self, conv: &ConversationId) -> Option<&Pending> {
        self.map.get(conv)
    }

    /// (The caller of an entry is never changed through this.)
    pub(super) fn get_mut(&mut self, conv: &ConversationId) -> Option<&mut Pending> {
        self.map.get_mut(conv)
    }

    pub(super) fn contains_key(&self, conv: &ConversationId) -> bool {
        self.map.contains_key(conv)
    }

    pub(super) fn keys(&self) -> Keys<'_, ConversationId, Pending> {
        self.map.keys()
    }

    pub(super) fn iter(&self) -> Iter<'_, ConversationId, Pending> {
        self.map.iter()
    }

    /// How many pending calls came through that connection.
    pub(super) fn of_conn(&self, token: usize) -> usize {
        self.by_conn.get(&token).copied().unwrap_or(0)
    }
}
