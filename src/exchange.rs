//! The message exchange: a TCP server that client processes connect to, so
//! that the services of every process look local to every other.
//!
//! The topology is a star: each client connects to one server; the server
//! relays between its clients. On (re)connect both sides send their whole
//! service table; on loss every binding learned through the link is
//! withdrawn (group withdrawals first). Audiences decide what crosses: `"*"`
//! every exchange, `""` none, a group name only exchanges of that group.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::auth::Secret;
use crate::connection::ConnectionAnnouncement;
use crate::credentials::{Credential, Credentials};
use crate::dispatcher::Dispatcher;
use crate::error::{Error, Result};
use crate::mailbox::command::{Authorise, Command, ExchangeRole, Limits};
use crate::mailbox::Link;
use crate::tls::{NameCheck, ServerTls, TlsClientConfig, TlsServerConfig};

/// How many connection announcements wait unread before newer ones are
/// dropped (they are notices; the routing state does not depend on them).
const ANNOUNCEMENT_CAPACITY: usize = 1024;

struct Inner {
    link: Arc<Link>,
    id: u64,
    connections: Receiver<ConnectionAnnouncement>,
    listen_addr: Option<SocketAddr>,
    /// A TLS server's configuration, which `reload_tls` replaces.
    tls: Option<ServerTls>,
}

/// A handle to one exchange (server or client) of a dispatcher.
///
/// Cheap to clone. The exchange runs until [`close`](Self::close) or the
/// dispatcher's shutdown; dropping the handles leaves it running.
#[derive(Clone)]
pub struct Exchange {
    inner: Arc<Inner>,
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("id", &self.inner.id)
            .field("listen_addr", &self.inner.listen_addr)
            .finish()
    }
}

impl Exchange {
    /// Describes an exchange server for this dispatcher; finish with
    /// [`listen`](ServerBuilder::listen).
    pub fn server(d: &Dispatcher) -> ServerBuilder {
        ServerBuilder {
            link: d.link().clone(),
            group: String::new(),
            authorise: None,
            secret: None,
            credentials: Vec::new(),
            limits: Limits::default(),
            bind: true,
            tls: None,
        }
    }

    /// Describes an exchange client for this dispatcher; finish with
    /// [`connect`](ClientBuilder::connect) or [`connect_once`](ClientBuilder::connect_once).
    pub fn client(d: &Dispatcher) -> ClientBuilder {
        ClientBuilder {
            link: d.link().clone(),
            group: String::new(),
            secret: None,
            credential: None,
            tls: None,
        }
    }

    /// A server's listening address (with the port the OS chose for port
    /// 0); a client's local address while it is connected, else the
    /// unspecified address `0.0.0.0:0`.
    pub fn local_addr(&self) -> SocketAddr {
        if let Some(addr) = self.inner.listen_addr {
            return addr;
        }
        let id = self.inner.id;
        self.inner
            .link
            .ask(|reply| Command::ExchangeLocalAddr { id, reply })
            .ok()
            .flatten()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The connection announcements of this exchange: Active after each
    /// handshake, Inactive on each loss (and on a client for each failed
    /// attempt). Every clone of the receiver takes from the same queue,
    /// which holds up to 1024 unread announcements; newer ones are dropped
    /// beyond that.
    pub fn connections(&self) -> Receiver<ConnectionAnnouncement> {
        self.inner.connections.clone()
    }

    /// Replaces a TLS server's certificate, key and client CA: connections
    /// accepted from now on use `config`; the links up keep the TLS
    /// session they have (and stay up). Certificates expire: this renews
    /// one without a restart. The configuration is checked as
    /// [`ServerBuilder::listen`] checks it (the key must be the
    /// certificate's): on an error nothing changes.
    ///
    /// [`Error::InvalidArgument`] on an exchange without TLS (a client, or
    /// a server that listens without it): TLS cannot be turned on later.
    pub fn reload_tls(&self, config: &TlsServerConfig) -> Result<()> {
        match &self.inner.tls {
            Some(tls) => {
                tls.replace(config)?;
                log::info!(
                    "netsvc: exchange server {:?}: TLS configuration reloaded",
                    self.inner.listen_addr
                );
                Ok(())
            }
            None => Err(Error::InvalidArgument(
                "reload_tls: this exchange is not a TLS server".into(),
            )),
        }
    }

    /// Closes the exchange: its links go down (every binding learned
    /// through them is withdrawn), a client stops reconnecting, a server
    /// stops listening. Idempotent.
    pub fn close(&self) {
        let id = self.inner.id;
        let _ = self
            .inner
            .link
            .ask(|ack| Command::ExchangeClose { id, ack });
    }
}

fn open(
    link: Arc<Link>,
    group: String,
    role: ExchangeRole,
    secret: Option<Secret>,
    listen_addr: Option<SocketAddr>,
    tls: Option<ServerTls>,
) -> Result<Exchange> {
    let (tx, rx): (Sender<ConnectionAnnouncement>, _) =
        crossbeam_channel::bounded(ANNOUNCEMENT_CAPACITY);
    let id = link.next_id();
    link.ask(|ack| Command::ExchangeOpen {
        id,
        group,
        role: Box::new(role),
        secret,
        announce: tx,
        ack,
    })??;
    Ok(Exchange {
        inner: Arc::new(Inner {
            link,
            id,
            connections: rx,
            listen_addr,
            tls,
        }),
    })
}

/// Configures an exchange server; from [`Exchange::server`].
#[must_use = "an exchange builder does nothing until listen()"]
pub struct ServerBuilder {
    link: Arc<Link>,
    group: String,
    authorise: Option<Authorise>,
    secret: Option<Secret>,
    credentials: Vec<Credential>,
    limits: Limits,
    bind: bool,
    tls: Option<TlsServerConfig>,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("group", &self.group)
            .field("authorise", &self.authorise.is_some())
            .field("secret", &self.secret)
            .field("credentials", &self.credentials)
            .field("limits", &self.limits)
            .field("bind", &self.bind)
            .field("tls", &self.tls)
            .finish()
    }
}

