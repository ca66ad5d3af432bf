//! [`RpcClient`]: oslo.messaging's RPC client over netsvc services.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::endpoint::{RpcOutcome, RpcRequest};
use super::target::{version_is_compatible, Target};
use super::value::Context;
use super::Serializer;
use crate::dispatcher::Dispatcher;
use crate::error::{Error, Result};
use crate::mailbox::command::Destination;
use crate::service::{CallSpec, Service};
use crate::wire;

/// How long a retry waits for a server to appear (oslo's reconnect interval).
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// The options of one client; [`RpcClient::prepare`] makes a copy with
/// some of them changed.
#[derive(Clone)]
struct Options {
    target: Target,
    timeout: Duration,
    retry: Option<u32>,
    version_cap: Option<String>,
    call_monitor_timeout: Option<Duration>,
    serializer: Option<Arc<dyn Serializer>>,
}

/// Calls and casts to the servers of a [`Target`] (oslo.messaging's
/// `RPCClient`).
///
/// A topic target reaches its live servers in turn; a target with a server
/// reaches only that one; a fanout cast reaches all of them. Cheap to clone
/// and to share between threads; calls from one thread are answered in
/// order.
///
/// ```
/// use netsvc::{Context, Dispatcher, Endpoint, RpcClient, RpcServer, Target};
/// # fn main() -> netsvc::Result<()> {
/// let d = Dispatcher::new()?;
/// let server = RpcServer::new(&d, Target::new("calc").server("host1"))
///     .endpoint(Endpoint::new().method("add", |_ctx: &Context, (a, b): (i64, i64)| Ok(a + b)))
///     .start()?;
/// let client = RpcClient::new(&d, Target::new("calc"));
/// let sum: i64 = client.call(&Context::new(), "add", &(2, 3))?;
/// assert_eq!(sum, 5);
/// server.stop();
/// server.wait();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RpcClient {
    svc: Arc<Result<Service>>,
    options: Options,
}

impl fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcClient")
            .field("target", &self.options.target)
            .field("timeout", &self.options.timeout)
            .field("retry", &self.options.retry)
            .field("version_cap", &self.options.version_cap)
            .finish()
    }
}

impl RpcClient {
    /// A client for the target. Its default timeout is 60 s, with retries
    /// until the timeout (`retry(None)`).
    pub fn new(d: &Dispatcher, target: Target) -> RpcClient {
        // The client's own service: hidden from other processes, it only
        // sends. If the dispatcher is gone, every call says so.
        let svc = d.service("rpc-client").audience("").open();
        RpcClient {
            svc: Arc::new(svc),
            options: Options {
                target,
                timeout: Duration::from_secs(60),
                retry: None,
                version_cap: None,
                call_monitor_timeout: None,
                serializer: None,
            },
        }
    }

