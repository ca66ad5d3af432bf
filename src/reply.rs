//! [`PendingReply`]: the caller's side of a request in flight.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use serde::de::DeserializeOwned;

use crate::dispatcher::command::Command;
use crate::dispatcher::Link;
use crate::error::{Error, Result};
use crate::ids::ConversationId;
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
    ) -> Self {
        PendingReply {
            link,
            conv,
            rx,
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
        let result = self.rx.recv().unwrap_or(Err(Error::Closed));
        self.finish(result)
    }

    /// Waits at most `timeout`. [`Error::Timeout`] if nothing came by then;
    /// the call itself goes on until its own deadline and may be waited for
    /// again. [`Error::Closed`] if the outcome was already handed over.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<T> {
        if self.done.get() {
            return Err(Error::Closed);
        }
        match self.rx.recv_timeout(timeout) {
            Ok(result) => self.finish(result),
            Err(RecvTimeoutError::Timeout) => Err(Error::Timeout),
            Err(RecvTimeoutError::Disconnected) => self.finish(Err(Error::Closed)),
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
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(self.finish(Err(Error::Closed))),
        }
    }
}

impl<T> Drop for PendingReply<T> {
    fn drop(&mut self) {
        if !self.done.get() && self.rx.is_empty() {
            self.link.send_quiet(Command::Cancel { conv: self.conv });
        }
    }
}

#[allow(dead_code)]
fn _ensure_send() {
    fn send<T: Send>() {}
    send::<PendingReply<u64>>();
}
