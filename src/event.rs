//! What a service receives: [`Event`] and the values it carries, and how a
//! [`Request`] answers its caller (the `Responder` its dispatcher gives it).

use std::cell::RefCell;
use std::fmt;
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::direct::{DirectCalls, Outlet, Waiting, Written};
use crate::error::{codes, Error, Result, ServiceFailure};
use crate::ids::{ConversationId, ServiceBinding};
use crate::stats::Counters;
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
    /// Reports meant for this service were dropped, and how many: by the
    /// drop policy of its subscriptions ([`Overflow`]), or because it took
    /// nothing from its full queue for the
    /// [`stall_limit`](crate::DispatcherBuilder::stall_limit). Told before
    /// the next report that reaches it; counts of drops in a row are added
    /// up into one event.
    Dropped(Dropped),
    /// A subscription of this service reached the process of a publisher
    /// it is against and is in force there (across every exchange on the
    /// way): reports published from now on reach this service. One per
    /// publisher and pattern, each time the subscription takes effect
    /// there (again after a reconnection).
    Confirmed(Confirmed),
}

/// A subscription in force at its publisher ([`Event::Confirmed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmed {
    pub(crate) publisher: ServiceBinding,
    pub(crate) pattern: String,
}

impl Confirmed {
    /// The publisher whose process confirmed it.
    pub fn publisher(&self) -> &ServiceBinding {
        &self.publisher
    }

    /// The subscription's pattern.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }
}

/// What a subscription does with its reports while its subscriber's queue
/// is full (see [`Service::subscribe_reports_with`](crate::Service::subscribe_reports_with)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Overflow {
    /// Nothing is dropped (the default): the reports wait for room, and
    /// their publisher waits with them; see
    /// [`DispatcherBuilder::stall_limit`](crate::DispatcherBuilder::stall_limit)
    /// for a subscriber that takes nothing at all.
    #[default]
    Wait,
    /// Up to this many reports wait beyond the full queue; a report that
    /// finds them all waiting is dropped. Publishers never wait for this
    /// subscription.
    DropNewest(usize),
    /// Up to this many reports wait beyond the full queue; a new report
    /// that finds them all waiting takes the place of the oldest, which is
    /// dropped. Publishers never wait for this subscription.
    DropOldest(usize),
}

/// Why reports were dropped (see [`Event::Dropped`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// The subscription's [`Overflow`] policy dropped them.
    Policy,
    /// The subscriber took nothing from its full queue for the stall limit.
    Stalled,
}

/// Reports dropped before they reached a service ([`Event::Dropped`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub(crate) count: u64,
    pub(crate) reason: DropReason,
}

impl Dropped {
    /// How many reports were dropped.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Why.
    pub fn reason(&self) -> DropReason {
        self.reason
    }
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
    /// Cached for the given time; a century or more (up to `Duration::MAX`)
    /// is the same as [`Forever`](Lifetime::Forever).
    For(Duration),
}

/// A request for a service: a method name, encoded arguments, and the way
/// back to the caller.
///
/// A `Request` may be moved to another thread and answered later. Dropping it
/// unanswered fails the call with code 58 (response aborted), or 57 if it is
/// dropped by a panicking handler, so no caller ever waits for an answer that
/// cannot come.
pub struct Request(pub(crate) Box<Call>);

/// A request's parts (boxed, so that an [`Event`] stays small: a queue's
/// slots are the size of its largest variant, and most events are
/// reports).
pub(crate) struct Call {
    pub(crate) conv: ConversationId,
    pub(crate) method: String,
    pub(crate) sender: ServiceBinding,
    pub(crate) receiver: ServiceBinding,
    pub(crate) payload: Payload,
    pub(crate) link: Arc<dyn Responder>,
    pub(crate) answered: bool,
    /// A cast: nobody waits for an answer.
    pub(crate) oneway: bool,
    /// The way back to the caller.
    pub(crate) answer: Answer,
}

/// What a [`Request`] needs of the dispatcher it came from, to answer, fail
/// or forward it through that dispatcher.
///
/// The dispatcher's `Link` (in `mailbox.rs`) implements it, each method
/// sending the dispatcher one command; a request holds it as
/// `Arc<dyn Responder>`. It exists so that the event types, which the
/// mailbox's commands carry, do not import the mailbox above them. (The
/// unwind-safety bounds keep `Request` `UnwindSafe` and `RefUnwindSafe`,
/// as it was when it held the `Link` itself.)
pub(crate) trait Responder: Send + Sync + UnwindSafe + RefUnwindSafe {
    /// The dispatcher's counters.
    fn counters(&self) -> &Counters;

