//! The registry side of the core: services opening and withdrawing,
//! local or remote, with their groups and the monitors that hear of them.

use std::sync::Arc;

use super::registry::Route;
use super::{Class, Core, Local};
use crate::error::Error;
use crate::event::{Event, ServiceAnnouncement, ServiceStatus};
use crate::ids::{AgentId, AgentKey, ServiceBinding};
use crate::mailbox::command::MonitorKind;
use crate::mailbox::inbox::Inbox;

impl Core {
    pub(super) fn open(&mut self, binding: ServiceBinding, inbox: Arc<Inbox>) {
        let agent = binding.agent_identity();
        log::debug!("netsvc: service {binding} available");
        self.locals.insert(
            agent,
            Local {
                binding: binding.clone(),
                inbox,
                timers: Vec::new(),
                flow: Default::default(),
            },
        );
        self.add_agent(binding, Route::Local(agent));
    }

    /// A new agent, local or remote: the service is announced, then each of
    /// its groups, then subscriptions by its name take effect; peers hear of
    /// it where its audience allows. The agent enters the registry with all
    /// its groups at once (joining them one by one copied the group list
    /// per group: quadratic in what a peer sent).
    pub(super) fn add_agent(&mut self, binding: ServiceBinding, route: Route) {
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

    pub(super) fn group(&mut self, agent: AgentId, group: &str, join: bool) {
        if let Some(local) = self.locals.get(&agent) {
            let key = local.binding.key();
            self.change_group(key, group, join);
        }
    }

    /// Joins or leaves a group, local or remote: group monitors and peers hear of it.
    pub(super) fn change_group(&mut self, key: AgentKey, group: &str, join: bool) {
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

    pub(super) fn monitor(&mut self, agent: AgentId, kind: MonitorKind, key: &str, on: bool) {
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
    pub(super) fn withdraw(&mut self, agent: AgentId, drain: bool) {
        // Out of `locals` first: the withdrawn service hears nothing more.
        // Dropping its queue's sender disconnects the queue once drained.
        let Some(local) = self.locals.remove(&agent) else {
            return;
        };
        log::debug!("netsvc: service {} withdrawn", local.binding);
        let local = {
            let mut local = local;
            let flow = std::mem::take(&mut local.flow);
            self.forget_local_flow(flow);
            self.reports.forget_overflows(local.binding.key());
            local
        };
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
    pub(super) fn remove_agent(&mut self, key: AgentKey, why: &str, fail_pending: bool) {
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
            if let (Route::Remote(peer), true) = (entry.route, fail_pending) {
                // Calls written onto its link by their callers fail too.
                let error = || {
                    Error::ServiceUnavailable(format!("{binding} {why} while the call was pending"))
                };
                let (calls, counters) = (&self.link.remote_calls, &self.link.counters);
                calls.fail_on(peer.0, Some(key), &error, counters);
            }
            self.announce_service(&entry.binding, ServiceStatus::Withdrawn);
            let message = crate::wire::Message::Withdrawn {
                agent: key,
                draining: !fail_pending,
            };
            self.broadcast_withdrawal(&entry.binding, entry.route, &message);
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
}
