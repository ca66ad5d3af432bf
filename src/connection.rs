//! The public connection types of an exchange: [`ConnectionAnnouncement`],
//! [`ConnectionState`] and [`InactiveReason`], made by the dispatcher's
//! connections and read from [`Exchange::connections`](crate::Exchange::connections).

use std::fmt;
use std::net::SocketAddr;

use crate::ids::ProcessId;

/// Whether an exchange link is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// The link is up: the handshake completed.
    Active,
    /// The link was lost, or (on a client) a connection attempt failed.
    Inactive,
}

/// Why an exchange link went down, or a connection attempt failed: the
/// cause carried by an [`Inactive`](ConnectionState::Inactive)
/// [`ConnectionAnnouncement`] (with a sentence of detail beside it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InactiveReason {
    /// The connection was refused: nothing listens at the address.
    Refused,
    /// The address could not be reached, or connecting failed otherwise.
    Unreachable,
    /// The peer does not speak netsvc (its first bytes are not a netsvc
    /// handshake).
    NotNetsvc,
    /// The peer speaks another version of the exchange protocol.
    ProtocolVersion,
    /// The peer's exchange group is not this exchange's.
    GroupMismatch,
    /// Authentication failed: a wrong secret, a secret on one side only, a
    /// credential the server does not have, or a proof that does not check.
    AuthenticationFailed,
    /// The handshake did not complete within the time allowed.
    HandshakeTimeout,
    /// Nothing arrived from the peer for the dead-peer timeout: presumed dead.
    HeartbeatTimeout,
    /// The peer did not read what was sent to it fast enough.
    SlowConsumer,
    /// The peer closed the connection (or reset it).
    ClosedByPeer,
    /// The peer passed one of this side's limits (frame size, services,
    /// subscriptions, names, memory...).
    LimitBreached,
    /// The peer sent bytes that are not a valid frame or message.
    BadInput,
    /// Reading or writing the socket failed.
    Io,
    /// This side closed the link: the exchange was closed or the dispatcher
    /// stopped.
    Closed,
    /// A newer link from the same process (which proved it is that
    /// process) took this one's place: the process reconnected while this
    /// side still held its old link.
    Superseded,
    /// The peer speaks TLS, and this side has no TLS configuration: a TLS
    /// client on a plain exchange port (seen by that server), or a plain
    /// client of a TLS exchange (seen by that client).
    TlsRequiredByPeer,
    /// This side speaks TLS, and the peer does not: a plain client on a
    /// TLS exchange port (seen by that server), or a TLS client of a plain
    /// exchange (seen by that client).
    PeerWithoutTls,
    /// A certificate is not issued by a CA its verifier trusts: the peer's
    /// (this side refused it), or this side's (the peer refused it, with
    /// the alert `unknown_ca`).
    UnknownCa,
    /// The server's certificate is not valid for the server name the
    /// client asked for (see
    /// [`TlsClientConfig::server_name`](crate::TlsClientConfig::server_name));
    /// on the server, the client's alert `bad_certificate`, most often for
    /// that cause.
    CertificateNameMismatch,
    /// A certificate is outside its validity period (expired, or not valid
    /// yet): the peer's, or this side's (the peer refused it, with the
    /// alert `certificate_expired`).
    CertificateExpired,
    /// A server of mutual TLS requires a client certificate, and the
    /// client presented none (seen by both sides).
    ClientCertificateRequired,
    /// Any other TLS failure: a malformed record, no common protocol
    /// version or cipher suite, a decryption failure, another alert.
    TlsFailed,
}

impl InactiveReason {
    /// Whether it is a refusal of the TLS layer (the handshake, a
    /// certificate, TLS on one side only).
    pub fn is_tls(self) -> bool {
        matches!(
            self,
            InactiveReason::TlsRequiredByPeer
                | InactiveReason::PeerWithoutTls
                | InactiveReason::UnknownCa
                | InactiveReason::CertificateNameMismatch
                | InactiveReason::CertificateExpired
                | InactiveReason::ClientCertificateRequired
                | InactiveReason::TlsFailed
        )
    }

