//! Services: [`Service`] (pulled by the user's thread), [`ServiceHandle`]
//! (a service running a handler on a worker thread of its own).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::{check_capacity, Refusal};
use crate::direct::{Outlet, Waiting, Written};
use crate::error::{Error, Result};
use crate::event::{run_handler, Answer, Event, Lifetime, Overflow, Request};
use crate::ids::{ConversationId, ServiceBinding};
use crate::limits;
use crate::mailbox::command::{Command, Destination, MonitorKind, OutgoingCall, PublisherSpec};
use crate::mailbox::inbox::{Flow, Inbox};
use crate::mailbox::staged::{self, StagedPayload};
use crate::mailbox::{join_unless_current, Link};
use crate::methods::Methods;
use crate::reply::{DirectWait, PendingReply};
use crate::stats::Counters;
use crate::wire;

/// How a call is made: where to, and with which options.
#[derive(Debug, Clone)]
pub(crate) struct CallSpec {
    pub to: Destination,
    pub timeout: Duration,
    pub oneway: bool,
    pub wait: Option<Duration>,
    pub monitor: Option<Duration>,
}

/// Describes a service before it is opened; from [`Dispatcher::service`](crate::Dispatcher::service).
#[must_use = "a service builder does nothing until open() or spawn()"]
pub struct ServiceBuilder {
    link: Arc<Link>,
    name: String,
    audience: String,
    groups: Vec<String>,
    capacity: usize,
    refusal: Refusal,
}

impl fmt::Debug for ServiceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceBuilder")
            .field("name", &self.name)
            .field("audience", &self.audience)
            .field("groups", &self.groups)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl ServiceBuilder {
    pub(crate) fn new(link: Arc<Link>, name: &str) -> Self {
        let capacity = link.config.queue_capacity;
        let mut refusal = Refusal::default();
        refusal.check(!name.is_empty(), || {
            "service name must not be empty".to_owned()
        });
        ServiceBuilder {
            link,
            name: name.to_owned(),
            audience: "*".to_owned(),
            groups: Vec::new(),
            capacity,
            refusal,
        }
    }

    /// Who may see the service: `"*"` (the default) every exchange, `""`
    /// this process only, any other value only exchanges of that group.
    pub fn audience(mut self, audience: &str) -> Self {
        self.audience = audience.to_owned();
        self
    }

    /// Joins a group as the service opens; may be given more than once.
    ///
    /// Refused by [`open`](Self::open): an empty group name.
    pub fn group(mut self, group: &str) -> Self {
        self.refusal.check(!group.is_empty(), || {
            format!("group name of service {:?} must not be empty", self.name)
        });
        if !self.groups.iter().any(|g| g == group) {
            self.groups.push(group.to_owned());
        }
        self
    }

    /// The capacity of this service's event queue (default: the
    /// dispatcher's [`queue_capacity`](crate::DispatcherBuilder::queue_capacity)).
    ///
    /// Refused by [`open`](Self::open) and [`spawn`](Self::spawn): 0, and
    /// more than 16,777,216. The queue's memory follows what it holds, not
    /// its capacity.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        check_capacity(&mut self.refusal, "queue_capacity", capacity);
        self.capacity = capacity;
        self
    }

    /// Registers the service and returns it, to be pulled by the calling
    /// thread (`recv`, or `select!` over its [`receiver`](Service::receiver)).
    /// Monitors see it as Available before this returns.
    ///
    /// [`Error::InvalidArgument`] for an empty service name (given to
    /// [`Dispatcher::service`](crate::Dispatcher::service)), a name,
    /// audience or group longer than the dispatcher's
    /// [`max_name_len`](crate::DispatcherBuilder::max_name_len) (default
    /// 255 bytes), or another setting that cannot work (see each setting);
    /// nothing is registered then.
    pub fn open(self) -> Result<Service> {
        self.refusal.result()?;
        let max = self.link.config.max_name_len;
        let checked = limits::check_name("service name", &self.name, max)
            .and_then(|()| limits::check_name("service audience", &self.audience, max))
            .and_then(|()| {
                self.groups
                    .iter()
                    .try_for_each(|g| limits::check_name("group name", g, max))
            });
        if let Err(e) = checked {
            return Err(Error::InvalidArgument(e));
        }
        let agent = self.link.next_agent();
        // Data events are limited to `capacity`; the same again is kept in
        // reserve for announcements, timers and shutdown. The channel's
        // blocks are allocated as events come and freed as they are taken
        // (an array channel makes every slot up front), so a queue costs
        // what it holds, not its capacity; its bounds are the inbox's.
        let (tx, rx) = crossbeam_channel::unbounded();
        let flow = Arc::new(Flow::new(self.capacity));
        let inbox = Arc::new(Inbox {
            process: self.link.process.uid(),
            events: tx,
            capacity: self.capacity,
            calls: Arc::default(),
            flow: flow.clone(),
        });
        let binding = ServiceBinding::local(
            self.name,
            self.audience,
            agent,
            self.link.process.clone(),
            self.groups,
            Inbox::downgrade(&inbox),
        );
        self.link.ask(|ack| Command::Open {
            binding: binding.clone(),
            inbox,
            ack,
        })?;
        Ok(Service {
            link: self.link,
            binding,
            events: rx,
            flow,
            capacity: self.capacity,
        })
    }

    /// Registers the service and runs `handler` for each of its events on a
    /// worker thread named `netsvc-svc-<name>`. Refuses what
    /// [`open`](Self::open) refuses.
    ///
    /// A panic in the handler is caught and logged; a request the handler
    /// was answering is failed with code 57, and the worker goes on with the
    /// next event. The worker ends when the service is stopped or the
    /// dispatcher shuts down.
    pub fn spawn<F>(self, handler: F) -> Result<ServiceHandle>
    where
        F: FnMut(&Service, Event) + Send + 'static,
    {
        self.open()?.spawn(handler)
    }

    /// Spawns the service with a [`Methods`] table answering its requests;
    /// its other events are ignored.
    pub fn serve(self, mut methods: Methods) -> Result<ServiceHandle> {
        self.spawn(move |_svc, event| {
            if let Event::Request(request) = event {
                methods.handle(request);
            }
        })
    }
}

