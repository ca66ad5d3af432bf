//! [`PendingReply`]: the caller's side of a request in flight.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::direct::DirectCalls;
use crate::error::{Error, Result};
use crate::ids::ConversationId;
use crate::mailbox::command::Command;
use crate::mailbox::Link;
use crate::oneshot::{Empty, Receiver};
use crate::stats::Counters;
use crate::wire::{self, Payload};

/// A reply that will come: from [`Service::request`](crate::Service::request).
///
/// The call always ends: with the reply, a failure, [`Error::Timeout`] at its
/// deadline, [`Error::ServiceUnavailable`] if the destination goes away, or
/// [`Error::Closed`] if the dispatcher shuts down. Dropping it cancels the
/// call; a reply arriving later is dropped.
pub struct PendingReply<T> {
    link: Arc<Link>,
    conv: ConversationId,
    rx: Receiver<Result<Payload>>,
    /// For a call that went straight to a service of this dispatcher (see
    /// `direct.rs`): who holds the call, and its deadline, which the caller
    /// keeps itself.
    direct: Option<(Arc<DirectCalls>, Instant)>,
    /// Set once the result was handed over (or the call was cancelled).
    done: Cell<bool>,
    _type: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for PendingReply<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingReply")
            .field("conversation", &self.conv)
            .field("done", &self.done.get())
            .finish()
    }
}

impl<T: DeserializeOwned> PendingReply<T> {
    pub(crate) fn new(
        link: Arc<Link>,
        conv: ConversationId,
        rx: Receiver<Result<Payload>>,
        direct: Option<(Arc<DirectCalls>, Instant)>,
    ) -> Self {
        PendingReply {
            link,
            conv,
            rx,
            direct,
            done: Cell::new(false),
            _type: PhantomData,
        }
    }

    /// The conversation id of the request.
    pub fn conversation_id(&self) -> &ConversationId {
        &self.conv
    }

    fn finish(&self, result: Result<Payload>) -> Result<T> {
        self.done.set(true);
        result.and_then(|p| wire::decode(p.as_bytes()))
    }

    /// Waits for the outcome of the call.
    pub fn wait(self) -> Result<T> {
        let result = match &self.direct {
            None => self
                .rx
                .recv_deadline(None, false)
                .unwrap_or(Err(Error::Closed)),
            Some((calls, deadline)) => self.recv_until(calls, *deadline),
        };
        self.finish(result)
    }

    /// Waits at most `timeout` (a century or more, up to `Duration::MAX`:
    /// no limit). [`Error::Timeout`] if nothing came by then;
    /// the call itself goes on until its own deadline and may be waited for
    /// again. [`Error::Closed`] if the outcome was already handed over.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<T> {
        if self.done.get() {
            return Err(Error::Closed);
        }
        if let Some((calls, deadline)) = &self.direct {
            if crate::config::deadline(Instant::now(), timeout) >= *deadline {
                return self.finish(self.recv_until(calls, *deadline));
            }
        }
        let spin = self.direct.is_some();
        let until = crate::config::deadline(Instant::now(), timeout);
        match self.rx.recv_deadline(Some(until), spin) {
            Ok(result) => self.finish(result),
            Err(Empty::Timeout) => Err(Error::Timeout),
            Err(Empty::Disconnected) => self.finish(Err(Error::Closed)),
        }
    }

    /// The outcome if it has come: `Some` exactly once, `None` before (and
    /// after it was handed over).
    pub fn try_get(&self) -> Option<Result<T>> {
        if self.done.get() {
            return None;
        }
        match self.rx.try_recv() {
            Ok(result) => Some(self.finish(result)),
            Err(Empty::Timeout) => match &self.direct {
                Some((calls, deadline)) if Instant::now() >= *deadline => {
                    Some(self.finish(self.recv_until(calls, *deadline)))
                }
                _ => None,
            },
            Err(Empty::Disconnected) => Some(self.finish(Err(Error::Closed))),
        }
    }

    /// A direct call's outcome, or [`Error::Timeout`] at its deadline. The
    /// caller withdraws from the call at the deadline unless an answer was
    /// taken for it meanwhile (then it is on its way), or the call was
    /// forwarded (then the dispatcher holds it, with the same deadline).
    fn recv_until(&self, calls: &DirectCalls, deadline: Instant) -> Result<Payload> {
        match self.rx.recv_deadline(Some(deadline), true) {
            Ok(result) => result,
            Err(Empty::Disconnected) => Err(Error::Closed),
            Err(Empty::Timeout) => match calls.take(&self.conv) {
                Some(_) => {
                    Counters::bump(&self.link.counters.calls_timed_out);
                    Err(Error::Timeout)
                }
                None => self
                    .rx
                    .recv_deadline(None, false)
                    .unwrap_or(Err(Error::Closed)),
            },
        }
    }
}

impl<T> Drop for PendingReply<T> {
    fn drop(&mut self) {
        if !self.done.get() && self.rx.is_empty() {
            match &self.direct {
                // Still with the callee: its answer will find nobody.
                Some((calls, _)) if calls.take(&self.conv).is_some() => {}
                // Otherwise the dispatcher holds the call (or held it).
                _ => self.link.send_quiet(Command::Cancel { conv: self.conv }),
            }
        }
    }
}

#[allow(dead_code)]
fn _ensure_send() {
    fn send<T: Send>() {}
    send::<PendingReply<u64>>();
}
