//! [`Endpoint`]s and the dispatch of RPC requests to them.

use std::collections::HashMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::target::{version_is_compatible, Target};
use super::value::Context;
use crate::error::RemoteError;
use crate::event::panic_message;
use crate::wire;

/// What an RPC method returns to fail: it reaches the caller as
/// [`Error::Remote`](crate::Error::Remote) with the same type, message and
/// traceback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcFailure {
    exc_type: String,
    value: String,
    traceback: Vec<String>,
}

impl RpcFailure {
    /// A failure of the given type (`"ValueError"`) and message.
    pub fn new(exc_type: &str, value: impl Into<String>) -> Self {
        RpcFailure {
            exc_type: exc_type.to_owned(),
            value: value.into(),
            traceback: Vec::new(),
        }
    }

    /// The same failure with traceback lines (innermost last).
    pub fn with_traceback(mut self, lines: Vec<String>) -> Self {
        self.traceback = lines;
        self
    }
}

impl fmt::Display for RpcFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.exc_type, self.value)
    }
}

impl std::error::Error for RpcFailure {}

impl From<RpcFailure> for RemoteError {
    fn from(f: RpcFailure) -> Self {
        RemoteError {
            exc_type: f.exc_type,
            value: f.value,
            traceback: f.traceback,
        }
    }
}

type Method = Box<dyn Fn(&Context, &[u8]) -> Result<Vec<u8>, RpcFailure> + Send + Sync>;

/// A set of methods with the version and namespace they implement.
///
/// ```
/// use netsvc::{Context, Endpoint, RpcFailure};
/// let e = Endpoint::new().version("2.3").namespace("math")
///     .method("sqrt", |_ctx: &Context, x: f64| {
///         if x < 0.0 { Err(RpcFailure::new("ValueError", "negative input")) } else { Ok(x.sqrt()) }
///     });
/// # let _ = e;
/// ```
pub struct Endpoint {
    target: Target,
    methods: HashMap<String, Method>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.methods.keys().collect();
        names.sort();
        f.debug_struct("Endpoint")
            .field("version", &self.imp_version())
            .field("namespace", &self.target.namespace)
            .field("methods", &names)
            .finish()
    }
}

impl Default for Endpoint {
    fn default() -> Self {
        Self::new()
    }
}

impl Endpoint {
    /// An endpoint of version 1.0 in no namespace.
    pub fn new() -> Self {
        Endpoint {
            target: Target::new(""),
            methods: HashMap::new(),
        }
    }

    /// The version it implements: it serves requests of the same major
    /// version and a minor no greater.
    pub fn version(mut self, version: &str) -> Self {
        self.target = self.target.version(version);
        self
    }

    /// Its namespace: it serves requests naming this namespace.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.target = self.target.namespace(namespace);
        self
    }

    /// Every namespace it serves (`None`: requests naming none).
    pub fn accepted_namespaces(mut self, namespaces: &[Option<&str>]) -> Self {
        self.target = self.target.accepted_namespaces(namespaces);
        self
    }

    /// Adds a method. Its arguments are decoded as `A`; arguments that do not
    /// decode fail the call as `TypeError`. Names starting with `_` are
    /// private: never callable remotely.
    pub fn method<A, R, F>(mut self, name: &str, f: F) -> Self
    where
        A: DeserializeOwned,
        R: Serialize,
        F: Fn(&Context, A) -> Result<R, RpcFailure> + Send + Sync + 'static,
    {
        let method: Method = Box::new(move |ctx, args| {
            let args: A =
                wire::decode(args).map_err(|e| RpcFailure::new("TypeError", e.to_string()))?;
            let value = f(ctx, args)?;
            wire::encode(&value)
                .map(|p| p.as_bytes().to_vec())
                .map_err(|e| RpcFailure::new("TypeError", format!("result does not encode: {e}")))
        });
        self.methods.insert(name.to_owned(), method);
        self
    }

    fn imp_version(&self) -> &str {
        self.target.version.as_deref().unwrap_or("1.0")
    }
}

/// What a server sends with every RPC request (the method is the request's).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RpcRequest {
    pub context: Context,
    pub namespace: Option<String>,
    pub version: Option<String>,
    /// Copied as one buffer, not decoded byte by byte (written as bytes;
    /// decoded from bytes or a sequence of `u8`, as a tool may write it).
    #[serde(with = "crate::bounded::bytes")]
    pub args: Vec<u8>,
}

/// The outcome of an RPC request, as the reply's payload.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RpcOutcome {
    Ok(#[serde(with = "crate::bounded::bytes")] Vec<u8>),
    NoSuchMethod(String),
    UnsupportedVersion(String),
    Remote(RemoteError),
}

