//! The core's side of the links to other processes: what a peer sends,
//! checked against the link it came on and that link's limits, and what is
//! sent to peers. A link speaks only for the process it came up as and for
//! the bindings it announced: replies and heartbeats only for calls sent
//! down it, reports only from publishers learned through it, subscriptions
//! only for its own subscribers, withdrawals and group changes only for its
//! own bindings. A frame that breaks this is refused, counted and logged
//! (rate-limited).
//!
//! On the server side, a link authenticated with a named credential is
//! also held to its permissions (`Peer::identity`): an announcement of a
//! service it may not offer, or with a group it may not join, and a join
//! it may not make, are not taken in; a request it may not make is failed
//! back with `codes::PERMISSION_DENIED`; a subscription it may not hold is
//! not added, and the link is told (`Message::SubscribeDenied`), so that
//! the subscriber sees the publisher withdrawn. Each is counted in
//! `permission_denied` and logged (rate-limited); the link stays up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::flow::{self, Holder};
use super::peers::{Peer, PeerId, PeerInfo, Scope, Usage};
use super::registry::{Ordered, Route};
use super::{Caller, Class, Core, Pending, RouteOpts, TimerKind, MIN_PROGRESS};
use crate::connection::InactiveReason as Why;
use crate::credentials::Action;
use crate::direct::{Answered, Outlet};
use crate::error::{codes, Error, ServiceFailure};
use crate::event::Report;
use crate::event::{Event, PublisherAnnouncement, ServiceStatus};
use crate::ids::{AgentKey, ConversationId, ServiceBinding};
use crate::limits;
use crate::mailbox::command::Limits;
use crate::stats::Counters;
use crate::wire::{self, Incoming, Message, Payload, ReportRef};

/// What became of a frame the core was given.
#[derive(Debug)]
pub(crate) enum Taken {
    /// Handled (or refused) by the core.
    Done,
    /// A message about the link itself (a heartbeat, a peer saying why it
    /// closes, an authentication step out of place): the transport's.
    Link(Message),
}

/// Whether a binding of that audience is visible through an exchange of
/// that group: `"*"` everywhere, `""` nowhere, a group name in that group.
pub(crate) fn visible(audience: &str, group: &str) -> bool {
    audience == "*" || (!audience.is_empty() && audience == group)
}

impl Core {
    // ----- what the transports tell the core -----

    /// A peer's link is up: it is known by `peer` from now on, and it is
    /// sent this process's table (local services, and on a server those
    /// learned from its other clients).
    pub(crate) fn peer_up(&mut self, peer: PeerId, info: PeerInfo) {
        log::debug!("netsvc: {peer} up: {}", info.remote);
        if info.limits.is_some() {
            // A process has one link to a server: a newer one (its identity
            // checked by the transport) means it reconnected while the old
            // one still looked alive here. The old one goes, and what it
            // carried with it: the process announces its bindings afresh.
            if let Some(old) = self.peers.by_process.insert(info.remote.uid(), peer) {
                let reason = format!("{} connected again on {peer}", info.remote);
                self.close_peer(old, Why::Superseded, reason);
            }
        }
        let scope = self.peers.scopes.entry(info.exchange).or_insert(Scope {
            group: info.group,
            limits: info.limits,
            peers: 0,
        });
        scope.peers += 1;
        if let Some(identity) = &info.identity {
            let counters = &self.link.counters;
            counters.identity_up(peer.0, &identity.name, &info.remote);
        }
        let p = Peer {
            remote: info.remote,
            exchange: info.exchange,
            learned: Ordered::default(),
            usage: Usage::default(),
            refused: 0,
            refused_since: Instant::now(),
            closing: false,
            identity: info.identity,
            flow: Default::default(),
            asked: 0,
            outlet: info.outlet,
        };
        self.peers.map.insert(peer, Box::new(p));
        let bindings: Vec<ServiceBinding> = self
            .registry
            .all()
            .filter(|(b, route)| self.shown_on(b, *route, peer))
            .map(|(b, _)| b.clone())
            .collect();
        for binding in bindings {
            self.send(peer, &Message::Available { binding });
        }
    }

    /// Whether frames from `peer` are still taken (its link is up and the
    /// core has not asked for it to be closed).
    pub(crate) fn takes_from(&self, peer: PeerId) -> bool {
        self.peers.map.get(&peer).is_some_and(|p| !p.closing)
    }

    /// How many requests (not casts), subscriptions and report credits a
    /// peer has sent: what it may be sent in answer. A transport that sees
    /// this grow while the peer's output is congested stops reading it
    /// until that drains.
    pub(crate) fn asked(&self, peer: PeerId) -> u64 {
        self.peers.map.get(&peer).map_or(0, |p| p.asked)
    }

