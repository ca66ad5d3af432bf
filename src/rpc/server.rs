//! [`RpcServer`]: endpoints served by a netsvc service.

use std::fmt;
use std::sync::Arc;

use super::endpoint::{dispatch, Endpoint, RpcRequest};
use super::target::Target;
use super::Serializer;
use crate::dispatcher::Dispatcher;
use crate::error::{codes, Error, Result};
use crate::event::Event;
use crate::service::ServiceHandle;

/// Serves [`Endpoint`]s for a [`Target`] (oslo.messaging's RPC server).
///
/// The server is a netsvc service named after its exchange, topic and
/// server, in a group named after its exchange and topic: clients find it
/// through the registry, in this process or through an exchange.
pub struct RpcServer {
    d: Dispatcher,
    target: Target,
    endpoints: Vec<Endpoint>,
    threads: usize,
    serializer: Option<Arc<dyn Serializer>>,
}

impl fmt::Debug for RpcServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcServer")
            .field("target", &self.target)
            .field("endpoints", &self.endpoints)
            .field("threads", &self.threads)
            .finish()
    }
}

impl RpcServer {
    /// A server for the target. Without a server name in the target, the
    /// dispatcher's process identity names it.
    pub fn new(d: &Dispatcher, target: Target) -> Self {
        RpcServer {
            d: d.clone(),
            target,
            endpoints: Vec::new(),
            threads: 1,
            serializer: None,
        }
    }

    /// Adds an endpoint; requests go to the first endpoint that accepts them.
    pub fn endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    /// How many threads run methods at once (default 1).
    ///
    /// 0 is refused by [`start`](Self::start) with
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument): nobody
    /// would run the methods.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// Transforms the context of every request before a method sees it.
    pub fn serializer(mut self, serializer: Arc<dyn Serializer>) -> Self {
        self.serializer = Some(serializer);
        self
    }

    /// Registers the server and starts its threads.
    ///
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for
    /// `threads(0)` or an empty topic, before anything is registered.
    pub fn start(self) -> Result<RpcServerHandle> {
        if self.threads == 0 {
            return Err(Error::InvalidArgument(
                "RpcServer threads must be at least 1, got 0".to_owned(),
            ));
        }
        if self.target.topic.is_empty() {
            return Err(Error::InvalidArgument(
                "RpcServer target topic must not be empty".to_owned(),
            ));
        }
        let server = match &self.target.server {
            Some(s) => s.clone(),
            None => self.d.process_id().to_string(),
        };
        let svc = self
            .d
            .service(&self.target.server_name(&server))
            .group(&self.target.topic_group())
            .open()?;
        let endpoints = self.endpoints;
        let serializer = self.serializer;
        let handle = svc.spawn_pool(self.threads, move |_svc, event| {
            let Event::Request(request) = event else {
                return;
            };
            let outcome = match request.decode::<RpcRequest>() {
                Ok(mut rpc) => {
                    if let Some(s) = &serializer {
                        rpc.context = s.deserialize_context(std::mem::take(&mut rpc.context));
                    }
                    dispatch(&endpoints, request.method(), &rpc)
                }
                Err(e) => {
                    // Undecodable (not an RPC request, or a context nested
                    // too deep): that call fails with code 54, the server
                    // goes on.
                    let why = format!("not an RPC request: {e}");
                    if let Err(e) = request.fail(codes::REQUEST_DECODING_ERROR, why) {
                        log::warn!("netsvc: RPC failure not sent: {e}");
                    }
                    return;
                }
            };
            if let Err(e) = request.reply(&outcome) {
                log::warn!("netsvc: RPC reply not sent: {e}");
            }
        })?;
        log::debug!(
            "netsvc: RPC server {server} on {} started",
            self.target.topic_group()
        );
        Ok(RpcServerHandle { handle })
    }
}

/// A running [`RpcServer`].
#[derive(Debug)]
pub struct RpcServerHandle {
    handle: ServiceHandle,
}

impl RpcServerHandle {
    /// Stops taking requests: the server is withdrawn, so clients see it go
    /// and new calls go to other servers; the calls it already received,
    /// running or queued, are finished and answered. Returns at once;
    /// [`wait`](Self::wait) waits for them and joins the threads.
    pub fn stop(&self) {
        self.handle.drain();
    }

    /// Waits for the running methods to end and joins the threads.
    pub fn wait(&self) {
        self.handle.join();
    }

    /// The server's service binding.
    pub fn binding(&self) -> &crate::ServiceBinding {
        self.handle.binding()
    }
}
