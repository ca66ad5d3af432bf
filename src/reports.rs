//! Subscriptions and the report cache, owned by the dispatcher thread.
//!
//! Pure data: it answers "who gets this report" and "what is cached", and the
//! dispatcher turns the answers into events.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::event::Lifetime;
use crate::ids::AgentKey;
use crate::pattern::Pattern;
use crate::wire::Payload;

#[derive(Debug, Clone)]
pub(crate) struct Sub {
    pub subscriber: AgentKey,
    pub pattern: Pattern,
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

#[derive(Default)]
pub(crate) struct Reports {
    /// Subscriptions by publisher service name: they outlive any one agent.
    by_name: HashMap<String, Vec<Sub>>,
    /// Subscriptions to one publisher agent: they end with it.
    by_agent: HashMap<AgentKey, Vec<Sub>>,
    /// The latest cached report per subject, per publisher agent.
    cache: HashMap<AgentKey, HashMap<Arc<str>, Cached>>,
    /// Changes with every subscription added or removed (what remembered
    /// report routes are checked against).
    generation: u64,
}

/// Adds a subscription unless the same one is there; true if added.
fn add(list: &mut Vec<Sub>, subscriber: AgentKey, pattern: &str) -> bool {
    if list
        .iter()
        .any(|s| s.subscriber == subscriber && s.pattern.as_str() == pattern)
    {
        return false;
    }
    list.push(Sub {
        subscriber,
        pattern: Pattern::new(pattern),
    });
    true
}

/// Removes a subscription; true if it was there.
fn remove(list: &mut Vec<Sub>, subscriber: AgentKey, pattern: &str) -> bool {
    let before = list.len();
    list.retain(|s| !(s.subscriber == subscriber && s.pattern.as_str() == pattern));
    list.len() != before
}

impl Reports {
    /// A number that changes whenever a subscription may have been added or
    /// removed.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn subscribe_name(
        &mut self,
        subscriber: AgentKey,
        name: &str,
        pattern: &str,
    ) -> bool {
        self.generation += 1;
        add(
            self.by_name.entry(name.to_owned()).or_default(),
            subscriber,
            pattern,
        )
    }

    pub(crate) fn unsubscribe_name(
        &mut self,
        subscriber: AgentKey,
        name: &str,
        pattern: &str,
    ) -> bool {
        self.generation += 1;
        let Some(list) = self.by_name.get_mut(name) else {
            return false;
        };
        let removed = remove(list, subscriber, pattern);
        if list.is_empty() {
            self.by_name.remove(name);
        }
        removed
    }

    pub(crate) fn subscribe_agent(
        &mut self,
        subscriber: AgentKey,
        publisher: AgentKey,
        pattern: &str,
    ) -> bool {
        self.generation += 1;
        add(
            self.by_agent.entry(publisher).or_default(),
            subscriber,
            pattern,
        )
    }

    pub(crate) fn unsubscribe_agent(
        &mut self,
        subscriber: AgentKey,
        publisher: AgentKey,
        pattern: &str,
    ) -> bool {
        self.generation += 1;
        let Some(list) = self.by_agent.get_mut(&publisher) else {
            return false;
        };
        let removed = remove(list, subscriber, pattern);
        if list.is_empty() {
            self.by_agent.remove(&publisher);
        }
        removed
    }

    /// Every subscription against one publisher agent: by its name and to it.
    pub(crate) fn subs_against<'a>(
        &'a self,
        publisher: AgentKey,
        name: &str,
    ) -> impl Iterator<Item = &'a Sub> + 'a {
        self.by_name
            .get(name)
            .into_iter()
            .flatten()
            .chain(self.by_agent.get(&publisher).into_iter().flatten())
    }

    /// The by-name subscriptions of a service name.
    pub(crate) fn name_subs(&self, name: &str) -> &[Sub] {
        self.by_name.get(name).map_or(&[], Vec::as_slice)
    }

    /// Whether the subscriber holds any subscription against the publisher.
    pub(crate) fn subscribed(&self, subscriber: AgentKey, publisher: AgentKey, name: &str) -> bool {
        self.subs_against(publisher, name)
            .any(|s| s.subscriber == subscriber)
    }

    /// Whether the subscriber holds a subscription against the publisher
    /// whose pattern matches the subject.
    pub(crate) fn wants(
        &self,
        subscriber: AgentKey,
        publisher: AgentKey,
        name: &str,
        subject: &str,
    ) -> bool {
        self.subs_against(publisher, name)
            .any(|s| s.subscriber == subscriber && s.pattern.matches(subject))
    }

    /// Appends the distinct subscribers whose patterns match the subject.
    pub(crate) fn matching(
        &self,
        publisher: AgentKey,
        name: &str,
        subject: &str,
        out: &mut Vec<AgentKey>,
    ) {
        let start = out.len();
        for s in self.subs_against(publisher, name) {
            if s.pattern.matches(subject) && !out[start..].contains(&s.subscriber) {
                out.push(s.subscriber);
            }
        }
    }

    /// Removes every subscription a subscriber holds, returning what each was
    /// against: `(Some(name), pattern)` or `(None, pattern)` with the agent.
    pub(crate) fn remove_subscriber(&mut self, subscriber: AgentKey) -> Vec<(Target, String)> {
        self.generation += 1;
        let mut removed = Vec::new();
        self.by_name.retain(|name, list| {
            list.retain(|s| {
                let mine = s.subscriber == subscriber;
                if mine {
                    removed.push((Target::Name(name.clone()), s.pattern.as_str().to_owned()));
                }
                !mine
            });
            !list.is_empty()
        });
        self.by_agent.retain(|publisher, list| {
            list.retain(|s| {
                let mine = s.subscriber == subscriber;
                if mine {
                    removed.push((Target::Agent(*publisher), s.pattern.as_str().to_owned()));
                }
                !mine
            });
            !list.is_empty()
        });
        removed
    }

    /// Forgets a withdrawn publisher agent: its subscriptions by binding and
    /// its cache. Subscriptions by name stay.
    pub(crate) fn remove_publisher(&mut self, publisher: AgentKey) {
        self.generation += 1;
        self.by_agent.remove(&publisher);
        self.cache.remove(&publisher);
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
            Lifetime::None => {
                if let Some(c) = self.cache.get_mut(&publisher) {
                    c.remove(subject);
                }
                return;
            }
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Name(String),
    Agent(AgentKey),
}
