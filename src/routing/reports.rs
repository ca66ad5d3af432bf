//! Subscriptions and the report cache, owned by the dispatcher thread.
//!
//! Pure data: it answers "who gets this report" and "what is cached", and the
//! dispatcher turns the answers into events.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use super::PeerId;
use crate::event::{Lifetime, Overflow};
use crate::ids::AgentKey;
use crate::pattern::Pattern;
use crate::wire::Payload;

#[derive(Debug, Clone)]
pub(crate) struct Sub {
    pub subscriber: AgentKey,
    pub pattern: Pattern,
    /// The exchange connection whose peer made it, if one did: it counts
    /// against that connection's limits.
    owner: Option<PeerId>,
}

impl Sub {
    /// What holding it costs, roughly, in bytes (the pattern is kept twice:
    /// compiled, and as the index's key).
    fn cost(&self) -> usize {
        crate::limits::SUBSCRIPTION_OVERHEAD
            + self.pattern.heap_bytes()
            + self.pattern.as_str().len()
    }
}

struct Cached {
    subject: Arc<str>,
    payload: Payload,
    expires: Option<Instant>,
}

impl Cached {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|t| t > now)
    }
}

/// The subscriptions against one publisher name or agent, in order of
/// subscribing, indexed by subscriber and pattern: adding, removing and
/// "does this subscriber hold one" are O(1) (O(log n) for the order).
#[derive(Default)]
struct SubList {
    next: u64,
    order: BTreeMap<u64, Sub>,
    index: HashMap<AgentKey, HashMap<String, u64>>,
}

impl SubList {
    /// Adds a subscription unless the same one is there; true if added.
    fn add(&mut self, subscriber: AgentKey, pattern: &str, owner: Option<PeerId>) -> Option<&Sub> {
        let mine = self.index.entry(subscriber).or_default();
        if mine.contains_key(pattern) {
            return None;
        }
        let seq = self.next;
        self.next += 1;
        mine.insert(pattern.to_owned(), seq);
        self.order.insert(
            seq,
            Sub {
                subscriber,
                pattern: Pattern::new(pattern),
                owner,
            },
        );
        self.order.get(&seq)
    }

    /// Removes a subscription; it if it was there. The second value:
    /// whether the subscriber holds none here any more.
    fn remove(&mut self, subscriber: AgentKey, pattern: &str) -> (Option<Sub>, bool) {
        let Some(mine) = self.index.get_mut(&subscriber) else {
            return (None, true);
        };
        let Some(seq) = mine.remove(pattern) else {
            return (None, mine.is_empty());
        };
        let none_left = mine.is_empty();
        if none_left {
            self.index.remove(&subscriber);
        }
        (self.order.remove(&seq), none_left)
    }

    /// Removes every subscription of a subscriber, in order of subscribing.
    fn remove_all(&mut self, subscriber: AgentKey) -> Vec<Sub> {
        let Some(mine) = self.index.remove(&subscriber) else {
            return Vec::new();
        };
        let mut seqs: Vec<u64> = mine.into_values().collect();
        seqs.sort_unstable();
        seqs.iter()
            .filter_map(|seq| self.order.remove(seq))
            .collect()
    }

    fn holds(&self, subscriber: AgentKey) -> bool {
        self.index.contains_key(&subscriber)
    }

    /// The subscriber's own subscriptions here.
    fn of(&self, subscriber: AgentKey) -> impl Iterator<Item = &Sub> + '_ {
        self.index
            .get(&subscriber)
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(|seq| self.order.get(seq))
    }

    fn iter(&self) -> impl Iterator<Item = &Sub> + '_ {
        self.order.values()
    }

    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[derive(Default)]
