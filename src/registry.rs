//! The routing table: which agents exist, their names and groups, how to
//! reach each, and which local agents monitor which names and groups.
//!
//! Pure data, owned by the dispatcher thread; it decides nothing about
//! delivery. The exchange adds remote routes here beside the local ones.

use std::collections::HashMap;

use crate::ids::{AgentId, AgentKey, ServiceBinding};

/// How to reach an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// A service of this dispatcher.
    Local(AgentId),
    /// A service in another process, through the exchange connection with
    /// this token.
    Remote(usize),
}

#[derive(Debug)]
pub(crate) struct Entry {
    /// The binding with the agent's current groups.
    pub binding: ServiceBinding,
    pub route: Route,
}

#[derive(Default)]
pub(crate) struct Registry {
    agents: HashMap<AgentKey, Entry>,
    names: HashMap<String, Vec<AgentKey>>,
    groups: HashMap<String, Vec<AgentKey>>,
    name_monitors: HashMap<String, Vec<AgentId>>,
    group_monitors: HashMap<String, Vec<AgentId>>,
    /// Changes with every agent added, removed or regrouped (what remembered
    /// report routes are checked against).
    generation: u64,
}

/// Adds `item` to the list under `key` unless it is there; true if added.
fn add_unique<K, T: PartialEq>(map: &mut HashMap<K, Vec<T>>, key: K, item: T) -> bool
where
    K: std::hash::Hash + Eq,
{
    let list = map.entry(key).or_default();
    if list.contains(&item) {
        false
    } else {
        list.push(item);
        true
    }
}

/// Removes `item` from the list under `key`; true if it was there.
fn remove_item<T: PartialEq>(map: &mut HashMap<String, Vec<T>>, key: &str, item: &T) -> bool {
    let Some(list) = map.get_mut(key) else {
        return false;
    };
    let before = list.len();
    list.retain(|x| x != item);
    let removed = list.len() != before;
    if list.is_empty() {
        map.remove(key);
    }
    removed
}

impl Registry {
    pub(crate) fn insert(&mut self, binding: ServiceBinding, route: Route) {
        self.generation += 1;
        let key = binding.key();
        self.names
            .entry(binding.service_name().to_owned())
            .or_default()
            .push(key);
        for g in binding.groups() {
            add_unique(&mut self.groups, g.clone(), key);
        }
        self.agents.insert(key, Entry { binding, route });
    }

    /// Removes an agent from names and groups; the caller announces.
    pub(crate) fn remove(&mut self, key: &AgentKey) -> Option<Entry> {
        let entry = self.agents.remove(key)?;
        self.generation += 1;
        remove_item(&mut self.names, entry.binding.service_name(), key);
        for g in entry.binding.groups() {
            remove_item(&mut self.groups, g, key);
        }
        Some(entry)
    }

    /// A number that changes whenever an agent is added, removed or changes
    /// its groups.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn get(&self, key: &AgentKey) -> Option<&Entry> {
        self.agents.get(key)
    }

    /// Every agent with its route, in no particular order.
    pub(crate) fn all(&self) -> impl Iterator<Item = (&ServiceBinding, Route)> + '_ {
        self.agents.values().map(|e| (&e.binding, e.route))
    }

    pub(crate) fn by_name(&self, name: &str) -> impl Iterator<Item = &ServiceBinding> + '_ {
        self.names
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|k| self.agents.get(k).map(|e| &e.binding))
    }

    pub(crate) fn group_members(&self, group: &str) -> impl Iterator<Item = &ServiceBinding> + '_ {
        self.groups
            .get(group)
            .into_iter()
            .flatten()
            .filter_map(|k| self.agents.get(k).map(|e| &e.binding))
    }

    /// Adds the agent to a group; the updated binding if it was not a member.
    pub(crate) fn join(&mut self, key: &AgentKey, group: &str) -> Option<ServiceBinding> {
        let entry = self.agents.get_mut(key)?;
        if entry.binding.groups().iter().any(|g| g == group) {
            return None;
        }
        self.generation += 1;
        let mut groups = entry.binding.groups().to_vec();
        groups.push(group.to_owned());
        entry.binding = entry.binding.with_groups(groups);
        add_unique(&mut self.groups, group.to_owned(), *key);
        Some(entry.binding.clone())
    }

    /// Removes the agent from a group; the updated binding if it was a member.
    pub(crate) fn leave(&mut self, key: &AgentKey, group: &str) -> Option<ServiceBinding> {
        let entry = self.agents.get_mut(key)?;
        if !entry.binding.groups().iter().any(|g| g == group) {
            return None;
        }
        self.generation += 1;
        let groups = entry
            .binding
            .groups()
            .iter()
            .filter(|g| *g != group)
            .cloned()
            .collect();
        entry.binding = entry.binding.with_groups(groups);
        remove_item(&mut self.groups, group, key);
        Some(entry.binding.clone())
    }

    /// Starts or stops a monitor; true if that changed anything.
    pub(crate) fn monitor(&mut self, by_group: bool, key: &str, agent: AgentId, on: bool) -> bool {
        let map = if by_group {
            &mut self.group_monitors
        } else {
            &mut self.name_monitors
        };
        if on {
            add_unique(map, key.to_owned(), agent)
        } else {
            remove_item(map, key, &agent)
        }
    }

    pub(crate) fn name_monitors(&self, name: &str) -> &[AgentId] {
        self.name_monitors.get(name).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn group_monitors(&self, group: &str) -> &[AgentId] {
        self.group_monitors.get(group).map_or(&[], Vec::as_slice)
    }

    /// Forgets every monitor held by the agent.
    pub(crate) fn drop_monitors(&mut self, agent: AgentId) {
        for map in [&mut self.name_monitors, &mut self.group_monitors] {
            map.retain(|_, list| {
                list.retain(|a| *a != agent);
                !list.is_empty()
            });
        }
    }
}