/// oslo.messaging's dispatch: the first endpoint that accepts the
/// namespace, is compatible with the version and has the method handles it;
/// otherwise NoSuchMethod if some endpoint accepted namespace and version,
/// else UnsupportedVersion.
pub(crate) fn dispatch(endpoints: &[Endpoint], method: &str, request: &RpcRequest) -> RpcOutcome {
    let version = request.version.as_deref().unwrap_or("1.0");
    let namespace = request.namespace.as_deref();
    let mut found_compatible = false;
    for e in endpoints {
        if !e.target.accepts_namespace(namespace)
            || !version_is_compatible(e.imp_version(), version)
        {
            continue;
        }
        if !method.starts_with('_') {
            if let Some(m) = e.methods.get(method) {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    m(&request.context, &request.args)
                }));
                return match outcome {
                    Ok(Ok(bytes)) => RpcOutcome::Ok(bytes),
                    Ok(Err(f)) => RpcOutcome::Remote(f.into()),
                    Err(panic) => {
                        let message = panic_message(panic.as_ref());
                        log::error!("netsvc: RPC method {method} panicked: {message}");
                        RpcOutcome::Remote(RemoteError {
                            exc_type: "Panic".to_owned(),
                            value: message,
                            traceback: vec![format!("in RPC method {method}")],
                        })
                    }
                };
            }
        }
        found_compatible = true;
    }
    if found_compatible {
        RpcOutcome::NoSuchMethod(method.to_owned())
    } else {
        RpcOutcome::UnsupportedVersion(format!("{version} (method {method})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(ns: Option<&str>, version: &str) -> RpcRequest {
        RpcRequest {
            context: Context::new(),
            namespace: ns.map(str::to_owned),
            version: Some(version.to_owned()),
            args: wire::encode(&()).unwrap().as_bytes().to_vec(),
        }
    }

    #[test]
    fn arguments_as_one_buffer_read_and_are_read_as_a_sequence() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct AsSequence {
            context: Context,
            namespace: Option<String>,
            version: Option<String>,
            args: Vec<u8>,
        }
        let args: Vec<u8> = (0..=255).collect();
        let r = RpcRequest {
            context: Context::new(),
            namespace: Some("ns".into()),
            version: Some("1.2".into()),
            args: args.clone(),
        };
        let s = AsSequence {
            context: Context::new(),
            namespace: Some("ns".into()),
            version: Some("1.2".into()),
            args,
        };
        let (a, b) = (wire::encode(&r).unwrap(), wire::encode(&s).unwrap());
        let back: RpcRequest = wire::decode(b.as_bytes()).unwrap();
        assert_eq!(back.args, s.args);
        let back: AsSequence = wire::decode(a.as_bytes()).unwrap();
        assert_eq!(back, s);
        let out = wire::encode(&RpcOutcome::Ok(vec![1, 2, 3])).unwrap();
        match wire::decode::<RpcOutcome>(out.as_bytes()).unwrap() {
            RpcOutcome::Ok(v) => assert_eq!(v, vec![1, 2, 3]),
            other => panic!("got {other:?}"),
        }
    }

    fn named(version: &str, tag: &'static str) -> Endpoint {
        Endpoint::new()
            .version(version)
            .method("m", move |_c: &Context, (): ()| Ok(tag))
            .method("_private", |_c: &Context, (): ()| Ok(0))
    }

    fn decoded(o: RpcOutcome) -> String {
        match o {
            RpcOutcome::Ok(b) => wire::decode::<String>(&b).unwrap(),
            RpcOutcome::NoSuchMethod(_) => "NoSuchMethod".into(),
            RpcOutcome::UnsupportedVersion(_) => "UnsupportedVersion".into(),
            RpcOutcome::Remote(r) => r.exc_type,
        }
    }

    #[test]
    fn oslo_dispatch_rules() {
        let eps = [named("1.5", "a"), named("3.4", "b")];
        assert_eq!(decoded(dispatch(&eps, "m", &request(None, "3.2"))), "b");
        let eps = [named("1.5", "a"), named("3.0", "b")];
        assert_eq!(
            decoded(dispatch(&eps, "m", &request(None, "3.2"))),
            "UnsupportedVersion"
        );
        assert_eq!(
            decoded(dispatch(&eps, "m", &request(Some("ns"), "1.0"))),
            "UnsupportedVersion"
        );
        assert_eq!(
            decoded(dispatch(&eps, "_private", &request(None, "1.0"))),
            "NoSuchMethod"
        );
        assert_eq!(
            decoded(dispatch(&eps, "other", &request(None, "1.0"))),
            "NoSuchMethod"
        );
    }
}