    /// A frame (its body) arrived from `peer`.
    pub(crate) fn frame(&mut self, peer: PeerId, body: &[u8]) -> Taken {
        if !self.takes_from(peer) {
            return Taken::Done; // (closing: what it still sends is not taken)
        }
        match wire::decode_message(body) {
            Ok(Incoming::Report(report)) => self.remote_report(peer, report, body),
            Ok(Incoming::Other(
                m @ (Message::Heartbeat
                | Message::Closing { .. }
                | Message::Challenge { .. }
                | Message::Response { .. }
                | Message::Proof { .. }),
            )) => return Taken::Link(m),
            Ok(Incoming::Other(message)) => self.on_message(peer, message, body),
            Err(e) => self.close_peer(peer, Why::BadInput, format!("bad frame: {e}")),
        }
        Taken::Done
    }

    /// A peer's link went down (`lost` says how, for the errors of the calls
    /// that fail with it: "connection to ... lost"): every binding learned
    /// through it is withdrawn, newest first (and the other links of a
    /// server hear of it), its hidden subscribers go, and the calls that
    /// came through it are dropped (nobody is left to answer).
    pub(crate) fn peer_down(&mut self, peer: PeerId, lost: &str) {
        let Some(p) = self.peers.map.get_mut(&peer) else {
            return;
        };
        // Nothing more is sent to it while what it carried is withdrawn.
        p.closing = true;
        if p.outlet.is_some() {
            // The callers that wrote onto it first: no reply comes now.
            let why = || Error::ServiceUnavailable(format!("{lost} while the call was pending"));
            let (calls, counters) = (&self.link.remote_calls, &self.link.counters);
            calls.fail_on(peer.0, None, &why, counters);
        }
        let learned: Vec<AgentKey> = p.learned.iter().rev().copied().collect();
        log::debug!("netsvc: {peer} down: {lost}");
        for key in learned {
            if self.learned_via(&key, peer) {
                self.remove_agent(key, lost, true);
            }
        }
        let hidden: Vec<(AgentKey, ServiceBinding)> = self
            .peers
            .hidden
            .iter()
            .filter(|(_, (_, t))| *t == peer)
            .map(|(k, (b, _))| (*k, b.clone()))
            .collect();
        for (key, binding) in hidden {
            self.peers.hidden.remove(&key);
            self.peers.hidden_generation += 1;
            self.subscriber_vanished(key, &binding);
        }
        for conv in self.pending.callers_on(peer) {
            self.forget(conv);
        }
        if let Some(mut p) = self.peers.map.remove(&peer) {
            self.forget_peer_flow(std::mem::take(&mut p.flow));
            if p.identity.is_some() {
                self.link.counters.identity_down(peer.0);
            }
            let uid = p.remote.uid();
            if self.peers.by_process.get(&uid) == Some(&peer) {
                self.peers.by_process.remove(&uid);
            }
            if let Some(scope) = self.peers.scopes.get_mut(&p.exchange) {
                scope.peers -= 1;
                if scope.peers == 0 {
                    self.peers.scopes.remove(&p.exchange);
                }
            }
        }
    }

    // ----- what the core asks of the transports -----

    /// Asks for a peer's link to be closed: nothing more from it is taken.
    pub(super) fn close_peer(&mut self, peer: PeerId, why: Why, reason: String) {
        if let Some(p) = self.peers.map.get_mut(&peer) {
            if !p.closing {
                p.closing = true;
                self.out.close(peer, why, reason);
            }
        }
    }

    /// Queues a message for one peer.
    pub(super) fn send(&mut self, peer: PeerId, message: &Message) {
        if let Err(e) = self
            .out
            .put([peer], |buf| wire::encode_frame_into(buf, message))
        {
            log::error!("netsvc: cannot encode a frame: {e}");
        }
    }

    /// Whether a binding reached through `route` is announced on `peer`.
    fn shown_on(&self, binding: &ServiceBinding, route: Route, peer: PeerId) -> bool {
        let Some(p) = self.peers.map.get(&peer).filter(|p| !p.closing) else {
            return false;
        };
        let Some(scope) = self.peers.scopes.get(&p.exchange) else {
            return false;
        };
        if !visible(binding.service_audience(), &scope.group) {
            return false;
        }
        match route {
            Route::Local(_) => true,
            // A server relays between its own clients, never back.
            Route::Remote(from) => {
                let from_exchange = self.peers.map.get(&from).map(|f| f.exchange);
                from != peer && scope.limits.is_some() && from_exchange == Some(p.exchange)
            }
        }
    }

    /// Tells every peer that shows the binding about a change of it: one
    /// frame, encoded once.
    pub(super) fn broadcast(&mut self, binding: &ServiceBinding, route: Route, message: &Message) {
        let targets = self.shown_targets(binding, route);
        if targets.is_empty() {
            return;
        }
        if let Err(e) = self
            .out
            .put(targets, |buf| wire::encode_frame_into(buf, message))
        {
            log::error!("netsvc: cannot encode a frame: {e}");
        }
    }