impl ServerBuilder {
    /// The exchange group (default none): clients must name the same group,
    /// and services with that audience become visible through it. One
    /// exchange per group per dispatcher.
    pub fn group(mut self, group: &str) -> Self {
        self.group = group.to_owned();
        self
    }

    /// Decides for each connecting client, by its address, whether it may
    /// connect. A refused client is closed at once and learns nothing.
    ///
    /// The callback runs on a thread of its own, one connection at a time,
    /// never on the dispatcher thread: a slow callback delays only the
    /// connections waiting for its decision (each within the handshake
    /// timeout, see
    /// [`DispatcherBuilder::handshake_timeout`](crate::DispatcherBuilder::handshake_timeout)),
    /// and at most 256 may wait; more are refused. A panic in it refuses
    /// that connection.
    pub fn authorise<F>(mut self, check: F) -> Self
    where
        F: Fn(&SocketAddr) -> bool + Send + Sync + 'static,
    {
        self.authorise = Some(Arc::new(check));
        self
    }

    /// Requires every client to prove it holds this shared secret
    /// (HMAC-SHA256 challenge-response over fresh nonces from both sides)
    /// before anything about the services is exchanged. A client without
    /// it, with another, or replaying a captured handshake is refused,
    /// logged and counted in [`Stats::auth_failures`](crate::Stats::auth_failures).
    /// The secret never appears in logs or `Debug` output.
    ///
    /// A client of the shared secret may do everything. A server may
    /// have both a shared secret and named [`credential`](Self::credential)s:
    /// each client proves one of them.
    pub fn secret(mut self, key: impl AsRef<[u8]>) -> Self {
        self.secret = Some(Secret::new(key.as_ref()));
        self
    }

    /// Whether the proofs of the shared-secret handshake also cover the
    /// addresses each side sees of the connection (default true). A party
    /// in the middle that relays a client's handshake to this server has
    /// two connections, seen differently at each end, so the proofs of one
    /// do not verify on the other and the relay obtains nothing. A client
    /// behind NAT, or a server behind a port forward or a proxy, sees its
    /// connection otherwise than its peer does, and is refused as a relay
    /// would be: turn this off for such deployments (the proofs then still
    /// cover both nonces, both hellos and both process ids, so captured
    /// handshakes cannot be replayed; TLS, when it comes, binds them to the
    /// session instead). The setting travels in the server's hello, inside
    /// what the proofs cover: a party in the middle cannot turn it off.
    pub fn bind_proofs_to_addresses(mut self, bind: bool) -> Self {
        self.bind = bind;
        self
    }

