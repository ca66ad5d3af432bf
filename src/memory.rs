//! In-memory links: two dispatchers of one process joined as an exchange
//! would join two processes, without sockets.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Weak};

use crate::dispatcher::Dispatcher;
use crate::error::{Error, Result};
use crate::mailbox::command::{Command, MemoryEnd};
use crate::mailbox::Link;

/// A link between two dispatchers of this process that carries what an
/// exchange would carry between two processes: the services of each (as
/// their audiences and the link's group allow) become known to the other,
/// requests, replies and reports cross, and when the link closes the
/// services learned through it are withdrawn and the calls through it fail.
///
/// One side is the server: like an exchange server, it relays between the
/// links joined to it in the same group (two clients joined to one server
/// see each other's services) and holds each link to the server's default
/// limits. There is no handshake, no heartbeat and no authentication: the
/// process joins its own dispatchers. A link whose frames its far side has
/// not taken passes `max_outbound_buffer` is closed as a slow consumer.
///
/// For tests of code written against exchanges, and for programs that
/// split their services across dispatchers. The link closes when this
/// handle is dropped (or [`close`](Self::close)d), or when either
/// dispatcher stops.
///
/// ```
/// use std::time::Duration;
/// use netsvc::{Dispatcher, MemoryLink};
///
/// let server = Dispatcher::new()?;
/// let client = Dispatcher::new()?;
/// let svc = server.service("clock").open()?;
/// let link = MemoryLink::join(&client, &server)?;
/// // The client's dispatcher learns of the server's service.
/// let deadline = std::time::Instant::now() + Duration::from_secs(5);
/// while client.lookup_service_name("clock").is_empty() {
///     assert!(std::time::Instant::now() < deadline);
///     std::thread::sleep(Duration::from_millis(1));
/// }
/// link.close();
/// # drop(svc);
/// # Ok::<(), netsvc::Error>(())
/// ```
#[derive(Debug)]
pub struct MemoryLink {
    id: u64,
    client: Weak<Link>,
    server: Weak<Link>,
}

impl MemoryLink {
    /// Joins `client` to `server` in the exchange group `""` (services of
    /// audience `"*"` cross).
    pub fn join(client: &Dispatcher, server: &Dispatcher) -> Result<MemoryLink> {
        MemoryLink::join_group(client, server, "")
    }

    /// Joins `client` to `server` in an exchange group: services of
    /// audience `"*"` and of audience `group` cross.
    ///
    /// [`Error::InvalidArgument`] if both are the same dispatcher;
    /// [`Error::Closed`] if either has stopped.
    pub fn join_group(client: &Dispatcher, server: &Dispatcher, group: &str) -> Result<MemoryLink> {
        let (c, s) = (client.link(), server.link());
        if Arc::ptr_eq(c, s) {
            return Err(Error::InvalidArgument(
                "a dispatcher cannot be linked to itself".to_owned(),
            ));
        }
        let id = s.next_id();
        let (to_server, from_client) = crossbeam_channel::unbounded();
        let (to_client, from_server) = crossbeam_channel::unbounded();
        let client_sent = Arc::new(AtomicUsize::new(0));
        let server_sent = Arc::new(AtomicUsize::new(0));
        let server_end = MemoryEnd {
            link: id,
            remote: c.process.clone(),
            group: group.to_owned(),
            server: true,
            tx: to_client,
            rx: from_client,
            sent: server_sent.clone(),
            received: client_sent.clone(),
            other: Arc::downgrade(c),
        };
        let client_end = MemoryEnd {
            link: id,
            remote: s.process.clone(),
            group: group.to_owned(),
            server: false,
            tx: to_server,
            rx: from_server,
            sent: client_sent,
            received: server_sent,
            other: Arc::downgrade(s),
        };
        let link = MemoryLink {
            id,
            client: Arc::downgrade(c),
            server: Arc::downgrade(s),
        };
        s.ask(|ack| Command::MemoryOpen {
            end: Box::new(server_end),
            ack,
        })?;
        c.ask(|ack| Command::MemoryOpen {
            end: Box::new(client_end),
            ack,
        })?;
        Ok(link)
    }

    /// Closes the link (as dropping it does): each side withdraws what it
    /// learned through it.
    pub fn close(self) {}
}

impl Drop for MemoryLink {
    fn drop(&mut self) {
        for side in [&self.client, &self.server] {
            if let Some(l) = side.upgrade() {
                l.send_quiet(Command::MemoryClose { link: self.id });
            }
        }
    }
}
