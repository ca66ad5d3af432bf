//! Transports: how this dispatcher's links to other processes are carried.
//! Each is a module here, driven by the event loop, and speaks to the
//! routing core through one small interface:
//!
//! - up: [`Core::peer_up`](crate::routing::Core::peer_up) when a link is
//!   established, [`Core::frame`](crate::routing::Core::frame) for each
//!   frame it carried in, [`Core::peer_down`](crate::routing::Core::peer_down)
//!   when it is lost;
//! - down: the [`Outbox`](crate::routing::Outbox), one queue per
//!   [`Kind`](crate::routing::Kind) of transport, of frames to carry and
//!   links to close, which the transport takes with `carry`.
//!
//! A new transport is a module here, a variant of `Kind`, and a field of
//! the event loop that calls its `carry`, its receiving and its `stop`.
//! A peer is one remote process: a transport that carries many over one
//! connection (a NATS link) gives each its own `PeerId`, and one whose
//! connections are clients of another kind (HTTP requests, event streams)
//! translates their requests into the frames the core takes.
//!
//! - [`exchange`]: the exchange protocol over byte streams (TCP): listeners,
//!   handshake, authentication, heartbeats, per-link flow control;
//! - [`stream`]: the byte streams it runs over (TCP, or TLS over TCP);
//! - [`tls`]: TLS on a stream, driven from the poll loop (rustls);
//! - [`memory`]: links between two dispatchers of one process, without
//!   sockets ([`MemoryLink`](crate::MemoryLink)).

pub(crate) mod exchange;
pub(crate) mod memory;
pub(crate) mod stream;
pub(crate) mod tls;
