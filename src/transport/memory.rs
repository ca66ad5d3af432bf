//! The in-memory transport: links between two dispatchers of one process,
//! without sockets ([`MemoryLink`](crate::MemoryLink)). Frames cross as
//! they would over an exchange (encoded by the core, decoded by the other
//! core), through a channel per direction; the far dispatcher is woken once
//! per turn that sent it something.
//!
//! It proves the transport seam: the core cannot tell its links from an
//! exchange's. What it leaves out is what only a network needs: no
//! handshake (the two ends are joined by the process itself), no
//! heartbeats (an end that goes away disconnects its channel, which the
//! other end sees at once), no authentication. Output is bounded as on an
//! exchange: an end whose frames the other has not taken pass the
//! dispatcher's `max_outbound_buffer` is closed as a slow consumer.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::TryRecvError;

use crate::connection::InactiveReason as Why;
use crate::mailbox::command::{Limits, MemoryEnd};
use crate::mailbox::Link;
use crate::routing::idmap::IdMap;
use crate::routing::peers::Carry;
use crate::routing::{Core, Kind, LinkCounts, PeerId, PeerInfo, Taken};
use crate::stats::Counters;
use crate::wire::Message;

/// At most this many frames are taken from one link per turn, so that one
/// busy link cannot hold the dispatcher's other work back.
const FRAMES_PER_TURN: usize = 1024;

/// The in-memory links of one dispatcher.
pub(crate) struct Memory {
    link: Arc<Link>,
    ends: IdMap<usize, MemoryEnd>,
    /// Link id to the token of its end here.
    by_link: HashMap<u64, usize>,
    /// On the server side: one exchange id per group, so that the links
    /// joined to this dispatcher in one group relay between each other.
    hubs: HashMap<String, u64>,
    next: usize,
    /// Ends that sent frames this turn: their far dispatcher is woken.
    sent_to: Vec<usize>,
}

impl Memory {
    pub(crate) fn new(link: Arc<Link>) -> Self {
        Memory {
            link,
            ends: IdMap::default(),
            by_link: HashMap::new(),
            hubs: HashMap::new(),
            next: 0,
            sent_to: Vec::new(),
        }
    }

    /// Joins one end of a link: the core knows it as a peer from now on.
    pub(crate) fn open(&mut self, end: MemoryEnd, core: &mut Core) {
        self.next += 1;
        let token = PeerId::new(Kind::Memory, self.next).0;
        let exchange = if end.server {
            *self
                .hubs
                .entry(end.group.clone())
                .or_insert_with(|| self.link.next_id())
        } else {
            self.link.next_id()
        };
        let info = PeerInfo {
            outlet: None,
            remote: end.remote.clone(),
            exchange,
            group: end.group.clone(),
            limits: end.server.then(Limits::default),
            identity: None,
        };
        self.by_link.insert(end.link, token);
        self.ends.insert(token, end);
        core.peer_up(PeerId(token), info);
        self.carry(core);
    }

    /// Closes a link by its id (from the handle).
    pub(crate) fn close_link(&mut self, link: u64, core: &mut Core) {
        if let Some(&token) = self.by_link.get(&link) {
            self.close(token, Why::Closed, "link closed", core);
        }
    }

    /// Closes one end: the other end sees its channel disconnect.
    fn close(&mut self, token: usize, why: Why, reason: &str, core: &mut Core) {
        let Some(end) = self.ends.remove(&token) else {
            return;
        };
        self.by_link.remove(&end.link);
        let (end_link, end_remote) = (end.link, end.remote.clone());
        if why != Why::Closed {
            log::warn!("netsvc: closing {} to {}: {reason}", end.link, end.remote);
        }
        let other = end.other.clone();
        drop(end);
        if let Some(other) = other.upgrade() {
            other.wake();
        }
        let lost = format!("memory link {} to {} lost", end_link, end_remote);
        core.peer_down(PeerId(token), &lost);
    }