    /// Accepts clients that prove they hold this named credential's
    /// secret ([`ClientBuilder::credential`]), and holds each to the
    /// credential's permissions: what its services may offer and join,
    /// what it may call and subscribe to (see [`Credential`]; a kind with
    /// no list allows everything). Call it once per credential; two with
    /// one name make [`listen`](Self::listen) fail with
    /// [`Error::InvalidArgument`], as does an empty name or one longer
    /// than [`DispatcherBuilder::max_name_len`](crate::DispatcherBuilder::max_name_len).
    ///
    /// With any credential that has a secret (or a
    /// [`secret`](Self::secret)) every client must authenticate. A client naming a credential this server does
    /// not have is refused exactly as one with a wrong secret is (the
    /// same [`InactiveReason::AuthenticationFailed`](crate::InactiveReason::AuthenticationFailed),
    /// the same detail, counted in
    /// [`Stats::auth_failures`](crate::Stats::auth_failures)): it learns
    /// nothing of which names exist. The credential's name is the link's
    /// identity, in this server's
    /// [`ConnectionAnnouncement::identity`](crate::ConnectionAnnouncement::identity).
    ///
    /// What the client sends beyond its permissions is refused without
    /// closing its link, logged (rate-limited) and counted in
    /// [`Stats::permission_denied`](crate::Stats::permission_denied): a
    /// service it may not offer, or announced with a group it may not
    /// join, is not taken in (nobody sees it), nor is a join of a group it
    /// may not join; a call it may not make fails at the caller with code
    /// [`codes::PERMISSION_DENIED`](crate::codes::PERMISSION_DENIED); a
    /// subscription it may not hold is not added, and the subscriber sees
    /// the publisher withdrawn ([`Event::Publisher`](crate::Event::Publisher)
    /// with status [`Withdrawn`](crate::ServiceStatus::Withdrawn)).
    pub fn credential(mut self, credential: Credential) -> Self {
        self.credentials.push(credential);
        self
    }

    /// TLS on every connection: the server's certificate and key, and
    /// with a client CA mutual TLS. A client without TLS is refused
    /// ([`InactiveReason::PeerWithoutTls`](crate::InactiveReason::PeerWithoutTls)
    /// here, [`TlsRequiredByPeer`](crate::InactiveReason::TlsRequiredByPeer)
    /// at the client), as is a TLS handshake that fails (an unknown CA, a
    /// certificate outside its validity, no client certificate: each with
    /// its [`InactiveReason`](crate::InactiveReason) on both sides,
    /// logged and counted in [`Stats::tls_failures`](crate::Stats::tls_failures)).
    /// Everything the link carries is then encrypted and integrity
    /// protected; the netsvc handshake and all that follows run inside the
    /// TLS session unchanged. [`Exchange::reload_tls`] changes the
    /// certificate of the running server.
    ///
    /// **Mutual TLS and identities.** With a client CA, every client
    /// presents a certificate issued by it, and the certificate's subject
    /// common name (CN; exactly one, at most
    /// [`max_name_len`](crate::DispatcherBuilder::max_name_len) bytes) is
    /// the link's identity: in
    /// [`ConnectionAnnouncement::identity`](crate::ConnectionAnnouncement::identity)
    /// and [`Stats::identities`](crate::Stats::identities). With named
    /// [`credential`](Self::credential)s, the CN must be the name of one of
    /// them (a [`Credential::for_certificate`] has no secret, for just
    /// that), whose permissions then hold the client; a certificate naming
    /// none is refused in the TLS handshake
    /// ([`AuthenticationFailed`](crate::InactiveReason::AuthenticationFailed)
    /// on both sides). Without named credentials, the CN is the identity
    /// and every permission is the client's.
    ///
    /// **With secrets.** TLS and the shared-secret handshake compose: the
    /// proofs of a [`secret`](Self::secret) or of a named credential's
    /// secret then also cover keying material exported from the TLS
    /// session, so a proof relayed into another TLS session does not
    /// verify there. A client proving a named credential's secret must
    /// prove the credential its certificate names (else
    /// `AuthenticationFailed`); one proving the shared secret takes the
    /// identity and permissions its certificate names.
    ///
    /// TLS work is done on the dispatcher thread, as all socket work.
    pub fn tls(mut self, config: TlsServerConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// At most this many clients at once (default 1024); one more is
    /// refused at accept, logged and counted in
    /// [`Stats::limits_breached`](crate::Stats::limits_breached).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.limits.max_connections = n;
        self
    }

