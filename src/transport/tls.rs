//! TLS on an exchange link's byte stream: a rustls connection over a mio
//! TCP stream, driven from the dispatcher's poll loop as rustls's own mio
//! examples drive theirs, and read and written through `Read` and `Write`
//! as plain TCP is, so that the framing, heartbeats and flow control above
//! it are unchanged.
//!
//! - Reading takes the socket's bytes in large reads (one `read` of up to
//!   64 KiB, as for plain TCP, where rustls alone reads 4 KiB at a time)
//!   and hands them to rustls a record at a time, returning the plaintext.
//!   It returns `WouldBlock` only once rustls holds no plaintext and the
//!   socket is empty: bytes rustls already decrypted are never left for a
//!   readable event that will not come.
//! - Writing hands plaintext to rustls (as much as its 64 KiB buffer
//!   takes; the rest stays in the link's own buffer, where the high-water
//!   mark counts it) and writes the records out; `flush` writes what
//!   rustls still holds. The socket stays registered for writable events
//!   (edge-triggered), so a write cut short by the socket is finished when
//!   it turns writable, as for plain TCP.
//! - Plaintext written before the TLS handshake is complete (this side's
//!   netsvc hello) is held back until it is: a server then says nothing of
//!   itself before the client's certificate is verified.
//! - What a peer can make this side hold is bounded: rustls's buffers
//!   (a record being deframed, 64 KiB of handshake, 16 KiB of plaintext),
//!   and at most one read's worth of ciphertext kept here.
//! - Failures are values: a TLS error becomes an `io::Error` carrying a
//!   [`Failure`], with the [`InactiveReason`](crate::InactiveReason) it
//!   stands for and a sentence on it, on both sides (the side that refuses
//!   sends an alert, which the other side reads as the same reason).

use std::cell::RefCell;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{AlertDescription, CertificateError, Connection};

use crate::connection::InactiveReason as Why;
use crate::frame::FrameError;
use crate::tls::{ClientTls, NameCheck};

/// The label of the keying material exported from each TLS session (RFC
/// 5705 / 8446), mixed into what the shared-secret proofs cover.
const EXPORTER_LABEL: &[u8] = b"EXPORTER-netsvc-exchange-auth";

/// How much one read takes from the socket.
const SOCKET_READ: usize = 64 * 1024;

thread_local! {
    /// Where the socket's bytes land first (one buffer for every
    /// connection of the dispatcher thread).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Why a TLS link failed: the reason it is announced with, and a sentence.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) why: Why,
    pub(crate) detail: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for Failure {}

impl Failure {
    fn new(why: Why, detail: String) -> Failure {
        Failure { why, detail }
    }

    fn to_io(&self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self.clone())
    }
}

/// The TLS failure an I/O error carries, if it is one.
pub(crate) fn failure(e: &io::Error) -> Option<&Failure> {
    e.get_ref()?.downcast_ref::<Failure>()
}

/// Whether a length prefix is rather the start of a TLS record: a content
/// type (change_cipher_spec, alert, handshake, application_data), then
/// major version 3.
fn is_tls_record(first: u8, second: Option<u8>) -> bool {
    (0x14..=0x17).contains(&first) && second.is_none_or(|b| b == 0x03)
}

/// The reason and detail for a frame refused before the handshake, on a
/// plain (non-TLS) link: a TLS record there is a peer that speaks TLS.
pub(crate) fn plain_refusal(e: &FrameError, server: bool) -> (Why, String) {
    let FrameError::TooLarge { claimed, .. } = e;
    let [first, second, ..] = (*claimed as u32).to_be_bytes();
    if is_tls_record(first, Some(second)) {
        let detail = if server {
            "TLS refused: a TLS client on this plain (non-TLS) exchange port; give this \
             exchange a TLS configuration, or connect without TLS"
        } else {
            "TLS refused: the server speaks TLS, and this client has no TLS configuration"
        };
        return (Why::TlsRequiredByPeer, detail.to_owned());
    }
    (Why::NotNetsvc, format!("bad input: {e}"))
}

/// Who the peer is, in sentences.
fn peer(server: bool) -> &'static str {
    if server {
        "client"
    } else {
        "server"
    }
}

