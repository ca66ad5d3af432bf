//! What a service receives: [`Event`] and the values it carries.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::dispatcher::command::Command;
use crate::dispatcher::Link;
use crate::error::{codes, Result, ServiceFailure};
use crate::ids::{ConversationId, ServiceBinding};
use crate::wire::{self, Payload};

/// One thing that happened to a service, delivered in order on its queue.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// Another service called this one. Answer it with [`Request::reply`] or
    /// [`Request::fail`]; dropping it unanswered fails the call (code 58).
    Request(Request),
    /// A report from a publisher this service subscribed to.
    Report(Report),
    /// A monitored service name or group changed.
    Announcement(ServiceAnnouncement),
    /// Another service subscribed to (or unsubscribed from) this one's reports.
    Subscription(SubscriptionAnnouncement),
    /// A publisher this service holds a subscription against came or went.
    Publisher(PublisherAnnouncement),
    /// A timer started with [`Service::start_timer`](crate::Service::start_timer) expired.
    Timer(u64),
    /// The dispatcher is shutting down (see
    /// [`Dispatcher::shutdown_after`](crate::Dispatcher::shutdown_after)).
    Shutdown,
}

/// Whether a service is present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceStatus {
    /// The service (or group membership) is present.
    Available,
    /// The service (or group membership) is gone.
    Withdrawn,
}

/// Whether a subscription is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscriptionStatus {
    /// The subscriber asked for reports.
    Requested,
    /// The subscription ended (unsubscribed, or the subscriber vanished).
    Withdrawn,
}

/// How long a published report is kept for subscribers that come later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Not cached; also removes a cached report of the same subject.
    None,
    /// Cached until expired with `expire_reports` or `purge_reports`.
    Forever,
    /// Cached for the given time.
    For(Duration),
}

/// A request for a service: a method name, encoded arguments, and the way
/// back to the caller.
///
/// A `Request` may be moved to another thread and answered later. Dropping it
/// unanswered fails the call with code 58 (response aborted), or 57 if it is
/// dropped by a panicking handler, so no caller ever waits for an answer that
/// cannot come.
pub struct Request {
    pub(crate) conv: ConversationId,
    pub(crate) method: String,
    pub(crate) sender: ServiceBinding,
    pub(crate) receiver: ServiceBinding,
    pub(crate) payload: Payload,
    pub(crate) link: Arc<Link>,
    pub(crate) answered: bool,
    /// A cast: nobody waits for an answer.
    pub(crate) oneway: bool,
    /// For a caller in this process: its reply channel, so that the answer
    /// goes straight to it, not through the dispatcher thread.
    pub(crate) direct: Option<crossbeam_channel::Sender<Result<Payload>>>,
}

/// A request dropped by a panicking handler: where to send its failure, and
/// the name of the service that held it.
type Stashed = (ConversationId, Arc<Link>, String);

thread_local! {
    /// Requests dropped while a spawned handler panics, answered by the
    /// worker once it knows the panic message. `None` outside a handler.
    static PANIC_STASH: RefCell<Option<Vec<Stashed>>> = const { RefCell::new(None) };
}

/// Runs `f` as a handler: requests dropped by a panic inside it are collected
/// rather than failed at once, and failed afterwards with the panic message.
pub(crate) fn run_handler<F: FnOnce()>(f: F) -> std::thread::Result<()> {
    PANIC_STASH.with(|s| *s.borrow_mut() = Some(Vec::new()));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let stashed = PANIC_STASH
        .with(|s| s.borrow_mut().take())
        .unwrap_or_default();
    if let Err(panic) = &result {
        let message = panic_message(panic.as_ref());
        for (conv, link, origin) in stashed {
            let failure = ServiceFailure::new(codes::APPLICATION_ERROR, "application error")
                .with_origin(origin)
                .with_details(format!("handler panicked: {message}"));
            link.send_quiet(Command::Reply {
                conv,
                result: Err(failure),
            });
        }
    }
    result
}

/// The text of a panic payload.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_owned()
    }
}

impl Request {
    /// The method asked for.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The service that sent the request.
    pub fn sender(&self) -> &ServiceBinding {
        &self.sender
    }

    /// The service the request was delivered to.
    pub fn receiver(&self) -> &ServiceBinding {
        &self.receiver
    }

    /// Whether the sender waits for an answer: false for a cast, whose
    /// answers (and failures) go nowhere.
    pub fn expects_reply(&self) -> bool {
        !self.oneway
    }

    /// The conversation this request belongs to; its reply carries the same id.
    pub fn conversation_id(&self) -> &ConversationId {
        &self.conv
    }

