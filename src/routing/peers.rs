//! The routing core's side of the transport seam: peers known by an id,
//! what the core knows of each, and the outbox through which it asks the
//! transports to carry frames to them or to close them.
//!
//! The core never touches a socket. A transport tells it that a peer came
//! up ([`Core::peer_up`](super::Core::peer_up)), what arrived from it
//! ([`Core::frame`](super::Core::frame)) and that it went down
//! ([`Core::peer_down`](super::Core::peer_down)); the core answers by
//! queueing [`Carry`] items in its [`Outbox`], one queue per kind of
//! transport, which that transport takes and carries out.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use crate::connection::InactiveReason as Why;
use crate::credentials::Identity;
use crate::direct::Outlet;
use crate::ids::{AgentKey, ProcessId, ServiceBinding};
use crate::mailbox::command::Limits;

use super::idmap::IdMap;
use super::registry::Ordered;

/// The kinds of transport, each with its own queue in the [`Outbox`]. A
/// new transport is a new variant here (and its module in `transport/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// Exchange links over byte streams (TCP): `transport::exchange`.
    Stream = 0,
    /// Links between two dispatchers of one process: `transport::memory`.
    Memory = 1,
}

impl Kind {
    /// How many kinds there are.
    pub(crate) const COUNT: usize = 2;
    const BITS: u32 = 1;
}

/// A peer (one link) as the core knows it: a number that also says which
/// kind of transport carries it. A stream transport uses it as the mio token
/// of the peer's socket too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PeerId(pub usize);

impl PeerId {
    /// The `n`th id of a kind of transport (`n` from 1: the id 0 is the
    /// poll loop's waker).
    pub(crate) fn new(kind: Kind, n: usize) -> PeerId {
        PeerId((n << Kind::BITS) | kind as usize)
    }

    /// The kind of transport that carries the peer.
    pub(crate) fn kind(self) -> Kind {
        match self.0 & ((1 << Kind::BITS) - 1) {
            0 => Kind::Stream,
            _ => Kind::Memory,
        }
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "link {}", self.0)
    }
}

/// What a transport tells the core about a peer that came up.
#[derive(Debug, Clone)]
pub(crate) struct PeerInfo {
    /// The process at the other end, as its handshake (or its joining) said.
    pub remote: ProcessId,
    /// The exchange the link belongs to: a server relays bindings between
    /// the links of one exchange only.
    pub exchange: u64,
    /// The exchange group: which audiences the link shows.
    pub group: String,
    /// On the server side of an exchange: its limits (a server relays
    /// between its clients and holds each to its limits); `None` on a
    /// client (its one link carries the whole exchange's table).
    pub limits: Option<Limits>,
    /// On the server side, the credential the client authenticated with
    /// (shared with the other links of that credential): what it may send
    /// is checked against its permissions. `None` allows everything: a
    /// client of the shared secret, a link without authentication, and
    /// every link on the client side.
    pub identity: Option<Arc<Identity>>,
    /// On a plain TCP link: how other threads write calls and replies onto
    /// it, and the callers waiting there (see `direct.rs`).
    pub outlet: Option<Arc<Outlet>>,
}

/// Bytes of state a peer made this process hold, counted against its
/// link's memory budget (with its subscriptions and pending calls).
#[derive(Debug, Default)]
pub(crate) struct Usage {
    /// The bindings learned through it, with their groups.
    pub learned_bytes: usize,
    /// Its hidden subscribers (see [`Peers::hidden`]).
    pub hidden_bytes: usize,
}

/// One peer, as the core keeps it while its link is up (boxed in the map:
/// a server holds one per client, idle ones included).
pub(crate) struct Peer {
    pub remote: ProcessId,
    /// The exchange it belongs to (its group and limits are in
    /// [`Peers::scopes`]).
    pub exchange: u64,
    /// Agents learned through this link, in order.
    pub learned: Ordered<AgentKey>,
    pub usage: Usage,
    /// Frames refused from it since `refused_since` (see [`REFUSALS`]).
    pub refused: u32,
    pub refused_since: std::time::Instant,
    /// The core asked for the link to be closed: nothing more it sends is
    /// taken, and nothing more is sent to it.
    pub closing: bool,
    /// Its credential, if it has one (see [`PeerInfo::identity`]).
    pub identity: Option<Arc<Identity>>,
    /// Report credit both ways, and the reports waiting for it.
    pub flow: super::flow::PeerFlow,
    /// Requests (not casts), subscriptions and report credit it has sent:
    /// each may be answered on its link (see [`Core::asked`](super::Core::asked)).
    pub asked: u64,
    /// See [`PeerInfo::outlet`].
    pub outlet: Option<Arc<Outlet>>,
}

