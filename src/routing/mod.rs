//! The routing core: every piece of routing state (the registry of
//! services, subscriptions and their cached reports, pending and parked
//! calls, the timers that bound them) and every routing decision, with no
//! I/O. It runs on the dispatcher thread, called by the event loop.
//!
//! It knows the links to other processes only as [`PeerId`]s. Transports
//! tell it what came up ([`Core::peer_up`]), what arrived ([`Core::frame`])
//! and what went down ([`Core::peer_down`]); it asks them to carry frames
//! or close links through its [`Outbox`] (see [`peers`]). Local services
//! are reached through their queues, which is not I/O: a full queue is
//! refused, never waited on.
//!
//! - [`services`]: the registry, announcements, groups, monitors;
//! - [`subscriptions`]: subscriptions, publishing, the report cache;
//! - [`requests`]: calls, their routing, deadlines and heartbeats;
//! - [`remote`]: what peers send and what is sent to them, checked against
//!   the link it came on and its limits;
//! - [`registry`], [`reports`], [`calls`], [`fanout`]: the tables;
//! - [`timers`], [`idmap`]: the timer heap and the maps keyed by ids the
//!   dispatcher issues.

pub(crate) mod calls;
pub(crate) mod fanout;
pub(crate) mod flow;
pub(crate) mod idmap;
pub(crate) mod peers;
pub(crate) mod registry;
mod remote;
pub(crate) mod reports;
mod requests;
mod services;
mod subscriptions;
pub(crate) mod timers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::TrySendError;

use crate::config::deadline;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::ids::{AgentId, AgentKey, ConversationId, ServiceBinding};
use crate::mailbox::command::{Command, Destination};
use crate::mailbox::inbox::Inbox;
use crate::mailbox::Link;
use crate::pattern::Pattern;
use crate::stats::Counters;
use crate::warnings::Warnings;
use crate::wire::Payload;
use idmap::IdMap;
pub(crate) use peers::{Kind, Outbox, PeerId, PeerInfo};
use registry::{Registry, Route};
pub(crate) use remote::Taken;
use reports::Reports;
use requests::describe;
use timers::{TimerId, Timers};

/// The shortest period of the heartbeats a callee sends for a call being
/// handled, whatever the caller asked (a caller's monitor timeout is at
/// least twice this): a peer asking for a period of 0 gets this.
pub(crate) const MIN_PROGRESS: Duration = Duration::from_millis(50);

/// A service of this dispatcher, as the dispatcher sees it.
struct Local {
    binding: ServiceBinding,
    /// Its queue. Requests and reports are refused beyond `inbox.capacity`
    /// queued events; control events may use the channel's reserve beyond
    /// it. The only strong reference: dropping it ends direct calls.
    inbox: Arc<Inbox>,
    timers: Vec<(u64, TimerId)>,
    /// Reports waiting for room on its queue (see `flow`).
    flow: flow::LocalFlow,
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
pub(crate) enum Caller {
    /// A thread of this process.
    Local(crate::oneshot::Sender<Result<Payload>>),
    /// A peer, through the link with this id.
    Remote(PeerId),
}

pub(crate) struct Pending {
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
    /// The link the request went out on, if it went to a peer: the only
    /// one whose reply is taken.
    via: Option<PeerId>,
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

/// What the core's timers are for.
pub(crate) enum TimerKind {
    Call(ConversationId),
    Service {
        agent: AgentId,
        tag: u64,
    },
    Shutdown,
    /// A parked call gives up waiting for a destination.
    Park(ConversationId),
    /// Callee side: send a heartbeat for a call being handled.
    Heartbeat(ConversationId),
    /// Caller side: no heartbeat came within the period.
    Monitor(ConversationId),
}

/// Whether the dispatcher goes on after a command or a timer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Stop,
}

/// How the dispatcher's links stand, as the transports count them: for
/// the errors of calls that found no destination.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LinkCounts {
    /// Exchanges (and in-memory hubs) this dispatcher has.
    pub exchanges: usize,
    /// Links up.
    pub up: usize,
    /// Links in their handshake.
    pub handshaking: usize,
    /// Client exchanges with no link.
    pub down: usize,
}

