//! Identities: processes, agents, conversations, and service bindings.

use std::any::Any;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The identity of one [`Dispatcher`](crate::Dispatcher): unique per
/// dispatcher, also between dispatchers of one OS process, and between
/// machines with overwhelming probability.
///
/// Two `ProcessId`s are equal when they name the same dispatcher. It displays
/// as `<dispatcher name>@<os pid>/<unique hex>`.
#[derive(Clone, Serialize, Deserialize)]
pub struct ProcessId {
    uid: u64,
    label: Arc<str>,
}

impl ProcessId {
    pub(crate) fn new(name: &str) -> ProcessId {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        // RandomState is seeded from the OS per process and per call; mix in
        // the time, the pid and a counter so that two dispatchers never share one.
        let mut h = RandomState::new().build_hasher();
        std::process::id().hash(&mut h);
        COUNTER.fetch_add(1, Ordering::Relaxed).hash(&mut h);
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            .hash(&mut h);
        let uid = h.finish();
        let label = format!("{name}@{}/{uid:016x}", std::process::id());
        ProcessId {
            uid,
            label: label.into(),
        }
    }

    /// A process identity with this uid (derived from the dispatcher's
    /// identity token).
    pub(crate) fn with_uid(name: &str, uid: u64) -> ProcessId {
        let label = format!("{name}@{}/{uid:016x}", std::process::id());
        ProcessId {
            uid,
            label: label.into(),
        }
    }

    /// The 64-bit unique part of the identity.
    pub fn uid(&self) -> u64 {
        self.uid
    }

    /// The identity as text, as it is displayed.
    pub fn as_str(&self) -> &str {
        &self.label
    }
}

impl PartialEq for ProcessId {
    fn eq(&self, other: &Self) -> bool {
        self.uid == other.uid
    }
}
impl Eq for ProcessId {}
impl Hash for ProcessId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.uid.hash(state)
    }
}
impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}
impl fmt::Debug for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProcessId({})", self.label)
    }
}

/// The identity of one service agent within its dispatcher.
///
/// Agent identities are never reused by a dispatcher; together with the
/// [`ProcessId`] they name one agent everywhere.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AgentId(pub(crate) u64);

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}", self.0)
    }
}
impl fmt::Debug for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentId({})", self.0)
    }
}

/// The key the routing table uses for an agent: its process and agent ids.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub(crate) struct AgentKey {
    pub process: u64,
    pub agent: AgentId,
}

/// `@<agent>/<8 hex digits of the process uid>`: a binding's display
/// without its name, for an agent known only by its key.
impl fmt::Display for AgentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{:08x}", self.agent, self.process >> 32)
    }
}

/// The identity of one request and its reply, unique across processes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConversationId {
    process: u64,
    seq: u64,
}

impl ConversationId {
    pub(crate) fn new(process: u64, seq: u64) -> Self {
        ConversationId { process, seq }
    }

    /// The uid of the process (dispatcher) whose call it is.
    pub(crate) fn process(&self) -> u64 {
        self.process
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}:{}", self.process, self.seq)
    }
}
impl fmt::Debug for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConversationId({self})")
    }
}

/// A local service's queue as a binding holds it: an `Inbox` (see
/// `mailbox/inbox.rs`), its type erased so that identities need not know
/// what a queue holds. The unwind-safety bounds keep `ServiceBinding` (and
/// everything holding one) `UnwindSafe` and `RefUnwindSafe`, as with the
/// `Inbox` itself.
pub(crate) type Queue = dyn Any + Send + Sync + UnwindSafe + RefUnwindSafe;

/// The address of one service agent: its name, audience, identity, process
/// and the groups it was in when this value was made.
///
/// Cheap to clone. Two bindings are equal when they name the same agent,
/// whatever their groups. It displays as `<name>@<agent>/<process>`, e.g.
/// `publisher@2/9f3a1b2c` (see its `Display` impl).
#[derive(Clone, Serialize, Deserialize)]
pub struct ServiceBinding(Arc<BindingData>);

#[derive(Serialize, Deserialize)]
struct BindingData {
    name: String,
    audience: String,
    agent: AgentId,
    process: ProcessId,
    #[serde(deserialize_with = "crate::bounded::strings")]
    groups: Vec<String>,
    /// For an agent of this process: its queue, while it is open (an
    /// `Inbox`, see `mailbox/inbox.rs` and `direct.rs`; erased here, so that
    /// identities need not know what a queue holds). For an agent learned
    /// through a plain TCP link: that link's `Outlet`, while it is up. Never
    /// sent: a binding from a peer has none until the dispatcher gives it
    /// one.
    #[serde(skip)]
    inbox: Option<Weak<Queue>>,
}

