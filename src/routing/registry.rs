//! The routing table: which agents exist, their names and groups, how to
//! reach each, and which local agents monitor which names and groups.
//!
//! Pure data, owned by the dispatcher thread; it decides nothing about
//! delivery. The exchange adds remote routes here beside the local ones.
//!
//! Every change a peer can drive costs O(1) amortised (or O(log n)) per
//! item it names: members of a name or group are kept in an ordered set
//! (order of arrival, for lookups and round-robin) with a hash index, and
//! an agent arrives with all its groups at once rather than joining them one
//! by one (each join copies the binding's group list: 20,000 groups in one
//! announcement cost 12.8 s that way).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;

use crate::ids::{AgentId, AgentKey, ServiceBinding};

/// How to reach an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// A service of this dispatcher.
    Local(AgentId),
    /// A service in another process, through the exchange connection with
    /// this token.
    Remote(crate::routing::PeerId),
}

#[derive(Debug)]
pub(crate) struct Entry {
    /// The binding with the agent's current groups.
    pub binding: ServiceBinding,
    pub route: Route,
}

/// A set that remembers the order of insertion: O(log n) insert and
/// remove, O(1) membership, iteration in order.
#[derive(Debug)]
pub(crate) struct Ordered<T> {
    next: u64,
    order: BTreeMap<u64, T>,
    index: HashMap<T, u64>,
}

impl<T> Default for Ordered<T> {
    fn default() -> Self {
        Ordered {
            next: 0,
            order: BTreeMap::new(),
            index: HashMap::new(),
        }
    }
}

impl<T: Hash + Eq + Clone> Ordered<T> {
    /// Adds `item` at the end unless it is there; true if added.
    pub(crate) fn insert(&mut self, item: T) -> bool {
        if self.index.contains_key(&item) {
            return false;
        }
        let seq = self.next;
        self.next += 1;
        self.index.insert(item.clone(), seq);
        self.order.insert(seq, item);
        true
    }

    /// Removes `item`; true if it was there.
    pub(crate) fn remove(&mut self, item: &T) -> bool {
        match self.index.remove(item) {
            Some(seq) => {
                self.order.remove(&seq);
                true
            }
            None => false,
        }
    }

    pub(crate) fn contains(&self, item: &T) -> bool {
        self.index.contains_key(item)
    }

    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The items in order of insertion.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + '_ {
        self.order.values()
    }
}

#[derive(Default)]
pub(crate) struct Registry {
    agents: HashMap<AgentKey, Entry>,
    names: HashMap<String, Ordered<AgentKey>>,
    groups: HashMap<String, Ordered<AgentKey>>,
    name_monitors: HashMap<String, Ordered<AgentId>>,
    group_monitors: HashMap<String, Ordered<AgentId>>,
    /// What each agent monitors, `(by_group, key)`: so that its monitors go
    /// with it without a scan of everyone's.
    monitoring: HashMap<AgentId, HashSet<(bool, String)>>,
    /// Changes with every agent added, removed or regrouped (what remembered
    /// report routes are checked against).
    generation: u64,
}

/// Adds `item` to the set under `key`; true if added.
fn add_to<K: Hash + Eq, T: Hash + Eq + Clone>(
    map: &mut HashMap<K, Ordered<T>>,
    key: K,
    item: T,
) -> bool {
    map.entry(key).or_default().insert(item)
}

/// Removes `item` from the set under `key`; true if it was there.
fn remove_from<T: Hash + Eq + Clone>(
    map: &mut HashMap<String, Ordered<T>>,
    key: &str,
    item: &T,
) -> bool {
    let Some(set) = map.get_mut(key) else {
        return false;
    };
    let removed = set.remove(item);
    if set.is_empty() {
        map.remove(key);
    }
    removed
}

impl Registry {
    /// Adds an agent with all the groups of its binding (a group named
    /// twice counts once); returns the binding as stored. The caller
    /// announces the service and each of its groups.
    pub(crate) fn insert(&mut self, binding: ServiceBinding, route: Route) -> ServiceBinding {
        self.generation += 1;
        let key = binding.key();
        let mut seen = HashSet::with_capacity(binding.groups().len());
        let binding = if binding.groups().iter().all(|g| seen.insert(g.as_str())) {
            binding
        } else {
            let mut seen = HashSet::new();
            let groups = binding
                .groups()
                .iter()
                .filter(|g| seen.insert(g.as_str()))
                .cloned()
                .collect();
            binding.with_groups(groups)
        };
        add_to(&mut self.names, binding.service_name().to_owned(), key);
        for g in binding.groups() {
            add_to(&mut self.groups, g.clone(), key);
        }
        self.agents.insert(
            key,
            Entry {
                binding: binding.clone(),
                route,
            },
        );
        binding
    }

