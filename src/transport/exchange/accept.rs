//! The server side: accepting connections, making room for them within
//! the limits (handshakes per address, connections), and the `authorise`
//! callback's thread.

use super::*;

impl Exchanges {
    pub(super) fn accept(&mut self, id: u64, core: &mut Core) {
        loop {
            let Some(exch) = self.exchanges.get(&id) else {
                return;
            };
            let Role::Server {
                listener,
                limits,
                tls,
                ..
            } = &exch.role
            else {
                return;
            };
            let limits = *limits;
            let (mut stream, peer) = match listener.accept() {
                Ok((s, peer)) => match Stream::accepted(s, tls.as_ref()) {
                    Ok(stream) => (stream, peer),
                    Err(e) => {
                        log::error!("netsvc: connection from {peer} dropped: {e}");
                        continue;
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors, for instance: the listener stays,
                    // the next readiness event tries again.
                    log::error!("netsvc: accept failed: {e}");
                    return;
                }
            };
            if self.failed_auth.blocked(peer.ip(), Instant::now()) {
                Counters::bump(&self.link.counters.limits_breached);
                self.warnings.warn(
                    "refused",
                    format_args!(
                        "connection from {peer} refused: {AUTH_FAILURES} failed authentications \
                         from its address within {AUTH_WINDOW:?}"
                    ),
                );
                continue; // (dropped: closed at once, before a byte is read)
            }
            if !self.make_room(id, peer, &limits, core) {
                Counters::bump(&self.link.counters.limits_breached);
                let n = limits.max_connections;
                self.warnings.warn(
                    "refused",
                    format_args!("connection from {peer} refused: the server has its maximum of {n} connections"),
                );
                continue;
            }
            let token = self.token();
            if let Err(e) = self.poll.register(
                &mut stream,
                Token(token),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                log::error!("netsvc: cannot register connection from {peer}: {e}");
                continue;
            }
            stream.set_nodelay();
            let authorise = match self.exchanges.get(&id).map(|e| &e.role) {
                Some(Role::Server {
                    authorise: Some(tx),
                    ..
                }) => Some(tx.clone()),
                _ => None,
            };
            let state = match authorise {
                Some(_) => ConnState::Authorising,
                None => ConnState::Handshaking,
            };
            self.add_conn(token, id, stream, peer, state);
            if let Some(exch) = self.exchanges.get_mut(&id) {
                exch.conns.push(token);
            }
            log::debug!("netsvc: accepted connection from {peer}");
            match authorise {
                Some(tx) => {
                    if tx.try_send((token, peer)).is_err() {
                        // Its queue is full (the callback is slow) or gone.
                        self.close_conn(
                            token,
                            Why::LimitBreached,
                            "refused: too many connections wait for the authorise callback",
                            core,
                        );
                    }
                }
                None => self.send_hello(token, core),
            }
        }
    }

    /// Makes room for a connection from `peer`: true if it may be taken.
    /// Connections still in their handshake are bounded per address and
    /// give way, oldest first, to newer ones (so silent connections cannot
    /// hold every slot until their timeout); established links never do.
    pub(super) fn make_room(
        &mut self,
        id: u64,
        peer: SocketAddr,
        limits: &Limits,
        core: &mut Core,
    ) -> bool {
        let Some(exch) = self.exchanges.get(&id) else {
            return false;
        };
        // A handshake holds a slot only once it has had time to complete:
        // a burst of honest clients (all of one host reconnecting after a
        // restart) is all fresh, and none of it gives way to the rest.
        let grace = handshake_grace(self.link.config.handshake_timeout);
        let now = Instant::now();
        let mut oldest_any: Option<(Instant, usize)> = None;
        let mut oldest_here: Option<(Instant, usize)> = None;
        let mut here = 0;
        for t in &exch.conns {
            let Some(c) = self.conns.get(t) else {
                continue;
            };
            let fresh = now.saturating_duration_since(c.opened) < grace;
            if matches!(c.state, ConnState::Active { .. }) || fresh {
                continue;
            }
            let entry = Some((c.opened, *t));
            if oldest_any.is_none_or(|(at, _)| c.opened < at) {
                oldest_any = entry;
            }
            if c.peer.ip() == peer.ip() {
                here += 1;
                if oldest_here.is_none_or(|(at, _)| c.opened < at) {
                    oldest_here = entry;
                }
            }
        }
        let full = exch.conns.len() >= limits.max_connections;
        let evict = if here >= limits.max_handshakes_per_address {
            oldest_here
        } else if full {
            oldest_any
        } else {
            return true;
        };
        // (Nothing stale to evict: a full server refuses; below the
        // maximum, fresh handshakes of one address are all taken.)
        if evict.is_none() && !full {
            return true;
        }
        match evict {
            Some((_, t)) => {
                Counters::bump(&self.link.counters.limits_breached);
                self.close_conn(
                    t,
                    Why::LimitBreached,
                    "handshake not complete, and a newer connection needed its slot",
                    core,
                );
                true
            }
            None => false,
        }
    }

    /// Starts the thread that runs a server's `authorise` callback, so
    /// that a slow callback delays only the connections it decides on.
    /// Its decisions come back as commands; it ends when the exchange does.
    pub(super) fn spawn_authoriser(
        &mut self,
        check: Authorise,
    ) -> Result<Sender<(usize, SocketAddr)>> {
        let (tx, rx) = crossbeam_channel::bounded::<(usize, SocketAddr)>(AUTHORISE_QUEUE);
        let link = self.link.clone();
        let handle = std::thread::Builder::new()
            .name("netsvc-authorise".to_owned())
            .spawn(move || {
                for (token, peer) in rx.iter() {
                    let allowed =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&peer)))
                            .unwrap_or_else(|_| {
                                log::error!(
                                    "netsvc: the authorise callback panicked; refusing {peer}"
                                );
                                false
                            });
                    if link
                        .send(crate::mailbox::command::Command::Authorised { token, allowed })
                        .is_err()
                    {
                        return; // the dispatcher has stopped
                    }
                }
            })?;
        self.link.add_worker(self.link.next_agent(), handle);
        Ok(tx)
    }

    /// The `authorise` callback's decision on a connection.
    pub(crate) fn authorised(&mut self, token: usize, allowed: bool, core: &mut Core) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return; // closed meanwhile (its handshake time ran out)
        };
        if conn.state != ConnState::Authorising {
            return;
        }
        if !allowed {
            let peer = conn.peer;
            log::info!("netsvc: connection from {peer} refused by authorise");
            self.close_conn(
                token,
                Why::Refused,
                "refused by the authorise callback",
                core,
            );
            return;
        }
        conn.state = ConnState::Handshaking;
        self.send_hello(token, core);
        // What arrived meanwhile was left in the socket (edge-triggered
        // readiness will not say so again).
        self.read_conn(token, core);
    }

    /// Registers a new connection, with its handshake deadline. Keepalive
    /// lets the kernel notice a dead peer too, beside our heartbeats.
    pub(super) fn add_conn(
        &mut self,
        token: usize,
        exchange: u64,
        stream: Stream,
        peer: SocketAddr,
        state: ConnState,
    ) {
        if let Err(e) = stream.set_keepalive(self.link.config.dead_peer_timeout) {
            log::debug!("netsvc: keepalive not set on the connection to {peer}: {e}");
        }
        let now = Instant::now();
        let timer = self.timers.start(
            now + self.link.config.handshake_timeout,
            NetTimer::Handshake(token),
        );
        let conn = Conn {
            exchange,
            stream,
            peer,
            state,
            opened: now,
            rbuf: ReadBuffer::default(),
            wbuf: WriteBuffer::default(),
            handshake: None,
            handshake_timer: Some(timer),
            last_in: now,
            last_out: now,
            write_blocked: false,
            listed: false,
            identity: None,
            outlet: None,
            spilled: 0,
        };
        self.conns.insert(token, conn);
    }
}