    /// Tells every peer that shows the binding of its withdrawal, behind
    /// the report frames that wait there for credit (see
    /// `put_behind_reports`): a publisher's last reports arrive before it
    /// is withdrawn.
    pub(super) fn broadcast_withdrawal(
        &mut self,
        binding: &ServiceBinding,
        route: Route,
        message: &Message,
    ) {
        let targets = self.shown_targets(binding, route);
        if !targets.is_empty() {
            self.put_behind_reports(&targets, message);
        }
    }

    /// The peers that show the binding, in a stable order (the map's is
    /// its hasher's).
    fn shown_targets(&self, binding: &ServiceBinding, route: Route) -> Vec<PeerId> {
        if self.peers.map.is_empty() {
            return Vec::new();
        }
        let mut targets: Vec<PeerId> = self
            .peers
            .map
            .keys()
            .copied()
            .filter(|t| self.shown_on(binding, route, *t))
            .collect();
        targets.sort_unstable();
        targets
    }

    // ----- messages from a peer -----

    fn on_message(&mut self, peer: PeerId, message: Message, raw: &[u8]) {
        if matches!(
            message,
            Message::Request { oneway: false, .. }
                | Message::Subscribe { .. }
                | Message::Credit { .. }
        ) {
            if let Some(p) = self.peers.map.get_mut(&peer) {
                p.asked += 1;
            }
        }
        let max_name = self.link.config.max_name_len;
        let max_groups = self.server_limits(peer).map(|l| l.max_groups);
        match message {
            Message::Available { binding } => {
                if let Err(e) = limits::check_binding(&binding, max_name, max_groups) {
                    return self.breach(peer, &e);
                }
                let key = binding.key();
                if max_groups.is_some() && !self.speaks_for(peer, key.process) {
                    // A server's client announces its own services only.
                    return self.refuse_frame(peer, "an announcement of another process's service");
                }
                if key.process == self.link.process.uid() || self.registry.get(&key).is_some() {
                    return; // ours, or known already by another path
                }
                let name = binding.service_name();
                if !self.permits(peer, Action::Offer, name) {
                    return self.deny(peer, format_args!("offer {name:?}"));
                }
                let groups = binding.groups();
                if let Some(g) = groups.iter().find(|g| !self.permits(peer, Action::Join, g)) {
                    return self.deny(peer, format_args!("join {g:?} (announcing {name:?})"));
                }
                let Some(conn) = self.peers.map.get_mut(&peer) else {
                    return;
                };
                conn.learned.insert(key);
                conn.usage.learned_bytes += limits::binding_bytes(&binding);
                let learned = conn.learned.len();
                let outlet = conn.outlet.clone();
                if self.limit(peer, |l| l.max_services, learned, "services")
                    || self.over_budget(peer)
                {
                    return;
                }
                // Callers here write to it through its link themselves.
                let binding = match &outlet {
                    Some(outlet) => binding.with_queue(Outlet::downgrade(outlet)),
                    None => binding,
                };
                self.drop_hidden(&key);
                self.add_agent(binding, Route::Remote(peer));
            }
            Message::Withdrawn { agent, draining } => {
                if self.learned_via(&agent, peer) {
                    let bytes = self
                        .registry
                        .get(&agent)
                        .map_or(0, |e| limits::binding_bytes(&e.binding));
                    if let Some(conn) = self.peers.map.get_mut(&peer) {
                        conn.learned.remove(&agent);
                        conn.usage.learned_bytes = conn.usage.learned_bytes.saturating_sub(bytes);
                    }
                    self.remove_agent(agent, "withdrawn", !draining);
                }
            }
            Message::Group {
                agent,
                group,
                joined,
            } => {
                if let Err(e) = limits::check_name("group name", &group, max_name) {
                    return self.breach(peer, &e);
                }
                if !self.learned_via(&agent, peer) {
                    return;
                }
                if joined && !self.permits(peer, Action::Join, &group) {
                    return self.deny(peer, format_args!("join {group:?}"));
                }
                let before = self.registry.group_count(&agent);
                if let Some(max) = max_groups.filter(|max| joined && before >= *max) {
                    if !self.registry.member(&agent, &group) {
                        let e = format!("{} groups in one binding, at most {max}", before + 1);
                        return self.breach(peer, &e);
                    }
                }
                self.change_group(agent, &group, joined);
                let after = self.registry.group_count(&agent);
                if let Some(conn) = self.peers.map.get_mut(&peer) {
                    let cost = group.len() + limits::GROUP_OVERHEAD;
                    let u = &mut conn.usage.learned_bytes;
                    *u = match after.cmp(&before) {
                        std::cmp::Ordering::Greater => *u + cost,
                        std::cmp::Ordering::Less => u.saturating_sub(cost),
                        std::cmp::Ordering::Equal => *u,
                    };
                }
                self.over_budget(peer);
            }
            Message::Request {
                conv,
                sender,
                to,
                method,
                payload,
                timeout_ms,
                oneway,
                heartbeat_ms,
            } => {
                if let Err(e) = limits::check_name("method name", &method, max_name)
                    .and_then(|()| limits::check_binding(&sender, max_name, max_groups))
                {
                    return self.breach(peer, &e);
                }
                // The period is the caller's to choose, above a floor: a
                // period of 0 would make this side send without pause.
                let opts = RouteOpts {
                    oneway,
                    heartbeat: heartbeat_ms.map(|ms| Duration::from_millis(ms).max(MIN_PROGRESS)),
                };
                if (self.pending.contains_key(&conv) && !self.sent_to(conv, peer))
                    || self.written_elsewhere(conv, peer)
                {
                    // Another caller's call: the id is not this peer's to
                    // reuse (a request forwarded back through here comes
                    // from the link the call was sent to, and is kept).
                    self.refuse_frame(peer, "a request reusing a pending conversation id");
                    return;
                }
                if let Some(name) = self.refused_callee(peer, &to) {
                    return self.call_denied(peer, conv, oneway, &name);
                }
                if !oneway && !self.pending.contains_key(&conv) {
                    // A forwarded request coming through us again keeps its
                    // entry (and caller); route_request updates the target.
                    let deadline =
                        crate::config::deadline(Instant::now(), Duration::from_millis(timeout_ms));
                    let timer = self.timers.start(deadline, TimerKind::Call(conv));
                    let pending = Pending::new(Caller::Remote(peer), Some(to), timer, deadline);
                    self.pending.insert(conv, pending);
                    let calls = self.pending.of_conn(peer);
                    if self.limit(peer, |l| l.max_pending_calls, calls, "pending calls")
                        || self.over_budget(peer)
                    {
                        return; // (closing the connection dropped its calls)
                    }
                }
                self.route_request(conv, to, method, payload, sender, Some((peer, raw)), opts);
            }
            // Heartbeats of a call come from where the call went, or not at all.
            Message::Progress { conv } if self.sent_to(conv, peer) => self.progress(conv),
            // (A late one, for a call already over, is no one's business;
            // nor one for a call written onto this link by its caller,
            // which has no monitor.)
            Message::Progress { conv }
                if !self.pending.contains_key(&conv) && !self.written_elsewhere(conv, peer) => {}
            Message::Progress { .. } => {
                self.refuse_frame(peer, "a heartbeat for a call not sent to it")
            }
            // (The link's own business: `frame` hands them to the transport.)
            Message::Heartbeat
            | Message::Closing { .. }
            | Message::Challenge { .. }
            | Message::Response { .. }
            | Message::Proof { .. } => {}
            Message::Reply { conv, result } => {
                // Only the link the call went out on may answer it. A reply
                // for a call no longer pending is late, not forged: a call
                // failed here when its callee was withdrawn still gets the
                // answer the far side fails it with (dropped, counted).
                if self.sent_to(conv, peer) {
                    self.complete(conv, result.map_err(Error::from));
                } else if self.pending.contains_key(&conv) {
                    self.refuse_frame(peer, "a reply for a call not sent to it");
                } else {
                    // Perhaps a call its caller wrote onto a link itself.
                    let (calls, counters) = (&self.link.remote_calls, &self.link.counters);
                    match calls.answer_from(peer.0, &conv, result.map_err(Error::from), counters) {
                        Answered::Taken => {}
                        Answered::Elsewhere => {
                            self.refuse_frame(peer, "a reply for a call not sent to it")
                        }
                        Answered::Unknown => Counters::bump(&counters.late_replies),
                    }
                }
            }
            Message::Subscribe {
                subscriber,
                publisher,
                pattern,
                on,
            } => self.remote_subscribe(peer, subscriber, publisher, &pattern, on),
            Message::SubscribeDenied {
                subscriber,
                publisher,
            } => self.subscribe_denied(peer, subscriber, publisher),
            Message::Credit { bytes } => self.credit(peer, bytes),
            Message::Subscribed {
                subscriber,
                publisher,
                pattern,
            } => {
                // Only from the link the publisher is reached by, and only
                // for a subscription held here.
                let entry = self.registry.get(&publisher);
                if entry.map(|e| e.route) != Some(Route::Remote(peer)) {
                    return self
                        .refuse_frame(peer, "a confirmation for a publisher not of its link");
                }
                let max = self.link.config.max_subject_len;
                if let Err(e) = limits::check_name("subscription pattern", &pattern, max) {
                    return self.breach(peer, &e);
                }
                let name = entry.map(|e| e.binding.service_name()).unwrap_or_default();
                if !self
                    .reports
                    .holds_pattern(subscriber, publisher, name, &pattern)
                {
                    return self.refuse_frame(peer, "a confirmation of a subscription not held");
                }
                if self.route_of(&subscriber) != Some(Route::Remote(peer)) {
                    self.confirm(subscriber, publisher, &pattern);
                }
            }
            // (Read in place by `frame`: `decode_message` never makes one
            // of these a `Message`.)
            Message::Report { .. } | Message::Reports { .. } => {}
        }
    }