    /// Whether the dispatcher thread has left its loop.
    fn has_exited(&self) -> bool;

    /// Hands the dispatcher the outcome of a call it holds.
    fn reply(
        &self,
        conv: ConversationId,
        result: std::result::Result<Payload, ServiceFailure>,
    ) -> Result<()>;

    /// Whether events wait in the queue of this service (of this
    /// dispatcher).
    fn has_queued(&self, service: &ServiceBinding) -> bool;

    /// Tells the dispatcher that a call it tracks was answered straight to
    /// its caller (and counted, if `delivered`): it forgets the call.
    fn done(&self, conv: ConversationId, delivered: bool) -> Result<()>;

    /// Passes a request on to `to` with the original sender; a `caller`
    /// that called directly is tracked by the dispatcher from then on.
    fn forward(
        &self,
        conv: ConversationId,
        to: ServiceBinding,
        method: String,
        payload: Payload,
        sender: ServiceBinding,
        caller: Option<Waiting>,
    ) -> Result<()>;
}

/// How the outcome of a request travels back to its caller.
pub(crate) enum Answer {
    /// Through the dispatcher, which holds the call (remote callers, and
    /// anything it must still track).
    Dispatcher,
    /// A caller in this process whose call the dispatcher tracks: a value
    /// goes straight to the caller, then the dispatcher forgets the call;
    /// a failure goes through the dispatcher.
    Tracked(crate::oneshot::Sender<Result<Payload>>),
    /// A caller in this process whose call never went through the
    /// dispatcher (see `direct.rs`): every outcome goes straight to it.
    Direct(Arc<DirectCalls>),
    /// A caller across a plain TCP link, whose call the dispatcher tracks:
    /// the outcome is written onto the link by the answering thread when
    /// it may be (see `direct.rs`), then the dispatcher forgets the call;
    /// otherwise it goes through the dispatcher.
    Outlet(Arc<Outlet>),
}

/// A request dropped by a panicking handler: its conversation, the way
/// back, the link, and the name of the service that held it.
type Stashed = (ConversationId, Answer, Arc<dyn Responder>, String);

/// Sends a failure back to a caller, whichever way it waits.
fn send_failure(
    conv: ConversationId,
    answer: Answer,
    link: &dyn Responder,
    failure: ServiceFailure,
) {
    match answer {
        Answer::Direct(calls) => {
            let _ = settle(link, &calls, conv, Err(Error::Service(failure)));
        }
        Answer::Dispatcher | Answer::Tracked(_) | Answer::Outlet(_) => {
            let _ = link.reply(conv, Err(failure));
        }
    }
}

/// Hands an outcome to a direct caller, counting it as the dispatcher would
/// and, like a reply through it, [`Error::Closed`] once it has stopped.
fn settle(
    link: &dyn Responder,
    calls: &DirectCalls,
    conv: ConversationId,
    result: Result<Payload>,
) -> Result<()> {
    if calls.answer(&conv, result, link.counters()) {
        return Ok(());
    }
    if link.has_exited() {
        return Err(Error::Closed);
    }
    Counters::bump(&link.counters().late_replies);
    Ok(())
}