    /// The reason as a short phrase, as it is displayed.
    pub fn as_str(self) -> &'static str {
        match self {
            InactiveReason::Refused => "connection refused",
            InactiveReason::Unreachable => "unreachable",
            InactiveReason::NotNetsvc => "not a netsvc peer",
            InactiveReason::ProtocolVersion => "protocol version mismatch",
            InactiveReason::GroupMismatch => "exchange group mismatch",
            InactiveReason::AuthenticationFailed => "authentication failed",
            InactiveReason::HandshakeTimeout => "handshake timeout",
            InactiveReason::HeartbeatTimeout => "heartbeat timeout",
            InactiveReason::SlowConsumer => "slow consumer",
            InactiveReason::ClosedByPeer => "closed by peer",
            InactiveReason::LimitBreached => "limit breached",
            InactiveReason::BadInput => "bad input",
            InactiveReason::Io => "I/O error",
            InactiveReason::Closed => "closed",
            InactiveReason::Superseded => "superseded by a newer link",
            InactiveReason::TlsRequiredByPeer => "TLS required by the peer",
            InactiveReason::PeerWithoutTls => "peer without TLS",
            InactiveReason::UnknownCa => "unknown CA",
            InactiveReason::CertificateNameMismatch => "certificate name mismatch",
            InactiveReason::CertificateExpired => "certificate expired",
            InactiveReason::ClientCertificateRequired => "client certificate required",
            InactiveReason::TlsFailed => "TLS failed",
        }
    }
}

impl fmt::Display for InactiveReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A link of an exchange came up or went down.
///
/// An `Active` announcement is made only once the handshake, and
/// authentication where a secret is set, have completed on this side. An
/// `Inactive` one says why ([`reason`](Self::reason), [`detail`](Self::detail)).
/// It displays as `ACTIVE <process> (<address>)` or
/// `INACTIVE <process or -> (<address>): <reason>: <detail>`, with
/// ` as "<credential>"` after the address when the peer has an
/// [`identity`](Self::identity).
#[derive(Debug, Clone)]
pub struct ConnectionAnnouncement {
    pub(crate) state: ConnectionState,
    pub(crate) remote_process: Option<ProcessId>,
    pub(crate) remote_address: SocketAddr,
    pub(crate) reason: Option<InactiveReason>,
    pub(crate) detail: String,
    pub(crate) identity: Option<String>,
}

impl fmt::Display for ConnectionAnnouncement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            ConnectionState::Active => "ACTIVE",
            ConnectionState::Inactive => "INACTIVE",
        };
        match &self.remote_process {
            Some(p) => write!(f, "{state} {p} ({})", self.remote_address)?,
            None => write!(f, "{state} - ({})", self.remote_address)?,
        }
        if let Some(identity) = &self.identity {
            write!(f, " as {identity:?}")?;
        }
        if let Some(reason) = self.reason {
            write!(f, ": {reason}")?;
            if !self.detail.is_empty() {
                write!(f, ": {}", self.detail)?;
            }
        }
        Ok(())
    }
}

impl ConnectionAnnouncement {
    /// Active or Inactive.
    pub fn state(&self) -> ConnectionState {
        self.state
    }

    /// The process at the other end, once the handshake told it; `None`
    /// for a failed attempt.
    pub fn remote_process(&self) -> Option<&ProcessId> {
        self.remote_process.as_ref()
    }

    /// The peer's socket address.
    pub fn remote_address(&self) -> SocketAddr {
        self.remote_address
    }

    /// Why the link went down or the attempt failed; `None` for `Active`.
    pub fn reason(&self) -> Option<InactiveReason> {
        self.reason
    }

    /// Who the peer authenticated as: on a server, the name of the
    /// [`Credential`](crate::Credential) the client connected with, or
    /// with mutual TLS the subject common name (CN) of its certificate
    /// (its `Active` announcement and the `Inactive` when that link goes
    /// down; see [`ServerBuilder::tls`](crate::ServerBuilder::tls)).
    /// `None` for a client that proved the shared secret without a client
    /// certificate, for a link without authentication, for a failed
    /// attempt, and on a client (the server proves it holds the client's
    /// key, or its certificate's name, and has no name of its own).
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    /// A sentence on the cause, for logs and people (empty for `Active`):
    /// for instance `"peer's exchange group is \"a\", ours is \"b\""`.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}
