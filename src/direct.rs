//! Calls between services of one dispatcher, straight from the caller's
//! thread onto the callee's queue and back, without the dispatcher thread.
//!
//! The dispatcher still owns routing: it holds the only strong reference to
//! a service's `Inbox` (its queue, in `mailbox/inbox.rs`, made when the
//! service opens). The service's bindings carry a weak one. A caller that
//! holds a binding of a live local service puts the request on its queue
//! itself, and the handler answers the caller itself: two threads instead
//! of three, which on two cores is the difference between a spin and a
//! sleep per hop.
//!
//! What the dispatcher would otherwise do for such a call is done here:
//! the queue's capacity (busy, code 50), the deadline (the caller's own
//! wait), and the prompt failure of calls whose callee is withdrawn
//! ([`DirectCalls::close`], run by the dispatcher as it withdraws the
//! service). Everything else (names, groups, casts, monitored calls,
//! remote agents) goes through the dispatcher as before.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::ids::ConversationId;
use crate::stats::Counters;
use crate::wire::Payload;

/// The callers waiting for answers from one service, by conversation.
#[derive(Default)]
pub(crate) struct DirectCalls {
    state: Mutex<CallsState>,
}

#[derive(Default)]
struct CallsState {
    /// Set when the service is withdrawn: no more calls are admitted.
    closed: bool,
    waiting: HashMap<ConversationId, Waiting>,
}

/// A caller waiting for an answer.
pub(crate) struct Waiting {
    pub reply: crate::oneshot::Sender<Result<Payload>>,
    pub deadline: Instant,
}

impl DirectCalls {
    fn state(&self) -> MutexGuard<'_, CallsState> {
        // Only plain inserts and removes happen under the lock; a panic
        // cannot leave it half-changed.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a caller; gives it back if the service was withdrawn.
    pub fn admit(
        &self,
        conv: ConversationId,
        waiting: Waiting,
    ) -> std::result::Result<(), Waiting> {
        let mut s = self.state();
        if s.closed {
            return Err(waiting);
        }
        s.waiting.insert(conv, waiting);
        Ok(())
    }

    /// Takes the caller of a conversation, if it still waits.
    pub fn take(&self, conv: &ConversationId) -> Option<Waiting> {
        self.state().waiting.remove(conv)
    }

    /// Hands an outcome to the caller, counted as delivered; false if it
    /// no longer waits (it timed out, gave up, or was failed when the
    /// service was withdrawn).
    pub fn answer(
        &self,
        conv: &ConversationId,
        result: Result<Payload>,
        counters: &Counters,
    ) -> bool {
        match self.take(conv) {
            Some(w) => counters.hand_over(&w.reply, result),
            None => false,
        }
    }

    /// The service is withdrawn: no more calls are admitted, and with
    /// `fail` the callers still waiting get the error made by `why` (with
    /// a drain they keep waiting for the answers the service still gives).
    pub fn close(&self, fail: Option<&dyn Fn() -> Error>, counters: &Counters) {
        let waiting: Vec<Waiting> = {
            let mut s = self.state();
            s.closed = true;
            match fail {
                Some(_) => s.waiting.drain().map(|(_, w)| w).collect(),
                None => Vec::new(),
            }
        };
        if let Some(why) = fail {
            for w in &waiting {
                counters.hand_over(&w.reply, Err(why()));
            }
        }
    }
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting")
            .field("deadline", &self.deadline)
            .finish()
    }
}