    /// A subscription from a peer starts or ends (part of `on_message`).
    ///
    /// The subscriber must be the peer's: an agent learned through this
    /// connection, or one hidden from this exchange that this connection
    /// named (a "hidden subscriber", kept in `net.subscribers` while it
    /// holds subscriptions). A frame naming an agent of this process, one
    /// learned through another connection or another connection's hidden
    /// subscriber is ignored: it would act for someone else. A hidden
    /// subscriber is remembered only when a subscription is really added for
    /// it, and forgotten when it holds none; a subscription counts against
    /// the connection only while it is really held.
    fn remote_subscribe(
        &mut self,
        peer: PeerId,
        subscriber: ServiceBinding,
        publisher: AgentKey,
        pattern: &str,
        on: bool,
    ) {
        let max_groups = self.server_limits(peer).map(|l| l.max_groups);
        let config = &self.link.config;
        if let Err(e) = limits::check_name("subscription pattern", pattern, config.max_subject_len)
            .and_then(|()| limits::check_binding(&subscriber, config.max_name_len, max_groups))
        {
            return self.breach(peer, &e);
        }
        let key = subscriber.key();
        let hidden = self.peers.hidden.get(&key).map(|(_, t)| *t);
        let theirs = match (self.registry.get(&key).map(|e| e.route), hidden) {
            (Some(Route::Remote(t)), _) => t == peer,
            (Some(Route::Local(_)), _) => false,
            (None, Some(t)) => t == peer,
            // Nothing to withdraw: a late unsubscribe, harmless.
            (None, None) if !on => return,
            // A subscriber not announced (hidden by its audience): a
            // server's client names only its own, a server any but ours.
            (None, None) => {
                key.process != self.link.process.uid()
                    && (max_groups.is_none() || self.speaks_for(peer, key.process))
            }
        };
        if !theirs {
            return self.refuse_frame(peer, "a subscription for a subscriber not of its link");
        }
        if on {
            let name = self
                .registry
                .get(&publisher)
                .map(|e| e.binding.service_name());
            if let Some(name) = name.filter(|n| !self.permits(peer, Action::Subscribe, n)) {
                let name = name.to_owned();
                self.deny(peer, format_args!("subscribe to {name:?}"));
                let denied = Message::SubscribeDenied {
                    subscriber: key,
                    publisher,
                };
                return self.send(peer, &denied);
            }
        }
        let adds = on
            && self.registry.get(&publisher).is_some()
            && !self.reports.holds_agent(key, publisher, pattern);
        if adds {
            let (held, _) = self.reports.owned(peer);
            if self.limit(peer, |l| l.max_subscriptions, held + 1, "subscriptions") {
                return;
            }
        }
        let fresh = self.registry.get(&key).is_none() && hidden.is_none();
        if fresh && adds {
            if let Some(conn) = self.peers.map.get_mut(&peer) {
                conn.usage.hidden_bytes += limits::binding_bytes(&subscriber);
            }
            self.peers.hidden.insert(key, (subscriber, peer));
            self.peers.hidden_generation += 1;
        }
        self.subscribe_agent(key, publisher, pattern, on, Some(peer));
        if self.peers.hidden.contains_key(&key) && !self.reports.holds_any(key) {
            self.drop_hidden(&key);
        }
        self.over_budget(peer);
    }

