//! The dispatcher thread: a `mio::Poll` loop that owns every piece of routing
//! state and never blocks on a service or a socket.

mod calls;
mod fanout;
mod net;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TrySendError};
use mio::{Events, Poll, Token};

use super::idmap::IdMap;
use super::timers::{TimerId, Timers};
use crate::config::{deadline, NO_LIMIT};
use crate::direct::Waiting;
use crate::error::{Error, Result};
use crate::event::{
    Answer, Event, Lifetime, PublisherAnnouncement, Report, Request, ServiceAnnouncement,
    ServiceStatus, SubscriptionAnnouncement, SubscriptionStatus,
};
use crate::ids::{AgentId, AgentKey, ConversationId, ServiceBinding};
use crate::mailbox::command::{
    Command, Destination, ExchangeRole, MonitorKind, OutgoingCall, PublisherSpec,
};
use crate::mailbox::inbox::Inbox;
use crate::mailbox::{Link, ON_DISPATCHER};
use crate::pattern::Pattern;
use crate::registry::{Registry, Route};
use crate::reports::{Reports, Target};
use crate::stats::Counters;
use crate::wire::Payload;

/// The shortest period of the heartbeats a callee sends for a call being
/// handled, whatever the caller asked (a caller's monitor timeout is at
/// least twice this): a peer asking for a period of 0 gets this.
pub(crate) const MIN_PROGRESS: Duration = Duration::from_millis(50);

/// The waker's token; sockets use the tokens above it.
pub(crate) const WAKER: Token = Token(0);

/// At most this many commands are handled between two polls, so timers and
/// sockets are served even while senders flood the queue.
const COMMANDS_PER_TURN: usize = 4096;

/// A service of this dispatcher, as the dispatcher sees it.
struct Local {
    binding: ServiceBinding,
    /// Its queue. Requests and reports are refused beyond `inbox.capacity`
    /// queued events; control events may use the channel's reserve beyond
    /// it. The only strong reference: dropping it ends direct calls.
    inbox: Arc<Inbox>,
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
    /// A thread of this process.
    Local(crate::oneshot::Sender<Result<Payload>>),
    /// A peer, through the exchange connection with this token.
    Remote(usize),
}

struct Pending {
    caller: Caller,
    /// The agent currently handling the call; its withdrawal fails the call.
    /// `None` while the call waits for a destination to appear.
    target: Option<AgentKey>,
    timer: TimerId,
    deadline: Instant,
    /// Caller side: fail the call if no heartbeat comes within the period.
    monitor: Option<(Duration, TimerId)>,
    /// Callee side: while the request is handled here, a heartbeat goes to
    /// the caller every period.
    heartbeat: Option<(Duration, TimerId)>,
    /// The exchange connection the request went out on, if it went to a
    /// peer: the only one whose reply is taken.
    via: Option<usize>,
}

impl Pending {
    fn new(caller: Caller, target: Option<AgentKey>, timer: TimerId, deadline: Instant) -> Self {
        Pending {
            caller,
            target,
            timer,
            deadline,
            monitor: None,
            heartbeat: None,
            via: None,
        }
    }
}

/// How a request travels besides its destination.
#[derive(Debug, Clone, Copy, Default)]
struct RouteOpts {
    oneway: bool,
    heartbeat: Option<Duration>,
}

/// A call waiting for an agent of a name or a group to appear.
struct Parked {
    conv: ConversationId,
    to: Destination,
    method: String,
    payload: Payload,
    sender: ServiceBinding,
    opts: RouteOpts,
    timer: TimerId,
}

