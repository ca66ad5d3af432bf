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
    /// For a call that went straight to a service of this dispatcher, or
    /// that this thread wrote onto a link (see `direct.rs`).
    direct: Option<DirectWait>,
    /// Set once the result was handed over (or the call was cancelled).
    done: Cell<bool>,
    _type: PhantomData<fn() -> T>,
}

/// How long the caller of a service of its own dispatcher polls for the
/// answer before it sleeps: longer than a local handler's usual answer. On
/// a VM whose idle cores halt (this project's bench machine), a caller that
/// slept is woken tens of microseconds late: W1-local had a p50 of 72-78 us
/// with four yields before the sleep, 2.5 us with this (alternating runs,
/// 20,000 calls).
const LOCAL_SPIN: Duration = Duration::from_micros(50);

/// A call the dispatcher does not hold (see `direct.rs`): who holds it,
/// and its deadline, which the caller keeps itself.
pub(crate) struct DirectWait {
    calls: Arc<DirectCalls>,
    deadline: Instant,
    /// A call to a service of this dispatcher, which answers within
    /// microseconds: its caller always polls for [`LOCAL_SPIN`] before it
    /// sleeps (a remote caller, only as `spin::CallSpin` allows).
    local: bool,
}

impl DirectWait {
    /// A call to a service of this dispatcher.
    pub(crate) fn local(calls: Arc<DirectCalls>, deadline: Instant) -> Self {
        DirectWait {
            calls,
            deadline,
            local: true,
        }
    }

    /// A call written onto a link by its caller.
    pub(crate) fn remote(calls: Arc<DirectCalls>, deadline: Instant) -> Self {
        DirectWait {
            calls,
            deadline,
            local: false,
        }
    }
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
        direct: Option<DirectWait>,
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
            None => {
                self.poll(None);
                self.rx.recv_deadline(None).unwrap_or(Err(Error::Closed))
            }
            Some(direct) => self.recv_until(direct),
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
        if let Some(direct) = &self.direct {
            if crate::config::deadline(Instant::now(), timeout) >= direct.deadline {
                return self.finish(self.recv_until(direct));
            }
        }
        let until = crate::config::deadline(Instant::now(), timeout);
        self.poll(Some(until));
        match self.rx.recv_deadline(Some(until)) {
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
                Some(direct) if Instant::now() >= direct.deadline => {
                    Some(self.finish(self.recv_until(direct)))
                }
                _ => None,
            },
            Err(Empty::Disconnected) => Some(self.finish(Err(Error::Closed))),
        }
    }

    /// Polls for the outcome before the caller sleeps, not past `until`:
    /// for [`LOCAL_SPIN`] on a call to a service of this dispatcher; as the
    /// dispatcher's `CallSpin` allows on a remote one (see `spin.rs`).
    fn poll(&self, until: Option<Instant>) {
        if self.direct.as_ref().is_some_and(|d| d.local) {
            self.rx.poll_for(LOCAL_SPIN, until);
        } else {
            self.link
                .call_spin
                .spin(|window| self.rx.poll_for(window, until));
        }
    }

    /// A direct call's outcome, or [`Error::Timeout`] at its deadline. The
    /// caller withdraws from the call at the deadline unless an answer was
    /// taken for it meanwhile (then it is on its way), or the call was
    /// forwarded (then the dispatcher holds it, with the same deadline).
    fn recv_until(&self, direct: &DirectWait) -> Result<Payload> {
        self.poll(Some(direct.deadline));
        match self.rx.recv_deadline(Some(direct.deadline)) {
            Ok(result) => result,
            Err(Empty::Disconnected) => Err(Error::Closed),
            Err(Empty::Timeout) => match direct.calls.take(&self.conv) {
                Some(_) => {
                    Counters::bump(&self.link.counters.calls_timed_out);
                    Err(Error::Timeout)
                }
                None => self.rx.recv_deadline(None).unwrap_or(Err(Error::Closed)),
            },
        }
    }
}

impl<T> Drop for PendingReply<T> {
    fn drop(&mut self) {
        if !self.done.get() && self.rx.is_empty() {
            match &self.direct {
                // Still with the callee: its answer will find nobody.
                Some(direct) if direct.calls.take(&self.conv).is_some() => {}
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