    /// The server refused a subscription this side sent (part of
    /// `on_message`): the subscriber, one of this process's, sees the
    /// publisher withdrawn. Only the server of a link refuses, only for
    /// this side's subscribers to publishers it announced; anything else
    /// is refused as a frame. One that no longer applies (the subscriber
    /// unsubscribed, or the publisher went, meanwhile) is ignored.
    fn subscribe_denied(&mut self, peer: PeerId, subscriber: AgentKey, publisher: AgentKey) {
        let from_server = self.peers.map.contains_key(&peer) && self.server_limits(peer).is_none();
        let agent = match self.registry.get(&subscriber).map(|e| e.route) {
            Some(Route::Local(agent)) if from_server => agent,
            None if from_server => return, // (withdrawn meanwhile)
            _ => return self.refuse_frame(peer, "a refusal of a subscription not sent to it"),
        };
        let pb = self
            .registry
            .get(&publisher)
            .filter(|e| e.route == Route::Remote(peer))
            .map(|e| e.binding.clone());
        let Some(pb) = pb else {
            return; // (withdrawn meanwhile, or never its to refuse)
        };
        if !self
            .reports
            .subscribed(subscriber, publisher, pb.service_name())
        {
            return; // (unsubscribed meanwhile)
        }
        log::debug!("netsvc: {peer} refused the subscription of {subscriber} to {pb}");
        let ann = PublisherAnnouncement {
            publisher: pb,
            status: ServiceStatus::Withdrawn,
        };
        self.deliver(agent, Event::Publisher(ann), Class::Control);
    }

