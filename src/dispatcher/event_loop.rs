//! The dispatcher thread: a `mio::Poll` loop that owns every piece of routing
//! state and never blocks on a service or a socket.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::{Events, Poll, Token};

use super::command::{Command, MonitorKind, OutgoingCall, PublisherSpec};
use super::timers::{TimerId, Timers};
use super::{Counters, Link};
use crate::error::{codes, Error, Result, ServiceFailure};
use crate::event::{
    Event, Lifetime, PublisherAnnouncement, Report, Request, ServiceAnnouncement, ServiceStatus,
    SubscriptionAnnouncement, SubscriptionStatus,
};
use crate::ids::{AgentId, AgentKey, ConversationId, ServiceBinding};
use crate::pattern::Pattern;
use crate::registry::{Registry, Route};
use crate::reports::{Reports, Target};
use crate::wire::Payload;

/// The waker's token; sockets use the tokens above it.
pub(crate) const WAKER: Token = Token(0);

/// At most this many commands are handled between two polls, so timers and
/// sockets are served even while senders flood the queue.
const COMMANDS_PER_TURN: usize = 4096;

thread_local! {
    static ON_DISPATCHER: Cell<bool> = const { Cell::new(false) };
}

/// Whether the calling thread is a dispatcher thread.
pub(crate) fn on_dispatcher_thread() -> bool {
    ON_DISPATCHER.with(Cell::get)
}

/// A service of this dispatcher, as the dispatcher sees it.
struct Local {
    binding: ServiceBinding,
    events: Sender<Event>,
    /// Requests and reports are refused beyond this many queued events;
    /// control events may use the channel's reserve beyond it.
    capacity: usize,
    timers: Vec<(u64, TimerId)>,
}

/// How an event counts against a service's queue.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Requests and reports: refused once `capacity` events are queued.
    Data,
    /// Announcements, timers, shutdown: may use the reserve.
    Control,
}

/// Why an event was not put on a queue; the event comes back.
enum Refused {
    Full(Event),
    Gone(Event),
}

/// Who waits for a reply.
enum Caller {
    Local(Sender<Result<Payload>>),
}

struct Pending {
    caller: Caller,
    /// The agent currently handling the call; its withdrawal fails the call.
    target: AgentKey,
    timer: TimerId,
}

enum TimerKind {
    Call(ConversationId),
    Service { agent: AgentId, tag: u64 },
    Shutdown,
}

#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

pub(crate) struct EventLoop {
    link: Arc<Link>,
    poll: Poll,
    commands: Receiver<Command>,
    registry: Registry,
    reports: Reports,
    locals: HashMap<AgentId, Local>,
    pending: HashMap<ConversationId, Pending>,
    timers: Timers<TimerKind>,
    /// Reused buffer for report fan-out.
    scratch: Vec<AgentKey>,
}

impl EventLoop {
    pub(crate) fn new(link: Arc<Link>, poll: Poll, commands: Receiver<Command>) -> Self {
        EventLoop {
            link,
            poll,
            commands,
            registry: Registry::default(),
            reports: Reports::default(),
            locals: HashMap::new(),
            pending: HashMap::new(),
            timers: Timers::new(),
            scratch: Vec::new(),
        }
    }

    pub(crate) fn run(mut self) -> Result<()> {
        ON_DISPATCHER.with(|f| f.set(true));
        let mut events = Events::with_capacity(256);
        let mut more_commands = false;
        loop {
            let timeout = if more_commands {
                Some(Duration::ZERO)
            } else {
                self.timers
                    .next_deadline()
                    .map(|at| at.saturating_duration_since(Instant::now()))
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("netsvc: poll failed, shutting down: {e}");
                self.stop();
                return Err(e.into());
            }
            // Wake events carry no data: the commands are in the channel.
            // Clear the flag before draining, so a command sent after the
            // drain wakes the next poll.
            self.link
                .wake_pending()
                .store(false, std::sync::atomic::Ordering::SeqCst);
            more_commands = false;
            for _ in 0..COMMANDS_PER_TURN {
                match self.commands.try_recv() {
                    Ok(cmd) => {
                        if self.handle(cmd) == Flow::Stop {
                            self.stop();
                            return Ok(());
                        }
                    }
                    Err(_) => break,
                }
                more_commands = true;
            }
            if more_commands {
                more_commands = !self.commands.is_empty();
            }
            let now = Instant::now();
            while let Some((id, kind)) = self.timers.pop_due(now) {
                if self.fire(id, kind) == Flow::Stop {
                    self.stop();
                    return Ok(());
                }
            }
        }
    }