/// The reason and detail of a TLS error, on the client (`server` false)
/// or the server side.
fn classify(e: &rustls::Error, server: bool) -> Failure {
    use rustls::Error as E;
    use CertificateError as C;
    let them = peer(server);
    let (why, detail) = match e {
        E::InvalidCertificate(C::UnknownIssuer) => (
            Why::UnknownCa,
            format!("the {them}'s certificate is not issued by a CA this side trusts"),
        ),
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => (
            Why::CertificateNameMismatch,
            format!("the {them}'s certificate is not valid for the server name asked for ({e})"),
        ),
        E::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => (
            Why::CertificateExpired,
            format!("the {them}'s certificate has expired or is not valid yet ({e})"),
        ),
        E::InvalidCertificate(C::ApplicationVerificationFailure) if server => (
            Why::AuthenticationFailed,
            "authentication failed: the client's certificate names no identity this server \
             takes (see this server's log for the name)"
                .to_owned(),
        ),
        E::NoCertificatesPresented => (
            Why::ClientCertificateRequired,
            "the client presented no certificate, and this server requires one (mutual TLS)"
                .to_owned(),
        ),
        E::AlertReceived(AlertDescription::UnknownCA) => (
            Why::UnknownCa,
            format!(
                "the {them} does not trust this side's certificate: not issued by a CA it \
                 trusts (alert unknown_ca)"
            ),
        ),
        E::AlertReceived(AlertDescription::CertificateExpired) => (
            Why::CertificateExpired,
            format!(
                "the {them} refused this side's certificate as expired or not valid yet \
                 (alert certificate_expired)"
            ),
        ),
        E::AlertReceived(AlertDescription::CertificateRequired) => (
            Why::ClientCertificateRequired,
            "the server requires a client certificate (mutual TLS), and this client \
             presented none (alert certificate_required)"
                .to_owned(),
        ),
        E::AlertReceived(AlertDescription::BadCertificate) if server => (
            Why::CertificateNameMismatch,
            "the client refused this server's certificate (alert bad_certificate): most \
             likely it is not valid for the server name the client asked for"
                .to_owned(),
        ),
        E::AlertReceived(AlertDescription::AccessDenied) if !server => (
            Why::AuthenticationFailed,
            "authentication failed: the server does not take the name in this client's \
             certificate (alert access_denied)"
                .to_owned(),
        ),
        E::InvalidCertificate(c) => (
            Why::TlsFailed,
            format!("the {them}'s certificate is refused: {c:?}"),
        ),
        E::AlertReceived(alert) => (
            Why::TlsFailed,
            format!("the {them} ended the TLS session with the alert {alert:?}"),
        ),
        other => (Why::TlsFailed, format!("TLS failed: {other}")),
    };
    let detail = if detail.starts_with("authentication failed") {
        detail
    } else {
        format!("TLS refused: {detail}")
    };
    Failure::new(why, detail)
}

/// One link's TLS over its TCP stream.
pub(crate) struct TlsStream {
    tcp: TcpStream,
    conn: Connection,
    /// Ciphertext read from the socket that rustls has not taken yet: kept
    /// only when a read's caller had no more room for plaintext (at most
    /// one socket read's worth).
    inbound: Vec<u8>,
    /// Plaintext written before the handshake completed, handed to rustls
    /// once it has (this side's own first frames: a few hundred bytes).
    held: Vec<u8>,
    /// Whether the peer's first bytes were seen (and checked for another
    /// protocol than TLS).
    sniffed: bool,
    /// The failure that ended the session: every later call returns it.
    failed: Option<Failure>,
    /// The peer's side of the session ended (close_notify or end of stream).
    ended: bool,
}

impl fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("tcp", &self.tcp)
            .field("server", &self.is_server())
            .field("handshaking", &self.conn.is_handshaking())
            .finish()
    }
}

impl TlsStream {
    /// The server side of an accepted connection.
    pub(crate) fn accepted(
        tcp: TcpStream,
        config: Arc<rustls::ServerConfig>,
    ) -> Result<TlsStream, rustls::Error> {
        let conn = rustls::ServerConnection::new(config)?;
        Ok(TlsStream::new(tcp, Connection::Server(conn)))
    }