    /// Whether `peer`'s credential allows `action` on `name`: always for a
    /// link without one (a client's links, the shared secret's, no
    /// authentication).
    fn permits(&self, peer: PeerId, action: Action, name: &str) -> bool {
        self.peers
            .map
            .get(&peer)
            .and_then(|p| p.identity.as_deref())
            .is_none_or(|i| i.permissions.allows(action, name))
    }

    /// Something `peer`'s credential does not allow (`what` it may not do)
    /// was refused, not taken in: counted and logged, rate-limited. The
    /// link stays up.
    fn deny(&mut self, peer: PeerId, what: std::fmt::Arguments<'_>) {
        Counters::bump(&self.link.counters.permission_denied);
        let Some(p) = self.peers.map.get(&peer) else {
            return;
        };
        let credential = p.identity.as_deref().map_or("", |i| i.name.as_str());
        self.warnings.warn(
            "permission denied",
            format_args!(
                "refused from {peer} ({}, credential {credential:?}): it may not {what}",
                p.remote
            ),
        );
    }

    /// The name of the service `to`, if `peer`'s credential may not call
    /// it (looked up only for a link with a credential: requests are the
    /// hot path).
    fn refused_callee(&self, peer: PeerId, to: &AgentKey) -> Option<String> {
        let identity = self.peers.map.get(&peer)?.identity.as_deref()?;
        let name = self.registry.get(to)?.binding.service_name();
        (!identity.permissions.allows(Action::Call, name)).then(|| name.to_owned())
    }

    /// A request `peer` may not make to the service `name`: refused, and
    /// the caller answered with `PERMISSION_DENIED` (a cast is dropped).
    fn call_denied(&mut self, peer: PeerId, conv: ConversationId, oneway: bool, name: &str) {
        self.deny(peer, format_args!("call {name:?}"));
        if oneway {
            return;
        }
        let credential = self
            .peers
            .map
            .get(&peer)
            .and_then(|p| p.identity.as_deref())
            .map_or(String::new(), |i| i.name.clone());
        let failure = ServiceFailure::new(codes::PERMISSION_DENIED, "permission denied")
            .with_origin(name)
            .with_details(format!(
                "the exchange link's credential {credential:?} may not call {name:?}"
            ));
        if self.pending.contains_key(&conv) {
            // A call forwarded back through here: its caller is elsewhere.
            return self.complete(conv, Err(Error::Service(failure)));
        }
        let reply = Message::Reply {
            conv,
            result: Err(wire::Failure::Service(failure)),
        };
        self.send(peer, &reply);
    }

    /// Forgets a hidden subscriber (it holds no subscription, or it became
    /// visible): its bytes no longer count against its connection.
    fn drop_hidden(&mut self, key: &AgentKey) {
        if let Some((binding, t)) = self.peers.hidden.remove(key) {
            self.peers.hidden_generation += 1;
            if let Some(conn) = self.peers.map.get_mut(&t) {
                let bytes = limits::binding_bytes(&binding);
                conn.usage.hidden_bytes = conn.usage.hidden_bytes.saturating_sub(bytes);
            }
        }
    }

    /// A server's limits for this connection; `None` on a client (see
    /// [`ServerBuilder::max_connection_memory`](crate::ServerBuilder::max_connection_memory)
    /// for why a client applies only the lengths).
    fn server_limits(&self, peer: PeerId) -> Option<Limits> {
        let p = self.peers.map.get(&peer)?;
        self.peers.scopes.get(&p.exchange)?.limits
    }

    /// Closes a connection whose peer passed a limit, logged and counted.
    fn breach(&mut self, peer: PeerId, what: &str) {
        Counters::bump(&self.link.counters.limits_breached);
        self.close_peer(peer, Why::LimitBreached, format!("limit breached: {what}"));
    }

    /// Closes a server's connection that has passed one of its limits
    /// (`used` of `what`, at most what `max` says); true if it did.
    fn limit(
        &mut self,
        peer: PeerId,
        max: impl Fn(&Limits) -> usize,
        used: usize,
        what: &str,
    ) -> bool {
        let Some(limits) = self.server_limits(peer) else {
            return false;
        };
        let max = max(&limits);
        if used <= max {
            return false;
        }
        self.breach(peer, &format!("{used} {what}, at most {max}"));
        true
    }

    /// The bytes of state a connection's peer has made this process hold:
    /// the bindings it announced (with their groups), its subscriptions, its
    /// pending calls and its hidden subscribers.
    fn connection_memory(&self, peer: PeerId) -> usize {
        let Some(conn) = self.peers.map.get(&peer) else {
            return 0;
        };
        conn.usage.learned_bytes
            + conn.usage.hidden_bytes
            + self.reports.owned(peer).1
            + self.pending.of_conn(peer) * limits::PENDING_OVERHEAD
    }

    /// Closes a server's connection past its memory budget; true if it did.
    fn over_budget(&mut self, peer: PeerId) -> bool {
        let used = self.connection_memory(peer);
        self.limit(peer, |l| l.max_memory, used, "bytes of connection memory")
    }