/// A worker's loop: each event to the handler, a panic caught and logged
/// (the request it held fails with code 57), until the queue disconnects.
fn work(svc: &Service, stop: &AtomicBool, handler: &mut dyn FnMut(&Service, Event)) {
    while let Ok(event) = svc.events.recv() {
        svc.took();
        if stop.load(Ordering::Acquire) {
            continue; // stopping: drain quickly, answering nothing
        }
        if let Err(panic) = run_handler(|| handler(svc, event)) {
            log::error!(
                "netsvc: handler of {} panicked: {}",
                svc.binding,
                crate::event::panic_message(panic.as_ref())
            );
        }
    }
}

/// A handle to a spawned service. Dropping it leaves the service running
/// until [`stop`](Self::stop) or the dispatcher's shutdown.
pub struct ServiceHandle {
    binding: ServiceBinding,
    link: Arc<Link>,
    stop: Arc<AtomicBool>,
}

impl fmt::Debug for ServiceHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceHandle")
            .field("binding", &self.binding)
            .finish()
    }
}

impl ServiceHandle {
    /// The service's binding.
    pub fn binding(&self) -> &ServiceBinding {
        &self.binding
    }

    /// Withdraws the service (monitors see Withdrawn), fails its pending and
    /// queued requests, and joins its worker thread (unless called from that
    /// thread). Idempotent.
    pub fn stop(&self) {
        self.withdraw();
        self.join();
    }

    /// Withdraws the service: no new events reach it; events queued and not
    /// yet started are dropped (their requests fail). Returns at once.
    pub(crate) fn withdraw(&self) {
        self.stop.store(true, Ordering::Release);
        self.link.send_quiet(Command::Close {
            agent: self.binding.agent_identity(),
            drain: false,
        });
    }

    /// Withdraws the service but lets it finish: no new requests reach it,
    /// and the workers answer every request already on its queue (their
    /// callers keep waiting for those answers) before they end.
    pub(crate) fn drain(&self) {
        self.link.send_quiet(Command::Close {
            agent: self.binding.agent_identity(),
            drain: true,
        });
    }

    /// Joins the worker threads (except the calling one).
    pub(crate) fn join(&self) {
        for thread in self.link.take_workers(self.binding.agent_identity()) {
            join_unless_current(thread.thread().id(), thread);
        }
    }
}

/// A service agent: its binding, its event queue, and everything it can do.
///
/// Opened with [`ServiceBuilder::open`] to be pulled by the user's thread,
/// or given to a handler by [`ServiceBuilder::spawn`]. Dropping it
/// withdraws the service: every monitor sees Withdrawn.
pub struct Service {
    link: Arc<Link>,
    binding: ServiceBinding,
    events: Receiver<Event>,
    /// Shared with the dispatcher: reports held for this service's queue,
    /// and this publisher's reports held elsewhere.
    flow: Arc<Flow>,
    /// The queue's capacity: also how many of this publisher's reports may
    /// be held before `publish_report` waits.
    capacity: usize,
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("binding", &self.binding)
            .field("queued", &self.events.len())
            .finish()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.link.send_quiet(Command::Close {
            agent: self.binding.agent_identity(),
            drain: false,
        });
    }
}

