//! The handshake: hellos, the group and version checks, the shared-secret
//! challenge and proofs, and the link becoming a peer of the core.

use super::*;

impl Exchanges {
    pub(super) fn send_hello(&mut self, token: usize, core: &mut Core) {
        let Some(conn) = self.conns.get(&token) else {
            return;
        };
        let Some(exch) = self.exchanges.get(&conn.exchange) else {
            return;
        };
        let server = matches!(exch.role, Role::Server { .. });
        let keyed = exch.authenticates();
        let hello = Hello {
            process: self.link.process.clone(),
            group: exch.group.clone(),
            auth: keyed,
            // A client proves its uid is its own; a server need not (its
            // clients chose to connect to it), and shows its token to no one.
            identity: if server {
                Vec::new()
            } else {
                self.link.identity.to_vec()
            },
            bind: server && exch.bind,
        };
        match wire::encode_hello(&hello) {
            Ok(body) => {
                if let Some(conn) = self.conns.get_mut(&token) {
                    conn.wbuf.push_frame(&body);
                    if keyed {
                        // (Kept for the proofs: only where there are any.)
                        conn.handshake = Some(Box::new(Transcript {
                            hello: body,
                            transcript: Vec::new(),
                        }));
                    }
                    Counters::bump(&self.link.counters.frames_out);
                    self.dirty.push(token);
                }
            }
            Err(e) => self.close_conn(token, Why::Io, &format!("cannot encode hello: {e}"), core),
        }
    }

    pub(super) fn handshake_expired(&mut self, token: usize, core: &mut Core) {
        let Some(state) = self.conns.get(&token).map(|c| c.state.clone()) else {
            return;
        };
        let limit = self.link.config.handshake_timeout;
        match state {
            ConnState::Active { .. } => {}
            ConnState::Connecting => self.close_conn(
                token,
                Why::Unreachable,
                &format!("connect did not complete within {limit:?}"),
                core,
            ),
            _ => self.close_conn(
                token,
                Why::HandshakeTimeout,
                &format!("no handshake within {limit:?}"),
                core,
            ),
        }
    }

    /// The peer's hello (`body` as it came) arrived.
    pub(super) fn handshake_done(
        &mut self,
        token: usize,
        hello: Hello,
        body: &[u8],
        core: &mut Core,
    ) {
        let Some(conn) = self.conns.get(&token) else {
            return;
        };
        let exchange = conn.exchange;
        let group = self
            .exchanges
            .get(&exchange)
            .map(|e| e.group.clone())
            .unwrap_or_default();
        if hello.group != group {
            let reason = format!(
                "handshake refused: peer's exchange group is {:?}, ours is {group:?}",
                hello.group
            );
            self.close_conn(token, Why::GroupMismatch, &reason, core);
            return;
        }
        if hello.process == self.link.process {
            self.close_conn(
                token,
                Why::BadInput,
                "handshake refused: connected to itself",
                core,
            );
            return;
        }
        let auth = self
            .exchanges
            .get(&exchange)
            .is_some_and(Exch::authenticates);
        let Some((is_server, bind)) = self
            .exchanges
            .get(&exchange)
            .map(|e| (matches!(e.role, Role::Server { .. }), e.bind))
        else {
            return;
        };
        if is_server && auth::identity_uid(&hello.identity) != hello.process.uid() {
            // Anyone can name a uid (every binding carries one); only its
            // process holds the token it is derived from.
            let reason = "authentication failed: the client's identity token does not match \
                          its process id (a process posing as another?)";
            self.close_conn(token, Why::AuthenticationFailed, reason, core);
            return;
        }
        if hello.auth != auth {
            // Found out now, before either side announces a link.
            let reason = if hello.auth {
                "authentication failed: the peer requires a secret, and this side has none"
            } else {
                "authentication failed: this side requires a secret, and the peer has none"
            };
            self.close_conn(token, Why::AuthenticationFailed, reason, core);
            return;
        }
        // What the proofs cover besides the nonces: both hellos, and, where
        // the server asks for it, the addresses each side sees.
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if !auth {
            conn.handshake = None; // (no proofs to make)
        } else {
            let local = conn.stream.local_addr().ok();
            let bound = match (is_server, local) {
                (true, Some(local)) if bind => Some((conn.peer, local)),
                (false, Some(local)) if hello.bind => Some((local, conn.peer)),
                _ => None,
            };
            // With TLS, the session's own keying material too: a proof
            // relayed into another TLS session does not verify there.
            let session = conn.stream.tls_binding();
            let session = session.as_ref().map(|b| &b[..]);
            let handshake = conn.handshake.get_or_insert_with(Box::default);
            handshake.transcript = if is_server {
                auth::transcript(body, &handshake.hello, bound, session)
            } else {
                auth::transcript(&handshake.hello, body, bound, session)
            };
        }
        if auth {
            // Nothing about the services crosses before both sides proved
            // they hold the key.
            let state = if is_server {
                let nonce = match auth::nonce() {
                    Ok(n) => n,
                    Err(e) => {
                        let reason = format!("cannot authenticate: {e}");
                        return self.close_conn(token, Why::Io, &reason, core);
                    }
                };
                self.send(
                    token,
                    &Message::Challenge {
                        nonce: nonce.clone(),
                    },
                );
                ConnState::AwaitResponse {
                    remote: hello.process,
                    nonce,
                }
            } else {
                ConnState::AwaitChallenge {
                    remote: hello.process,
                }
            };
            if let Some(conn) = self.conns.get_mut(&token) {
                conn.state = state;
            }
            return;
        }
        if is_server {
            // With mutual TLS, the identity its certificate names.
            match self.client_identity(token, None) {
                Ok(identity) => {
                    if let Some(conn) = self.conns.get_mut(&token) {
                        conn.identity = identity;
                    }
                }
                Err(why) => {
                    let reason = format!("authentication failed: {why}");
                    return self.close_conn(token, Why::AuthenticationFailed, &reason, core);
                }
            }
        }
        self.activate(token, hello.process, core);
    }