pub(crate) struct Reports {
    /// Subscriptions by publisher service name: they outlive any one agent.
    by_name: HashMap<String, SubList>,
    /// Subscriptions to one publisher agent: they end with it.
    by_agent: HashMap<AgentKey, SubList>,
    /// What each subscriber holds subscriptions against: so that its
    /// subscriptions go with it without a scan of everyone's.
    holdings: HashMap<AgentKey, HashSet<Target>>,
    /// Per exchange connection: how many subscriptions its peer made that
    /// are held, and what they cost in bytes.
    owners: HashMap<PeerId, (usize, usize)>,
    /// The latest cached report per subject, per publisher agent.
    cache: HashMap<AgentKey, HashMap<Arc<str>, Cached>>,
    /// Changes with every subscription added or removed (what remembered
    /// report routes are checked against).
    generation: u64,
    /// Local subscribers' drop policies, by pattern (a subscription without
    /// one waits: `Overflow::Wait`).
    overflows: HashMap<AgentKey, HashMap<String, Overflow>>,
}

impl Reports {
    /// A number that changes whenever a subscription may have been added or
    /// removed.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    fn list_mut(&mut self, target: &Target) -> Option<&mut SubList> {
        match target {
            Target::Name(n) => self.by_name.get_mut(n.as_str()),
            Target::Agent(a) => self.by_agent.get_mut(a),
        }
    }

    fn drop_list(&mut self, target: &Target) {
        match target {
            Target::Name(n) => self.by_name.remove(n.as_str()),
            Target::Agent(a) => self.by_agent.remove(a),
        };
    }

    /// What a connection's peer has made this process hold: subscriptions,
    /// and their cost in bytes.
    pub(crate) fn owned(&self, token: PeerId) -> (usize, usize) {
        self.owners.get(&token).copied().unwrap_or((0, 0))
    }

    fn account(&mut self, sub: &Sub, up: bool) {
        let Some(owner) = sub.owner else {
            return;
        };
        let cost = sub.cost();
        let entry = self.owners.entry(owner).or_default();
        if up {
            entry.0 += 1;
            entry.1 += cost;
        } else {
            entry.0 = entry.0.saturating_sub(1);
            entry.1 = entry.1.saturating_sub(cost);
            if entry.0 == 0 {
                self.owners.remove(&owner);
            }
        }
    }

    fn add(
        &mut self,
        subscriber: AgentKey,
        target: Target,
        pattern: &str,
        owner: Option<PeerId>,
    ) -> bool {
        self.generation += 1;
        let list = match &target {
            Target::Name(n) => self.by_name.entry(n.clone()).or_default(),
            Target::Agent(a) => self.by_agent.entry(*a).or_default(),
        };
        let Some(sub) = list.add(subscriber, pattern, owner) else {
            return false;
        };
        if owner.is_some() {
            let sub = sub.clone();
            self.account(&sub, true);
        }
        self.holdings.entry(subscriber).or_default().insert(target);
        true
    }

    fn remove(&mut self, subscriber: AgentKey, target: Target, pattern: &str) -> bool {
        self.generation += 1;
        let Some(list) = self.list_mut(&target) else {
            return false;
        };
        let (removed, none_left) = list.remove(subscriber, pattern);
        if list.is_empty() {
            self.drop_list(&target);
        }
        let Some(removed) = removed else {
            return false;
        };
        self.account(&removed, false);
        if none_left {
            if let Some(h) = self.holdings.get_mut(&subscriber) {
                h.remove(&target);
                if h.is_empty() {
                    self.holdings.remove(&subscriber);
                }
            }
        }
        true
    }

    pub(crate) fn subscribe_name(
        &mut self,
        subscriber: AgentKey,
        name: &str,
        pattern: &str,
    ) -> bool {
        self.add(subscriber, Target::Name(name.to_owned()), pattern, None)
    }

    pub(crate) fn unsubscribe_name(
        &mut self,
        subscriber: AgentKey,
        name: &str,
        pattern: &str,
    ) -> bool {
        self.remove(subscriber, Target::Name(name.to_owned()), pattern)
    }

    /// Subscribes to one publisher agent; `owner` is the connection whose
    /// peer asks, if one does (see [`owned`](Self::owned)).
    pub(crate) fn subscribe_agent(
        &mut self,
        subscriber: AgentKey,
        publisher: AgentKey,
        pattern: &str,
        owner: Option<PeerId>,
    ) -> bool {
        self.add(subscriber, Target::Agent(publisher), pattern, owner)
    }

    pub(crate) fn unsubscribe_agent(
        &mut self,
        subscriber: AgentKey,
        publisher: AgentKey,
        pattern: &str,
    ) -> bool {
        self.remove(subscriber, Target::Agent(publisher), pattern)
    }

    /// Whether the subscriber holds any subscription at all: O(1).
    pub(crate) fn holds_any(&self, subscriber: AgentKey) -> bool {
        self.holdings.contains_key(&subscriber)
    }

    /// Whether exactly this subscription is held: O(1).
    pub(crate) fn holds_agent(
        &self,
        subscriber: AgentKey,
        publisher: AgentKey,
        pattern: &str,
    ) -> bool {
        self.by_agent
            .get(&publisher)
            .and_then(|l| l.index.get(&subscriber))
            .is_some_and(|m| m.contains_key(pattern))
    }

    fn lists<'a>(&'a self, publisher: AgentKey, name: &str) -> impl Iterator<Item = &'a SubList> {
        self.by_name
            .get(name)
            .into_iter()
            .chain(self.by_agent.get(&publisher))
    }

    /// Every subscription against one publisher agent: by its name and to it.
    pub(crate) fn subs_against<'a>(
        &'a self,
        publisher: AgentKey,
        name: &str,
    ) -> impl Iterator<Item = &'a Sub> + 'a {
        self.lists(publisher, name).flat_map(SubList::iter)
    }

    /// The by-name subscriptions of a service name, in order of subscribing.
    pub(crate) fn name_subs(&self, name: &str) -> Vec<Sub> {
        self.by_name
            .get(name)
            .map_or_else(Vec::new, |l| l.iter().cloned().collect())
    }

    /// Whether the subscriber holds any subscription against the publisher: O(1).
    pub(crate) fn subscribed(&self, subscriber: AgentKey, publisher: AgentKey, name: &str) -> bool {
        self.lists(publisher, name).any(|l| l.holds(subscriber))
    }

    /// Whether the subscriber holds a subscription against the publisher
    /// whose pattern matches the subject (looking at its own only).
    pub(crate) fn wants(
        &self,
        subscriber: AgentKey,
        publisher: AgentKey,
        name: &str,
        subject: &str,
    ) -> bool {
        self.lists(publisher, name)
            .flat_map(|l| l.of(subscriber))
            .any(|s| s.pattern.matches(subject))
    }

    /// Whether the subscriber holds a subscription with exactly this
    /// pattern against the publisher (by its agent or its name).
    pub(crate) fn holds_pattern(
        &self,
        subscriber: AgentKey,
        publisher: AgentKey,
        name: &str,
        pattern: &str,
    ) -> bool {
        self.lists(publisher, name)
            .flat_map(|l| l.of(subscriber))
            .any(|s| s.pattern.as_str() == pattern)
    }

    /// Sets the drop policy of a local subscriber's subscriptions with
    /// this pattern.
    pub(crate) fn set_overflow(&mut self, subscriber: AgentKey, pattern: &str, o: Overflow) {
        let mine = self.overflows.entry(subscriber).or_default();
        if o == Overflow::Wait {
            mine.remove(pattern);
            if mine.is_empty() {
                self.overflows.remove(&subscriber);
            }
        } else {
            mine.insert(pattern.to_owned(), o);
        }
    }

    /// A subscriber that goes forgets its policies.
    pub(crate) fn forget_overflows(&mut self, subscriber: AgentKey) {
        self.overflows.remove(&subscriber);
    }

    /// What a report of this publisher and subject does while the
    /// subscriber's queue is full: it waits if any of the subscriber's
    /// matching subscriptions waits, else the first one's policy applies.
    pub(crate) fn overflow_of(
        &self,
        subscriber: AgentKey,
        publisher: AgentKey,
        name: &str,
        subject: &str,
    ) -> Overflow {
        let Some(mine) = self.overflows.get(&subscriber) else {
            return Overflow::Wait;
        };
        let mut policy = None;
        for s in self.lists(publisher, name).flat_map(|l| l.of(subscriber)) {
            if !s.pattern.matches(subject) {
                continue;
            }
            match mine.get(s.pattern.as_str()) {
                None | Some(Overflow::Wait) => return Overflow::Wait,
                Some(o) => {
                    policy.get_or_insert(*o);
                }
            }
        }
        policy.unwrap_or(Overflow::Wait)
    }

    /// Appends the distinct subscribers whose patterns match the subject
    /// (in order of subscribing, each once, deduplicated with a hash set).
    pub(crate) fn matching(
        &self,
        publisher: AgentKey,
        name: &str,
        subject: &str,
        out: &mut Vec<AgentKey>,
    ) {
        let mut seen: HashSet<AgentKey> = out.iter().copied().collect();
        for s in self.subs_against(publisher, name) {
            if !seen.contains(&s.subscriber) && s.pattern.matches(subject) {
                seen.insert(s.subscriber);
                out.push(s.subscriber);
            }
        }
    }

    /// Removes every subscription a subscriber holds, returning what each was
    /// against, by name first, then by agent. O(what it holds).
    pub(crate) fn remove_subscriber(&mut self, subscriber: AgentKey) -> Vec<(Target, String)> {
        self.generation += 1;
        let mut targets: Vec<Target> = self
            .holdings
            .remove(&subscriber)
            .unwrap_or_default()
            .into_iter()
            .collect();
        targets.sort_by_key(|t| matches!(t, Target::Agent(_)));
        let mut removed = Vec::new();
        for target in targets {
            let Some(list) = self.list_mut(&target) else {
                continue;
            };
            let subs = list.remove_all(subscriber);
            if list.is_empty() {
                self.drop_list(&target);
            }
            for sub in subs {
                self.account(&sub, false);
                removed.push((target.clone(), sub.pattern.as_str().to_owned()));
            }
        }
        removed
    }

    /// Forgets a withdrawn publisher agent: its subscriptions by binding and
    /// its cache. Subscriptions by name stay.
    pub(crate) fn remove_publisher(&mut self, publisher: AgentKey) {
        self.generation += 1;
        if let Some(list) = self.by_agent.remove(&publisher) {
            let target = Target::Agent(publisher);
            for sub in list.order.values() {
                self.account(sub, false);
            }
            for subscriber in list.index.keys() {
                if let Some(h) = self.holdings.get_mut(subscriber) {
                    h.remove(&target);
                    if h.is_empty() {
                        self.holdings.remove(subscriber);
                    }
                }
            }
        }
        self.cache.remove(&publisher);
    }

    /// Forgets the report cached for the publisher's subject (a report of
    /// no lifetime replaces it with nothing).
    pub(crate) fn forget(&mut self, publisher: AgentKey, subject: &str) {
        if self.cache.is_empty() {
            return;
        }
        if let Some(c) = self.cache.get_mut(&publisher) {
            c.remove(subject);
        }
    }

    /// Applies a report's lifetime to the cache. The clock is read only for
    /// a timed lifetime (read per report, it showed in profiles); expired
    /// entries are swept then, and are never delivered in any case.
    pub(crate) fn store(
        &mut self,
        publisher: AgentKey,
        subject: &Arc<str>,
        payload: &Payload,
        lifetime: Lifetime,
    ) {
        let expires = match lifetime {
            Lifetime::None => return self.forget(publisher, subject),
            Lifetime::Forever => None,
            Lifetime::For(d) => {
                let now = Instant::now();
                if let Some(c) = self.cache.get_mut(&publisher) {
                    c.retain(|_, c| c.live(now));
                }
                Some(now + d)
            }
        };
        let cache = self.cache.entry(publisher).or_default();
        cache.insert(
            subject.clone(),
            Cached {
                subject: subject.clone(),
                payload: payload.clone(),
                expires,
            },
        );
    }

    /// The live cached reports of a publisher whose subjects match, oldest
    /// subject first is not promised.
    pub(crate) fn cached(
        &self,
        publisher: AgentKey,
        pattern: &Pattern,
        now: Instant,
    ) -> Vec<(Arc<str>, Payload)> {
        self.cache
            .get(&publisher)
            .into_iter()
            .flat_map(|c| c.values())
            .filter(|c| c.live(now) && pattern.matches(&c.subject))
            .map(|c| (c.subject.clone(), c.payload.clone()))
            .collect()
    }

    /// Drops cached reports whose subjects match; all of them with `None`.
    pub(crate) fn expire(&mut self, publisher: AgentKey, pattern: Option<&Pattern>) {
        match pattern {
            None => {
                self.cache.remove(&publisher);
            }
            Some(p) => {
                if let Some(c) = self.cache.get_mut(&publisher) {
                    c.retain(|subject, _| !p.matches(subject));
                }
            }
        }
    }
}