    fn handle(&mut self, cmd: Command) -> Flow {
        match cmd {
            Command::Open {
                binding,
                events,
                capacity,
                ack,
            } => {
                self.open(binding, events, capacity);
                let _ = ack.send(());
            }
            Command::Close { agent } => self.withdraw(agent),
            Command::Group { agent, group, join } => self.group(agent, &group, join),
            Command::Monitor {
                agent,
                kind,
                key,
                on,
            } => self.monitor(agent, kind, &key, on),
            Command::Subscribe {
                agent,
                publisher,
                pattern,
                on,
            } => self.subscribe(agent, publisher, &pattern, on),
            Command::Publish {
                agent,
                subject,
                payload,
                lifetime,
            } => self.publish(agent, subject, payload, lifetime),
            Command::SendReport {
                agent,
                to,
                subject,
                payload,
            } => self.send_report(agent, &to, subject, payload),
            Command::Expire { agent, pattern } => {
                if let Some(local) = self.locals.get(&agent) {
                    let key = local.binding.key();
                    self.reports
                        .expire(key, pattern.map(|p| Pattern::new(&p)).as_ref());
                }
            }
            Command::Call(call) => self.call(call),
            Command::Reply { conv, result } => {
                self.complete(conv, result.map_err(Error::Service));
            }
            Command::Forward {
                conv,
                to,
                method,
                payload,
                sender,
            } => self.forward(conv, &to, method, payload, sender),
            Command::Cancel { conv } => {
                if let Some(p) = self.pending.remove(&conv) {
                    self.timers.cancel(p.timer);
                }
            }
            Command::StartTimer { agent, at, tag } => {
                if self.locals.contains_key(&agent) {
                    let id = self.timers.start(at, TimerKind::Service { agent, tag });
                    if let Some(local) = self.locals.get_mut(&agent) {
                        local.timers.push((tag, id));
                    }
                }
            }
            Command::CancelTimer { agent, tag } => {
                if let Some(local) = self.locals.get_mut(&agent) {
                    for (_, id) in local.timers.iter().filter(|(t, _)| *t == tag) {
                        self.timers.cancel(*id);
                    }
                    local.timers.retain(|(t, _)| *t != tag);
                }
            }
            Command::LookupName { name, reply } => {
                let _ = reply.send(self.registry.by_name(&name).cloned().collect());
            }
            Command::LookupGroup { group, reply } => {
                let _ = reply.send(self.registry.group_members(&group).cloned().collect());
            }
            Command::ShutdownAfter { delay } => {
                let agents: Vec<AgentId> = self.sorted_locals();
                for agent in agents {
                    self.deliver(agent, Event::Shutdown, Class::Control);
                }
                self.timers
                    .start(Instant::now() + delay, TimerKind::Shutdown);
            }
            Command::Shutdown => return Flow::Stop,
        }
        Flow::Continue
    }

    fn fire(&mut self, id: TimerId, kind: TimerKind) -> Flow {
        match kind {
            TimerKind::Call(conv) => {
                if self.pending.contains_key(&conv) {
                    Counters::bump(&self.link.counters.calls_timed_out);
                    self.complete(conv, Err(Error::Timeout));
                }
            }
            TimerKind::Service { agent, tag } => {
                if let Some(local) = self.locals.get_mut(&agent) {
                    // Forget this one timer; others with the same tag stay.
                    local.timers.retain(|(_, t)| *t != id);
                    self.deliver(agent, Event::Timer(tag), Class::Control);
                }
            }
            TimerKind::Shutdown => return Flow::Stop,
        }
        Flow::Continue
    }

    fn sorted_locals(&self) -> Vec<AgentId> {
        let mut agents: Vec<AgentId> = self.locals.keys().copied().collect();
        agents.sort();
        agents
    }