    /// On a server, a client's identity: the credential it proved
    /// (`proved`, `None` for the shared secret or no secret), and with
    /// mutual TLS the name its certificate gives, which must agree with
    /// it; or why the client is refused. A certificate's name selects the
    /// credential of that name; without named credentials at all, it is
    /// an identity of its own with every permission.
    pub(super) fn client_identity(
        &self,
        token: usize,
        proved: Option<Arc<Identity>>,
    ) -> std::result::Result<Option<Arc<Identity>>, String> {
        let Some(conn) = self.conns.get(&token) else {
            return Ok(proved);
        };
        let Some(Role::Server {
            credentials,
            tls: Some(tls),
            ..
        }) = self.exchanges.get(&conn.exchange).map(|e| &e.role)
        else {
            return Ok(proved);
        };
        let Some(named) = conn.stream.peer_name(tls.names()) else {
            return Ok(proved); // (no client certificate)
        };
        let name = named?;
        match proved {
            Some(identity) if identity.name == name => Ok(Some(identity)),
            Some(identity) => Err(format!(
                "the client proved the credential {:?}, and its certificate names {name:?}: \
                 the two must agree",
                identity.name
            )),
            None => match credentials.identity(&name) {
                Some(identity) => Ok(Some(identity.clone())),
                None if credentials.is_empty() => Ok(Some(Arc::new(Identity {
                    name,
                    permissions: Default::default(),
                }))),
                None => Err(format!(
                    "the client's certificate names {name:?}, and this server has no \
                     credential of that name"
                )),
            },
        }
    }

    /// The peer closes the link and said why.
    pub(super) fn peer_closing(&mut self, token: usize, reason: &str, core: &mut Core) {
        let mut end = reason.len().min(PEER_REASON_MAX);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let detail = format!("the peer closed the link: {}", &reason[..end]);
        let why = if reason.starts_with(Why::AuthenticationFailed.as_str()) {
            Why::AuthenticationFailed
        } else {
            Why::ClosedByPeer
        };
        self.close_conn(token, why, &detail, core);
    }