/// What a removed subscription was against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    Name(String),
    Agent(AgentKey),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::AgentId;

    fn key(n: u64) -> AgentKey {
        AgentKey {
            process: 1,
            agent: AgentId(n),
        }
    }

    #[test]
    fn add_remove_and_holdings() {
        let mut r = Reports::default();
        let (s, p) = (key(1), key(2));
        assert!(r.subscribe_agent(s, p, "a.*", None));
        assert!(!r.subscribe_agent(s, p, "a.*", None));
        assert!(r.subscribe_agent(s, p, "b", None));
        assert!(r.subscribe_name(s, "pub", "c"));
        assert!(r.holds_agent(s, p, "b"));
        assert!(r.subscribed(s, p, "pub"));
        assert!(r.wants(s, p, "pub", "a.x"));
        assert!(!r.wants(s, p, "pub", "z"));
        assert!(!r.unsubscribe_agent(s, p, "never"));
        assert!(r.unsubscribe_agent(s, p, "b"));
        let removed = r.remove_subscriber(s);
        assert_eq!(
            removed,
            [
                (Target::Name("pub".into()), "c".to_owned()),
                (Target::Agent(p), "a.*".to_owned())
            ]
        );
        assert!(!r.subscribed(s, p, "pub"));
        assert!(r.remove_subscriber(s).is_empty());
        assert!(r.holdings.is_empty() && r.by_agent.is_empty() && r.by_name.is_empty());
    }

    #[test]
    fn matching_keeps_order_and_each_subscriber_once() {
        let mut r = Reports::default();
        let p = key(100);
        for i in 0..5 {
            r.subscribe_agent(key(i), p, "*", None);
            r.subscribe_agent(key(i), p, "a*", None);
        }
        r.subscribe_name(key(7), "pub", "a");
        let mut out = vec![key(3)];
        r.matching(p, "pub", "a", &mut out);
        assert_eq!(out, [key(3), key(7), key(0), key(1), key(2), key(4)]);
    }

    #[test]
    fn a_withdrawn_publisher_leaves_no_holdings() {
        let mut r = Reports::default();
        let p = key(100);
        for i in 0..1000 {
            r.subscribe_agent(key(i), p, "x", Some(PeerId(9)));
        }
        assert_eq!(r.owned(PeerId(9)).0, 1000);
        r.remove_publisher(p);
        assert!(r.holdings.is_empty());
        assert_eq!(r.owned(PeerId(9)), (0, 0));
        assert!(r.remove_subscriber(key(1)).is_empty());
    }

    #[test]
    fn many_subscriptions_of_one_subscriber() {
        // 100,000 subscriptions from one connection took 22 s with linear
        // scans; this checks the answers with indexes.
        let mut r = Reports::default();
        let (s, p) = (key(1), key(2));
        for i in 0..100_000 {
            assert!(r.subscribe_agent(s, p, &format!("s{i}"), Some(PeerId(1))));
        }
        assert!(r.holds_agent(s, p, "s99999"));
        assert!(
            !r.subscribe_agent(s, p, "s5", Some(PeerId(1))),
            "a repeat is not added"
        );
        assert!(!r.unsubscribe_agent(s, p, "never"));
        assert_eq!(r.owned(PeerId(1)).0, 100_000);
        assert!(r.unsubscribe_agent(s, p, "s5"));
        assert_eq!(r.owned(PeerId(1)).0, 99_999);
        assert_eq!(r.remove_subscriber(s).len(), 99_999);
        assert_eq!(r.owned(PeerId(1)), (0, 0));
    }
}