    /// The client side of a connection to `addr` (its TCP connect under way).
    pub(crate) fn connecting(
        tcp: TcpStream,
        tls: &ClientTls,
        addr: SocketAddr,
    ) -> Result<TlsStream, rustls::Error> {
        let name = tls
            .server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
        let conn = rustls::ClientConnection::new(tls.config.clone(), name)?;
        Ok(TlsStream::new(tcp, Connection::Client(conn)))
    }

    fn new(tcp: TcpStream, conn: Connection) -> TlsStream {
        TlsStream {
            tcp,
            conn,
            inbound: Vec::new(),
            held: Vec::new(),
            sniffed: false,
            failed: None,
            ended: false,
        }
    }

    fn is_server(&self) -> bool {
        matches!(self.conn, Connection::Server(_))
    }

    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    pub(crate) fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    /// Keying material of this session only (the same at both ends, and
    /// different for every other session): what binds the shared-secret
    /// proofs to it. `None` before the handshake is complete.
    pub(crate) fn binding(&self) -> Option<[u8; 32]> {
        if self.conn.is_handshaking() {
            return None;
        }
        self.conn
            .export_keying_material([0u8; 32], EXPORTER_LABEL, None)
            .ok()
    }

    /// On a server of mutual TLS, the identity the client's verified
    /// certificate names (or why it names none); `None` without a client
    /// certificate.
    pub(crate) fn peer_name(&self, names: &NameCheck) -> Option<Result<String, String>> {
        if !self.is_server() || self.conn.is_handshaking() {
            return None;
        }
        let leaf = self.conn.peer_certificates()?.first()?;
        Some(names.check(leaf))
    }

    /// Ends the session with `failure`: rustls's alert (if it queued one)
    /// goes out if the socket takes it at once.
    fn fail(&mut self, failure: Failure) -> io::Error {
        let _ = self.push_tls();
        // What the peer sent meanwhile is read and dropped (up to a few
        // reads): a socket closed with unread input resets the connection,
        // and the peer could lose the alert before it reads it.
        let mut sink = [0u8; 4096];
        for _ in 0..16 {
            match self.tcp.read(&mut sink) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        log::debug!(
            "netsvc: TLS session with {:?} failed: {failure}",
            self.tcp.peer_addr()
        );
        let e = failure.to_io();
        self.failed = Some(failure);
        e
    }

    /// Checks the peer's first bytes: another protocol than TLS (a netsvc
    /// peer without TLS, above all) is refused with a reason that says so.
    fn sniff(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.sniffed || bytes.is_empty() {
            return Ok(());
        }
        self.sniffed = true;
        if is_tls_record(bytes[0], bytes.get(1).copied()) {
            return Ok(());
        }
        let netsvc = bytes.get(4..10) == Some(&b"NETSVC"[..]);
        let detail = match (self.is_server(), netsvc) {
            (true, true) => "TLS refused: a netsvc client without TLS on this TLS exchange port; \
                             give the client a TLS configuration"
                .to_owned(),
            (true, false) => "TLS refused: the client's first bytes are not TLS (a client \
                              without TLS on this TLS port?)"
                .to_owned(),
            (false, true) => "TLS refused: the server is a netsvc exchange without TLS \
                              (a plain port); connect without TLS, or give the exchange TLS"
                .to_owned(),
            (false, false) => "TLS refused: the server's first bytes are not TLS (not a TLS \
                               port?)"
                .to_owned(),
        };
        if self.is_server() {
            // A plain netsvc client expects a frame: a TLS alert record
            // (protocol_version, in clear as before any handshake) reads
            // there as a TLS record, and says why.
            let _ = self.tcp.write(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46]);
        }
        Err(self.fail(Failure::new(Why::PeerWithoutTls, detail)))
    }

    /// Processes the records rustls has taken in; hands it the held
    /// plaintext once the handshake is complete; writes what it has to say.
    fn process(&mut self) -> io::Result<()> {
        if let Err(e) = self.conn.process_new_packets() {
            let failure = classify(&e, self.is_server());
            return Err(self.fail(failure));
        }
        self.release_held()?;
        if self.conn.wants_write() {
            // (Cut short: the rest goes when the socket is writable.)
            self.push_tls()?;
        }
        Ok(())
    }