    /// Carries out what the core asked of these links, in order.
    pub(crate) fn carry(&mut self, core: &mut Core) {
        let limit = self.link.config.max_outbound_buffer;
        while core.out.has(Kind::Memory) {
            let queue = core.out.take(Kind::Memory);
            for item in &queue.items {
                match item {
                    Carry::Frame { peer, bytes, .. } => {
                        let Some(end) = self.ends.get(&peer.0) else {
                            continue;
                        };
                        // (The frame's length prefix is the stream's; a
                        // channel keeps frames apart by itself.)
                        let frame = &queue.bytes[bytes.clone()];
                        let body = frame[crate::frame::PREFIX..].to_vec();
                        let len = body.len();
                        if end.tx.send(body).is_err() {
                            continue; // the other end is gone: seen on receive
                        }
                        Counters::bump(&self.link.counters.frames_out);
                        let waiting = end.sent.fetch_add(len, Ordering::AcqRel) + len;
                        if !self.sent_to.contains(&peer.0) {
                            self.sent_to.push(peer.0);
                        }
                        if waiting > limit {
                            Counters::bump(&self.link.counters.slow_consumers);
                            let reason = format!("{waiting} bytes waiting, limit {limit}");
                            self.close(peer.0, Why::SlowConsumer, &reason, core);
                        }
                    }
                    Carry::Close { peer, why, reason } => self.close(peer.0, *why, reason, core),
                }
            }
            core.out.put_back(Kind::Memory, queue);
        }
    }

    /// Takes what arrived on every link (a bounded share of each).
    pub(crate) fn receive(&mut self, core: &mut Core) {
        if self.ends.is_empty() {
            return;
        }
        let mut tokens: Vec<usize> = self.ends.keys().copied().collect();
        tokens.sort_unstable();
        for token in tokens {
            for _ in 0..FRAMES_PER_TURN {
                let Some(end) = self.ends.get(&token) else {
                    break;
                };
                let body = match end.rx.try_recv() {
                    Ok(body) => body,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        let reason = "the other dispatcher closed the link";
                        self.close(token, Why::ClosedByPeer, reason, core);
                        break;
                    }
                };
                end.received.fetch_sub(body.len(), Ordering::AcqRel);
                Counters::bump(&self.link.counters.frames_in);
                match core.frame(PeerId(token), &body) {
                    Taken::Done => {}
                    Taken::Link(Message::Closing { reason }) => {
                        let reason = format!("the peer closed the link: {reason}");
                        self.close(token, Why::ClosedByPeer, &reason, core);
                    }
                    // (No handshake, no heartbeats on these links.)
                    Taken::Link(_) => {}
                }
                self.carry(core);
            }
        }
    }

    /// Wakes the dispatchers that were sent frames this turn.
    pub(crate) fn flush(&mut self) {
        for token in self.sent_to.drain(..) {
            if let Some(other) = self.ends.get(&token).and_then(|e| e.other.upgrade()) {
                other.wake();
            }
        }
    }

    /// Whether frames wait to be taken (no poll event announces them).
    pub(crate) fn has_work(&self) -> bool {
        !self.sent_to.is_empty() || self.ends.values().any(|e| !e.rx.is_empty())
    }

    /// How the links stand.
    pub(crate) fn counts(&self) -> LinkCounts {
        LinkCounts {
            exchanges: self.hubs.len(),
            up: self.ends.len(),
            handshaking: 0,
            down: 0,
        }
    }

    /// Closes every link: the end of the dispatcher.
    pub(crate) fn stop(&mut self, core: &mut Core) {
        self.carry(core);
        self.flush();
        let mut tokens: Vec<usize> = self.ends.keys().copied().collect();
        tokens.sort_unstable();
        for token in tokens {
            self.close(token, Why::Closed, "dispatcher stopped", core);
        }
    }
}