impl Service {
    /// The service's binding, with the groups it was opened with.
    pub fn binding(&self) -> &ServiceBinding {
        &self.binding
    }

    /// Hands this service to a worker thread named `netsvc-svc-<name>` that
    /// runs `handler` for each of its events, including any queued since it
    /// was opened. Set up monitors, subscriptions and timers first, on the
    /// open service; nothing that arrives meanwhile is lost.
    ///
    /// A panic in the handler is caught and logged; a request the handler
    /// was answering is failed with code 57, and the worker goes on with the
    /// next event. The worker ends when the service is stopped or the
    /// dispatcher shuts down.
    pub fn spawn<F>(self, mut handler: F) -> Result<ServiceHandle>
    where
        F: FnMut(&Service, Event) + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let worker_stop = stop.clone();
        let svc = Arc::new(self);
        let handle = ServiceHandle {
            binding: svc.binding.clone(),
            link: svc.link.clone(),
            stop,
        };
        let name = format!("netsvc-svc-{}", svc.binding.service_name());
        let worker = std::thread::Builder::new()
            .name(name)
            .spawn(move || work(&svc, &worker_stop, &mut handler))
            .map_err(Error::Io)?;
        handle
            .link
            .add_worker(handle.binding.agent_identity(), worker);
        Ok(handle)
    }

    /// Like [`spawn`](Self::spawn) with `threads` worker threads taking
    /// events from the one queue, each as soon as it is free. Events are
    /// then handled concurrently, so their order between threads is not kept.
    ///
    /// `threads` = 0 is refused with [`Error::InvalidArgument`] (nobody
    /// would handle the events); the service is then dropped, so withdrawn.
    pub fn spawn_pool<F>(self, threads: usize, handler: F) -> Result<ServiceHandle>
    where
        F: Fn(&Service, Event) + Send + Sync + 'static,
    {
        if threads == 0 {
            return Err(Error::InvalidArgument(
                "spawn_pool threads must be at least 1, got 0".to_owned(),
            ));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let svc = Arc::new(self);
        let handler = Arc::new(handler);
        let handle = ServiceHandle {
            binding: svc.binding.clone(),
            link: svc.link.clone(),
            stop: stop.clone(),
        };
        for i in 0..threads {
            let (svc, stop, handler) = (svc.clone(), stop.clone(), handler.clone());
            let name = format!("netsvc-svc-{}-{i}", svc.binding.service_name());
            let worker = std::thread::Builder::new()
                .name(name)
                .spawn(move || work(&svc, &stop, &mut |s: &Service, e: Event| handler(s, e)));
            match worker {
                Ok(w) => handle.link.add_worker(handle.binding.agent_identity(), w),
                Err(e) => {
                    handle.stop();
                    return Err(Error::Io(e));
                }
            }
        }
        Ok(handle)
    }

    fn agent(&self) -> crate::ids::AgentId {
        self.binding.agent_identity()
    }

    /// Waits for the next event. [`Error::Closed`] once the service is
    /// withdrawn or the dispatcher has shut down and the queue is empty.
    pub fn recv(&self) -> Result<Event> {
        let event = self.events.recv().map_err(|_| Error::Closed);
        self.took();
        event
    }

    /// An event was taken off the queue: if the dispatcher holds reports
    /// for it and half the queue is free again, the dispatcher is woken to
    /// put them on. (A thread that takes events through
    /// [`receiver`](Self::receiver) does not get here; the dispatcher
    /// looks again by itself every millisecond while it holds reports.)
    fn took(&self) {
        if self.flow.wants_room.load(Ordering::Relaxed)
            && self.events.len() <= self.capacity / 2
            && self.flow.wants_room.swap(false, Ordering::AcqRel)
        {
            self.link.wake();
        }
    }

    /// Waits at most `timeout` for the next event: `Ok(None)` if none came.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Event>> {
        // An event already queued is taken without reading the clock (the
        // channel's wait reads it first, to know its deadline).
        let got = match self.events.try_recv() {
            Ok(e) => Ok(e),
            Err(TryRecvError::Empty) => self.events.recv_timeout(timeout),
            Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
        };
        match got {
            Ok(e) => {
                self.took();
                Ok(Some(e))
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(Error::Closed),
        }
    }

    /// The next event if one is queued.
    pub fn try_recv(&self) -> Option<Event> {
        let event = self.events.try_recv().ok();
        if event.is_some() {
            self.took();
        }
        event
    }

    /// The event queue itself, for `crossbeam_channel::select!`.
    pub fn receiver(&self) -> &Receiver<Event> {
        &self.events
    }

    /// Joins a group: group monitors see Available. A group name longer
    /// than [`max_name_len`](crate::DispatcherBuilder::max_name_len) is
    /// ignored with a warning in the log.
    pub fn join_group(&self, group: &str) {
        if !self.within("group name", group, self.link.config.max_name_len) {
            return;
        }
        self.link.send_quiet(Command::Group {
            agent: self.agent(),
            group: group.to_owned(),
            join: true,
        });
    }

    /// Leaves a group: group monitors see Withdrawn.
    pub fn leave_group(&self, group: &str) {
        self.link.send_quiet(Command::Group {
            agent: self.agent(),
            group: group.to_owned(),
            join: false,
        });
    }

    /// Whether a name or pattern given to a call that returns nothing is
    /// within its limit; if not, a warning says it is ignored.
    fn within(&self, what: &str, s: &str, max: usize) -> bool {
        match limits::check_name(what, s, max) {
            Ok(()) => true,
            Err(e) => {
                // (These calls return nothing that could carry the error.)
                log::warn!("netsvc: {}: ignored, {e}", self.binding);
                false
            }
        }
    }

    /// Monitors of a name or group longer than
    /// [`max_name_len`](crate::DispatcherBuilder::max_name_len) are ignored
    /// with a warning in the log.
    fn monitor(&self, kind: MonitorKind, key: &str, on: bool) {
        if !self.within("monitored name", key, self.link.config.max_name_len) {
            return;
        }
        self.link.send_quiet(Command::Monitor {
            agent: self.agent(),
            kind,
            key: key.to_owned(),
            on,
        });
    }

    /// Announces every service of that name now visible, then each change,
    /// as [`Event::Announcement`]s.
    pub fn monitor_service_name(&self, name: &str) {
        self.monitor(MonitorKind::Name, name, true);
    }

    /// Stops the announcements of [`monitor_service_name`](Self::monitor_service_name).
    pub fn unmonitor_service_name(&self, name: &str) {
        self.monitor(MonitorKind::Name, name, false);
    }

    /// Announces every member of that group now, then each join and leave,
    /// as [`Event::Announcement`]s carrying the group.
    pub fn monitor_service_group(&self, group: &str) {
        self.monitor(MonitorKind::Group, group, true);
    }

    /// Stops the announcements of [`monitor_service_group`](Self::monitor_service_group).
    pub fn unmonitor_service_group(&self, group: &str) {
        self.monitor(MonitorKind::Group, group, false);
    }

    /// A subscription (or its end) whose publisher name is longer than
    /// [`max_name_len`](crate::DispatcherBuilder::max_name_len) or whose
    /// pattern is longer than
    /// [`max_subject_len`](crate::DispatcherBuilder::max_subject_len) is
    /// ignored with a warning in the log.
    fn subscription(&self, publisher: PublisherSpec, pattern: &str, on: bool) {
        self.subscription_with(publisher, pattern, on, Overflow::Wait)
    }

    fn subscription_with(
        &self,
        publisher: PublisherSpec,
        pattern: &str,
        on: bool,
        overflow: Overflow,
    ) {
        let config = &self.link.config;
        if let PublisherSpec::Name(name) = &publisher {
            if !self.within("publisher name", name, config.max_name_len) {
                return;
            }
        }
        if !self.within("subscription pattern", pattern, config.max_subject_len) {
            return;
        }
        self.link.send_quiet(Command::Subscribe {
            agent: self.agent(),
            publisher,
            pattern: pattern.to_owned(),
            on,
            overflow,
        });
    }

    /// Subscribes to the reports of every service named `publisher` whose
    /// subjects match `pattern` (`*` any run of characters, `?` one). Lasts
    /// until unsubscribed, across publishers coming and going.
    ///
    /// A publisher name longer than
    /// [`max_name_len`](crate::DispatcherBuilder::max_name_len) or a
    /// pattern longer than
    /// [`max_subject_len`](crate::DispatcherBuilder::max_subject_len) makes
    /// this (and the other subscription calls) do nothing but log a warning.
    pub fn subscribe_reports(&self, publisher: &str, pattern: &str) {
        self.subscription(PublisherSpec::Name(publisher.to_owned()), pattern, true);
    }

    /// Subscribes as [`subscribe_reports`](Self::subscribe_reports) does,
    /// with a drop policy for while this service's queue is full: with
    /// [`Overflow::DropNewest`] or [`Overflow::DropOldest`] its reports
    /// never hold a publisher back, up to the policy's bound of them wait
    /// beyond the full queue, and every drop is counted in
    /// [`Stats::reports_dropped`](crate::Stats::reports_dropped) and told to
    /// this service as an [`Event::Dropped`] with the count. The policy
    /// belongs to the pattern: the latest subscription of this service with
    /// that pattern sets it. A report that matches a subscription that
    /// waits ([`Overflow::Wait`], the default) is never dropped by policy.
    pub fn subscribe_reports_with(&self, publisher: &str, pattern: &str, overflow: Overflow) {
        let spec = PublisherSpec::Name(publisher.to_owned());
        self.subscription_with(spec, pattern, true, overflow);
    }

    /// Subscribes to one agent's reports; ends when that agent is withdrawn.
    /// If it is already gone, an [`Event::Publisher`] Withdrawn says so.
    pub fn subscribe_reports_from(&self, publisher: &ServiceBinding, pattern: &str) {
        self.subscription(PublisherSpec::Binding(publisher.clone()), pattern, true);
    }

    /// Ends a subscription made with [`subscribe_reports`](Self::subscribe_reports).
    pub fn unsubscribe_reports(&self, publisher: &str, pattern: &str) {
        self.subscription(PublisherSpec::Name(publisher.to_owned()), pattern, false);
    }

    /// Ends a subscription made with [`subscribe_reports_from`](Self::subscribe_reports_from).
    pub fn unsubscribe_reports_from(&self, publisher: &ServiceBinding, pattern: &str) {
        self.subscription(PublisherSpec::Binding(publisher.clone()), pattern, false);
    }

    /// Publishes a report to every subscriber whose pattern matches the
    /// subject, and caches it as `lifetime` says. A subject longer than
    /// [`max_subject_len`](crate::DispatcherBuilder::max_subject_len) is
    /// refused with [`Error::InvalidArgument`].
    pub fn publish_report<T: Serialize + ?Sized>(
        &self,
        subject: &str,
        content: &T,
        lifetime: Lifetime,
    ) -> Result<()> {
        self.check_subject(subject)?;
        self.wait_to_publish()?;
        // Encoded into the thread's encoder and copied into the staged
        // segment: no allocation per report (a large one is shared).
        let opened = wire::encode_then(content, |bytes| {
            if bytes.len() <= staged::COPY_UP_TO {
                self.stage(subject, StagedPayload::Bytes(bytes), lifetime)
            } else {
                self.stage(
                    subject,
                    StagedPayload::Shared(&wire::Payload::from(bytes)),
                    lifetime,
                )
            }
        })?;
        self.staged(opened)
    }

    /// Publishes a report whose content is already encoded: `bytes` as
    /// [`Report::bytes`](crate::Report::bytes) gave them (a subscriber that
    /// forwards or stores reports re-publishes them without decoding), or
    /// as [`encode`](crate::encode) made them. The bytes are taken as they
    /// are, shared with every subscriber without a copy. Waits for room as
    /// [`publish_report`](Self::publish_report) does. Bytes that are not a
    /// payload of netsvc's encoding are not misread: a subscriber's decode
    /// of them fails with [`Error::Decode`](crate::Error::Decode).
    pub fn publish_encoded(
        &self,
        subject: &str,
        bytes: impl Into<std::sync::Arc<[u8]>>,
        lifetime: Lifetime,
    ) -> Result<()> {
        self.check_subject(subject)?;
        self.wait_to_publish()?;
        let payload = wire::Payload::from_shared(bytes.into());
        let opened = self.stage(subject, StagedPayload::Shared(&payload), lifetime);
        self.staged(opened)
    }

    /// Lossless: while as many of this publisher's reports as its queue
    /// holds wait for a subscriber's room or a link's credit (or for the
    /// dispatcher to take them), it waits, at most the publish timeout.
    fn wait_to_publish(&self) -> Result<()> {
        if self.link.is_closed() {
            return Err(Error::Closed); // (nothing would take it)
        }
        if self.flow.held() < self.capacity {
            return Ok(());
        }
        let now = std::time::Instant::now();
        let timeout = self.link.config.publish_timeout;
        let deadline = crate::config::deadline(now, timeout);
        // Staged reports are taken as commands are: one not taken within
        // the stall limit means a dispatcher that takes no command, which
        // fails as a command sent to it does.
        let stall = crate::config::deadline(now, self.link.stall_limit());
        if stall < deadline {
            if self.flow.wait_below(self.capacity, self.flow.low, stall) {
                return Ok(());
            }
            if self.flow.staged.pending() {
                log::warn!(
                    "netsvc: dispatcher {} took no staged report of {} for {:?}; report not published",
                    self.link.process,
                    self.binding,
                    self.link.stall_limit()
                );
                return Err(Error::Timeout);
            }
        }
        if !self.flow.wait_below(self.capacity, self.flow.low, deadline) {
            Counters::bump(&self.link.counters.publish_timeouts);
            return Err(Error::Backpressure(format!(
                "{} of {}'s reports have waited for {timeout:?} for a subscriber \
                 to take them (its queue full, or its link out of credit)",
                self.flow.held(),
                self.binding
            )));
        }
        Ok(())
    }

    /// Stages a report for the dispatcher (`staged.rs`), held until it is
    /// routed; the segment's id if it opened one.
    fn stage(&self, subject: &str, payload: StagedPayload<'_>, lifetime: Lifetime) -> Option<u64> {
        let lifetime = match lifetime {
            // Cached for longer than anyone will wait: for ever.
            Lifetime::For(d) if d >= crate::config::NO_LIMIT => Lifetime::Forever,
            other => other,
        };
        self.flow.hold();
        self.flow.staged.stage(subject, payload, lifetime)
    }

    /// Tells the dispatcher of a segment the last report opened.
    fn staged(&self, opened: Option<u64>) -> Result<()> {
        let Some(upto) = opened else {
            // (The dispatcher takes it with the segment's `Staged`, unless
            // it has left meanwhile.)
            return if self.link.is_closed() {
                Err(Error::Closed)
            } else {
                Ok(())
            };
        };
        let sent = self.link.send(Command::Staged {
            agent: self.agent(),
            upto,
        });
        if sent.is_err() {
            // Never to be taken: let its reports go (they are lost with
            // the dispatcher, as every command is).
            while let Some(segment) = self.flow.staged.take(u64::MAX) {
                self.flow.release_n(segment.len(), self.flow.low);
            }
        }
        sent
    }

    /// Sends a report to one subscriber only, bypassing the cache. It is
    /// delivered only if that agent holds a subscription to this service
    /// whose pattern matches the subject. A subject longer than
    /// [`max_subject_len`](crate::DispatcherBuilder::max_subject_len) is
    /// refused with [`Error::InvalidArgument`].
    pub fn send_report<T: Serialize + ?Sized>(
        &self,
        subscriber: &ServiceBinding,
        subject: &str,
        content: &T,
    ) -> Result<()> {
        self.check_subject(subject)?;
        let payload = wire::encode(content)?;
        self.link.send(Command::SendReport {
            agent: self.agent(),
            to: subscriber.clone(),
            subject: subject.to_owned(),
            payload,
        })
    }

    fn check_subject(&self, subject: &str) -> Result<()> {
        limits::check_name("report subject", subject, self.link.config.max_subject_len)
            .map_err(Error::InvalidArgument)
    }

    /// Removes this service's cached reports whose subjects match. A
    /// pattern longer than
    /// [`max_subject_len`](crate::DispatcherBuilder::max_subject_len) is
    /// ignored with a warning in the log.
    pub fn expire_reports(&self, pattern: &str) {
        if !self.within("pattern", pattern, self.link.config.max_subject_len) {
            return;
        }
        self.link.send_quiet(Command::Expire {
            agent: self.agent(),
            pattern: Some(pattern.to_owned()),
        });
    }

    /// Removes all of this service's cached reports.
    pub fn purge_reports(&self) {
        self.link.send_quiet(Command::Expire {
            agent: self.agent(),
            pattern: None,
        });
    }

    /// Calls a method and waits for the reply, at most the dispatcher's
    /// default timeout.
    ///
    /// Arguments of another shape than the method takes fail the call with
    /// code 54 at the service; a reply of another shape than `R` is
    /// [`Error::Decode`](crate::Error::Decode) here (see the crate docs,
    /// "Payloads").
    pub fn call<R, A>(&self, to: &ServiceBinding, method: &str, args: &A) -> Result<R>
    where
        R: DeserializeOwned,
        A: Serialize + ?Sized,
    {
        self.call_timeout(to, method, args, self.link.config.default_timeout)
    }

    /// Calls a method and waits at most `timeout` for the reply. A timeout
    /// of a century or more (up to `Duration::MAX`) means no limit: the
    /// call still ends with its answer, the destination's withdrawal or the
    /// dispatcher's shutdown.
    pub fn call_timeout<R, A>(
        &self,
        to: &ServiceBinding,
        method: &str,
        args: &A,
        timeout: Duration,
    ) -> Result<R>
    where
        R: DeserializeOwned,
        A: Serialize + ?Sized,
    {
        self.request_timeout(to, method, args, timeout)?.wait()
    }

    /// Sends a request and returns at once; the reply is collected from the
    /// [`PendingReply`]. Uses the dispatcher's default timeout.
    pub fn request<R, A>(
        &self,
        to: &ServiceBinding,
        method: &str,
        args: &A,
    ) -> Result<PendingReply<R>>
    where
        R: DeserializeOwned,
        A: Serialize + ?Sized,
    {
        self.request_timeout(to, method, args, self.link.config.default_timeout)
    }

    /// [`request`](Self::request) with its own timeout.
    pub fn request_timeout<R, A>(
        &self,
        to: &ServiceBinding,
        method: &str,
        args: &A,
        timeout: Duration,
    ) -> Result<PendingReply<R>>
    where
        R: DeserializeOwned,
        A: Serialize + ?Sized,
    {
        let call = CallSpec {
            to: Destination::Agent(to.clone()),
            timeout,
            oneway: false,
            wait: None,
            monitor: None,
        };
        self.request_to(call, method, args)
    }

    /// Sends a request to a destination with the given options.
    pub(crate) fn request_to<R, A>(
        &self,
        spec: CallSpec,
        method: &str,
        args: &A,
    ) -> Result<PendingReply<R>>
    where
        R: DeserializeOwned,
        A: Serialize + ?Sized,
    {
        let payload = wire::encode(args)?;
        self.request_raw(spec, method, payload)
    }

    /// Sends an already encoded request.
    pub(crate) fn request_raw<R>(
        &self,
        spec: CallSpec,
        method: &str,
        payload: wire::Payload,
    ) -> Result<PendingReply<R>>
    where
        R: DeserializeOwned,
    {
        // A method name longer than the limit would be refused by peers.
        limits::check_name("method name", method, self.link.config.max_name_len)
            .map_err(Error::InvalidArgument)?;
        let conv = self.link.next_conversation();
        let (tx, rx) = crate::oneshot::slot();
        let (tx, payload) = match self.direct_inbox(&spec) {
            Some((inbox, to)) => {
                let deadline = crate::config::deadline(Instant::now(), spec.timeout);
                let waiting = Waiting {
                    reply: tx,
                    deadline,
                    via: None,
                };
                match inbox.calls.admit(conv, waiting) {
                    Ok(()) => {
                        self.call_direct(&inbox, to, conv, method, payload);
                        let direct = DirectWait::local(inbox.calls.clone(), deadline);
                        return Ok(PendingReply::new(self.link.clone(), conv, rx, Some(direct)));
                    }
                    // Withdrawn meanwhile: the dispatcher says why.
                    Err(waiting) => (waiting.reply, payload),
                }
            }
            None => match self.outlet_for(&spec) {
                Some((outlet, to)) => {
                    match self.call_through(&outlet, &to, conv, method, &payload, spec.timeout, tx)
                    {
                        Ok(direct) => {
                            return Ok(PendingReply::new(self.link.clone(), conv, rx, Some(direct)))
                        }
                        Err(tx) => (tx, payload),
                    }
                }
                None => (tx, payload),
            },
        };
        self.link.send(Command::Call(Box::new(OutgoingCall {
            conv,
            from: self.agent(),
            to: spec.to,
            method: method.to_owned(),
            payload,
            reply: tx,
            timeout: spec.timeout,
            oneway: spec.oneway,
            wait: spec.wait,
            monitor: spec.monitor,
        })))?;
        Ok(PendingReply::new(self.link.clone(), conv, rx, None))
    }

    /// The queue of the destination, if the call can go straight there: a
    /// two-way call without a monitor to an open service of this dispatcher.
    fn direct_inbox(&self, spec: &CallSpec) -> Option<(Arc<Inbox>, ServiceBinding)> {
        let to = direct_target(spec)?;
        let inbox = Inbox::of(to)?;
        (inbox.process == self.link.process.uid()).then(|| (inbox, to.clone()))
    }

    /// The link to write the call onto, if this thread can write it there
    /// itself (see `direct.rs`): a two-way call without a monitor to an
    /// agent learned through a plain TCP link of this dispatcher that is
    /// still up, while the dispatcher waits in its poll.
    ///
    /// Why only then: a caller that has just been handed a reply usually
    /// runs while its dispatcher, preempted, has not yet gone back to its
    /// poll. A socket write from the caller then wakes the peer on a core
    /// with two runnable threads, and the scheduler puts the peer on the
    /// other core, whose wake-up from idle costs tens of microseconds on a
    /// VM (`perf sched`: the exchange woken 40 us late). Through the
    /// dispatcher, the write comes from a thread alone on its core, and
    /// the peer runs there. The W1 bench on this VM: p50 114-128 us
    /// this way, 138-161 us with callers always writing.
    fn outlet_for(&self, spec: &CallSpec) -> Option<(Arc<Outlet>, ServiceBinding)> {
        let to = direct_target(spec)?;
        let outlet = Outlet::of(to)?;
        (outlet.serves(&self.link.gate) && self.link.gate.dispatcher_idle())
            .then(|| (outlet, to.clone()))
    }

    /// Writes a request onto a link itself, the caller waiting in the
    /// dispatcher's table of such calls; gives the reply slot back if the
    /// link cannot take it from this thread now (the dispatcher then
    /// carries the call).
    #[allow(clippy::too_many_arguments)]
    fn call_through(
        &self,
        outlet: &Outlet,
        to: &ServiceBinding,
        conv: ConversationId,
        method: &str,
        payload: &wire::Payload,
        timeout: Duration,
        tx: crate::oneshot::Sender<Result<wire::Payload>>,
    ) -> std::result::Result<DirectWait, crate::oneshot::Sender<Result<wire::Payload>>> {
        let now = Instant::now();
        let deadline = crate::config::deadline(now, timeout);
        let waiting = Waiting {
            reply: tx,
            deadline,
            via: Some((outlet.link, to.key())),
        };
        let calls = &self.link.remote_calls;
        if let Err(waiting) = calls.admit_alone(conv, waiting) {
            // Other calls wait: a burst of calls goes through the
            // dispatcher, which writes it in one go (or it stopped).
            return Err(waiting.reply);
        }
        let message = wire::Message::Request {
            conv,
            sender: self.binding.clone(),
            to: to.key(),
            method: method.to_owned(),
            payload: payload.clone(),
            timeout_ms: u64::try_from(deadline.saturating_duration_since(now).as_millis())
                .unwrap_or(u64::MAX),
            oneway: false,
            heartbeat_ms: None,
        };
        let written = match wire::encode_frame(&message) {
            Ok(frame) => outlet.write(&frame),
            Err(_) => Written::NotNow, // (the dispatcher says why)
        };
        let direct = DirectWait::remote(calls.clone(), deadline);
        if written == Written::Taken {
            let counters = &self.link.counters;
            Counters::bump(&counters.frames_out);
            Counters::bump(&counters.frames_written_by_callers);
            Counters::bump(&counters.requests_delivered);
            return Ok(direct);
        }
        match calls.take(&conv) {
            Some(waiting) => Err(waiting.reply),
            // The link went down meanwhile, and said so to the caller.
            None => Ok(direct),
        }
    }

    /// Puts a request on a local service's queue, as the dispatcher would:
    /// refused as busy beyond its capacity, as unavailable if it is closing.
    /// The caller was admitted to `inbox.calls`; every outcome reaches it
    /// through there.
    fn call_direct(
        &self,
        inbox: &Inbox,
        to: ServiceBinding,
        conv: ConversationId,
        method: &str,
        payload: wire::Payload,
    ) {
        let counters = &self.link.counters;
        let refusal = if inbox.events.len() >= inbox.capacity {
            None
        } else {
            let request = Request(Box::new(crate::event::Call {
                conv,
                method: method.to_owned(),
                sender: self.binding.clone(),
                receiver: to.clone(),
                payload,
                link: self.link.clone(),
                answered: false,
                oneway: false,
                answer: Answer::Direct(inbox.calls.clone()),
            }));
            match inbox.events.try_send(Event::Request(request)) {
                Ok(()) => {
                    Counters::bump(&counters.requests_delivered);
                    return;
                }
                Err(e) => {
                    let disconnected = e.is_disconnected();
                    if let Event::Request(mut r) = e.into_inner() {
                        r.disarm();
                    }
                    disconnected.then(|| Error::ServiceUnavailable(format!("{to} is closing")))
                }
            }
        };
        let error = refusal.unwrap_or_else(|| {
            Counters::bump(&counters.busy_replies);
            Error::Service(crate::error::busy(to.service_name()))
        });
        inbox.calls.answer(&conv, Err(error), counters);
    }

    /// Delivers [`Event::Timer(tag)`](Event::Timer) to this service after
    /// `delay`, in order with its other events. A delay of a century or
    /// more (up to `Duration::MAX`) never fires.
    pub fn start_timer(&self, delay: Duration, tag: u64) {
        self.link.send_quiet(Command::StartTimer {
            agent: self.agent(),
            at: crate::config::deadline(Instant::now(), delay),
            tag,
        });
    }

    /// Cancels every running timer of this service with that tag.
    pub fn cancel_timer(&self, tag: u64) {
        self.link.send_quiet(Command::CancelTimer {
            agent: self.agent(),
            tag,
        });
    }
}

/// The agent a call names, if it may skip the dispatcher thread: a
/// two-way call without a monitor to one agent.
fn direct_target(spec: &CallSpec) -> Option<&ServiceBinding> {
    match &spec.to {
        Destination::Agent(to) if !spec.oneway && spec.monitor.is_none() => Some(to),
        _ => None,
    }
}

#[allow(dead_code)]
fn _ensure_send_sync() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<Service>();
    sync::<Service>();
    send::<ServiceHandle>();
    sync::<ServiceHandle>();
    send::<crate::Request>();
}