    /// Decodes the arguments.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        wire::decode(self.payload.as_bytes())
    }

    /// Answers the request with a value.
    ///
    /// If the value cannot be encoded the caller is failed with code 57 and
    /// the encoding error is returned. Returns [`Error::Closed`](crate::Error::Closed)
    /// if the dispatcher is gone.
    pub fn reply<T: Serialize + ?Sized>(self, value: &T) -> Result<()> {
        match wire::encode(value) {
            Ok(payload) => self.respond(Ok(payload)),
            Err(e) => {
                let failure = self
                    .failure(codes::APPLICATION_ERROR, "reply could not be encoded")
                    .with_details(e.to_string());
                let _ = self.respond(Err(failure));
                Err(e)
            }
        }
    }

    /// Sends the outcome, once: nowhere for a cast; a value straight to a
    /// caller in this process (first answer wins on its one-slot channel,
    /// then the dispatcher only forgets the call, or counts a late reply);
    /// anything else through the dispatcher.
    pub(crate) fn respond(
        mut self,
        result: std::result::Result<Payload, ServiceFailure>,
    ) -> Result<()> {
        self.answered = true;
        if self.oneway {
            return Ok(());
        }
        let conv = self.conv;
        match (result, self.direct.take()) {
            (Ok(payload), Some(tx)) => {
                let _ = tx.try_send(Ok(payload));
                self.link.send(Command::Done { conv })
            }
            (Err(mut failure), _) => {
                if failure.origin.is_empty() {
                    failure.origin = self.receiver.service_name().to_owned();
                }
                self.link.send(Command::Reply {
                    conv,
                    result: Err(failure),
                })
            }
            (ok, None) => self.link.send(Command::Reply { conv, result: ok }),
        }
    }

    /// Fails the request with a code (see [`codes`](crate::codes)) and description.
    pub fn fail(self, code: i32, description: impl Into<String>) -> Result<()> {
        let failure = self.failure(code, description);
        self.fail_with(failure)
    }

    /// Fails the request with a complete [`ServiceFailure`]. An empty origin
    /// is filled with this service's name.
    pub fn fail_with(self, failure: ServiceFailure) -> Result<()> {
        self.respond(Err(failure))
    }

    /// Passes the request on to another service (OSE's bounceRequest), keeping
    /// the original sender, reply path and conversation id. `method` renames
    /// the method; `None` keeps it.
    pub fn forward(mut self, to: &ServiceBinding, method: Option<&str>) -> Result<()> {
        self.answered = true;
        let method = match method {
            Some(m) => m.to_owned(),
            None => std::mem::take(&mut self.method),
        };
        self.link.send(Command::Forward {
            conv: self.conv,
            to: to.clone(),
            method,
            payload: self.payload.clone(),
            sender: self.sender.clone(),
        })
    }

    fn failure(&self, code: i32, description: impl Into<String>) -> ServiceFailure {
        ServiceFailure::new(code, description).with_origin(self.receiver.service_name())
    }

    /// Marks the request answered without sending anything: the dispatcher
    /// answers it itself (for instance with "busy").
    pub(crate) fn disarm(&mut self) {
        self.answered = true;
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if self.answered || self.oneway {
            return;
        }
        if std::thread::panicking() {
            let origin = self.receiver.service_name().to_owned();
            let stashed = PANIC_STASH.with(|s| match s.borrow_mut().as_mut() {
                Some(v) => {
                    v.push((self.conv, self.link.clone(), origin.clone()));
                    true
                }
                None => false,
            });
            if !stashed {
                let failure = ServiceFailure::new(codes::APPLICATION_ERROR, "application error")
                    .with_origin(origin)
                    .with_details("dropped by a panicking thread");
                self.link.send_quiet(Command::Reply {
                    conv: self.conv,
                    result: Err(failure),
                });
            }
            return;
        }
        let failure = self.failure(codes::RESPONSE_ABORTED, "response aborted");
        self.link.send_quiet(Command::Reply {
            conv: self.conv,
            result: Err(failure.with_details("request dropped without an answer")),
        });
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("conversation", &self.conv)
            .field("method", &self.method)
            .field("sender", &self.sender)
            .field("bytes", &self.payload.as_bytes().len())
            .finish()
    }
}

/// A report: a subject and its encoded content, from one publisher.
#[derive(Clone)]
pub struct Report {
    pub(crate) publisher: ServiceBinding,
    pub(crate) subject: Arc<str>,
    pub(crate) payload: Payload,
}

impl Report {
    /// The service that published the report.
    pub fn publisher(&self) -> &ServiceBinding {
        &self.publisher
    }

    /// The report's subject.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Decodes the content.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        wire::decode(self.payload.as_bytes())
    }
}

impl fmt::Debug for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Report")
            .field("publisher", &self.publisher)
            .field("subject", &self.subject)
            .field("bytes", &self.payload.as_bytes().len())
            .finish()
    }
}

/// A service, or a group membership, became available or was withdrawn.
#[derive(Debug, Clone)]
pub struct ServiceAnnouncement {
    pub(crate) binding: ServiceBinding,
    pub(crate) group: Option<String>,
    pub(crate) status: ServiceStatus,
}

impl ServiceAnnouncement {
    /// The service concerned.
    pub fn binding(&self) -> &ServiceBinding {
        &self.binding
    }

    /// The group, for announcements to group monitors; `None` for the
    /// service itself.
    pub fn group(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// Available or Withdrawn.
    pub fn status(&self) -> ServiceStatus {
        self.status
    }
}

/// A subscriber asked for, or stopped asking for, this service's reports.
#[derive(Debug, Clone)]
pub struct SubscriptionAnnouncement {
    pub(crate) subscriber: ServiceBinding,
    pub(crate) subject: String,
    pub(crate) status: SubscriptionStatus,
}

impl SubscriptionAnnouncement {
    /// The subscribing service.
    pub fn subscriber(&self) -> &ServiceBinding {
        &self.subscriber
    }

    /// The subject pattern subscribed to.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Requested or Withdrawn.
    pub fn status(&self) -> SubscriptionStatus {
        self.status
    }
}

/// A publisher this service holds a subscription against became available
/// or was withdrawn.
#[derive(Debug, Clone)]
pub struct PublisherAnnouncement {
    pub(crate) publisher: ServiceBinding,
    pub(crate) status: ServiceStatus,
}

impl PublisherAnnouncement {
    /// The publishing service.
    pub fn publisher(&self) -> &ServiceBinding {
        &self.publisher
    }

    /// Available or Withdrawn.
    pub fn status(&self) -> ServiceStatus {
        self.status
    }
}
