//! Notifications (oslo.messaging's notify package): a [`Notifier`] sends
//! events of a priority to topics; [`NotificationListener`]s receive them.
//!
//! Listeners of a topic in one pool share its stream: each notification
//! goes to one of them. Each pool, and each listener in no pool, receives
//! every notification.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::target::DEFAULT_EXCHANGE;
use super::value::Context;
use super::Serializer;
use crate::dispatcher::Dispatcher;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::mailbox::command::Destination;
use crate::pattern::Pattern;
use crate::service::{CallSpec, Service, ServiceHandle};
use crate::wire;

/// How urgent a notification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Priority {
    /// `audit`
    Audit,
    /// `debug`
    Debug,
    /// `info`
    Info,
    /// `warn`
    Warn,
    /// `error`
    Error,
    /// `critical`
    Critical,
    /// `sample`
    Sample,
}

impl Priority {
    /// Every priority.
    pub const ALL: [Priority; 7] = [
        Priority::Audit,
        Priority::Debug,
        Priority::Info,
        Priority::Warn,
        Priority::Error,
        Priority::Critical,
        Priority::Sample,
    ];

    /// The priority's name, as oslo.messaging spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Audit => "audit",
            Priority::Debug => "debug",
            Priority::Info => "info",
            Priority::Warn => "warn",
            Priority::Error => "error",
            Priority::Critical => "critical",
            Priority::Sample => "sample",
        }
    }

    /// The priority of that name (`"warning"` is `warn`).
    pub fn parse(name: &str) -> Option<Priority> {
        let name = name.to_ascii_lowercase();
        if name == "warning" {
            return Some(Priority::Warn);
        }
        Priority::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One notification, as a listener receives it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notification {
    /// Who sent it (for instance `compute.host1`).
    pub publisher_id: String,
    /// What happened (for instance `instance.create.end`).
    pub event_type: String,
    /// How urgent it is.
    pub priority: Priority,
    /// The encoded payload; see [`decode_payload`](Self::decode_payload).
    pub payload: Vec<u8>,
    /// When it was sent, in seconds since the epoch.
    pub timestamp: f64,
    /// A unique id.
    pub message_id: String,
}

impl Notification {
    /// Decodes the payload (a payload of another shape than `T` is
    /// [`Error::Decode`]; [`Value`](crate::Value) reads any).
    pub fn decode_payload<T: DeserializeOwned>(&self) -> Result<T> {
        wire::decode(&self.payload)
    }
}

/// What crosses the wire.
#[derive(Serialize, Deserialize)]
struct Envelope {
    context: Context,
    notification: Notification,
}

fn service_name(exchange: &str, topic: &str) -> String {
    format!("notify:{exchange}:{topic}")
}

/// Sends notifications to topics.
///
/// ```
/// use netsvc::{Context, Dispatcher, Notifier};
/// # fn main() -> netsvc::Result<()> {
/// let d = Dispatcher::new()?;
/// let n = Notifier::new(&d, "compute.host1", &["notifications"]);
/// n.info(&Context::new(), "instance.create.end", &"vm-1")?; // no listener: nothing to deliver
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Notifier {
    svc: Arc<Result<Service>>,
    publisher_id: String,
    topics: Vec<String>,
    exchange: String,
    serializer: Option<Arc<dyn Serializer>>,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("publisher_id", &self.publisher_id)
            .field("topics", &self.topics)
            .field("exchange", &self.exchange)
            .finish()
    }
}

macro_rules! priority_methods {
    ($($name:ident => $p:ident),*) => {$(
        #[doc = concat!("Sends a notification of priority `", stringify!($name), "`.")]
        pub fn $name<T: Serialize + ?Sized>(&self, ctx: &Context, event_type: &str, payload: &T) -> Result<()> {
            self.notify(ctx, Priority::$p, event_type, payload)
        }
    )*};
}