enum TimerKind {
    Call(ConversationId),
    Service {
        agent: AgentId,
        tag: u64,
    },
    Shutdown,
    /// A client exchange tries to connect again.
    Reconnect(u64),
    /// A connection that has not completed its handshake by now is closed.
    Handshake(usize),
    /// A parked call gives up waiting for a destination.
    Park(ConversationId),
    /// Callee side: send a heartbeat for a call being handled.
    Heartbeat(ConversationId),
    /// Caller side: no heartbeat came within the period.
    Monitor(ConversationId),
    /// Heartbeats and dead-peer checks on the exchange links.
    Liveness,
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
    locals: IdMap<AgentId, Local>,
    pending: calls::Calls,
    timers: Timers<TimerKind>,
    /// Reused buffer for report fan-out.
    scratch: Vec<AgentKey>,
    /// Where recent reports went, by publisher and subject.
    fanouts: fanout::FanoutCache,
    net: net::Net,
    /// Calls waiting for a destination.
    parked: Vec<Parked>,
    /// Round-robin position per name or group.
    turns: Turns,
    /// Set as the dispatcher stops: calls still waiting fail as Closed.
    stopping: bool,
}

impl Drop for EventLoop {
    /// After [`stop`](Self::stop) nothing is left here. After a panic
    /// everything is: every local caller still waiting, routed or direct,
    /// fails with [`Error::Closed`] now rather than waiting out its timeout.
    /// (Remote callers see their connection close.)
    fn drop(&mut self) {
        let counters = &self.link.counters;
        for (_, p) in self.pending.drain() {
            if let Caller::Local(tx) = p.caller {
                counters.hand_over(&tx, Err(Error::Closed));
            }
        }
        for local in self.locals.values() {
            local.inbox.calls.close(Some(&|| Error::Closed), counters);
        }
    }
}

impl EventLoop {
    pub(crate) fn new(link: Arc<Link>, poll: Poll, commands: Receiver<Command>) -> Self {
        EventLoop {
            link,
            poll,
            commands,
            registry: Registry::default(),
            reports: Reports::default(),
            locals: IdMap::default(),
            pending: calls::Calls::default(),
            timers: Timers::new(),
            scratch: Vec::new(),
            fanouts: fanout::FanoutCache::default(),
            net: net::Net::default(),
            parked: Vec::new(),
            turns: Turns::default(),
            stopping: false,
        }
    }

