//! An established connection's bytes: reading frames a fair share at a
//! time, output with its high-water mark and slow-consumer limit,
//! heartbeats and dead-peer checks, and closing.

use super::*;

impl Exchanges {
    // ----- readiness -----

    /// A poll event for one of this transport's tokens.
    pub(crate) fn on_event(&mut self, event: &mio::event::Event, core: &mut Core) {
        let token = event.token().0;
        if let Some(&id) = self.listeners.get(&token) {
            self.accept(id, core);
            return;
        }
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if conn.state == ConnState::Authorising {
            return; // read once the callback has decided
        }
        if conn.state == ConnState::Connecting {
            match conn.stream.take_error() {
                Ok(Some(e)) | Err(e) => {
                    self.close_conn(
                        token,
                        connect_why(&e),
                        &format!("connect failed: {e}"),
                        core,
                    );
                    return;
                }
                Ok(None) => {}
            }
            match conn.stream.peer_addr() {
                Ok(_) => {
                    conn.stream.set_nodelay();
                    conn.state = ConnState::Handshaking;
                    log::debug!("netsvc: connected to {}", conn.peer);
                    self.send_hello(token, core);
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    if event.is_error() || event.is_write_closed() {
                        self.close_conn(token, Why::Unreachable, "connect failed", core);
                    }
                    return; // still in progress
                }
                Err(e) => {
                    self.close_conn(
                        token,
                        connect_why(&e),
                        &format!("connect failed: {e}"),
                        core,
                    );
                    return;
                }
            }
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            if self.is_shut(token) || self.is_held(token) {
                // A peer that does not read what it is sent is not read
                // once it asks for more, nor one whose requests went to
                // such a peer: leave it in the socket, TCP pushes back on
                // it alone.
                if !self.stalled.contains(&token) {
                    self.stalled.push(token);
                }
            } else {
                self.read_conn(token, core);
            }
        }
        if event.is_writable() {
            if let Some(conn) = self.conns.get_mut(&token) {
                conn.write_blocked = false;
                self.dirty.push(token);
            }
        }
    }

    pub(super) fn read_conn(&mut self, token: usize, core: &mut Core) {
        let outer = self.reading.replace(token);
        let fed = std::mem::take(&mut self.fed);
        self.read_conn_once(token, core);
        self.reading = outer;
        self.fed = fed;
    }