    /// Hands rustls the plaintext held during the handshake.
    fn release_held(&mut self) -> io::Result<()> {
        if self.held.is_empty() || self.conn.is_handshaking() {
            return Ok(());
        }
        let n = self.conn.writer().write(&self.held)?;
        self.held.drain(..n);
        if self.held.capacity() > 4096 && self.held.is_empty() {
            self.held = Vec::new();
        }
        Ok(())
    }

    /// Writes the records rustls holds until the socket would block; true
    /// when none is left.
    fn push_tls(&mut self) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.tcp) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Moves the plaintext rustls holds into `out[*n..]`.
    fn drain_plaintext(&mut self, out: &mut [u8], n: &mut usize) -> io::Result<()> {
        while *n < out.len() {
            match self.conn.reader().read(&mut out[*n..]) {
                Ok(0) => {
                    self.ended = true; // close_notify
                    return Ok(());
                }
                Ok(k) => *n += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    // The stream ended without close_notify: for netsvc,
                    // whose frames carry their lengths, as a TCP close.
                    self.ended = true;
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Hands rustls ciphertext, a record at a time, and takes the
    /// plaintext into `out` until `out` is full; how much of `data` it took.
    fn feed(&mut self, data: &[u8], out: &mut [u8], n: &mut usize) -> io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() && *n < out.len() && !self.ended {
            match self.conn.read_tls(&mut rest) {
                Ok(0) => break, // (close_notify came: nothing more is read)
                Ok(_) => {
                    self.process()?;
                    self.drain_plaintext(out, n)?;
                }
                Err(e) => {
                    let failure = Failure::new(Why::TlsFailed, format!("TLS refused: {e}"));
                    return Err(self.fail(failure));
                }
            }
        }
        Ok(data.len() - rest.len())
    }

    /// Takes the kept ciphertext first, then the socket's.
    fn read_plaintext(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        self.drain_plaintext(out, &mut n)?;
        if n > 0 || self.ended {
            return Ok(n);
        }
        if !self.inbound.is_empty() {
            let kept = std::mem::take(&mut self.inbound);
            let took = self.feed(&kept, out, &mut n)?;
            if took < kept.len() {
                self.inbound = kept[took..].to_vec();
            }
            if n > 0 || self.ended {
                return Ok(n);
            }
        }
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            if scratch.len() < SOCKET_READ {
                scratch.resize(SOCKET_READ, 0);
            }
            loop {
                let got = match self.tcp.read(&mut scratch[..]) {
                    Ok(0) => {
                        // End of stream: rustls learns of it too.
                        let _ = self.conn.read_tls(&mut &[][..]);
                        self.process()?;
                        self.drain_plaintext(out, &mut n)?;
                        self.ended = true;
                        return Ok(n);
                    }
                    Ok(got) => got,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                self.sniff(&scratch[..got])?;
                let took = self.feed(&scratch[..got], out, &mut n)?;
                if took < got {
                    self.inbound.extend_from_slice(&scratch[took..got]);
                }
                if n > 0 || self.ended || took < got {
                    return Ok(n);
                }
                // (A record not yet whole, or handshake only: read on.)
            }
        })
    }
}

impl Read for TlsStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if let Some(f) = &self.failed {
            return Err(f.to_io());
        }
        if out.is_empty() {
            return Ok(0);
        }
        self.read_plaintext(out)
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(f) = &self.failed {
            return Err(f.to_io());
        }
        if self.conn.is_handshaking() {
            self.held.extend_from_slice(buf);
            // (The handshake's own messages: a client's hello goes now.)
            self.push_tls()?;
            return Ok(buf.len());
        }
        self.release_held()?;
        let mut n = self.conn.writer().write(buf)?;
        let drained = self.push_tls()?;
        if n == 0 && drained {
            n = self.conn.writer().write(buf)?;
            self.push_tls()?;
        }
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(f) = &self.failed {
            return Err(f.to_io());
        }
        self.release_held()?;
        if self.push_tls()? {
            Ok(())
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }
}

impl Drop for TlsStream {
    fn drop(&mut self) {
        // The end of the session, said if the socket takes it at once.
        if self.failed.is_none() && !self.conn.is_handshaking() {
            self.conn.send_close_notify();
            let _ = self.push_tls();
        }
    }
}