    /// The end: fails every pending call with [`Error::Closed`] (before the
    /// withdrawals below could fail them as unavailable), then withdraws
    /// every service, newest first, so that services opened early, such as
    /// monitors, see the others go.
    fn stop(&mut self) {
        let convs: Vec<ConversationId> = self.pending.keys().copied().collect();
        for conv in convs {
            self.complete(conv, Err(Error::Closed));
        }
        for agent in self.sorted_locals().into_iter().rev() {
            self.withdraw(agent);
        }
        log::debug!("netsvc: dispatcher {} stopped", self.link.process);
    }

    // ----- delivery -----

    /// Puts an event on a local service's queue, or says why not and gives
    /// the event back.
    fn try_deliver(
        &self,
        agent: AgentId,
        event: Event,
        class: Class,
    ) -> std::result::Result<(), Refused> {
        let Some(local) = self.locals.get(&agent) else {
            return Err(Refused::Gone(event));
        };
        if class == Class::Data && local.events.len() >= local.capacity {
            return Err(Refused::Full(event));
        }
        match local.events.try_send(event) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(e)) => Err(Refused::Full(e)),
            // The service was dropped; its Close command is on its way.
            Err(TrySendError::Disconnected(e)) => Err(Refused::Gone(e)),
        }
    }

    /// Delivers a control event or a report, counting what is dropped.
    fn deliver(&mut self, agent: AgentId, event: Event, class: Class) {
        let is_report = matches!(event, Event::Report(_));
        match self.try_deliver(agent, event, class) {
            Ok(()) => {
                if is_report {
                    Counters::bump(&self.link.counters.reports_delivered);
                }
            }
            Err(Refused::Gone(_)) => {} // withdrawn meanwhile: nobody to tell
            Err(Refused::Full(event)) => {
                if is_report {
                    Counters::bump(&self.link.counters.reports_dropped);
                    log::trace!("netsvc: report dropped, queue of agent {agent} is full");
                } else {
                    Counters::bump(&self.link.counters.events_dropped);
                    log::warn!("netsvc: queue of agent {agent} is full beyond its reserve; dropped {event:?}");
                }
            }
        }
    }

    fn deliver_key(&mut self, key: AgentKey, event: Event, class: Class) {
        match self.registry.get(&key).map(|e| e.route) {
            Some(Route::Local(agent)) => self.deliver(agent, event, class),
            None => {}
        }
    }

    fn binding_of(&self, key: &AgentKey) -> Option<ServiceBinding> {
        self.registry.get(key).map(|e| e.binding.clone())
    }

    // ----- registry and announcements -----

    fn open(&mut self, binding: ServiceBinding, events: Sender<Event>, capacity: usize) {
        let agent = binding.agent_identity();
        let key = binding.key();
        log::debug!("netsvc: service {binding} available");
        // The binding enters without groups; each group is joined (and
        // announced) after the service itself.
        let groups = binding.groups().to_vec();
        let bare = binding.with_groups(Vec::new());
        self.locals.insert(
            agent,
            Local {
                binding: bare.clone(),
                events,
                capacity,
                timers: Vec::new(),
            },
        );
        self.registry.insert(bare.clone(), Route::Local(agent));
        self.announce_service(&bare, ServiceStatus::Available);
        for g in groups {
            self.group(agent, &g, true);
        }
        self.publisher_appeared(key);
    }

    fn announce_service(&mut self, binding: &ServiceBinding, status: ServiceStatus) {
        let monitors = self.registry.name_monitors(binding.service_name()).to_vec();
        for m in monitors {
            let ann = ServiceAnnouncement {
                binding: binding.clone(),
                group: None,
                status,
            };
            self.deliver(m, Event::Announcement(ann), Class::Control);
        }
    }

    fn announce_group(&mut self, binding: &ServiceBinding, group: &str, status: ServiceStatus) {
        let monitors = self.registry.group_monitors(group).to_vec();
        for m in monitors {
            let ann = ServiceAnnouncement {
                binding: binding.clone(),
                group: Some(group.to_owned()),
                status,
            };
            self.deliver(m, Event::Announcement(ann), Class::Control);
        }
    }

    fn group(&mut self, agent: AgentId, group: &str, join: bool) {
        let Some(local) = self.locals.get(&agent) else {
            return;
        };
        let key = local.binding.key();
        let changed = if join {
            self.registry.join(&key, group)
        } else {
            self.registry.leave(&key, group)
        };
        if let Some(binding) = changed {
            if let Some(local) = self.locals.get_mut(&agent) {
                local.binding = binding.clone();
            }
            let status = if join {
                ServiceStatus::Available
            } else {
                ServiceStatus::Withdrawn
            };
            self.announce_group(&binding, group, status);
        }
    }

    fn monitor(&mut self, agent: AgentId, kind: MonitorKind, key: &str, on: bool) {
        if !self.locals.contains_key(&agent) {
            return;
        }
        let by_group = kind == MonitorKind::Group;
        if !self.registry.monitor(by_group, key, agent, on) || !on {
            return;
        }
        // Announce what is already there, then every change.
        let existing: Vec<ServiceBinding> = if by_group {
            self.registry.group_members(key).cloned().collect()
        } else {
            self.registry.by_name(key).cloned().collect()
        };
        for binding in existing {
            let ann = ServiceAnnouncement {
                binding,
                group: by_group.then(|| key.to_owned()),
                status: ServiceStatus::Available,
            };
            self.deliver(agent, Event::Announcement(ann), Class::Control);
        }
    }

    /// Removes a service: its subscriptions, its publications, its groups
    /// (announced first), then the service itself; fails calls it was handling.
    fn withdraw(&mut self, agent: AgentId) {
        let Some(local) = self.locals.remove(&agent) else {
            return;
        };
        let key = local.binding.key();
        log::debug!("netsvc: service {} withdrawn", local.binding);
        for (_, id) in &local.timers {
            self.timers.cancel(*id);
        }
        self.registry.drop_monitors(agent);
        self.subscriber_vanished(key, &local.binding);
        self.publisher_vanished(key, &local.binding);
        for g in local.binding.groups().to_vec() {
            if let Some(b) = self.registry.leave(&key, &g) {
                self.announce_group(&b, &g, ServiceStatus::Withdrawn);
            }
        }
        if let Some(entry) = self.registry.remove(&key) {
            self.announce_service(&entry.binding, ServiceStatus::Withdrawn);
        }
        let failed: Vec<ConversationId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.target == key)
            .map(|(c, _)| *c)
            .collect();
        for conv in failed {
            self.complete(
                conv,
                Err(Error::ServiceUnavailable(format!(
                    "{} was withdrawn while the call was pending",
                    local.binding
                ))),
            );
        }
        // Dropping `local.events` disconnects the queue once it is drained.
    }

    // ----- reports -----

    fn subscribe(&mut self, agent: AgentId, publisher: PublisherSpec, pattern: &str, on: bool) {
        let Some(local) = self.locals.get(&agent) else {
            return;
        };
        let me = local.binding.key();
        match publisher {
            PublisherSpec::Name(name) => {
                let publishers: Vec<ServiceBinding> =
                    self.registry.by_name(&name).cloned().collect();
                if on {
                    // Which publishers this subscriber is new to, before adding.
                    let fresh: Vec<bool> = publishers
                        .iter()
                        .map(|p| !self.reports.subscribed(me, p.key(), &name))
                        .collect();
                    if !self.reports.subscribe_name(me, &name, pattern) {
                        return;
                    }
                    for (p, fresh) in publishers.iter().zip(fresh) {
                        self.subscription_started(me, p, pattern, fresh);
                    }
                } else if self.reports.unsubscribe_name(me, &name, pattern) {
                    for p in &publishers {
                        self.subscription_ended(me, p, pattern);
                    }
                }
            }
            PublisherSpec::Binding(binding) => {
                let pkey = binding.key();
                let Some(p) = self.binding_of(&pkey) else {
                    if on {
                        // Nothing to subscribe to: say so rather than stay silent.
                        let ann = PublisherAnnouncement {
                            publisher: binding,
                            status: ServiceStatus::Withdrawn,
                        };
                        self.deliver(agent, Event::Publisher(ann), Class::Control);
                    }
                    return;
                };
                let name = p.service_name().to_owned();
                if on {
                    let fresh = !self.reports.subscribed(me, pkey, &name);
                    if self.reports.subscribe_agent(me, pkey, pattern) {
                        self.subscription_started(me, &p, pattern, fresh);
                    }
                } else if self.reports.unsubscribe_agent(me, pkey, pattern) {
                    self.subscription_ended(me, &p, pattern);
                }
            }
        }
    }

    /// A subscription of `subscriber` against `publisher` took effect:
    /// Requested to the publisher, Available to the subscriber if it is new
    /// to this publisher, then the matching cached reports.
    fn subscription_started(
        &mut self,
        subscriber: AgentKey,
        publisher: &ServiceBinding,
        pattern: &str,
        fresh: bool,
    ) {
        let Some(sub_binding) = self.binding_of(&subscriber) else {
            return;
        };
        let ann = SubscriptionAnnouncement {
            subscriber: sub_binding,
            subject: pattern.to_owned(),
            status: SubscriptionStatus::Requested,
        };
        self.deliver_key(publisher.key(), Event::Subscription(ann), Class::Control);
        if fresh {
            let ann = PublisherAnnouncement {
                publisher: publisher.clone(),
                status: ServiceStatus::Available,
            };
            self.deliver_key(subscriber, Event::Publisher(ann), Class::Control);
        }
        let cached = self
            .reports
            .cached(publisher.key(), &Pattern::new(pattern), Instant::now());
        for (subject, payload) in cached {
            let report = Report {
                publisher: publisher.clone(),
                subject,
                payload,
            };
            self.deliver_key(subscriber, Event::Report(report), Class::Data);
        }
    }

    /// A subscription ended (the subscriber is still there): Withdrawn to
    /// the publisher, and to the subscriber if nothing else ties it to it.
    fn subscription_ended(
        &mut self,
        subscriber: AgentKey,
        publisher: &ServiceBinding,
        pattern: &str,
    ) {
        if let Some(sub_binding) = self.binding_of(&subscriber) {
            let ann = SubscriptionAnnouncement {
                subscriber: sub_binding,
                subject: pattern.to_owned(),
                status: SubscriptionStatus::Withdrawn,
            };
            self.deliver_key(publisher.key(), Event::Subscription(ann), Class::Control);
        }
        if !self
            .reports
            .subscribed(subscriber, publisher.key(), publisher.service_name())
        {
            let ann = PublisherAnnouncement {
                publisher: publisher.clone(),
                status: ServiceStatus::Withdrawn,
            };
            self.deliver_key(subscriber, Event::Publisher(ann), Class::Control);
        }
    }

    /// A new agent appeared: the subscriptions by its name take effect.
    fn publisher_appeared(&mut self, key: AgentKey) {
        let Some(publisher) = self.binding_of(&key) else {
            return;
        };
        let subs = self.reports.name_subs(publisher.service_name()).to_vec();
        let mut seen: Vec<AgentKey> = Vec::new();
        for s in subs {
            let fresh = !seen.contains(&s.subscriber);
            seen.push(s.subscriber);
            self.subscription_started(s.subscriber, &publisher, s.pattern.as_str(), fresh);
        }
    }

    /// A withdrawn subscriber: every publisher it subscribed to hears so.
    fn subscriber_vanished(&mut self, key: AgentKey, binding: &ServiceBinding) {
        for (target, pattern) in self.reports.remove_subscriber(key) {
            let publishers: Vec<AgentKey> = match target {
                Target::Name(name) => self.registry.by_name(&name).map(|b| b.key()).collect(),
                Target::Agent(a) => vec![a],
            };
            for p in publishers {
                if p == key {
                    continue;
                }
                let ann = SubscriptionAnnouncement {
                    subscriber: binding.clone(),
                    subject: pattern.clone(),
                    status: SubscriptionStatus::Withdrawn,
                };
                self.deliver_key(p, Event::Subscription(ann), Class::Control);
            }
        }
    }

    /// A withdrawn publisher: its subscribers hear so; subscriptions by name
    /// stay for the next agent of that name.
    fn publisher_vanished(&mut self, key: AgentKey, binding: &ServiceBinding) {
        let mut subscribers = Vec::new();
        for s in self.reports.subs_against(key, binding.service_name()) {
            if !subscribers.contains(&s.subscriber) {
                subscribers.push(s.subscriber);
            }
        }
        self.reports.remove_publisher(key);
        for s in subscribers {
            let ann = PublisherAnnouncement {
                publisher: binding.clone(),
                status: ServiceStatus::Withdrawn,
            };
            self.deliver_key(s, Event::Publisher(ann), Class::Control);
        }
    }

    fn publish(&mut self, agent: AgentId, subject: String, payload: Payload, lifetime: Lifetime) {
        let Some(local) = self.locals.get(&agent) else {
            return;
        };
        let publisher = local.binding.clone();
        let key = publisher.key();
        let subject: Arc<str> = subject.into();
        Counters::bump(&self.link.counters.reports_published);
        self.reports
            .store(key, &subject, &payload, lifetime, Instant::now());
        let mut subscribers = std::mem::take(&mut self.scratch);
        subscribers.clear();
        self.reports
            .matching(key, publisher.service_name(), &subject, &mut subscribers);
        for s in subscribers.iter() {
            let report = Report {
                publisher: publisher.clone(),
                subject: subject.clone(),
                payload: payload.clone(),
            };
            self.deliver_key(*s, Event::Report(report), Class::Data);
        }
        self.scratch = subscribers;
    }

    fn send_report(
        &mut self,
        agent: AgentId,
        to: &ServiceBinding,
        subject: String,
        payload: Payload,
    ) {
        let Some(local) = self.locals.get(&agent) else {
            return;
        };
        let publisher = local.binding.clone();
        let to = to.key();
        if !self
            .reports
            .wants(to, publisher.key(), publisher.service_name(), &subject)
        {
            log::debug!("netsvc: send_report from {publisher}: the destination holds no matching subscription");
            return;
        }
        let report = Report {
            publisher,
            subject: subject.into(),
            payload,
        };
        self.deliver_key(to, Event::Report(report), Class::Data);
    }

    // ----- request / reply -----

    fn call(&mut self, call: OutgoingCall) {
        let conv = call.conv;
        let Some(sender) = self.locals.get(&call.from).map(|l| l.binding.clone()) else {
            let _ = call.reply.send(Err(Error::Closed));
            return;
        };
        let timer = self
            .timers
            .start(Instant::now() + call.timeout, TimerKind::Call(conv));
        self.pending.insert(
            conv,
            Pending {
                caller: Caller::Local(call.reply),
                target: call.to.key(),
                timer,
            },
        );
        self.route_request(conv, &call.to, call.method, call.payload, sender);
    }

    /// Hands a request to its destination, or fails its pending call.
    fn route_request(
        &mut self,
        conv: ConversationId,
        to: &ServiceBinding,
        method: String,
        payload: Payload,
        sender: ServiceBinding,
    ) {
        let key = to.key();
        let Some(entry) = self.registry.get(&key) else {
            self.complete(
                conv,
                Err(Error::ServiceUnavailable(format!("{to} is not available"))),
            );
            return;
        };
        let Route::Local(agent) = entry.route;
        let request = Request {
            conv,
            method,
            sender,
            receiver: entry.binding.clone(),
            payload,
            link: self.link.clone(),
            answered: false,
        };
        match self.try_deliver(agent, Event::Request(request), Class::Data) {
            Ok(()) => Counters::bump(&self.link.counters.requests_delivered),
            Err(refused) => {
                let (event, error) = match refused {
                    Refused::Full(event) => {
                        Counters::bump(&self.link.counters.busy_replies);
                        let failure = ServiceFailure::new(codes::SERVICE_BUSY, "service busy")
                            .with_origin(to.service_name())
                            .with_details("the service's queue is full");
                        (event, Error::Service(failure))
                    }
                    Refused::Gone(event) => {
                        (event, Error::ServiceUnavailable(format!("{to} is closing")))
                    }
                };
                if let Event::Request(mut r) = event {
                    r.disarm();
                }
                self.complete(conv, Err(error));
            }
        }
    }

    fn forward(
        &mut self,
        conv: ConversationId,
        to: &ServiceBinding,
        method: String,
        payload: Payload,
        sender: ServiceBinding,
    ) {
        let Some(p) = self.pending.get_mut(&conv) else {
            Counters::bump(&self.link.counters.late_replies);
            return; // the caller is gone: nothing to forward for
        };
        p.target = to.key();
        self.route_request(conv, to, method, payload, sender);
    }

    /// Hands the outcome of a call to its caller, once.
    fn complete(&mut self, conv: ConversationId, result: Result<Payload>) {
        let Some(p) = self.pending.remove(&conv) else {
            Counters::bump(&self.link.counters.late_replies);
            return;
        };
        self.timers.cancel(p.timer);
        match p.caller {
            Caller::Local(tx) => {
                if tx.try_send(result).is_ok() {
                    Counters::bump(&self.link.counters.replies_delivered);
                }
            }
        }
    }
}