/// Writes the outcome of a remote caller's call onto its link, and lets
/// the dispatcher forget the call; through the dispatcher if the link
/// cannot take it from this thread now.
fn answer_through(
    link: &dyn Responder,
    outlet: &Outlet,
    conv: ConversationId,
    result: std::result::Result<Payload, ServiceFailure>,
) -> Result<()> {
    let message = wire::Message::Reply {
        conv,
        result: result
            .clone()
            .map_err(|f| wire::Failure::from(Error::Service(f))),
    };
    let written = match wire::encode_frame(&message) {
        Ok(frame) => outlet.write(&frame),
        Err(_) => Written::NotNow, // (the dispatcher says why)
    };
    if written == Written::Taken {
        let counters = link.counters();
        Counters::bump(&counters.frames_out);
        Counters::bump(&counters.frames_written_by_callers);
        Counters::bump(&counters.replies_delivered);
        return link.done(conv, true);
    }
    link.reply(conv, result)
}

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
        for (conv, answer, link, origin) in stashed {
            let failure = ServiceFailure::new(codes::APPLICATION_ERROR, "application error")
                .with_origin(origin)
                .with_details(format!("handler panicked: {message}"));
            send_failure(conv, answer, &*link, failure);
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
        &self.0.method
    }

    /// The service that sent the request.
    pub fn sender(&self) -> &ServiceBinding {
        &self.0.sender
    }

    /// The service the request was delivered to.
    pub fn receiver(&self) -> &ServiceBinding {
        &self.0.receiver
    }

    /// Whether the sender waits for an answer: false for a cast, whose
    /// answers (and failures) go nowhere.
    pub fn expects_reply(&self) -> bool {
        !self.0.oneway
    }

    /// The conversation this request belongs to; its reply carries the same id.
    pub fn conversation_id(&self) -> &ConversationId {
        &self.0.conv
    }

    /// Decodes the arguments.
    ///
    /// Arguments of another shape than `T` (see the crate docs,
    /// "Payloads") are [`Error::Decode`](crate::Error::Decode), naming what
    /// was expected and found; [`Value`](crate::Value) reads any arguments.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        wire::decode(self.0.payload.as_bytes())
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
        self.0.answered = true;
        if self.0.oneway {
            return Ok(());
        }
        let conv = self.0.conv;
        let answer = std::mem::replace(&mut self.0.answer, Answer::Dispatcher);
        match (result, answer) {
            (result, Answer::Direct(calls)) => {
                let result = result.map_err(|f| Error::Service(self.with_origin(f)));
                settle(&*self.0.link, &calls, conv, result)
            }
            (Ok(payload), Answer::Tracked(tx)) => {
                let delivered = self.0.link.counters().hand_over(&tx, Ok(payload));
                self.0.link.done(conv, delivered)
            }
            (result, Answer::Outlet(outlet)) => {
                let result = result.map_err(|f| self.with_origin(f));
                // With more requests waiting for this service, its answers
                // go through the dispatcher, which writes them in one go.
                if self.0.link.has_queued(&self.0.receiver) {
                    self.0.link.reply(conv, result)
                } else {
                    answer_through(&*self.0.link, &outlet, conv, result)
                }
            }
            (Err(failure), _) => self.0.link.reply(conv, Err(self.with_origin(failure))),
            (ok, Answer::Dispatcher) => self.0.link.reply(conv, ok),
        }
    }

    /// The failure with this service as its origin, unless it has one.
    fn with_origin(&self, mut failure: ServiceFailure) -> ServiceFailure {
        if failure.origin.is_empty() {
            failure.origin = self.0.receiver.service_name().to_owned();
        }
        failure
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
        self.0.answered = true;
        let method = match method {
            Some(m) => m.to_owned(),
            None => std::mem::take(&mut self.0.method),
        };
        // A direct caller is handed to the dispatcher, which routes the
        // request on and tracks the call from here.
        let caller = match std::mem::replace(&mut self.0.answer, Answer::Dispatcher) {
            Answer::Direct(calls) => match calls.take(&self.0.conv) {
                Some(waiting) => Some(waiting),
                None => {
                    // Timed out or failed meanwhile: nobody to forward for.
                    Counters::bump(&self.0.link.counters().late_replies);
                    return Ok(());
                }
            },
            _ => None,
        };
        self.0.link.forward(
            self.0.conv,
            to.clone(),
            method,
            self.0.payload.clone(),
            self.0.sender.clone(),
            caller,
        )
    }

    fn failure(&self, code: i32, description: impl Into<String>) -> ServiceFailure {
        ServiceFailure::new(code, description).with_origin(self.0.receiver.service_name())
    }

    /// Marks the request answered without sending anything: the dispatcher
    /// answers it itself (for instance with "busy").
    pub(crate) fn disarm(&mut self) {
        self.0.answered = true;
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if self.0.answered || self.0.oneway {
            return;
        }
        let answer = std::mem::replace(&mut self.0.answer, Answer::Dispatcher);
        if std::thread::panicking() {
            let origin = self.0.receiver.service_name().to_owned();
            let mut answer = Some(answer);
            PANIC_STASH.with(|s| {
                if let Some(v) = s.borrow_mut().as_mut() {
                    if let Some(a) = answer.take() {
                        v.push((self.0.conv, a, self.0.link.clone(), origin.clone()));
                    }
                }
            });
            if let Some(answer) = answer {
                let failure = ServiceFailure::new(codes::APPLICATION_ERROR, "application error")
                    .with_origin(origin)
                    .with_details("dropped by a panicking thread");
                send_failure(self.0.conv, answer, &*self.0.link, failure);
            }
            return;
        }
        let failure = self
            .failure(codes::RESPONSE_ABORTED, "response aborted")
            .with_details("request dropped without an answer");
        send_failure(self.0.conv, answer, &*self.0.link, failure);
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("conversation", &self.0.conv)
            .field("method", &self.0.method)
            .field("sender", &self.0.sender)
            .field("bytes", &self.0.payload.as_bytes().len())
            .finish()
    }
}