/// What the peers of one exchange share.
pub(crate) struct Scope {
    /// The exchange group: which audiences its links show.
    pub group: String,
    /// On the server side, its limits (see [`PeerInfo::limits`]).
    pub limits: Option<Limits>,
    /// How many of its peers are up (the scope goes with the last).
    pub peers: usize,
}

/// A link whose frames have been refused this many times within
/// [`REFUSAL_WINDOW`] (frames it had no right to send: a forged reply, a
/// report in another's name...) is closed. A few can be honest races (a
/// reply crossing a withdrawal); this many in so short a time are not.
pub(crate) const REFUSALS: u32 = 64;

/// See [`REFUSALS`].
pub(crate) const REFUSAL_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// Every peer whose link is up, and the subscribers known only through
/// their subscriptions.
#[derive(Default)]
pub(crate) struct Peers {
    pub map: IdMap<PeerId, Box<Peer>>,
    /// By exchange id.
    pub scopes: IdMap<u64, Scope>,
    /// A server's client links by the process they came up as (one each).
    pub by_process: HashMap<u64, PeerId>,
    /// Remote agents known only as subscribers (their audience hides them
    /// from the registry): where to send their reports.
    pub hidden: HashMap<AgentKey, (ServiceBinding, PeerId)>,
    /// Changes whenever `hidden` does.
    pub hidden_generation: u64,
}

/// One thing the core asks of a transport.
#[derive(Debug)]
pub(crate) enum Carry {
    /// Queue this frame (prefix included, bytes in the queue's buffer) on
    /// the peer's link. `request`: it is a call or cast, work pushed on
    /// the far side (a relay that reads such frames for a link whose
    /// output is congested stops reading their source).
    Frame {
        peer: PeerId,
        bytes: Range<usize>,
        request: bool,
    },
    /// Close the peer's link, telling it why if the transport can; the
    /// transport then reports the loss with `Core::peer_down`.
    Close {
        peer: PeerId,
        why: Why,
        reason: String,
    },
}

/// The requests for one kind of transport, in order, with the bytes of
/// their frames. A frame for many peers is stored once.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    pub bytes: Vec<u8>,
    pub items: Vec<Carry>,
}

impl Queue {
    /// Empties the queue, keeping its buffers unless one grew large.
    pub(crate) fn clear(&mut self) {
        self.items.clear();
        self.bytes.clear();
        if self.bytes.capacity() > 4 * crate::frame::READ_CHUNK {
            self.bytes = Vec::new();
        }
    }
}

/// What the core has asked of the transports and they have not yet taken.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    queues: [Queue; Kind::COUNT],
    /// The report frame queued last by [`put_report`](Self::put_report):
    /// its peer and the frame's state. Appended to only while it is still
    /// the last item and the last bytes of its queue.
    batch: Option<(PeerId, crate::wire::Batch)>,
}

impl Outbox {
    /// Queues one frame for every peer in `peers`, written by `write`
    /// (prefix included) into the queue of each kind of transport among
    /// them once, and shared by that kind's peers; the frame's body length
    /// (0 for no peers). On error nothing is queued for the peers not yet
    /// served, and the error is returned.
    pub(crate) fn put(
        &mut self,
        peers: impl IntoIterator<Item = PeerId>,
        write: impl FnMut(&mut Vec<u8>) -> crate::error::Result<()>,
    ) -> crate::error::Result<usize> {
        self.put_flagged(peers, write, false)
    }

    /// Queues a request's frame (see [`Carry::Frame`]) for one peer.
    pub(crate) fn put_request(
        &mut self,
        peer: PeerId,
        write: impl FnMut(&mut Vec<u8>) -> crate::error::Result<()>,
    ) -> crate::error::Result<usize> {
        self.put_flagged([peer], write, true)
    }

    /// Relays a request's frame body as it came (see [`relay`](Self::relay)).
    pub(crate) fn relay_request(&mut self, peer: PeerId, body: &[u8]) {
        let _ = self.put_request(peer, |buf| {
            crate::frame::put_frame(buf, body);
            Ok(())
        });
    }

