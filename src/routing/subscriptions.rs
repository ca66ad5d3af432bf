//! The publish/subscribe side of the core: subscriptions by name or by
//! agent, their announcements, publishing (through the fan-out cache) and
//! the cached reports a late subscriber gets.

use std::sync::Arc;
use std::time::Instant;

use super::reports::Target;
use super::{Class, Core};
use crate::event::{
    Event, Lifetime, PublisherAnnouncement, Report, ServiceStatus, SubscriptionAnnouncement,
    SubscriptionStatus,
};
use crate::ids::{AgentId, AgentKey, ServiceBinding};
use crate::mailbox::command::PublisherSpec;
use crate::mailbox::inbox::Flow;
use crate::mailbox::staged::StagedPayload;
use crate::pattern::Pattern;
use crate::stats::Counters;
use crate::wire::Payload;

use super::flow::Holder;
use super::registry::Route;
use super::PeerId;
use crate::event::Confirmed;
use crate::wire::Message;

impl Core {
    pub(super) fn subscribe(
        &mut self,
        agent: AgentId,
        publisher: PublisherSpec,
        pattern: &str,
        on: bool,
    ) {
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
    pub(super) fn subscribe_agent(
        &mut self,
        me: AgentKey,
        pkey: AgentKey,
        pattern: &str,
        on: bool,
        owner: Option<PeerId>,
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
    pub(super) fn subscription_started(
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
            let report = Report::new(publisher.clone(), subject, payload);
            self.deliver_key(subscriber, Event::Report(report), Class::Data);
        }
        // Where the publisher is at home, the subscription is in force:
        // the subscriber is told (after its cached reports), across every
        // exchange on the way.
        if matches!(self.route_of(&publisher.key()), Some(Route::Local(_))) {
            self.confirm(subscriber, publisher.key(), pattern);
        }
    }

    /// Tells a subscriber that its subscription is in force at its
    /// publisher's process: an event if it is local, a frame toward it if
    /// not.
    pub(super) fn confirm(&mut self, subscriber: AgentKey, publisher: AgentKey, pattern: &str) {
        match self.route_of(&subscriber) {
            Some(Route::Local(agent)) => {
                let Some(binding) = self.binding_of(&publisher) else {
                    return;
                };
                let c = Confirmed {
                    publisher: binding,
                    pattern: pattern.to_owned(),
                };
                self.deliver(agent, Event::Confirmed(c), Class::Control);
            }
            Some(Route::Remote(peer)) => {
                let message = Message::Subscribed {
                    subscriber,
                    publisher,
                    pattern: pattern.to_owned(),
                };
                self.send(peer, &message);
            }
            None => {}
        }
    }

    /// A subscription ended (the subscriber is still there): Withdrawn to
    /// the publisher, and to the subscriber if nothing else ties it to it.
    pub(super) fn subscription_ended(
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
    pub(super) fn publisher_appeared(&mut self, key: AgentKey) {
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
    pub(super) fn subscriber_vanished(&mut self, key: AgentKey, binding: &ServiceBinding) {
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
    pub(super) fn publisher_vanished(&mut self, key: AgentKey, binding: &ServiceBinding) {
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

    /// Publishes a service's staged segments up to `upto`, oldest first,
    /// and lets their reports go as held by the stage (each still held
    /// where it waits).
    pub(super) fn publish_staged(&mut self, agent: AgentId, upto: u64) {
        let Some(local) = self.locals.get(&agent) else {
            return;
        };
        let (publisher, flow) = (local.binding.clone(), local.inbox.flow.clone());
        while let Some(segment) = flow.staged.take(upto) {
            for (subject, payload, lifetime) in segment.reports() {
                self.publish(&publisher, &flow, subject, payload, lifetime);
            }
            flow.release_n(segment.len(), flow.low);
            flow.staged.give_back(segment);
        }
    }

    fn publish(
        &mut self,
        publisher: &ServiceBinding,
        flow: &Arc<Flow>,
        subject: &str,
        payload: StagedPayload<'_>,
        lifetime: Lifetime,
    ) {
        let mut holder = Holder::publisher(flow);
        let key = publisher.key();
        Counters::bump(&self.link.counters.reports_published);
        // Local subscribers get the report on their queues; each connection
        // leading to remote subscribers gets one frame, encoded once. Where
        // there is no room, it waits, and holds the publisher (see `flow`).
        self.with_fanout(key, Some(publisher), subject, |this, fanout| {
            // A payload is made (a copy of the staged bytes) only to be
            // kept: cached, or queued for a local subscriber.
            let mut kept = None;
            if lifetime == Lifetime::None {
                this.reports.forget(key, &fanout.subject);
            } else {
                let p = kept.get_or_insert_with(|| payload.to_payload());
                this.reports.store(key, &fanout.subject, p, lifetime);
            }
            let (subject, locals) = (&fanout.subject, &fanout.locals);
            if !locals.is_empty() {
                let p = kept.get_or_insert_with(|| payload.to_payload()).clone();
                let report = Report::new(publisher.clone(), subject.clone(), p);
                this.deliver_reports(locals, &report, &mut holder);
            }
            if !fanout.remotes.is_empty() {
                let remotes = &fanout.remotes;
                this.send_report_frame(remotes, key, None, subject, payload.bytes(), &mut holder);
            }
        });
        self.delivered(holder);
    }

    /// Puts one report on the queues of these local subscribers (or has it
    /// wait for room, held by `holder`).
    pub(super) fn deliver_reports(
        &mut self,
        agents: &[AgentId],
        report: &Report,
        holder: &mut Holder,
    ) {
        for &agent in agents {
            self.report_to_local(agent, report.clone(), holder);
        }
    }

    pub(super) fn send_report(
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
        let flow = local.inbox.flow.clone();
        let mut holder = Holder::publisher(&flow);
        match self.route_of(&to) {
            Some(Route::Local(agent)) => {
                let report = Report::new(publisher, subject.into(), payload);
                self.report_to_local(agent, report, &mut holder);
            }
            Some(Route::Remote(peer)) => {
                let key = publisher.key();
                self.send_report_frame(
                    &[peer],
                    key,
                    Some(to),
                    &subject,
                    payload.as_bytes(),
                    &mut holder,
                );
            }
            None => {}
        }
        self.delivered(holder);
    }
}