/// A report: a subject and its encoded content, from one publisher.
///
/// The reports of one delivery share what they have in common (the
/// publisher, the subject, and for a batch that came in one frame, one
/// allocation of its payloads): a report costs its subscriber one
/// reference count, not one per part, and a report of a batch no
/// allocation of its own.
#[derive(Clone)]
pub struct Report {
    block: Arc<ReportBlock>,
    /// Where its bytes are in the block's.
    start: u32,
    end: u32,
}

/// What the reports of one delivery share.
struct ReportBlock {
    publisher: ServiceBinding,
    subject: Arc<str>,
    bytes: Payload,
}

impl Report {
    /// A report of this payload, all of it.
    pub(crate) fn new(publisher: ServiceBinding, subject: Arc<str>, payload: Payload) -> Report {
        let end = u32::try_from(payload.as_bytes().len()).unwrap_or(u32::MAX);
        Report {
            block: Arc::new(ReportBlock {
                publisher,
                subject,
                bytes: payload,
            }),
            start: 0,
            end,
        }
    }

    /// The reports of a batch, in order: one allocation (a copy of the
    /// batch's payloads) for all of them.
    pub(crate) fn batch<'a>(
        publisher: &ServiceBinding,
        subject: &Arc<str>,
        payloads: wire::Payloads<'a>,
    ) -> impl Iterator<Item = Report> + 'a {
        let (region, parts) = payloads.parts();
        let block = Arc::new(ReportBlock {
            publisher: publisher.clone(),
            subject: subject.clone(),
            bytes: Payload::from(region),
        });
        parts.map(move |(start, end)| Report {
            block: block.clone(),
            start,
            end,
        })
    }

    /// The service that published the report.
    pub fn publisher(&self) -> &ServiceBinding {
        &self.block.publisher
    }

    /// The report's subject.
    pub fn subject(&self) -> &str {
        &self.block.subject
    }

    /// Decodes the content.
    ///
    /// Content of another shape than `T` (see the crate docs, "Payloads")
    /// is [`Error::Decode`](crate::Error::Decode), naming what was
    /// expected and found; [`Value`](crate::Value) reads any content.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        wire::decode(self.bytes())
    }

    /// The content's encoded bytes, as the publisher's process encoded
    /// them: read without decoding or copying (every subscriber of the
    /// report in this process shares them). Republish them with
    /// [`Service::publish_encoded`](crate::Service::publish_encoded), or
    /// store them and [`decode`](crate::decode) them later.
    pub fn bytes(&self) -> &[u8] {
        let bytes = self.block.bytes.as_bytes();
        // (Its part is within the block's bytes by construction.)
        bytes
            .get(self.start as usize..self.end as usize)
            .unwrap_or(&[])
    }

    /// The same bytes as [`bytes`](Self::bytes), to keep beyond the report:
    /// shared (a reference count taken, no copy), except for a report that
    /// came batched with others in one frame, whose reports share one
    /// allocation: its bytes are then copied out, so that what is kept
    /// does not hold the rest of the batch. (A `Report` itself holds its
    /// batch, at most 16 KiB, until it is dropped.)
    pub fn shared_bytes(&self) -> Arc<[u8]> {
        if self.start == 0 && self.end as usize == self.block.bytes.as_bytes().len() {
            self.block.bytes.shared()
        } else {
            Arc::from(self.bytes())
        }
    }
}

impl fmt::Debug for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Report")
            .field("publisher", self.publisher())
            .field("subject", &self.subject())
            .field("bytes", &self.bytes().len())
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

/// The event types stay `UnwindSafe` and `RefUnwindSafe` (they hold a
/// `dyn Responder` and bindings with a type-erased queue).
#[allow(dead_code)]
fn _ensure_unwind_safe() {
    fn check<T: UnwindSafe + RefUnwindSafe>() {}
    check::<Event>();
    check::<Request>();
    check::<ServiceBinding>();
}