impl ServiceBinding {
    pub(crate) fn new(
        name: String,
        audience: String,
        agent: AgentId,
        process: ProcessId,
        groups: Vec<String>,
    ) -> Self {
        ServiceBinding(Arc::new(BindingData {
            name,
            audience,
            agent,
            process,
            groups,
            inbox: None,
        }))
    }

    /// A binding of a service of this process, which callers of the same
    /// dispatcher reach through `inbox` while the service is open.
    pub(crate) fn local(
        name: String,
        audience: String,
        agent: AgentId,
        process: ProcessId,
        groups: Vec<String>,
        inbox: Weak<Queue>,
    ) -> Self {
        ServiceBinding(Arc::new(BindingData {
            name,
            audience,
            agent,
            process,
            groups,
            inbox: Some(inbox),
        }))
    }

    /// The way to the agent, if it is still there: a service of this
    /// process that is still open (`Inbox::of` gives it its type back), or
    /// the link it was learned through (`Outlet::of`).
    pub(crate) fn queue(&self) -> Option<Arc<Queue>> {
        self.0.inbox.as_ref().and_then(Weak::upgrade)
    }

    /// The same agent, reached through `queue` (see [`queue`](Self::queue)).
    pub(crate) fn with_queue(&self, queue: Weak<Queue>) -> Self {
        self.rebuilt(self.0.groups.clone(), Some(queue))
    }

    /// The same agent with another group list.
    pub(crate) fn with_groups(&self, groups: Vec<String>) -> Self {
        self.rebuilt(groups, self.0.inbox.clone())
    }

    /// The same agent with these groups and this way to it.
    fn rebuilt(&self, groups: Vec<String>, inbox: Option<Weak<Queue>>) -> Self {
        let d = &self.0;
        ServiceBinding(Arc::new(BindingData {
            name: d.name.clone(),
            audience: d.audience.clone(),
            agent: d.agent,
            process: d.process.clone(),
            groups,
            inbox,
        }))
    }

    pub(crate) fn key(&self) -> AgentKey {
        AgentKey {
            process: self.0.process.uid,
            agent: self.0.agent,
        }
    }

    /// The name of the service.
    pub fn service_name(&self) -> &str {
        &self.0.name
    }

    /// The audience: `"*"` visible through every exchange, `""` this process
    /// only, anything else only through exchanges of that group.
    pub fn service_audience(&self) -> &str {
        &self.0.audience
    }

    /// The identity of the agent within its process.
    pub fn agent_identity(&self) -> AgentId {
        self.0.agent
    }

    /// The identity of the process (dispatcher) the agent lives in.
    pub fn process_identity(&self) -> &ProcessId {
        &self.0.process
    }

    /// The groups the agent was in when this binding was produced.
    pub fn groups(&self) -> &[String] {
        &self.0.groups
    }
}

impl PartialEq for ServiceBinding {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for ServiceBinding {}
impl Hash for ServiceBinding {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}
/// Displays as `<service name>@<agent>/<process>`, e.g.
/// `publisher@2/9f3a1b2c`: `<process>` is the first 8 of the 16 hex digits
/// that end the [`ProcessId`]'s own display
/// (`<dispatcher name>@<os pid>/9f3a1b2c…`), so that two bindings of one
/// name and agent number in two processes print differently, and a binding
/// can be matched to its process in a log. It has no spaces.
impl fmt::Display for ServiceBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.0.name, self.key())
    }
}
impl fmt::Debug for ServiceBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceBinding")
            .field("name", &self.0.name)
            .field("audience", &self.0.audience)
            .field("agent", &self.0.agent)
            .field("process", &self.0.process)
            .field("groups", &self.0.groups)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_ids_are_unique() {
        let a = ProcessId::new("a");
        let b = ProcessId::new("a");
        assert_ne!(a, b);
        assert!(a.to_string().starts_with("a@"));
    }

    #[test]
    fn binding_display_names_its_process() {
        let p = ProcessId::new("p");
        let q = ProcessId::new("p");
        let b = ServiceBinding::new("s".into(), "*".into(), AgentId(2), p.clone(), vec![]);
        let c = ServiceBinding::new("s".into(), "*".into(), AgentId(2), q, vec![]);
        let shown = b.to_string();
        let short = shown.strip_prefix("s@2/").expect("name@agent/");
        assert_eq!(short.len(), 8);
        assert!(!shown.contains(' '));
        // The short form is the start of the process's unique hex part.
        let (_, unique) = p.as_str().rsplit_once('/').expect("pid/hex");
        assert!(unique.starts_with(short), "{shown} vs {p}");
        assert_ne!(shown, c.to_string());
    }

    #[test]
    fn binding_equality_ignores_groups() {
        let p = ProcessId::new("p");
        let b = ServiceBinding::new("s".into(), "*".into(), AgentId(1), p, vec![]);
        let c = b.with_groups(vec!["g".into()]);
        assert_eq!(b, c);
        assert_eq!(c.groups(), ["g".to_string()]);
    }
}
