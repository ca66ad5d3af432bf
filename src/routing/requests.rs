//! The request/reply side of the core: calls made here, their routing to
//! an agent (by name and group in turn, to pools, to all of a group),
//! parking until a destination appears, forwarding, deadlines and the
//! heartbeats of calls being handled.

use std::collections::HashMap;
use std::time::Instant;

use super::registry::Route;
use super::MIN_PROGRESS;
use super::{Caller, Class, Core, Parked, PeerId, Pending, Refused, RouteOpts, TimerKind};
use crate::config::deadline;
use crate::direct::Waiting;
use crate::error::{Error, Result};
use crate::event::{Answer, Call, Event, Request};
use crate::ids::{AgentKey, ConversationId, ServiceBinding};
use crate::mailbox::command::{Destination, OutgoingCall};
use crate::stats::Counters;
use crate::wire::Payload;

impl Core {
    pub(super) fn call(&mut self, call: OutgoingCall) {
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
            heartbeat: call
                .monitor
                .map(|d| (d / 2).clamp(MIN_PROGRESS, crate::config::NO_LIMIT)),
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
                            self.links.describe()
                        ));
                        self.complete(conv, Err(e));
                        return;
                    }
                },
            },
        }
        if call.oneway && self.pending.contains_key(&conv) {
            // A cast is done once handed on.
            self.complete(conv, Ok(Payload::unit()));
        }
    }

    /// The next agent, in turn, for a name or group destination.
    /// Runs on every call to a topic: no allocation once a name or group
    /// has had its first turn.
    pub(super) fn pick(&mut self, to: &Destination) -> Option<AgentKey> {
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
    pub(super) fn pool_picks(&mut self, name: &str) -> Vec<AgentKey> {
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
    pub(super) fn unpark(&mut self) {
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
                        self.complete(conv, Ok(Payload::unit()));
                    }
                }
                None => i += 1,
            }
        }
    }

    /// Callee side: the request is still being handled; tell the caller.
    pub(super) fn heartbeat(&mut self, conv: ConversationId) {
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
            Caller::Remote(peer) => self.send(peer, &crate::wire::Message::Progress { conv }),
        }
    }

    /// A heartbeat for a call arrived (or was made here): the caller's
    /// monitor starts again, or the heartbeat goes on toward the caller.
    pub(super) fn progress(&mut self, conv: ConversationId) {
        let Some(p) = self.pending.get_mut(&conv) else {
            return;
        };
        if let Some((period, timer)) = p.monitor {
            self.timers.cancel(timer);
            let timer = self
                .timers
                .start(deadline(Instant::now(), period), TimerKind::Monitor(conv));
            p.monitor = Some((period, timer));
        } else if let Caller::Remote(peer) = p.caller {
            self.send(peer, &crate::wire::Message::Progress { conv });
        }
    }

    /// Hands a request to its destination, local or remote, or fails its
    /// pending call. `relay` is the connection a request came from and its
    /// frame, to pass on unchanged.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn route_request(
        &mut self,
        conv: ConversationId,
        to: AgentKey,
        method: String,
        payload: Payload,
        sender: ServiceBinding,
        relay: Option<(PeerId, &[u8])>,
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
        let request = Request(Box::new(Call {
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
                // The handler writes the reply onto the caller's link
                // (unless it is a call of ours forwarded back here: the
                // call must be over here before its answer arrives).
                Some(Caller::Remote(peer))
                    if !opts.oneway && conv.process() != self.link.process.uid() =>
                {
                    match self.peers.map.get(peer).and_then(|p| p.outlet.as_ref()) {
                        Some(outlet) => Answer::Outlet(outlet.clone()),
                        None => Answer::Dispatcher,
                    }
                }
                _ => Answer::Dispatcher,
            },
        }));
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

    pub(super) fn forward(
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
    pub(super) fn forget(&mut self, conv: ConversationId) {
        if let Some(p) = self.pending.remove(&conv) {
            self.cancel_timers(conv, &p);
        }
    }

    pub(super) fn cancel_timers(&mut self, conv: ConversationId, p: &Pending) {
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
    pub(super) fn complete(&mut self, conv: ConversationId, result: Result<Payload>) {
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
pub(super) struct Turns {
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
pub(super) fn describe(to: &Destination) -> String {
    match to {
        Destination::Agent(b) => b.to_string(),
        Destination::Name(n) => format!("name {n:?}"),
        Destination::Group(g) | Destination::AllOf(g) => format!("group {g:?}"),
        Destination::Pools(n) => format!("pools of {n:?}"),
    }
}