    /// One authentication step; false if the connection was closed.
    pub(super) fn authenticate(&mut self, token: usize, message: Message, core: &mut Core) -> bool {
        let Some(conn) = self.conns.get(&token) else {
            return false;
        };
        let Some(exch) = self.exchanges.get(&conn.exchange) else {
            return false;
        };
        // A client's key and its credential's name; a server's is chosen
        // by the name in the client's response.
        let own = exch.own_key();
        let me = self.link.process.uid();
        let state = conn.state.clone();
        let transcript = conn
            .handshake
            .as_ref()
            .map(|h| h.transcript.clone())
            .unwrap_or_default();
        // Counted in close_conn: any link lost while authenticating is.
        let refuse = |this: &mut Self, core: &mut Core, why: &str| {
            this.close_conn(
                token,
                Why::AuthenticationFailed,
                &format!("authentication failed: {why}"),
                core,
            );
            false
        };
        // Nonces are of one length: what each proof covers is then read one
        // way only (a nonce cannot lend bytes to the uid after it).
        let nonce_ok = match &message {
            Message::Challenge { nonce } | Message::Response { nonce, .. } => {
                nonce.len() == auth::NONCE
            }
            _ => true,
        };
        if !nonce_ok {
            return refuse(self, core, "a nonce of the wrong length");
        }
        match (state, message) {
            (ConnState::AwaitChallenge { remote }, Message::Challenge { nonce: theirs }) => {
                let Some((secret, credential)) = own else {
                    return refuse(self, core, "this side has no key");
                };
                let mine = match auth::nonce() {
                    Ok(n) => n,
                    Err(e) => {
                        let reason = format!("cannot authenticate: {e}");
                        self.close_conn(token, Why::Io, &reason, core);
                        return false;
                    }
                };
                let mac = auth::prove(
                    &secret,
                    Side::Client,
                    &theirs,
                    &mine,
                    me,
                    remote.uid(),
                    &transcript,
                    credential.as_bytes(),
                );
                self.send(
                    token,
                    &Message::Response {
                        nonce: mine.clone(),
                        mac,
                        credential,
                    },
                );
                if let Some(conn) = self.conns.get_mut(&token) {
                    conn.state = ConnState::AwaitProof {
                        remote,
                        theirs,
                        mine,
                    };
                }
                true
            }
            (
                ConnState::AwaitResponse { remote, nonce },
                Message::Response {
                    nonce: theirs,
                    mac,
                    credential,
                },
            ) => {
                // A name this server does not have is checked against a
                // fresh random key, and fails as a wrong secret does.
                let key = exch.key_for(&credential);
                let known = key.is_some();
                let (secret, identity) =
                    key.unwrap_or_else(|| (Secret::new(&auth::nonce().unwrap_or_default()), None));
                let ok = auth::check(
                    &secret,
                    Side::Client,
                    &mac,
                    &nonce,
                    &theirs,
                    remote.uid(),
                    me,
                    &transcript,
                    credential.as_bytes(),
                );
                if !(ok && known) {
                    let why = "the client's proof is wrong (another key, or a credential not known here?)";
                    return refuse(self, core, why);
                }
                // With mutual TLS, the certificate's name must agree.
                let identity = match self.client_identity(token, identity) {
                    Ok(identity) => identity,
                    Err(why) => return refuse(self, core, &why),
                };
                let proof = auth::prove(
                    &secret,
                    Side::Server,
                    &theirs,
                    &nonce,
                    me,
                    remote.uid(),
                    &transcript,
                    credential.as_bytes(),
                );
                self.send(token, &Message::Proof { mac: proof });
                if let Some(conn) = self.conns.get_mut(&token) {
                    conn.identity = identity;
                }
                self.activate(token, remote, core);
                true
            }
            (
                ConnState::AwaitProof {
                    remote,
                    theirs,
                    mine,
                },
                Message::Proof { mac },
            ) => {
                let Some((secret, credential)) = own else {
                    return refuse(self, core, "this side has no key");
                };
                if !auth::check(
                    &secret,
                    Side::Server,
                    &mac,
                    &mine,
                    &theirs,
                    remote.uid(),
                    me,
                    &transcript,
                    credential.as_bytes(),
                ) {
                    return refuse(self, core, "the server's proof is wrong (another key?)");
                }
                self.activate(token, remote, core);
                true
            }
            (ConnState::AwaitChallenge { .. }, _) => {
                refuse(self, core, "the server did not authenticate itself")
            }
            (_, _) => refuse(self, core, "the peer did not follow the handshake"),
        }
    }

    /// The link is up: announced, and handed to the core (which sends it
    /// our table).
    pub(super) fn activate(&mut self, token: usize, remote: ProcessId, core: &mut Core) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let (exchange, peer) = (conn.exchange, conn.peer);
        conn.handshake = None;
        conn.state = ConnState::Active {
            remote: remote.clone(),
        };
        self.active += 1;
        if let Some(t) = conn.handshake_timer.take() {
            self.timers.cancel(t);
        }
        let identity = conn.identity.clone();
        // Threads write calls and replies onto a plain TCP link themselves.
        conn.outlet = conn
            .stream
            .second_handle()
            .map(|socket| Outlet::new(token, socket, self.link.gate.clone()));
        let outlet = conn.outlet.clone();
        log::debug!("netsvc: exchange link to {remote} ({peer}) active");
        self.arm_liveness();
        // Announced once the core has the link (and has counted its
        // identity): whoever sees it Active finds it in the stats.
        let announce = |this: &mut Self| {
            this.announce_connection(
                exchange,
                ConnectionState::Active,
                Some(remote.clone()),
                peer,
                None,
                identity.as_deref(),
            )
        };
        let Some(exch) = self.exchanges.get(&exchange) else {
            announce(self);
            return;
        };
        let limits = match &exch.role {
            Role::Server { limits, .. } => Some(*limits),
            Role::Client { .. } => None,
        };
        let info = PeerInfo {
            remote: remote.clone(),
            exchange,
            group: exch.group.clone(),
            limits,
            identity: identity.clone(),
            outlet,
        };
        core.peer_up(PeerId(token), info);
        announce(self);
        self.carry(core);
    }
}