    /// At most this many connections from one IP address may be stuck in
    /// their handshake at once (default 16). A handshake counts once it has
    /// had a quarter of the handshake timeout (at most 500 ms) to complete;
    /// fresh ones never do, so a burst of honest clients of one host is
    /// taken whole. One more makes the oldest stuck one give way: it is
    /// closed and counted in
    /// [`Stats::limits_breached`](crate::Stats::limits_breached). In the
    /// same way, a server with its maximum of connections closes its oldest
    /// stuck handshake to take a new one, and refuses the new one only when
    /// there is none. So connections that never complete a handshake cannot
    /// keep others out, however many; an established link is never closed
    /// to make room.
    pub fn max_handshakes_per_address(mut self, n: usize) -> Self {
        self.limits.max_handshakes_per_address = n.max(1);
        self
    }

    /// At most this many services one client may announce (default
    /// 10,000); a client announcing more is disconnected, logged and counted.
    pub fn max_services_per_connection(mut self, n: usize) -> Self {
        self.limits.max_services = n;
        self
    }

    /// At most this many report subscriptions one client may hold (default
    /// 100,000); a client asking for more is disconnected, logged and counted.
    ///
    /// A subscription counts once, when it is really added (not a repeat of
    /// one held, not to a publisher that is not there), and stops counting
    /// when it really ends: by an unsubscribe of one held, or because its
    /// publisher or subscriber went. Unsubscribing what was never
    /// subscribed frees nothing.
    pub fn max_subscriptions_per_connection(mut self, n: usize) -> Self {
        self.limits.max_subscriptions = n;
        self
    }

    /// At most this many calls one client may have pending through this
    /// server at once (default 10,000): each request it sends waits here
    /// for its reply, with a timer. A client with more is disconnected,
    /// logged and counted.
    pub fn max_pending_calls_per_connection(mut self, n: usize) -> Self {
        self.limits.max_pending_calls = n;
        self
    }

    /// At most this many groups one service announced by a client may be
    /// in (default 64); a client announcing or joining more is
    /// disconnected, logged and counted.
    pub fn max_groups_per_service(mut self, n: usize) -> Self {
        self.limits.max_groups = n;
        self
    }

    /// At most this many bytes of state one client may make this server
    /// hold (default 16 MiB): the names, audiences and groups of the
    /// services it announced, its subscription patterns, its pending calls
    /// and the subscribers it named that are hidden from this exchange,
    /// each with an estimate of its bookkeeping. A client past it is
    /// disconnected, logged and counted in
    /// [`Stats::limits_breached`](crate::Stats::limits_breached). (What it
    /// costs this process's other clients too, since the services are
    /// relayed to them, is bounded by this times the number of clients.)
    ///
    /// The limits per connection are a server's: a client's one link
    /// carries the whole exchange's table, whose size the server's
    /// operator bounds. A client does apply to its server the dispatcher's
    /// lengths of names and subjects (see
    /// [`DispatcherBuilder::max_name_len`](crate::DispatcherBuilder::max_name_len)),
    /// as every peer does: a hostile server is a peer too.
    pub fn max_connection_memory(mut self, bytes: usize) -> Self {
        self.limits.max_memory = bytes;
        self
    }

    /// Binds the address and starts accepting clients. Binding errors (an
    /// address in use, for instance) are returned here.
    ///
    /// Credentials that cannot work (two of one name, an empty name or one
    /// that is too long) are refused first, with [`Error::InvalidArgument`].
    pub fn listen<A: ToSocketAddrs>(self, addr: A) -> Result<Exchange> {
        let credentials = Credentials::new(self.credentials, self.link.config.max_name_len)?;
        let tls = match &self.tls {
            Some(config) => {
                let names = NameCheck {
                    names: (!credentials.is_empty()).then(|| credentials.names()),
                    max_len: self.link.config.max_name_len,
                };
                Some(ServerTls::new(config, names)?)
            }
            None => None,
        };
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let listener = mio::net::TcpListener::from_std(listener);
        let role = ExchangeRole::Server {
            listener,
            authorise: self.authorise,
            limits: self.limits,
            bind: self.bind,
            credentials,
            tls: tls.clone(),
        };
        let mutual = self.tls.as_ref().is_some_and(TlsServerConfig::is_mutual);
        let ex = open(self.link, self.group, role, self.secret, Some(local), tls)?;
        match &self.tls {
            Some(_) => log::debug!(
                "netsvc: exchange server listening on {local} with TLS{}",
                if mutual { " (mutual)" } else { "" }
            ),
            None => log::debug!("netsvc: exchange server listening on {local}"),
        }
        Ok(ex)
    }
}