    /// Removes an agent from names and groups; the caller announces.
    pub(crate) fn remove(&mut self, key: &AgentKey) -> Option<Entry> {
        let entry = self.agents.remove(key)?;
        self.generation += 1;
        remove_from(&mut self.names, entry.binding.service_name(), key);
        for g in entry.binding.groups() {
            remove_from(&mut self.groups, g, key);
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
            .flat_map(Ordered::iter)
            .filter_map(|k| self.agents.get(k).map(|e| &e.binding))
    }

    pub(crate) fn group_members(&self, group: &str) -> impl Iterator<Item = &ServiceBinding> + '_ {
        self.groups
            .get(group)
            .into_iter()
            .flat_map(Ordered::iter)
            .filter_map(|k| self.agents.get(k).map(|e| &e.binding))
    }

    /// How many groups the agent is in (0 if it is unknown).
    pub(crate) fn group_count(&self, key: &AgentKey) -> usize {
        self.agents.get(key).map_or(0, |e| e.binding.groups().len())
    }

    /// Whether the agent is a member of the group: O(1).
    pub(crate) fn member(&self, key: &AgentKey, group: &str) -> bool {
        self.groups.get(group).is_some_and(|s| s.contains(key))
    }

    /// Adds the agent to a group; the updated binding if it was not a member.
    /// Costs O(its groups): the binding is rebuilt.
    pub(crate) fn join(&mut self, key: &AgentKey, group: &str) -> Option<ServiceBinding> {
        if !self.agents.contains_key(key) || self.member(key, group) {
            return None;
        }
        let entry = self.agents.get_mut(key)?;
        self.generation += 1;
        let mut groups = Vec::with_capacity(entry.binding.groups().len() + 1);
        groups.extend_from_slice(entry.binding.groups());
        groups.push(group.to_owned());
        entry.binding = entry.binding.with_groups(groups);
        add_to(&mut self.groups, group.to_owned(), *key);
        Some(entry.binding.clone())
    }

    /// Removes the agent from a group; the updated binding if it was a member.
    pub(crate) fn leave(&mut self, key: &AgentKey, group: &str) -> Option<ServiceBinding> {
        if !self.member(key, group) {
            return None;
        }
        let entry = self.agents.get_mut(key)?;
        self.generation += 1;
        let groups = entry
            .binding
            .groups()
            .iter()
            .filter(|g| *g != group)
            .cloned()
            .collect();
        entry.binding = entry.binding.with_groups(groups);
        remove_from(&mut self.groups, group, key);
        Some(entry.binding.clone())
    }

    /// Takes the agent out of every group at once; the binding without
    /// groups and the groups it was in (in order), if it had any.
    pub(crate) fn leave_all(&mut self, key: &AgentKey) -> Option<(ServiceBinding, Vec<String>)> {
        let entry = self.agents.get_mut(key)?;
        if entry.binding.groups().is_empty() {
            return None;
        }
        self.generation += 1;
        let groups = entry.binding.groups().to_vec();
        entry.binding = entry.binding.with_groups(Vec::new());
        let bare = entry.binding.clone();
        for g in &groups {
            remove_from(&mut self.groups, g, key);
        }
        Some((bare, groups))
    }

    /// Starts or stops a monitor; true if that changed anything.
    pub(crate) fn monitor(&mut self, by_group: bool, key: &str, agent: AgentId, on: bool) -> bool {
        let map = if by_group {
            &mut self.group_monitors
        } else {
            &mut self.name_monitors
        };
        if on {
            let added = add_to(map, key.to_owned(), agent);
            if added {
                self.monitoring
                    .entry(agent)
                    .or_default()
                    .insert((by_group, key.to_owned()));
            }
            added
        } else {
            let removed = remove_from(map, key, &agent);
            if let Some(set) = self.monitoring.get_mut(&agent) {
                set.remove(&(by_group, key.to_owned()));
                if set.is_empty() {
                    self.monitoring.remove(&agent);
                }
            }
            removed
        }
    }