impl std::ops::Add for LinkCounts {
    type Output = LinkCounts;

    /// The links of two transports together.
    fn add(self, o: LinkCounts) -> LinkCounts {
        LinkCounts {
            exchanges: self.exchanges + o.exchanges,
            up: self.up + o.up,
            handshaking: self.handshaking + o.handshaking,
            down: self.down + o.down,
        }
    }
}

impl LinkCounts {
    /// For instance "exchange links: 1 up, 1 in their handshake, ...".
    fn describe(&self) -> String {
        if self.exchanges == 0 && self.up == 0 {
            return "this dispatcher has no exchange".to_owned();
        }
        format!(
            "exchange links: {} up, {} in their handshake, {} client exchanges not connected",
            self.up, self.handshaking, self.down
        )
    }
}

/// The routing core (see the module's documentation).
pub(crate) struct Core {
    link: Arc<Link>,
    registry: Registry,
    reports: Reports,
    locals: IdMap<AgentId, Local>,
    pending: calls::Calls,
    /// The core's timers (the transports have their own).
    pub(crate) timers: Timers<TimerKind>,
    /// Reused buffer for report fan-out.
    scratch: Vec<AgentKey>,
    /// Where recent reports went, by publisher and subject.
    fanouts: fanout::FanoutCache,
    /// The peers whose links are up.
    peers: peers::Peers,
    /// What the transports are asked to carry.
    pub(crate) out: Outbox,
    /// How the links stand, kept current by the event loop.
    pub(crate) links: LinkCounts,
    /// Calls waiting for a destination.
    parked: Vec<Parked>,
    /// Round-robin position per name or group.
    turns: requests::Turns,
    /// Set as the dispatcher stops: calls still waiting fail as Closed.
    stopping: bool,
    /// Warnings a peer can cause, at most one line a second per kind.
    warnings: Warnings,
    /// Reports that wait somewhere (see `flow`).
    holds: flow::Holds,
    /// Local subscribers with reports waiting for them, or drops to tell.
    watched: Vec<AgentId>,
    /// Peers with reports waiting for their credit.
    starved: Vec<PeerId>,
    /// Reused buffer for the links a report is relayed on.
    peer_scratch: Vec<PeerId>,
    /// Reused buffers of `flow`: the links with and without credit for a
    /// report, and the frame of one that waits.
    flow_scratch: (Vec<PeerId>, Vec<PeerId>),
    frame_scratch: Vec<u8>,
}

impl Drop for Core {
    /// After [`stop`](Self::stop) nothing is left here. After a panic
    /// everything is: every local caller still waiting, routed or direct,
    /// fails with [`Error::Closed`] now rather than waiting out its timeout.
    /// (Remote callers see their link close.)
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

impl Core {
    pub(crate) fn new(link: Arc<Link>) -> Self {
        Core {
            link,
            registry: Registry::default(),
            reports: Reports::default(),
            locals: IdMap::default(),
            pending: calls::Calls::default(),
            timers: Timers::new(),
            scratch: Vec::new(),
            fanouts: fanout::FanoutCache::default(),
            peers: peers::Peers::default(),
            out: Outbox::default(),
            links: LinkCounts::default(),
            parked: Vec::new(),
            turns: requests::Turns::default(),
            stopping: false,
            warnings: Warnings::default(),
            holds: flow::Holds::default(),
            watched: Vec::new(),
            starved: Vec::new(),
            peer_scratch: Vec::new(),
            flow_scratch: Default::default(),
            frame_scratch: Vec::new(),
        }
    }