    fn put_flagged(
        &mut self,
        peers: impl IntoIterator<Item = PeerId>,
        mut write: impl FnMut(&mut Vec<u8>) -> crate::error::Result<()>,
        request: bool,
    ) -> crate::error::Result<usize> {
        let mut len = 0;
        let mut stored: [Option<Range<usize>>; Kind::COUNT] = Default::default();
        for peer in peers {
            let k = peer.kind() as usize;
            let q = &mut self.queues[k];
            let bytes = match &stored[k] {
                Some(r) => r.clone(),
                None => {
                    let start = q.bytes.len();
                    if let Err(e) = write(&mut q.bytes) {
                        q.bytes.truncate(start);
                        return Err(e);
                    }
                    let r = start..q.bytes.len();
                    len = r.len().saturating_sub(crate::frame::PREFIX);
                    stored[k] = Some(r.clone());
                    r
                }
            };
            q.items.push(Carry::Frame {
                peer,
                bytes,
                request,
            });
        }
        Ok(len)
    }

    /// Queues a report for one peer: appended to the report frame queued
    /// last for it if that frame is still the last thing queued for its
    /// kind of transport and is of the same publisher, subject and
    /// destination (see `Message::Reports`), else in a frame of its own.
    /// The bytes the frame's body has grown by (its whole body if new), to
    /// be counted against the peer's credit. On error nothing is queued.
    pub(crate) fn put_report(
        &mut self,
        peer: PeerId,
        publisher: AgentKey,
        to: Option<AgentKey>,
        subject: &str,
        payload: &[u8],
    ) -> crate::error::Result<usize> {
        let q = &mut self.queues[peer.kind() as usize];
        if let (
            Some((p, batch)),
            Some(Carry::Frame {
                peer: of, bytes, ..
            }),
        ) = (&mut self.batch, q.items.last_mut())
        {
            let last = *p == peer
                && *of == peer
                && bytes.start == batch.start_at()
                && bytes.end == q.bytes.len();
            if last {
                if let Some(grew) = batch.append(&mut q.bytes, publisher, to, subject, payload) {
                    bytes.end = q.bytes.len();
                    return Ok(grew);
                }
            }
        }
        let start = q.bytes.len();
        let batch = crate::wire::Batch::start(&mut q.bytes, publisher, to, subject, payload)?;
        q.items.push(Carry::Frame {
            peer,
            bytes: start..q.bytes.len(),
            request: false,
        });
        self.batch = Some((peer, batch));
        Ok(q.bytes.len() - start - crate::frame::PREFIX)
    }

    /// Queues a frame body as it came from a peer (its length prefix added)
    /// for every peer in `peers`: a relay.
    pub(crate) fn relay(&mut self, peers: impl IntoIterator<Item = PeerId>, body: &[u8]) {
        let _ = self.put(peers, |buf| {
            crate::frame::put_frame(buf, body);
            Ok(())
        });
    }

    /// Asks for a peer's link to be closed.
    pub(crate) fn close(&mut self, peer: PeerId, why: Why, reason: String) {
        let q = &mut self.queues[peer.kind() as usize];
        q.items.push(Carry::Close { peer, why, reason });
    }

    /// Whether anything waits for this kind of transport.
    pub(crate) fn has(&self, kind: Kind) -> bool {
        !self.queues[kind as usize].items.is_empty()
    }

    /// Whether anything waits for any transport.
    pub(crate) fn is_empty(&self) -> bool {
        self.queues.iter().all(|q| q.items.is_empty())
    }

    /// Takes what waits for one kind of transport (give the queue back with
    /// [`put_back`](Self::put_back) to keep its buffers).
    pub(crate) fn take(&mut self, kind: Kind) -> Queue {
        if self.batch.as_ref().is_some_and(|(p, ..)| p.kind() == kind) {
            self.batch = None; // (its frame is being carried out)
        }
        std::mem::take(&mut self.queues[kind as usize])
    }

    /// Gives a taken (and carried out) queue back, unless more was queued
    /// meanwhile, which stays.
    pub(crate) fn put_back(&mut self, kind: Kind, mut queue: Queue) {
        let slot = &mut self.queues[kind as usize];
        if slot.items.is_empty() && slot.bytes.is_empty() {
            queue.clear();
            *slot = queue;
        }
    }
}