    fn read_conn_once(&mut self, token: usize, core: &mut Core) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let mut rbuf = std::mem::take(&mut conn.rbuf);
        let mut chunks = 0;
        loop {
            let Some(conn) = self.conns.get_mut(&token) else {
                return;
            };
            chunks += 1;
            if self.scratch.is_empty() {
                self.scratch = vec![0u8; crate::frame::READ_CHUNK];
            }
            // A chunk at a time (or the whole of a larger frame), each
            // handled before the next is read: what is read is relayed
            // before more comes in, and a relay that congests an output
            // stops the reading below. Before the handshake and
            // authentication are done, a peer gets a few KiB, no more.
            let mut active = matches!(conn.state, ConnState::Active { .. });
            let (mut limit, max) = if active {
                let limit = self.link.config.max_frame_size;
                (limit, crate::frame::READ_CHUNK.max(rbuf.wanted(limit)))
            } else {
                let limit = PRE_AUTH_FRAME.min(self.link.config.max_frame_size);
                (limit, limit + crate::frame::PREFIX)
            };
            let asked = core.asked(PeerId(token));
            let fill = match rbuf.fill(&mut conn.stream, max, &mut self.scratch) {
                Ok((fill, 0)) => fill,
                Ok((fill, _)) => {
                    // Bytes arrived: the peer is alive, whole frame or not.
                    conn.last_in = Instant::now();
                    fill
                }
                Err(e) => {
                    self.close_conn(token, io_why(&e), &io_detail("read", &e), core);
                    return;
                }
            };
            loop {
                // The handshake may have completed on the frame before:
                // looked up only until it has (not per frame of a link).
                if !active {
                    active = self
                        .conns
                        .get(&token)
                        .is_some_and(|c| matches!(c.state, ConnState::Active { .. }));
                    if active {
                        limit = self.link.config.max_frame_size;
                    }
                }
                let body = match rbuf.next_frame(limit) {
                    Ok(Some(body)) => body,
                    Ok(None) => break,
                    Err(e) => {
                        // Before the handshake, a huge first length is most
                        // likely another protocol's text ("HTTP" is 1.2 GB).
                        // A frame over the limit is counted as a limit
                        // breached, whatever it is.
                        Counters::bump(&self.link.counters.limits_breached);
                        let (why, detail) = match frame_why(&e) {
                            // (or a TLS record: a peer that speaks TLS)
                            Why::LimitBreached if !active => {
                                let server = self.is_server_conn(token);
                                crate::transport::tls::plain_refusal(&e, server)
                            }
                            why => (why, format!("bad input: {e}")),
                        };
                        self.close_conn(token, why, &detail, core);
                        return;
                    }
                };
                Counters::bump(&self.link.counters.frames_in);
                if !self.on_frame(token, body, core) {
                    return;
                }
            }
            // What the chunk's frames asked for goes out now, before more
            // is read: a relay that congests an output stops this reading
            // below, and a link the core closed is read no further.
            if core.out.has(Kind::Stream) {
                self.carry(core);
                if !self.conns.contains_key(&token) {
                    return;
                }
            }
            // A congested peer whose input asked for more is read no
            // further until its output drains (see `Congestion`).
            if let Some(c) = self.congested.get_mut(&token) {
                if core.asked(PeerId(token)) != asked {
                    c.feeds_itself = true;
                }
            }
            // Requests it sent that congest the links they were relayed to
            // stop its reading until those drain: the request flooder is
            // pushed back on, not its callee dropped.
            if !self.fed.is_empty() {
                let fed = std::mem::take(&mut self.fed);
                let on: Vec<usize> = fed.into_iter().filter(|t| self.is_congested(*t)).collect();
                if !on.is_empty() {
                    self.held.insert(token, on);
                    if !self.stalled.contains(&token) {
                        self.stalled.push(token);
                    }
                    break;
                }
            }
            match fill {
                Fill::WouldBlock => break,
                Fill::Full if self.is_shut(token) => {
                    // Leave the rest in the socket until its output drains.
                    if !self.stalled.contains(&token) {
                        self.stalled.push(token);
                    }
                    break;
                }
                Fill::Full if chunks >= CHUNKS_PER_TURN => {
                    // Fair shares: one peer's flood is read a few chunks a
                    // turn, and every other peer, command and timer is
                    // served between them.
                    if !self.stalled.contains(&token) {
                        self.stalled.push(token);
                    }
                    break;
                }
                Fill::Full => continue,
                Fill::Closed => {
                    self.close_conn(token, Why::ClosedByPeer, "peer closed the connection", core);
                    return;
                }
            }
        }
        if let Some(conn) = self.conns.get_mut(&token) {
            conn.rbuf = rbuf;
        }
    }

    /// Handles one frame; false if the connection was closed.
    pub(super) fn on_frame(&mut self, token: usize, body: &[u8], core: &mut Core) -> bool {
        let Some(conn) = self.conns.get(&token) else {
            return false;
        };
        if conn.state == ConnState::Handshaking {
            match wire::decode_hello(body) {
                Ok(hello) => self.handshake_done(token, hello, body, core),
                Err(e) => {
                    self.close_conn(token, e.why(), &format!("handshake refused: {e}"), core);
                    return false;
                }
            }
            return self.conns.contains_key(&token);
        }
        if matches!(conn.state, ConnState::Active { .. }) {
            match core.frame(PeerId(token), body) {
                Taken::Done => {}
                Taken::Link(message) => self.link_message(token, message, core),
            }
            // (What it asked for is carried once the chunk is read.)
            return self.conns.contains_key(&token);
        }
        // Authenticating: the steps of the handshake, or a reason to close.
        match wire::decode_body::<Message>(body) {
            Ok(Message::Closing { reason }) => {
                self.peer_closing(token, &reason, core);
                false
            }
            Ok(message) => self.authenticate(token, message, core),
            Err(e) => {
                self.close_conn(token, Why::BadInput, &format!("bad frame: {e}"), core);
                false
            }
        }
    }

    /// A message about the link itself, on an active link.
    pub(super) fn link_message(&mut self, token: usize, message: Message, core: &mut Core) {
        match message {
            Message::Closing { reason } => self.peer_closing(token, &reason, core),
            Message::Challenge { .. } | Message::Response { .. } | Message::Proof { .. } => {
                Counters::bump(&self.link.counters.auth_failures);
                self.close_conn(
                    token,
                    Why::AuthenticationFailed,
                    "the peer requires authentication, and this exchange has no secret",
                    core,
                );
            }
            // (Heartbeats: their arrival is what counts, seen as it was read.)
            _ => {}
        }
    }

    // ----- output -----

    /// Encodes and queues a message on one connection.
    pub(super) fn send(&mut self, token: usize, message: &Message) {
        match wire::encode_frame(message) {
            Ok(frame) => self.push(token, &frame),
            Err(e) => log::error!("netsvc: cannot encode a frame: {e}"),
        }
    }

    /// Queues an already encoded frame (with its prefix) on a connection.
    pub(super) fn push(&mut self, token: usize, frame: &[u8]) {
        if let Some(conn) = self.conns.get_mut(&token) {
            if let Some(outlet) = &conn.outlet {
                outlet.mark_queued();
            }
            conn.wbuf.push_encoded(frame);
            self.queued(token);
        }
    }

    /// A frame was queued on a connection: it is written at the end of the
    /// turn, or at once when a chunk's worth is waiting, so that a stream of
    /// small frames (a publisher's turn of 4,096 reports, an exchange relaying
    /// a chunk it read) goes out a chunk per write while the bytes are still in
    /// cache, and the buffer stays about a chunk long rather than growing to a
    /// turn's output and being shrunk again (that showed as page faults in the
    /// profiles). Errors are the end-of-turn flush's to handle. A backlog
    /// past the mark congests the connection at once, not only at the next
    /// flush, so that the reading of the frames that fill it stops in time.
    pub(super) fn queued(&mut self, token: usize) {
        Counters::bump(&self.link.counters.frames_out);
        let high = high_water(self.link.config.max_outbound_buffer);
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if !conn.listed {
            conn.listed = true;
            self.dirty.push(token);
        }
        if conn.wbuf.pending() >= crate::frame::READ_CHUNK
            && !conn.write_blocked
            && conn.state != ConnState::Connecting
        {
            let _ = conn.write_out();
        }
        if conn.wbuf.pending() > high {
            self.congest(token);
        }
    }

    /// Writes what each connection has queued, in as few writes as the
    /// sockets allow; drops a peer whose backlog passes the limit.
    pub(crate) fn flush_dirty(&mut self, core: &mut Core) {
        if self.dirty.is_empty() {
            return;
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        let limit = self.link.config.max_outbound_buffer;
        let high = high_water(limit);
        for token in dirty.drain(..) {
            let Some(conn) = self.conns.get_mut(&token) else {
                continue;
            };
            conn.listed = false;
            if conn.state == ConnState::Connecting {
                continue;
            }
            match conn.write_out() {
                Ok(_) => {
                    let pending = conn.wbuf.pending() + conn.spilled;
                    if pending > high {
                        self.congest(token);
                    } else if pending <= high / 4 {
                        self.congested.remove(&token);
                    }
                    if pending > limit {
                        Counters::bump(&self.link.counters.slow_consumers);
                        let reason = format!("{pending} bytes waiting, limit {limit}");
                        self.close_conn(token, Why::SlowConsumer, &reason, core);
                    }
                }
                Err(e) => self.close_conn(token, io_why(&e), &format!("write failed: {e}"), core),
            }
        }
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Reads the next share of the input left unread (a fair share taken,
    /// or its congestion over); once a turn, after the turn's events.
    pub(crate) fn read_stalled(&mut self, core: &mut Core) {
        if self.stalled.is_empty() {
            return;
        }
        for token in std::mem::take(&mut self.stalled) {
            if self.is_shut(token) || self.is_held(token) {
                self.stalled.push(token); // still not reading it
            } else {
                self.held.remove(&token);
                self.read_conn(token, core);
            }
        }
    }

    // ----- liveness -----

    pub(super) fn arm_liveness(&mut self) {
        if !self.liveness_armed {
            self.liveness_armed = true;
            let period = self.liveness_period();
            self.timers
                .start(Instant::now() + period, NetTimer::Liveness);
        }
    }

    /// The liveness check runs often enough for both the heartbeat interval
    /// and the dead-peer timeout.
    pub(super) fn liveness_period(&self) -> Duration {
        let c = &self.link.config;
        (c.heartbeat_interval / 2)
            .min(c.dead_peer_timeout / 4)
            .min(c.slow_consumer_timeout / 4)
            .max(Duration::from_millis(1))
    }

    /// Every active link: a heartbeat if it has been quiet, closed if the
    /// peer has been silent past the dead-peer timeout.
    pub(super) fn liveness(&mut self, core: &mut Core) {
        let now = Instant::now();
        let (interval, dead, slow) = (
            self.link.config.heartbeat_interval,
            self.link.config.dead_peer_timeout,
            self.link.config.slow_consumer_timeout,
        );
        let mut quiet = Vec::new();
        let mut silent = Vec::new();
        // A peer whose output has stayed congested for the slow-consumer
        // timeout (never drained to a quarter of the mark in that time:
        // reading in bursts does not reset it) is dropped alone.
        let stuck: Vec<usize> = self
            .congested
            .iter()
            .filter(|(_, c)| now.saturating_duration_since(c.since) >= slow)
            .map(|(t, _)| *t)
            .collect();
        for token in stuck {
            Counters::bump(&self.link.counters.slow_consumers);
            let pending = self.conns.get(&token).map_or(0, |c| c.wbuf.pending());
            self.close_conn(
                token,
                Why::SlowConsumer,
                &format!("{pending} bytes unsent, output congested for {slow:?}"),
                core,
            );
        }
        for (token, conn) in &self.conns {
            if !matches!(conn.state, ConnState::Active { .. }) || self.stalled.contains(token) {
                continue; // (a stalled peer's input is ours to read, not its silence)
            }
            if now.saturating_duration_since(conn.last_in) >= dead {
                silent.push(*token);
            } else if now.saturating_duration_since(conn.last_out) >= interval {
                quiet.push(*token);
            }
        }
        for token in silent {
            // Judged on what arrived: input may be waiting in the socket
            // after a long turn, and a peer that sent it is alive.
            self.read_conn(token, core);
            let alive = self
                .conns
                .get(&token)
                .is_none_or(|c| Instant::now().saturating_duration_since(c.last_in) < dead);
            if alive {
                continue;
            }
            let reason = format!("peer silent for {dead:?}: presumed dead");
            self.close_conn(token, Why::HeartbeatTimeout, &reason, core);
        }
        for token in quiet {
            self.send(token, &Message::Heartbeat);
        }
        if self.conns.is_empty() {
            self.liveness_armed = false;
        } else {
            let period = self.liveness_period();
            self.timers.start(now + period, NetTimer::Liveness);
        }
    }

    /// Whether a connection is a server's.
    fn is_server_conn(&self, token: usize) -> bool {
        self.conns
            .get(&token)
            .and_then(|c| self.exchanges.get(&c.exchange))
            .is_some_and(|e| matches!(e.role, Role::Server { .. }))
    }

    // ----- closing -----

    /// Closes a connection: every binding learned through it is withdrawn,
    /// calls through it fail, and a client schedules its reconnection.
    pub(super) fn close_conn(&mut self, token: usize, why: Why, reason: &str, core: &mut Core) {
        let unexpected = why != Why::Closed;
        let Some(mut conn) = self.conns.remove(&token) else {
            return;
        };
        let authenticating = matches!(
            conn.state,
            ConnState::AwaitChallenge { .. }
                | ConnState::AwaitResponse { .. }
                | ConnState::AwaitProof { .. }
        );
        // A peer that hangs up in the middle of authentication refused it
        // (a wrong key): say so rather than "closed by peer".
        let why = match why {
            Why::ClosedByPeer if authenticating => Why::AuthenticationFailed,
            other => other,
        };
        let adjusted;
        let reason = if why == Why::AuthenticationFailed && !reason.starts_with("authentication") {
            adjusted =
                format!("authentication failed: {reason} while authenticating (a wrong secret?)");
            adjusted.as_str()
        } else {
            reason
        };
        self.congested.remove(&token);
        self.stalled.retain(|t| *t != token);
        self.held.remove(&token);
        let _ = self.poll.deregister(&mut conn.stream);
        if let Some(t) = conn.handshake_timer.take() {
            self.timers.cancel(t);
        }
        let remote = match &conn.state {
            ConnState::Active { remote } => Some(remote.clone()),
            _ => None,
        };
        if authenticating || (why == Why::AuthenticationFailed && remote.is_none()) {
            Counters::bump(&self.link.counters.auth_failures);
            let server = self
                .exchanges
                .get(&conn.exchange)
                .is_some_and(|e| matches!(e.role, Role::Server { .. }));
            if server {
                self.failed_auth.note(conn.peer.ip(), Instant::now());
            }
        }
        if why.is_tls() {
            Counters::bump(&self.link.counters.tls_failures);
        }
        // (Counted first: a peer told why may look at the counters.)
        tell_why(&mut conn, why, reason);
        if conn.state != ConnState::Connecting && conn.wbuf.pending() > 0 {
            // What is queued goes if the socket takes it at once: a hello
            // not yet flushed lets the peer see for itself why it is
            // refused (a handshake can fail in the turn it starts).
            let _ = conn.write_out();
        }
        if let Some(outlet) = conn.outlet.take() {
            outlet.close();
        }
        if unexpected && conn.state != ConnState::Connecting {
            let peer = conn.peer;
            self.warnings.warn(
                "closing",
                format_args!("closing connection to {peer}: {reason}"),
            );
        } else {
            log::debug!("netsvc: closing connection to {}: {reason}", conn.peer);
        }
        if remote.is_some() {
            // Everything learned through it goes (and the other clients of
            // a server hear of it).
            self.active -= 1;
            core.peer_down(PeerId(token), &format!("connection to {} lost", conn.peer));
            self.carry(core);
        }
        let exchange = conn.exchange;
        let was_client = if let Some(exch) = self.exchanges.get_mut(&exchange) {
            exch.conns.retain(|t| *t != token);
            if let Role::Client { conn: c, .. } = &mut exch.role {
                *c = None;
                true
            } else {
                false
            }
        } else {
            false
        };
        // Inactive for a lost link, and on a client for a failed attempt.
        if remote.is_some() || was_client {
            let state = ConnectionState::Inactive;
            let (why, identity) = (Some((why, reason)), conn.identity.as_deref());
            self.announce_connection(exchange, state, remote, conn.peer, why, identity);
        }
        if was_client {
            self.schedule_reconnect(exchange);
        }
    }
}