    /// Whether the pending call `conv` is being handled through the
    /// link `peer` (its request went out there).
    fn sent_to(&self, conv: ConversationId, peer: PeerId) -> bool {
        self.pending.get(&conv).and_then(|p| p.via) == Some(peer)
    }

    /// Whether `peer` speaks for the process `uid`: it is the process its
    /// link came up as (a server's clients speak only for themselves).
    fn speaks_for(&self, peer: PeerId, uid: u64) -> bool {
        self.peers
            .map
            .get(&peer)
            .is_some_and(|p| p.remote.uid() == uid)
    }

    /// Drops a frame the peer had no right to send: counted and logged;
    /// after [`REFUSALS`](super::peers::REFUSALS) within a window of
    /// [`REFUSAL_WINDOW`](super::peers::REFUSAL_WINDOW), the link is closed.
    pub(super) fn refuse_frame(&mut self, peer: PeerId, what: &str) {
        Counters::bump(&self.link.counters.refused_frames);
        let Some(p) = self.peers.map.get_mut(&peer) else {
            return;
        };
        let now = Instant::now();
        if now.saturating_duration_since(p.refused_since) >= super::peers::REFUSAL_WINDOW {
            p.refused_since = now;
            p.refused = 0;
        }
        p.refused += 1;
        let (count, remote) = (p.refused, p.remote.clone());
        self.warnings.warn(
            "refused frame",
            format_args!("dropped from {peer} ({remote}): {what}"),
        );
        if count >= super::peers::REFUSALS {
            let reason = format!("{count} frames it had no right to send, the last {what}");
            self.close_peer(peer, Why::BadInput, reason);
        }
    }

    fn learned_via(&self, key: &AgentKey, peer: PeerId) -> bool {
        matches!(self.registry.get(key).map(|e| e.route), Some(Route::Remote(t)) if t == peer)
    }

    /// Where a key's events go: the registry first, then the subscribers
    /// known only through their subscriptions.
    pub(super) fn route_of(&self, key: &AgentKey) -> Option<Route> {
        self.registry
            .get(key)
            .map(|e| e.route)
            .or_else(|| self.peers.hidden.get(key).map(|(_, t)| Route::Remote(*t)))
    }

    pub(super) fn binding_of(&self, key: &AgentKey) -> Option<ServiceBinding> {
        self.registry
            .get(key)
            .map(|e| e.binding.clone())
            .or_else(|| self.peers.hidden.get(key).map(|(b, _)| b.clone()))
    }

    /// Sends an event meant for a remote agent as the frame that carries it;
    /// announcements a remote agent makes for itself are not sent.
    pub(super) fn deliver_remote(&mut self, peer: PeerId, key: AgentKey, event: Event) {
        match event {
            Event::Subscription(s) => {
                let message = Message::Subscribe {
                    subscriber: s.subscriber,
                    publisher: key,
                    pattern: s.subject,
                    on: s.status == crate::SubscriptionStatus::Requested,
                };
                self.send(peer, &message);
            }
            Event::Report(r) => {
                let publisher = r.publisher().key();
                let mut holder = Holder::none();
                let (subject, payload) = (r.subject(), r.bytes());
                self.send_report_frame(
                    &[peer],
                    publisher,
                    Some(key),
                    subject,
                    payload,
                    &mut holder,
                );
            }
            // The subscriber's own dispatcher announces publishers to it.
            _ => {}
        }
    }