/// Configures an exchange client; from [`Exchange::client`].
#[must_use = "an exchange builder does nothing until connect() or connect_once()"]
#[derive(Debug)]
pub struct ClientBuilder {
    link: Arc<Link>,
    group: String,
    secret: Option<Secret>,
    /// The name of the credential the secret is for; `None`: the shared
    /// secret.
    credential: Option<String>,
    tls: Option<TlsClientConfig>,
}

impl ClientBuilder {
    /// The exchange group (default none); must be the server's.
    pub fn group(mut self, group: &str) -> Self {
        self.group = group.to_owned();
        self
    }

    /// The shared secret the server requires (see [`ServerBuilder::secret`]).
    /// A client with a secret also requires the server to prove it holds
    /// it, and refuses a server that does not. A client proves one key:
    /// this replaces a [`credential`](Self::credential) given before.
    pub fn secret(mut self, key: impl AsRef<[u8]>) -> Self {
        self.secret = Some(Secret::new(key.as_ref()));
        self.credential = None;
        self
    }

    /// Connects with the server's named credential `name` (see
    /// [`ServerBuilder::credential`]), proving it holds `secret` in the
    /// same challenge-response as the shared secret's, and requiring the
    /// server to prove it holds it too. The name is covered by both
    /// proofs. A name the server does not have is refused as a wrong
    /// secret is ([`InactiveReason::AuthenticationFailed`](crate::InactiveReason::AuthenticationFailed)).
    /// This replaces a [`secret`](Self::secret) given before. An empty
    /// name, or one longer than
    /// [`DispatcherBuilder::max_name_len`](crate::DispatcherBuilder::max_name_len),
    /// makes `connect` fail with [`Error::InvalidArgument`].
    ///
    /// Once the link is up, the server holds what this client sends to
    /// the credential's permissions: see [`Credential`] for what a refused
    /// client sees. The secret never appears in logs or `Debug` output.
    pub fn credential(mut self, name: impl Into<String>, secret: impl AsRef<[u8]>) -> Self {
        self.secret = Some(Secret::new(secret.as_ref()));
        self.credential = Some(name.into());
        self
    }

    /// TLS on the connection: the CA the server's certificate must be
    /// issued by, the name it must be valid for, and for a server of
    /// mutual TLS this client's certificate (see [`TlsClientConfig`] and
    /// [`ServerBuilder::tls`]). Every attempt, and every reconnect, makes a
    /// TLS handshake (resuming the last session where the server allows);
    /// a refused one is announced `Inactive` with its reason (for instance
    /// [`UnknownCa`](crate::InactiveReason::UnknownCa),
    /// [`CertificateNameMismatch`](crate::InactiveReason::CertificateNameMismatch),
    /// [`PeerWithoutTls`](crate::InactiveReason::PeerWithoutTls) for a
    /// server without TLS), and tried again after the retry delay.
    pub fn tls(mut self, config: TlsClientConfig) -> Self {
        self.tls = Some(config);
        self
    }

    fn start(self, addr: impl ToSocketAddrs, retry: Option<Duration>) -> Result<Exchange> {
        let max = self.link.config.max_name_len;
        match &self.credential {
            Some(name) if name.is_empty() => {
                return Err(Error::InvalidArgument(
                    "credential: the name is empty".into(),
                ))
            }
            Some(name) if name.len() > max => {
                return Err(Error::InvalidArgument(format!(
                    "credential: a name of {} bytes, at most {max}",
                    name.len()
                )))
            }
            _ => {}
        }
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        if addrs.is_empty() {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the address resolves to nothing",
            )));
        }
        let tls = self.tls.as_ref().map(TlsClientConfig::build).transpose()?;
        open(
            self.link,
            self.group,
            ExchangeRole::Client {
                addrs,
                retry,
                credential: self.credential.unwrap_or_default(),
                tls,
            },
            self.secret,
            None,
            None,
        )
    }

    /// Returns at once and connects in the background; after a failed
    /// attempt or a lost link it tries again every `retry_delay` (plus a
    /// little jitter), for ever. The address is resolved here, once.
    pub fn connect<A: ToSocketAddrs>(self, addr: A, retry_delay: Duration) -> Result<Exchange> {
        self.start(addr, Some(retry_delay))
    }

    /// Like [`connect`](Self::connect) but makes a single attempt and never
    /// reconnects.
    pub fn connect_once<A: ToSocketAddrs>(self, addr: A) -> Result<Exchange> {
        self.start(addr, None)
    }
}

#[allow(dead_code)]
fn _ensure_send_sync() {
    fn check<T: Send + Sync + Clone>() {}
    check::<Exchange>();
}