impl Notifier {
    /// A notifier sending as `publisher_id` to each of `topics`.
    pub fn new(d: &Dispatcher, publisher_id: &str, topics: &[&str]) -> Notifier {
        Notifier {
            svc: Arc::new(d.service("notifier").audience("").open()),
            publisher_id: publisher_id.to_owned(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            exchange: DEFAULT_EXCHANGE.to_owned(),
            serializer: None,
        }
    }

    /// The same notifier with another publisher id.
    pub fn prepare(&self, publisher_id: &str) -> Notifier {
        let mut n = self.clone();
        n.publisher_id = publisher_id.to_owned();
        n
    }

    /// Sends in another exchange (default `openstack`).
    pub fn exchange(mut self, exchange: &str) -> Self {
        self.exchange = exchange.to_owned();
        self
    }

    /// Transforms the context before it is sent.
    pub fn serializer(mut self, serializer: Arc<dyn Serializer>) -> Self {
        self.serializer = Some(serializer);
        self
    }

    priority_methods!(audit => Audit, debug => Debug, info => Info, warn => Warn,
        error => Error, critical => Critical, sample => Sample);

    /// Sends a notification to every topic: one listener of each pool and
    /// every listener in no pool receives it. Returns errors in sending
    /// (such as [`Error::Closed`]); having no listener is not one.
    pub fn notify<T: Serialize + ?Sized>(
        &self,
        ctx: &Context,
        priority: Priority,
        event_type: &str,
        payload: &T,
    ) -> Result<()> {
        let svc = self.svc.as_ref().as_ref().map_err(|_| Error::Closed)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let envelope = Envelope {
            context: match &self.serializer {
                Some(s) => s.serialize_context(ctx),
                None => ctx.clone(),
            },
            notification: Notification {
                publisher_id: self.publisher_id.clone(),
                event_type: event_type.to_owned(),
                priority,
                payload: wire::encode(payload)?.as_bytes().to_vec(),
                timestamp: now.as_secs_f64(),
                message_id: format!(
                    "{}-{}",
                    svc.binding().process_identity().uid(),
                    now.as_nanos()
                ),
            },
        };
        let payload = wire::encode(&envelope)?;
        for topic in &self.topics {
            let spec = CallSpec {
                to: Destination::Pools(service_name(&self.exchange, topic)),
                timeout: Duration::from_secs(30),
                oneway: true,
                wait: None,
                monitor: None,
            };
            svc.request_raw::<()>(spec, priority.as_str(), payload.clone())?
                .wait()?;
        }
        Ok(())
    }
}

type Handler = Box<dyn Fn(&Context, &Notification) + Send + Sync>;

/// Receives notifications of some topics; from [`NotificationListener::new`].
pub struct NotificationListener {
    d: Dispatcher,
    topics: Vec<String>,
    exchange: String,
    pool: Option<String>,
    handlers: Vec<(String, Handler)>,
    publisher_filter: Option<Pattern>,
    event_filter: Option<Pattern>,
    serializer: Option<Arc<dyn Serializer>>,
}

impl fmt::Debug for NotificationListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotificationListener")
            .field("topics", &self.topics)
            .field("exchange", &self.exchange)
            .field("pool", &self.pool)
            .field(
                "priorities",
                &self.handlers.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl NotificationListener {
    /// A listener for the topics.
    pub fn new(d: &Dispatcher, topics: &[&str]) -> Self {
        NotificationListener {
            d: d.clone(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            exchange: DEFAULT_EXCHANGE.to_owned(),
            pool: None,
            handlers: Vec::new(),
            publisher_filter: None,
            event_filter: None,
            serializer: None,
        }
    }

    /// Joins a pool: the listeners of one pool share the notifications.
    pub fn pool(mut self, pool: &str) -> Self {
        self.pool = Some(pool.to_owned());
        self
    }

    /// Listens in another exchange (default `openstack`).
    pub fn exchange(mut self, exchange: &str) -> Self {
        self.exchange = exchange.to_owned();
        self
    }

    /// Handles notifications of a priority (`"info"`, `"warn"`, ...).
    /// Notifications of priorities without a handler are dropped.
    pub fn on<F>(mut self, priority: &str, handler: F) -> Self
    where
        F: Fn(&Context, &Notification) + Send + Sync + 'static,
    {
        self.handlers.push((priority.to_owned(), Box::new(handler)));
        self
    }

    /// Only notifications whose publisher id matches the pattern (`*`, `?`).
    pub fn filter_publisher_id(mut self, pattern: &str) -> Self {
        self.publisher_filter = Some(Pattern::new(pattern));
        self
    }

    /// Only notifications whose event type matches the pattern (`*`, `?`).
    pub fn filter_event_type(mut self, pattern: &str) -> Self {
        self.event_filter = Some(Pattern::new(pattern));
        self
    }

    /// Transforms the context before a handler sees it.
    pub fn serializer(mut self, serializer: Arc<dyn Serializer>) -> Self {
        self.serializer = Some(serializer);
        self
    }

    /// Starts listening: one service per topic, each on a thread of its own.
    /// An unknown priority name is [`Error::InvalidTarget`].
    ///
    /// No topics at all, or an empty topic or pool name, is
    /// [`Error::InvalidArgument`]: nothing would be heard.
    pub fn start(self) -> Result<NotificationListenerHandle> {
        if self.topics.is_empty() {
            return Err(Error::InvalidArgument(
                "NotificationListener topics must not be empty".to_owned(),
            ));
        }
        if self.topics.iter().any(String::is_empty) {
            return Err(Error::InvalidArgument(
                "NotificationListener topic names must not be empty".to_owned(),
            ));
        }
        if self.pool.as_deref() == Some("") {
            return Err(Error::InvalidArgument(
                "NotificationListener pool name must not be empty".to_owned(),
            ));
        }
        let mut handlers: HashMap<Priority, Handler> = HashMap::new();
        for (name, h) in self.handlers {
            let p = Priority::parse(&name).ok_or_else(|| {
                Error::InvalidTarget(format!("no notification priority {name:?}"))
            })?;
            handlers.insert(p, h);
        }
        let shared = Arc::new(Shared {
            handlers,
            publisher_filter: self.publisher_filter,
            event_filter: self.event_filter,
            serializer: self.serializer,
        });
        let mut services = Vec::new();
        for topic in &self.topics {
            let name = service_name(&self.exchange, topic);
            let mut builder = self.d.service(&name);
            if let Some(pool) = &self.pool {
                builder = builder.group(&format!("{name}:pool:{pool}"));
            }
            let shared = shared.clone();
            let handle = builder.open()?.spawn(move |_svc, event| {
                if let Event::Request(request) = event {
                    match request.decode::<Envelope>() {
                        Ok(e) => shared.handle(e),
                        Err(e) => log::warn!("netsvc: undecodable notification dropped: {e}"),
                    }
                }
            });
            match handle {
                Ok(h) => services.push(h),
                Err(e) => {
                    for h in &services {
                        h.stop();
                    }
                    return Err(e);
                }
            }
        }
        Ok(NotificationListenerHandle { services })
    }
}

struct Shared {
    handlers: HashMap<Priority, Handler>,
    publisher_filter: Option<Pattern>,
    event_filter: Option<Pattern>,
    serializer: Option<Arc<dyn Serializer>>,
}

impl Shared {
    fn handle(&self, e: Envelope) {
        let n = &e.notification;
        if self
            .publisher_filter
            .as_ref()
            .is_some_and(|p| !p.matches(&n.publisher_id))
            || self
                .event_filter
                .as_ref()
                .is_some_and(|p| !p.matches(&n.event_type))
        {
            return;
        }
        if let Some(h) = self.handlers.get(&n.priority) {
            let ctx = match &self.serializer {
                Some(s) => s.deserialize_context(e.context),
                None => e.context,
            };
            h(&ctx, n);
        }
    }
}

/// A running [`NotificationListener`].
#[derive(Debug)]
pub struct NotificationListenerHandle {
    services: Vec<ServiceHandle>,
}

impl NotificationListenerHandle {
    /// Stops listening (returns at once; [`wait`](Self::wait) joins).
    pub fn stop(&self) {
        for s in &self.services {
            s.withdraw();
        }
    }

    /// Waits for the handlers running to end and joins the threads.
    pub fn wait(&self) {
        for s in &self.services {
            s.join();
        }
    }
}