    /// Sends a request to a remote agent (re-using the frame as it came when
    /// relaying).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn request_remote(
        &mut self,
        peer: PeerId,
        conv: ConversationId,
        to: AgentKey,
        method: String,
        payload: Payload,
        sender: ServiceBinding,
        relay: Option<&[u8]>,
        opts: RouteOpts,
    ) {
        if let Some(p) = self.pending.get_mut(&conv) {
            if !opts.oneway {
                p.via = Some(peer);
            }
        }
        match relay {
            Some(raw) => self.out.relay_request(peer, raw),
            None => {
                let timeout_ms = self
                    .pending
                    .get(&conv)
                    .map(|p| p.deadline.saturating_duration_since(Instant::now()))
                    .unwrap_or_default()
                    .as_millis() as u64;
                let message = Message::Request {
                    conv,
                    sender,
                    to,
                    method,
                    payload,
                    timeout_ms,
                    oneway: opts.oneway,
                    heartbeat_ms: opts.heartbeat.map(|d| d.as_millis() as u64),
                };
                let encode = |buf: &mut Vec<u8>| wire::encode_frame_into(buf, &message);
                if let Err(e) = self.out.put_request(peer, encode) {
                    log::error!("netsvc: cannot encode a request: {e}");
                }
            }
        }
        Counters::bump(&self.link.counters.requests_delivered);
    }

    /// Whether `conv` is a call a thread of ours wrote onto a link other
    /// than `peer`'s (see `direct.rs`): that peer has no business with it.
    /// Only our own ids can be one (looked up only then: this runs for
    /// every request relayed).
    fn written_elsewhere(&self, conv: ConversationId, peer: PeerId) -> bool {
        conv.process() == self.link.process.uid()
            && (self.link.remote_calls)
                .link_of(&conv)
                .is_some_and(|l| l != peer.0)
    }

    /// Sends a local publisher's report to peers: to one, batched with the
    /// reports before it where it can be (see `report_to_peer`); to many,
    /// one frame, encoded once (straight into the outbox), for every link
    /// in `peers`. `to` names the one subscriber it is for, if it is for
    /// one.
    pub(super) fn send_report_frame(
        &mut self,
        peers: &[PeerId],
        publisher: AgentKey,
        to: Option<AgentKey>,
        subject: &str,
        payload: &[u8],
        holder: &mut Holder,
    ) {
        if let [peer] = peers {
            return self.report_to_peer(*peer, publisher, to, subject, payload, holder);
        }
        let encode = |buf: &mut Vec<u8>| {
            wire::encode_report_frame(buf, publisher, to, subject, payload).map(|_| ())
        };
        self.report_to_peers(peers, encode, 1, holder);
    }

    /// A report frame (one report or a batch) from a peer: onto the queues
    /// of local subscribers, and on to other peers as the frame it came in
    /// (with its prefix, copied once into the outbox for all of them). Its
    /// credit is held until every report of it is delivered everywhere,
    /// then given back (see `flow`).
    fn remote_report(&mut self, peer: PeerId, report: ReportRef<'_>, raw: &[u8]) {
        let cost = flow::report_cost(raw.len(), report.payloads.len());
        if !self.take_credit(peer, cost) {
            return;
        }
        let mut holder = Holder::link(peer, cost);
        self.remote_report_held(peer, report, raw, &mut holder);
        self.delivered(holder);
    }

    fn remote_report_held(
        &mut self,
        peer: PeerId,
        report: ReportRef<'_>,
        raw: &[u8],
        holder: &mut Holder,
    ) {
        let max = self.link.config.max_subject_len;
        if let Err(e) = limits::check_name("report subject", report.subject, max) {
            return self.breach(peer, &e);
        }
        if let Some(to) = report.to {
            return self.remote_report_to(peer, to, report, raw, holder);
        }
        let genuine = self.with_fanout(report.publisher, None, report.subject, |this, fanout| {
            if fanout.from != Some(peer) {
                return false; // in the name of a publisher not of this link
            }
            if !fanout.locals.is_empty() {
                let (locals, binding) = (&fanout.locals, &fanout.binding);
                for report in Report::batch(binding, &fanout.subject, report.payloads) {
                    this.deliver_reports(locals, &report, holder);
                }
            }
            if fanout.remotes.iter().any(|t| *t != peer) {
                let mut others = std::mem::take(&mut this.peer_scratch);
                others.clear();
                others.extend(fanout.remotes.iter().copied().filter(|t| *t != peer));
                let relay = |buf: &mut Vec<u8>| {
                    crate::frame::put_frame(buf, raw);
                    Ok(())
                };
                this.report_to_peers(&others, relay, report.payloads.len(), holder);
                this.peer_scratch = others;
            }
            true
        });
        match genuine {
            Some(true) => {}
            Some(false) => {
                self.refuse_frame(peer, "a report in the name of a publisher not of its link")
            }
            None => {
                // A publisher not known here: a peer sends its withdrawal
                // after its reports, so these are reports it sent of one
                // it never announced here, or one it withdrew before them.
                // Not for anyone: counted and said, not lost silently.
                let n = report.payloads.len() as u64;
                Counters::add(&self.link.counters.reports_dropped, n);
                self.warnings.warn(
                    "unknown publisher",
                    format_args!("dropped {n} reports from {peer} of a publisher not known here"),
                );
            }
        }
    }

    /// A report for one subscriber (`send_report` on the far side).
    fn remote_report_to(
        &mut self,
        peer: PeerId,
        to: AgentKey,
        report: ReportRef<'_>,
        raw: &[u8],
        holder: &mut Holder,
    ) {
        let Some((publisher, route)) = self
            .registry
            .get(&report.publisher)
            .map(|e| (e.binding.clone(), e.route))
        else {
            return; // withdrawn meanwhile
        };
        if route != Route::Remote(peer) {
            return self.refuse_frame(peer, "a report in the name of a publisher not of its link");
        }
        match self.route_of(&to) {
            Some(Route::Local(agent)) => {
                let subject: Arc<str> = report.subject.into();
                for report in Report::batch(&publisher, &subject, report.payloads) {
                    self.deliver_reports(&[agent], &report, holder);
                }
            }
            Some(Route::Remote(t)) if t != peer => {
                let relay = |buf: &mut Vec<u8>| {
                    crate::frame::put_frame(buf, raw);
                    Ok(())
                };
                self.report_to_peers(&[t], relay, report.payloads.len(), holder);
            }
            _ => {}
        }
    }
}