    /// The timeout of `call` (default 60 s; a century or more, up to
    /// `Duration::MAX`: no limit, the call still ends when its server
    /// answers or goes away, or the dispatcher shuts down).
    ///
    /// Zero is refused by every `call` and `cast` with
    /// [`Error::InvalidArgument`]: nothing could be delivered in no time.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = timeout;
        self
    }

    /// How often to retry when no server is reachable: `None` (the default)
    /// until the timeout, `Some(0)` never (fail at once with
    /// [`Error::DeliveryFailure`]), `Some(n)` n times, a second apart.
    /// A message that was delivered is never sent again.
    pub fn retry(mut self, retry: Option<u32>) -> Self {
        self.options.retry = retry;
        self
    }

    /// The highest version this client may send; a call above it fails with
    /// [`Error::VersionCap`] before anything is sent.
    pub fn version_cap(mut self, cap: &str) -> Self {
        self.options.version_cap = Some(cap.to_owned());
        self
    }

    /// Transforms the context of every call and cast before it is sent.
    pub fn serializer(mut self, serializer: Arc<dyn Serializer>) -> Self {
        self.options.serializer = Some(serializer);
        self
    }

    /// A copy of this client with some options changed.
    pub fn prepare(&self) -> Prepare {
        Prepare {
            client: self.clone(),
        }
    }

    /// The client's target.
    pub fn target(&self) -> &Target {
        &self.options.target
    }

    /// Whether a message of that version may be sent under the version cap.
    pub fn can_send_version(&self, version: &str) -> bool {
        match &self.options.version_cap {
            None => true,
            Some(cap) => version_is_compatible(cap, version),
        }
    }

    fn service(&self) -> Result<&Service> {
        self.svc.as_ref().as_ref().map_err(|_| Error::Closed)
    }

    /// The options that cannot work, refused by every call and cast.
    fn check_options(&self) -> Result<()> {
        let o = &self.options;
        if o.timeout.is_zero() {
            return Err(Error::InvalidArgument(
                "RpcClient timeout must be more than zero, got 0".to_owned(),
            ));
        }
        if o.call_monitor_timeout.is_some_and(|d| d.is_zero()) {
            return Err(Error::InvalidArgument(
                "RpcClient call_monitor_timeout must be more than zero, got 0".to_owned(),
            ));
        }
        Ok(())
    }

    fn envelope<A: Serialize + ?Sized>(&self, ctx: &Context, args: &A) -> Result<wire::Payload> {
        self.check_options()?;
        let o = &self.options;
        if let Some(version) = &o.target.version {
            if !self.can_send_version(version) {
                return Err(Error::VersionCap(format!(
                    "version {version} is above the cap {}",
                    o.version_cap.as_deref().unwrap_or("")
                )));
            }
        }
        let context = match &o.serializer {
            Some(s) => s.serialize_context(ctx),
            None => ctx.clone(),
        };
        let request = RpcRequest {
            context,
            namespace: o.target.namespace.clone(),
            version: o.target.version.clone(),
            args: wire::encode(args)?.as_bytes().to_vec(),
        };
        wire::encode(&request)
    }

    fn spec(&self, oneway: bool) -> CallSpec {
        let o = &self.options;
        let t = &o.target;
        let to = match (&t.server, t.fanout && oneway) {
            (_, true) => Destination::AllOf(t.topic_group()),
            (Some(server), false) => Destination::Name(t.server_name(server)),
            (None, false) => Destination::Group(t.topic_group()),
        };
        let wait = match o.retry {
            None => Some(o.timeout),
            Some(0) => None,
            Some(n) => Some(RETRY_INTERVAL.saturating_mul(n)),
        };
        CallSpec {
            to,
            timeout: o.timeout,
            oneway,
            wait,
            monitor: if oneway { None } else { o.call_monitor_timeout },
        }
    }

    /// Calls a method on one server of the target and waits for its result.
    ///
    /// Fails with [`Error::InvalidTarget`] on a fanout target (before
    /// anything is sent), [`Error::VersionCap`], [`Error::DeliveryFailure`]
    /// when no server could be reached, [`Error::Timeout`],
    /// [`Error::ServiceUnavailable`] when the server vanished mid-call,
    /// [`Error::NoSuchMethod`], [`Error::UnsupportedVersion`], or
    /// [`Error::Remote`] with the method's own failure.
    pub fn call<R, A>(&self, ctx: &Context, method: &str, args: &A) -> Result<R>
    where
        R: DeserializeOwned,
        A: Serialize + ?Sized,
    {
        if self.options.target.fanout {
            let t = &self.options.target;
            return Err(Error::InvalidTarget(format!(
                "call of {method:?} on a fanout target (exchange {:?}, topic {:?}): \
                 a fanout target takes casts only",
                t.exchange, t.topic
            )));
        }
        let payload = self.envelope(ctx, args)?;
        let outcome: RpcOutcome = self
            .service()?
            .request_raw(self.spec(false), method, payload)?
            .wait()?;
        match outcome {
            RpcOutcome::Ok(bytes) => wire::decode(&bytes),
            RpcOutcome::NoSuchMethod(m) => Err(Error::NoSuchMethod(m)),
            RpcOutcome::UnsupportedVersion(v) => Err(Error::UnsupportedVersion(v)),
            RpcOutcome::Remote(r) => Err(Error::Remote(r)),
        }
    }

    /// Sends a method to one server of the target (every server, for a
    /// fanout target) without waiting for it to run. Returns once the
    /// message is handed on, or with [`Error::DeliveryFailure`] if no server
    /// could be reached. Casts have no order promise.
    pub fn cast<A>(&self, ctx: &Context, method: &str, args: &A) -> Result<()>
    where
        A: Serialize + ?Sized,
    {
        let payload = self.envelope(ctx, args)?;
        self.service()?
            .request_raw::<()>(self.spec(true), method, payload)?
            .wait()
    }
}

/// Changes some options of an [`RpcClient`]; from [`RpcClient::prepare`].
#[must_use = "prepare() does nothing until build()"]
#[derive(Debug)]
pub struct Prepare {
    client: RpcClient,
}

impl Prepare {
    /// Another exchange.
    pub fn exchange(mut self, exchange: &str) -> Self {
        self.client.options.target = self.client.options.target.exchange(exchange);
        self
    }

    /// Another topic.
    pub fn topic(mut self, topic: &str) -> Self {
        self.client.options.target = self.client.options.target.topic(topic);
        self
    }

    /// Another namespace.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.client.options.target = self.client.options.target.namespace(namespace);
        self
    }

    /// Another version.
    pub fn version(mut self, version: &str) -> Self {
        self.client.options.target = self.client.options.target.version(version);
        self
    }

    /// One server of the topic.
    pub fn server(mut self, server: &str) -> Self {
        self.client.options.target = self.client.options.target.server(server);
        self
    }

    /// Fanout casts.
    pub fn fanout(mut self, fanout: bool) -> Self {
        self.client.options.target = self.client.options.target.fanout(fanout);
        self
    }

    /// Another timeout (see [`RpcClient::timeout`]; zero is refused by
    /// every call and cast).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.client.options.timeout = timeout;
        self
    }

    /// Another version cap.
    pub fn version_cap(mut self, cap: &str) -> Self {
        self.client.options.version_cap = Some(cap.to_owned());
        self
    }

    /// Another retry policy (see [`RpcClient::retry`]).
    pub fn retry(mut self, retry: Option<u32>) -> Self {
        self.client.options.retry = retry;
        self
    }

    /// The server sends heartbeats while it handles a call; the call fails
    /// with [`Error::Timeout`] if they stop for this long, even if the
    /// call's own timeout is much longer. Zero is refused by every call
    /// with [`Error::InvalidArgument`].
    pub fn call_monitor_timeout(mut self, timeout: Duration) -> Self {
        self.client.options.call_monitor_timeout = Some(timeout);
        self
    }

    /// The prepared client.
    pub fn build(self) -> RpcClient {
        self.client
    }
}