    /// Handles one command of a handle (the transports' own commands are
    /// the event loop's to hand to them).
    pub(crate) fn handle(&mut self, cmd: Command) -> Flow {
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
                overflow,
            } => {
                if let (true, Some(local)) = (on, self.locals.get(&agent)) {
                    let me = local.binding.key();
                    self.reports.set_overflow(me, &pattern, overflow);
                }
                self.subscribe(agent, publisher, &pattern, on)
            }
            Command::Staged { agent, upto } => self.publish_staged(agent, upto),
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
            Command::Call(call) => self.call(*call),
            Command::Done { conv, delivered } => {
                if let Some(p) = self.pending.remove(&conv) {
                    self.cancel_timers(conv, &p);
                }
                if !delivered {
                    Counters::bump(&self.link.counters.late_replies);
                }
            }
            Command::Reply { conv, result } => {
                self.complete(conv, result.map_err(|f| Error::Service(*f)));
            }
            Command::Forward {
                conv,
                to,
                method,
                payload,
                sender,
                caller,
            } => self.forward(conv, &to, method, payload, sender, caller.map(|c| *c)),
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
            // (The transports' commands: the event loop hands them over.)
            Command::ExchangeOpen { .. }
            | Command::ExchangeClose { .. }
            | Command::ExchangeLocalAddr { .. }
            | Command::Authorised { .. }
            | Command::MemoryOpen { .. }
            | Command::MemoryClose { .. } => {}
            Command::Shutdown => return Flow::Stop,
            Command::Stall(release) => {
                let _ = release.recv();
            }
            Command::Panic => panic!("panic_dispatcher: a panic on purpose, for a test"),
        }
        Flow::Continue
    }

    /// Handles one of the core's timers that is due.
    pub(crate) fn fire(&mut self, id: TimerId, kind: TimerKind) -> Flow {
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
                            self.links.describe()
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
            TimerKind::Park(conv) => {
                if let Some(i) = self.parked.iter().position(|p| p.conv == conv) {
                    let parked = self.parked.swap_remove(i);
                    let e = Error::DeliveryFailure(format!(
                        "no server for {} appeared while the call waited for one ({})",
                        describe(&parked.to),
                        self.links.describe()
                    ));
                    self.complete(conv, Err(e));
                }
            }
            TimerKind::Heartbeat(conv) => self.heartbeat(conv),
            TimerKind::Monitor(conv) => {
                if self.pending.contains_key(&conv) {
                    Counters::bump(&self.link.counters.calls_timed_out);
                    self.complete(conv, Err(Error::Timeout));
                }
            }
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
    pub(crate) fn stop(&mut self) {
        self.stopping = true;
        let convs: Vec<ConversationId> = self.pending.keys().copied().collect();
        for conv in convs {
            self.complete(conv, Err(Error::Closed));
        }
        let counters = &self.link.counters;
        self.link
            .remote_calls
            .close(Some(&|| Error::Closed), counters);
        for agent in self.sorted_locals().into_iter().rev() {
            self.withdraw(agent, false);
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
        let queued = local.inbox.events.len();
        let bound = match class {
            Class::Data => local.inbox.capacity,
            Class::Control => local.inbox.limit(),
        };
        if queued >= bound {
            return Err(Refused::Full(event));
        }
        match local.inbox.events.try_send(event) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(e)) => Err(Refused::Full(e)),
            // The service was dropped; its Close command is on its way.
            Err(TrySendError::Disconnected(e)) => Err(Refused::Gone(e)),
        }
    }

    /// Delivers a control event or a report (which waits if it must: see
    /// `flow`), counting what is dropped.
    fn deliver(&mut self, agent: AgentId, event: Event, class: Class) {
        let event = match event {
            Event::Report(report) => {
                let mut holder = flow::Holder::none();
                return self.report_to_local(agent, report, &mut holder);
            }
            other => other,
        };
        // Behind the reports that wait for room, if any: events keep the
        // order they came in (a publisher's withdrawal after its reports).
        let Err(event) = self.event_waits(agent, event) else {
            return;
        };
        match self.try_deliver(agent, event, class) {
            Ok(()) => {}
            Err(Refused::Gone(_)) => {} // withdrawn meanwhile: nobody to tell
            Err(Refused::Full(event)) => {
                {
                    Counters::bump(&self.link.counters.events_dropped);
                    // (A peer's subscriptions can cause these in any number.)
                    self.warnings.warn(
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
            Some(Route::Remote(peer)) => self.deliver_remote(peer, key, event),
            None => {}
        }
    }
}