    pub(crate) fn run(mut self) -> Result<()> {
        ON_DISPATCHER.with(|f| f.set(true));
        let mut events = Events::with_capacity(256);
        let mut more_commands = false;
        loop {
            let timeout = if more_commands || self.net.has_work() {
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
            if self.link.stop_now() {
                self.stop();
                return Ok(());
            }
            for event in events.iter() {
                if event.token() != WAKER {
                    self.net_event(event);
                }
            }
            self.read_stalled();
            // Wake events carry no data: the commands are in the channel.
            // Clear the flag before draining, so a command sent after the
            // drain wakes the next poll.
            self.link
                .wake_pending()
                .store(false, std::sync::atomic::Ordering::SeqCst);
            more_commands = false;
            // A congested peer holds commands back: senders block on the
            // bounded queue, which is the pressure a fast publisher feels.
            let turn = if self.net.congested() {
                0
            } else {
                COMMANDS_PER_TURN
            };
            for _ in 0..turn {
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
            // Everything queued for peers this turn goes out now, batched.
            self.flush_dirty();
            if !self.net.congested() && !self.commands.is_empty() {
                more_commands = true;
            }
        }
    }

    fn handle(&mut self, cmd: Command) -> Flow {
        match cmd {
            Command::Open {
                binding,
                inbox,
                ack,
            } => {
                self.open(binding, inbox);
                let _ = ack.send(());
            }
            Command::Close { agent, drain } => self.withdraw(agent, drain),
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
            Command::Done { conv, delivered } => {
                if let Some(p) = self.pending.remove(&conv) {
                    self.cancel_timers(conv, &p);
                }
                if !delivered {
                    Counters::bump(&self.link.counters.late_replies);
                }
            }
            Command::Reply { conv, result } => {
                self.complete(conv, result.map_err(Error::Service));
            }
            Command::Forward {
                conv,
                to,
                method,
                payload,
                sender,
                caller,
            } => self.forward(conv, &to, method, payload, sender, caller),
            Command::Cancel { conv } => self.forget(conv),
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
                    .start(deadline(Instant::now(), delay), TimerKind::Shutdown);
            }
            Command::ExchangeOpen {
                id,
                group,
                mut role,
                secret,
                announce,
                ack,
            } => {
                if let ExchangeRole::Client {
                    retry: Some(delay), ..
                } = &mut role
                {
                    // A delay past any lifetime means: never again (and its
                    // jitter must not overflow).
                    *delay = (*delay).min(NO_LIMIT);
                }
                let _ = ack.send(self.exchange_open(id, group, role, secret, announce));
            }
            Command::ExchangeClose { id, ack } => {
                self.exchange_close(id);
                let _ = ack.send(());
            }
            Command::ExchangeLocalAddr { id, reply } => {
                let _ = reply.send(self.exchange_local_addr(id));
            }
            Command::Authorised { token, allowed } => self.authorised(token, allowed),
            Command::Shutdown => return Flow::Stop,
            Command::Stall(release) => {
                let _ = release.recv();
            }
            Command::Panic => panic!("panic_dispatcher: a panic on purpose, for a test"),
        }
        Flow::Continue
    }

    fn fire(&mut self, id: TimerId, kind: TimerKind) -> Flow {
        match kind {
            TimerKind::Call(conv) => match self.pending.get(&conv).map(|p| &p.caller) {
                // A hop on the way (or the callee) forgets the call quietly:
                // the caller has its own deadline and says so itself.
                Some(Caller::Remote(_)) => self.forget(conv),
                Some(Caller::Local(_)) => {
                    let parked = self.parked.iter().find(|p| p.conv == conv);
                    let e = if let Some(p) = parked {
                        Error::DeliveryFailure(format!(
                            "no server for {} was reachable before the call's timeout: \
                             none was known here when it was made, and none appeared since \
                             ({})",
                            describe(&p.to),
                            self.links_state()
                        ))
                    } else {
                        Counters::bump(&self.link.counters.calls_timed_out);
                        Error::Timeout
                    };
                    self.complete(conv, Err(e));
                }
                None => {}
            },
            TimerKind::Service { agent, tag } => {
                if let Some(local) = self.locals.get_mut(&agent) {
                    // Forget this one timer; others with the same tag stay.
                    local.timers.retain(|(_, t)| *t != id);
                    self.deliver(agent, Event::Timer(tag), Class::Control);
                }
            }
            TimerKind::Shutdown => return Flow::Stop,
            TimerKind::Reconnect(exchange) => self.reconnect_due(exchange),
            TimerKind::Park(conv) => {
                if let Some(i) = self.parked.iter().position(|p| p.conv == conv) {
                    let parked = self.parked.swap_remove(i);
                    let e = Error::DeliveryFailure(format!(
                        "no server for {} appeared while the call waited for one ({})",
                        describe(&parked.to),
                        self.links_state()
                    ));
                    self.complete(conv, Err(e));
                }
            }
            TimerKind::Heartbeat(conv) => self.heartbeat(conv),
            TimerKind::Liveness => self.liveness(),
            TimerKind::Monitor(conv) => {
                if self.pending.contains_key(&conv) {
                    Counters::bump(&self.link.counters.calls_timed_out);
                    self.complete(conv, Err(Error::Timeout));
                }
            }
            TimerKind::Handshake(token) => self.handshake_expired(token),
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
        self.stopping = true;
        let convs: Vec<ConversationId> = self.pending.keys().copied().collect();
        for conv in convs {
            self.complete(conv, Err(Error::Closed));
        }
        for agent in self.sorted_locals().into_iter().rev() {
            self.withdraw(agent, false);
        }
        if !self.net.is_empty() {
            self.net_stop();
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
        if class == Class::Data && local.inbox.events.len() >= local.inbox.capacity {
            return Err(Refused::Full(event));
        }
        match local.inbox.events.try_send(event) {
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
                    // (A peer's subscriptions can cause these in any number.)
                    self.net.warnings.warn(
                        "dropped",
                        format_args!(
                            "queue of agent {agent} is full beyond its reserve; dropped {event:?}"
                        ),
                    );
                }
            }
        }
    }

    /// Delivers an event to an agent wherever it is: on a local queue, or
    /// as the frame that carries it to a peer.
    fn deliver_key(&mut self, key: AgentKey, event: Event, class: Class) {
        match self.route_of(&key) {
            Some(Route::Local(agent)) => self.deliver(agent, event, class),
            Some(Route::Remote(token)) => self.deliver_remote(token, key, event),
            None => {}
        }
    }

    // ----- registry and announcements -----

    fn open(&mut self, binding: ServiceBinding, inbox: Arc<Inbox>) {
        let agent = binding.agent_identity();
        log::debug!("netsvc: service {binding} available");
        self.locals.insert(
            agent,
            Local {
                binding: binding.clone(),
                inbox,
                timers: Vec::new(),
            },
        );
        self.add_agent(binding, Route::Local(agent));
    }

    /// A new agent, local or remote: the service is announced, then each of
    /// its groups, then subscriptions by its name take effect; peers hear of
    /// it where its audience allows. The agent enters the registry with all
    /// its groups at once (joining them one by one copied the group list
    /// per group: quadratic in what a peer sent).
    fn add_agent(&mut self, binding: ServiceBinding, route: Route) {
        let key = binding.key();
        let binding = self.registry.insert(binding, route);
        if let Route::Local(agent) = route {
            if let Some(local) = self.locals.get_mut(&agent) {
                local.binding = binding.clone();
            }
        }
        self.announce_service(&binding, ServiceStatus::Available);
        for g in binding.groups() {
            self.announce_group(&binding, g, ServiceStatus::Available);
        }
        self.publisher_appeared(key);
        self.unpark();
        self.broadcast(
            &binding,
            route,
            &crate::wire::Message::Available {
                binding: binding.clone(),
            },
        );
    }

    fn announce_service(&mut self, binding: &ServiceBinding, status: ServiceStatus) {
        let monitors = self.registry.name_monitors(binding.service_name());
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
        let monitors = self.registry.group_monitors(group);
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
        if let Some(local) = self.locals.get(&agent) {
            let key = local.binding.key();
            self.change_group(key, group, join);
        }
    }

    /// Joins or leaves a group, local or remote: group monitors and peers hear of it.
    fn change_group(&mut self, key: AgentKey, group: &str, join: bool) {
        let changed = if join {
            self.registry.join(&key, group)
        } else {
            self.registry.leave(&key, group)
        };
        let Some(binding) = changed else {
            return;
        };
        if let Some(Route::Local(agent)) = self.route_of(&key) {
            if let Some(local) = self.locals.get_mut(&agent) {
                local.binding = binding.clone();
            }
        }
        let status = if join {
            ServiceStatus::Available
        } else {
            ServiceStatus::Withdrawn
        };
        self.announce_group(&binding, group, status);
        if join {
            self.unpark();
        }
        if let Some(route) = self.route_of(&key) {
            let message = crate::wire::Message::Group {
                agent: key,
                group: group.to_owned(),
                joined: join,
            };
            self.broadcast(&binding, route, &message);
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

    /// Removes a local service: its timers and monitors, then everything
    /// [`remove_agent`](Self::remove_agent) does.
    fn withdraw(&mut self, agent: AgentId, drain: bool) {
        // Out of `locals` first: the withdrawn service hears nothing more.
        // Dropping its queue's sender disconnects the queue once drained.
        let Some(local) = self.locals.remove(&agent) else {
            return;
        };
        log::debug!("netsvc: service {} withdrawn", local.binding);
        for (_, id) in &local.timers {
            self.timers.cancel(*id);
        }
        // Callers that came straight to its queue are failed as the
        // dispatcher's own would be (unless it drains), and no more come.
        let binding = &local.binding;
        let stopping = self.stopping;
        let why = move || match stopping {
            true => Error::Closed,
            false => {
                Error::ServiceUnavailable(format!("{binding} withdrawn while the call was pending"))
            }
        };
        let counters = &self.link.counters;
        local.inbox.calls.close((!drain).then_some(&why), counters);
        self.registry.drop_monitors(agent);
        self.remove_agent(local.binding.key(), "withdrawn", !drain);
    }

    /// Removes an agent, local or remote: its subscriptions, its
    /// publications, its groups (announced first), then the agent itself;
    /// peers hear of it; calls it was handling fail as unavailable.
    fn remove_agent(&mut self, key: AgentKey, why: &str, fail_pending: bool) {
        let Some(binding) = self.binding_of(&key) else {
            return;
        };
        self.subscriber_vanished(key, &binding);
        self.publisher_vanished(key, &binding);
        // All groups at once (one by one copies the group list per group).
        if let Some((bare, groups)) = self.registry.leave_all(&key) {
            for g in &groups {
                self.announce_group(&bare, g, ServiceStatus::Withdrawn);
            }
        }
        if let Some(entry) = self.registry.remove(&key) {
            self.announce_service(&entry.binding, ServiceStatus::Withdrawn);
            let message = crate::wire::Message::Withdrawn {
                agent: key,
                draining: !fail_pending,
            };
            self.broadcast(&entry.binding, entry.route, &message);
        }
        if !fail_pending {
            return;
        }
        for conv in self.pending.targeting(&key) {
            self.complete(
                conv,
                Err(Error::ServiceUnavailable(format!(
                    "{binding} {why} while the call was pending"
                ))),
            );
        }
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
                if !self.subscribe_agent(me, binding.key(), pattern, on, None) && on {
                    // Nothing to subscribe to: say so rather than stay silent.
                    let ann = PublisherAnnouncement {
                        publisher: binding,
                        status: ServiceStatus::Withdrawn,
                    };
                    self.deliver(agent, Event::Publisher(ann), Class::Control);
                }
            }
        }
    }

    /// A subscription of `me` to one publisher agent starts or ends; false
    /// if there is no such publisher. `owner`: the exchange connection whose
    /// peer asked, if one did (the subscription counts against it).
    fn subscribe_agent(
        &mut self,
        me: AgentKey,
        pkey: AgentKey,
        pattern: &str,
        on: bool,
        owner: Option<usize>,
    ) -> bool {
        let Some(p) = self.registry.get(&pkey).map(|e| e.binding.clone()) else {
            return false;
        };
        let name = p.service_name().to_owned();
        if on {
            let fresh = !self.reports.subscribed(me, pkey, &name);
            if self.reports.subscribe_agent(me, pkey, pattern, owner) {
                self.subscription_started(me, &p, pattern, fresh);
            }
        } else if self.reports.unsubscribe_agent(me, pkey, pattern) {
            self.subscription_ended(me, &p, pattern);
        }
        true
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
        let subs = self.reports.name_subs(publisher.service_name());
        let mut seen: std::collections::HashSet<AgentKey> = std::collections::HashSet::new();
        for s in subs {
            let fresh = seen.insert(s.subscriber);
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
        let mut seen = std::collections::HashSet::new();
        for s in self.reports.subs_against(key, binding.service_name()) {
            if seen.insert(s.subscriber) {
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
        Counters::bump(&self.link.counters.reports_published);
        // Local subscribers get the report on their queues; each connection
        // leading to remote subscribers gets one frame, encoded once.
        self.with_fanout(key, Some(&publisher), &subject, |this, fanout| {
            this.reports.store(key, &fanout.subject, &payload, lifetime);
            this.deliver_reports(&fanout.locals, &publisher, &fanout.subject, &payload);
            if !fanout.remotes.is_empty() {
                this.send_report_frame(&fanout.remotes, key, None, &fanout.subject, &payload);
            }
        });
    }

    /// Puts one report on the queues of these local subscribers.
    fn deliver_reports(
        &mut self,
        agents: &[AgentId],
        publisher: &ServiceBinding,
        subject: &Arc<str>,
        payload: &Payload,
    ) {
        for &agent in agents {
            let report = Report {
                publisher: publisher.clone(),
                subject: subject.clone(),
                payload: payload.clone(),
            };
            self.deliver(agent, Event::Report(report), Class::Data);
        }
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
        let now = Instant::now();
        let until = deadline(now, call.timeout);
        let timer = self.timers.start(until, TimerKind::Call(conv));
        let mut pending = Pending::new(Caller::Local(call.reply), None, timer, until);
        if let Some(period) = call.monitor {
            let period = period.max(2 * MIN_PROGRESS);
            let t = self
                .timers
                .start(deadline(now, period), TimerKind::Monitor(conv));
            pending.monitor = Some((period, t));
        }
        self.pending.insert(conv, pending);
        let opts = RouteOpts {
            oneway: call.oneway,
            heartbeat: call.monitor.map(|d| (d / 2).clamp(MIN_PROGRESS, NO_LIMIT)),
        };
        match call.to {
            Destination::Agent(b) if self.registry.get(&b.key()).is_none() => {
                let e = Error::ServiceUnavailable(format!(
                    "{b} is not known here: withdrawn, or its process is not linked"
                ));
                self.complete(conv, Err(e));
            }
            Destination::Agent(b) => {
                self.route_request(conv, b.key(), call.method, call.payload, sender, None, opts)
            }
            Destination::Pools(name) => {
                let opts = RouteOpts {
                    oneway: true,
                    ..opts
                };
                for key in self.pool_picks(&name) {
                    let (method, payload) = (call.method.clone(), call.payload.clone());
                    self.route_request(conv, key, method, payload, sender.clone(), None, opts);
                }
            }
            Destination::AllOf(group) => {
                let members: Vec<AgentKey> = self
                    .registry
                    .group_members(&group)
                    .map(|b| b.key())
                    .collect();
                let opts = RouteOpts {
                    oneway: true,
                    ..opts
                };
                for key in members {
                    let (method, payload) = (call.method.clone(), call.payload.clone());
                    self.route_request(conv, key, method, payload, sender.clone(), None, opts);
                }
            }
            to @ (Destination::Name(_) | Destination::Group(_)) => match self.pick(&to) {
                Some(key) => {
                    self.route_request(conv, key, call.method, call.payload, sender, None, opts)
                }
                None => match call.wait {
                    Some(wait) if !wait.is_zero() => {
                        let at = deadline(now, wait.min(call.timeout));
                        let timer = self.timers.start(at, TimerKind::Park(conv));
                        self.parked.push(Parked {
                            conv,
                            to,
                            method: call.method,
                            payload: call.payload,
                            sender,
                            opts,
                            timer,
                        });
                        return;
                    }
                    _ => {
                        let e = Error::DeliveryFailure(format!(
                            "no server for {} is known here, and the call may not wait ({})",
                            describe(&to),
                            self.links_state()
                        ));
                        self.complete(conv, Err(e));
                        return;
                    }
                },
            },
        }
        if call.oneway && self.pending.contains_key(&conv) {
            // A cast is done once handed on.
            self.complete(conv, Ok(Payload::from(Vec::new())));
        }
    }

    /// The next agent, in turn, for a name or group destination.
    /// Runs on every call to a topic: no allocation once a name or group
    /// has had its first turn.
    fn pick(&mut self, to: &Destination) -> Option<AgentKey> {
        match to {
            Destination::Name(n) => {
                let count = self.registry.by_name(n).count();
                let i = next_turn(&mut self.turns.names, n, count)?;
                self.registry.by_name(n).nth(i).map(|b| b.key())
            }
            Destination::Group(g) => {
                let count = self.registry.group_members(g).count();
                let i = next_turn(&mut self.turns.groups, g, count)?;
                self.registry.group_members(g).nth(i).map(|b| b.key())
            }
            _ => None,
        }
    }

    /// One agent of the name per pool, each pool in turn.
    fn pool_picks(&mut self, name: &str) -> Vec<AgentKey> {
        let mut pools: Vec<(String, Vec<AgentKey>)> = Vec::new();
        for b in self.registry.by_name(name) {
            let pool = match b.groups().first() {
                Some(g) => g.clone(),
                None => format!("agent:{:?}", b.key()),
            };
            match pools.iter_mut().find(|(p, _)| *p == pool) {
                Some((_, members)) => members.push(b.key()),
                None => pools.push((pool, vec![b.key()])),
            }
        }
        pools
            .into_iter()
            .filter_map(|(pool, members)| {
                next_turn(&mut self.turns.pools, &pool, members.len()).map(|i| members[i])
            })
            .collect()
    }

    /// Routes the parked calls whose destination now has an agent.
    fn unpark(&mut self) {
        let mut i = 0;
        while i < self.parked.len() {
            let to = self.parked[i].to.clone();
            match self.pick(&to) {
                Some(key) => {
                    let p = self.parked.swap_remove(i);
                    self.timers.cancel(p.timer);
                    let oneway = p.opts.oneway;
                    let conv = p.conv;
                    self.route_request(conv, key, p.method, p.payload, p.sender, None, p.opts);
                    if oneway && self.pending.contains_key(&conv) {
                        self.complete(conv, Ok(Payload::from(Vec::new())));
                    }
                }
                None => i += 1,
            }
        }
    }

    /// Callee side: the request is still being handled; tell the caller.
    fn heartbeat(&mut self, conv: ConversationId) {
        let Some(p) = self.pending.get_mut(&conv) else {
            return;
        };
        let Some((period, _)) = p.heartbeat else {
            return;
        };
        let timer = self
            .timers
            .start(deadline(Instant::now(), period), TimerKind::Heartbeat(conv));
        p.heartbeat = Some((period, timer));
        match p.caller {
            Caller::Local(_) => self.progress(conv),
            Caller::Remote(token) => self.send(token, &crate::wire::Message::Progress { conv }),
        }
    }

    /// A heartbeat for a call arrived (or was made here): the caller's
    /// monitor starts again, or the heartbeat goes on toward the caller.
    fn progress(&mut self, conv: ConversationId) {
        let Some(p) = self.pending.get_mut(&conv) else {
            return;
        };
        if let Some((period, timer)) = p.monitor {
            self.timers.cancel(timer);
            let timer = self
                .timers
                .start(deadline(Instant::now(), period), TimerKind::Monitor(conv));
            p.monitor = Some((period, timer));
        } else if let Caller::Remote(token) = p.caller {
            self.send(token, &crate::wire::Message::Progress { conv });
        }
    }

    /// Hands a request to its destination, local or remote, or fails its
    /// pending call. `relay` is the connection a request came from and its
    /// frame, to pass on unchanged.
    #[allow(clippy::too_many_arguments)]
    fn route_request(
        &mut self,
        conv: ConversationId,
        to: AgentKey,
        method: String,
        payload: Payload,
        sender: ServiceBinding,
        relay: Option<(usize, &[u8])>,
        opts: RouteOpts,
    ) {
        if !opts.oneway {
            self.pending.set_target(conv, to);
        }
        let Some(entry) = self.registry.get(&to) else {
            self.complete(
                conv,
                Err(Error::ServiceUnavailable(format!(
                    "the service {to} is not known here: withdrawn, or its process is not linked"
                ))),
            );
            return;
        };
        let receiver = entry.binding.clone();
        let agent = match entry.route {
            Route::Local(agent) => agent,
            Route::Remote(token) => {
                if relay.is_some_and(|(from, _)| from == token) {
                    let e =
                        Error::ServiceUnavailable(format!("{receiver} is not reachable from here"));
                    self.complete(conv, Err(e));
                    return;
                }
                self.request_remote(
                    token,
                    conv,
                    to,
                    method,
                    payload,
                    sender,
                    relay.map(|(_, raw)| raw),
                    opts,
                );
                return;
            }
        };
        let request = Request {
            conv,
            method,
            sender,
            receiver: receiver.clone(),
            payload,
            link: self.link.clone(),
            answered: false,
            oneway: opts.oneway,
            answer: match self.pending.get(&conv).map(|p| &p.caller) {
                Some(Caller::Local(tx)) if !opts.oneway => Answer::Tracked(tx.clone()),
                _ => Answer::Dispatcher,
            },
        };
        match self.try_deliver(agent, Event::Request(request), Class::Data) {
            Ok(()) => {
                Counters::bump(&self.link.counters.requests_delivered);
                if let Some(period) = opts.heartbeat {
                    // A peer says how often; not so often that it costs a spin.
                    let period = period.max(MIN_PROGRESS);
                    if let Some(p) = self.pending.get_mut(&conv) {
                        let timer = self
                            .timers
                            .start(deadline(Instant::now(), period), TimerKind::Heartbeat(conv));
                        p.heartbeat = Some((period, timer));
                    }
                }
            }
            Err(refused) => {
                let (event, error) = match refused {
                    Refused::Full(Event::Request(mut r))
                        if opts.oneway && !self.pending.contains_key(&conv) =>
                    {
                        // A cast whose sender was already told it was sent
                        // (it came from a peer): nobody to answer, so it is
                        // counted and said here.
                        r.disarm();
                        Counters::bump(&self.link.counters.casts_dropped);
                        log::warn!("netsvc: a cast to {receiver} was dropped: its queue is full");
                        return;
                    }
                    Refused::Full(event) => {
                        Counters::bump(&self.link.counters.busy_replies);
                        let failure = crate::error::busy(receiver.service_name());
                        (event, Error::Service(failure))
                    }
                    Refused::Gone(event) => (
                        event,
                        Error::ServiceUnavailable(format!("{receiver} is closing")),
                    ),
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
        caller: Option<Waiting>,
    ) {
        if let Some(w) = caller {
            // Until now the call went straight from caller to callee.
            let timer = self.timers.start(w.deadline, TimerKind::Call(conv));
            let p = Pending::new(Caller::Local(w.reply), None, timer, w.deadline);
            self.pending.insert(conv, p);
        }
        if !self.pending.contains_key(&conv) {
            Counters::bump(&self.link.counters.late_replies);
            return; // the caller is gone: nothing to forward for
        }
        self.pending.set_target(conv, to.key());
        self.route_request(
            conv,
            to.key(),
            method,
            payload,
            sender,
            None,
            RouteOpts::default(),
        );
    }

    /// Drops a call without answering anyone (its caller gave up, or has
    /// its own deadline).
    fn forget(&mut self, conv: ConversationId) {
        if let Some(p) = self.pending.remove(&conv) {
            self.cancel_timers(conv, &p);
        }
    }

    fn cancel_timers(&mut self, conv: ConversationId, p: &Pending) {
        self.timers.cancel(p.timer);
        for (_, t) in p.monitor.iter().chain(p.heartbeat.iter()) {
            self.timers.cancel(*t);
        }
        if !self.parked.is_empty() {
            if let Some(i) = self.parked.iter().position(|x| x.conv == conv) {
                let parked = self.parked.swap_remove(i);
                self.timers.cancel(parked.timer);
            }
        }
    }

    /// Hands the outcome of a call to its caller, once.
    fn complete(&mut self, conv: ConversationId, result: Result<Payload>) {
        let Some(p) = self.pending.remove(&conv) else {
            Counters::bump(&self.link.counters.late_replies);
            return;
        };
        self.cancel_timers(conv, &p);
        match p.caller {
            Caller::Local(tx) => {
                self.link.counters.hand_over(&tx, result);
            }
            Caller::Remote(token) => {
                let message = crate::wire::Message::Reply {
                    conv,
                    result: result.map_err(crate::wire::Failure::from),
                };
                self.send(token, &message);
                Counters::bump(&self.link.counters.replies_delivered);
            }
        }
    }
}

/// Round-robin positions: per service name, group, and notification pool.
#[derive(Default)]
struct Turns {
    names: HashMap<String, usize>,
    groups: HashMap<String, usize>,
    pools: HashMap<String, usize>,
}

/// The index whose turn it is among `count` candidates under `key`, and
/// the turn moves on; `None` if there are none.
fn next_turn(turns: &mut HashMap<String, usize>, key: &str, count: usize) -> Option<usize> {
    if count == 0 {
        return None;
    }
    let turn = match turns.get_mut(key) {
        Some(t) => t,
        None => turns.entry(key.to_owned()).or_insert(0),
    };
    let i = *turn % count;
    *turn = turn.wrapping_add(1);
    Some(i)
}

/// A destination as text, for errors.
fn describe(to: &Destination) -> String {
    match to {
        Destination::Agent(b) => b.to_string(),
        Destination::Name(n) => format!("name {n:?}"),
        Destination::Group(g) | Destination::AllOf(g) => format!("group {g:?}"),
        Destination::Pools(n) => format!("pools of {n:?}"),
    }
}
