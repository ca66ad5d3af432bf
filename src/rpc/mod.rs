//! oslo.messaging-style RPC and notifications, built on netsvc services.
//!
//! An [`RpcServer`] is a service named after its exchange, topic and server,
//! in a group named after its exchange and topic; an [`RpcClient`] finds
//! the servers of a topic through the registry and calls one in turn (or
//! casts to all of them). So RPC works in one process and through an
//! exchange alike, and inherits its guarantees: a server that vanishes
//! fails its calls at once.

mod client;
mod endpoint;
mod notify;
mod server;
mod target;
mod value;

pub use client::{Prepare, RpcClient};
pub use endpoint::{Endpoint, RpcFailure};
pub use notify::{
    Notification, NotificationListener, NotificationListenerHandle, Notifier, Priority,
};
pub use server::{RpcServer, RpcServerHandle};
pub use target::{Target, DEFAULT_EXCHANGE};
pub use value::{Context, Value};

/// Transforms the context of calls and casts: on the client before sending,
/// on the server before the method sees it (oslo.messaging's serializer).
pub trait Serializer: Send + Sync {
    /// On the client: the context as it is sent.
    fn serialize_context(&self, ctx: &Context) -> Context {
        ctx.clone()
    }

    /// On the server: the context as the method sees it.
    fn deserialize_context(&self, ctx: Context) -> Context {
        ctx
    }
}