    /// The monitors of a name, in order of starting.
    pub(crate) fn name_monitors(&self, name: &str) -> Vec<AgentId> {
        self.name_monitors
            .get(name)
            .map_or_else(Vec::new, |s| s.iter().copied().collect())
    }

    /// The monitors of a group, in order of starting.
    pub(crate) fn group_monitors(&self, group: &str) -> Vec<AgentId> {
        self.group_monitors
            .get(group)
            .map_or_else(Vec::new, |s| s.iter().copied().collect())
    }

    /// Forgets every monitor held by the agent: O(its monitors).
    pub(crate) fn drop_monitors(&mut self, agent: AgentId) {
        for (by_group, key) in self.monitoring.remove(&agent).unwrap_or_default() {
            let map = if by_group {
                &mut self.group_monitors
            } else {
                &mut self.name_monitors
            };
            remove_from(map, &key, &agent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ProcessId;

    fn binding(agent: u64, name: &str, groups: &[&str]) -> ServiceBinding {
        ServiceBinding::new(
            name.into(),
            "*".into(),
            AgentId(agent),
            ProcessId::new("t"),
            groups.iter().map(|g| g.to_string()).collect(),
        )
    }

    #[test]
    fn members_keep_their_order_and_leave_in_any() {
        let mut r = Registry::default();
        let keys: Vec<AgentKey> = (0..5)
            .map(|i| {
                r.insert(binding(i, "n", &["g"]), Route::Local(AgentId(i)))
                    .key()
            })
            .collect();
        r.remove(&keys[2]);
        let names: Vec<AgentKey> = r.by_name("n").map(|b| b.key()).collect();
        assert_eq!(names, [keys[0], keys[1], keys[3], keys[4]]);
        let members: Vec<AgentKey> = r.group_members("g").map(|b| b.key()).collect();
        assert_eq!(members, names);
        assert!(r.leave(&keys[0], "g").is_some());
        assert!(r.leave(&keys[0], "g").is_none());
        assert!(r.join(&keys[0], "g").is_some());
        let members: Vec<AgentKey> = r.group_members("g").map(|b| b.key()).collect();
        assert_eq!(members, [keys[1], keys[3], keys[4], keys[0]]);
    }

    #[test]
    fn an_agent_arrives_with_its_groups_once_each() {
        let mut r = Registry::default();
        let b = r.insert(
            binding(1, "n", &["a", "b", "a"]),
            Route::Remote(crate::routing::PeerId(3)),
        );
        assert_eq!(b.groups(), ["a".to_string(), "b".to_string()]);
        assert_eq!(r.group_count(&b.key()), 2);
        assert!(r.join(&b.key(), "a").is_none());
        let (bare, groups) = r.leave_all(&b.key()).unwrap();
        assert!(bare.groups().is_empty());
        assert_eq!(groups, ["a".to_string(), "b".to_string()]);
        assert_eq!(r.group_members("a").count(), 0);
    }

    #[test]
    fn many_groups_insert_in_linear_time() {
        // 20,000 groups took 12.8 s joined one by one; this checks the
        // result, the module doc says why it is fast.
        let mut r = Registry::default();
        let groups: Vec<String> = (0..20_000).map(|i| format!("g{i}")).collect();
        let refs: Vec<&str> = groups.iter().map(String::as_str).collect();
        let b = r.insert(
            binding(1, "n", &refs),
            Route::Remote(crate::routing::PeerId(1)),
        );
        assert_eq!(r.group_members("g19999").count(), 1);
        assert!(r.remove(&b.key()).is_some());
        assert_eq!(r.group_members("g0").count(), 0);
    }

    #[test]
    fn monitors_go_with_their_agent() {
        let mut r = Registry::default();
        let (a, b) = (AgentId(1), AgentId(2));
        assert!(r.monitor(false, "n", a, true));
        assert!(!r.monitor(false, "n", a, true));
        assert!(r.monitor(true, "g", a, true));
        assert!(r.monitor(false, "n", b, true));
        r.drop_monitors(a);
        assert_eq!(r.name_monitors("n"), [b]);
        assert!(r.group_monitors("g").is_empty());
        assert!(!r.monitor(false, "n", a, false));
    }
}
