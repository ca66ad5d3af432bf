//! The byte streams exchange links run over: plain TCP, or TLS over TCP
//! ([`TlsStream`]). A stream is what the exchange protocol reads frames
//! from and writes frames to, and what is registered with the poll; the
//! framing, heartbeats and flow control above it are the same for both.
//!
//! A TLS stream holds bytes of its own (records rustls has not written
//! yet): its `flush` writes them, and returns `WouldBlock` while the
//! socket does not take them all, so that the link's writer waits for the
//! socket to turn writable as it does for its own buffer.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::tls::{ClientTls, NameCheck, ServerTls};
use crate::transport::tls::TlsStream;

/// One link's byte stream.
#[derive(Debug)]
pub(crate) enum Stream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream>),
}

impl Stream {
    /// Starts a connection to `addr` (it completes when the stream turns
    /// writable), with TLS if `tls` is given.
    pub(crate) fn connect(addr: SocketAddr, tls: Option<&ClientTls>) -> io::Result<Stream> {
        let tcp = TcpStream::connect(addr)?;
        match tls {
            None => Ok(Stream::Tcp(tcp)),
            Some(tls) => TlsStream::connecting(tcp, tls, addr)
                .map(|s| Stream::Tls(Box::new(s)))
                .map_err(|e| io::Error::other(format!("cannot start TLS: {e}"))),
        }
    }

    /// An accepted connection, with the server's TLS if it has any (the
    /// configuration current now: a reload applies to what is accepted
    /// after it).
    pub(crate) fn accepted(tcp: TcpStream, tls: Option<&ServerTls>) -> io::Result<Stream> {
        match tls {
            None => Ok(Stream::Tcp(tcp)),
            Some(tls) => TlsStream::accepted(tcp, tls.current())
                .map(|s| Stream::Tls(Box::new(s)))
                .map_err(|e| io::Error::other(format!("cannot start TLS: {e}"))),
        }
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Tcp(s) => s,
            Stream::Tls(s) => s.tcp(),
        }
    }

    fn tcp_mut(&mut self) -> &mut TcpStream {
        match self {
            Stream::Tcp(s) => s,
            Stream::Tls(s) => s.tcp_mut(),
        }
    }

    /// On TLS, keying material exported from this session only, which the
    /// shared-secret proofs cover (a proof relayed to another session does
    /// not verify there); `None` on plain TCP.
    pub(crate) fn tls_binding(&self) -> Option<[u8; 32]> {
        match self {
            Stream::Tcp(_) => None,
            Stream::Tls(s) => s.binding(),
        }
    }

    /// On a server of mutual TLS, the identity its client's certificate
    /// names, or why it names none; `None` without a client certificate.
    pub(crate) fn peer_name(&self, names: &NameCheck) -> Option<Result<String, String>> {
        match self {
            Stream::Tcp(_) => None,
            Stream::Tls(s) => s.peer_name(names),
        }
    }

    /// A second handle to a plain TCP socket, for threads that write a
    /// frame onto the link themselves (`direct::Outlet`); `None` on TLS,
    /// whose session state is this stream's alone.
    pub(crate) fn second_handle(&self) -> Option<std::net::TcpStream> {
        match self {
            #[cfg(unix)]
            Stream::Tcp(s) => {
                use std::os::fd::AsFd;
                let fd = s.as_fd().try_clone_to_owned().ok()?;
                Some(std::net::TcpStream::from(fd))
            }
            #[cfg(not(unix))]
            Stream::Tcp(_) => None,
            Stream::Tls(_) => None,
        }
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().local_addr()
    }

    pub(crate) fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }

    /// The error of a connect that failed, if one did.
    pub(crate) fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.tcp().take_error()
    }

    /// Sends small frames at once (no Nagle delay).
    pub(crate) fn set_nodelay(&self) {
        let _ = self.tcp().set_nodelay(true);
    }

    /// Lets the kernel notice a dead peer too, beside the heartbeats.
    pub(crate) fn set_keepalive(&self, idle: Duration) -> io::Result<()> {
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval((idle / 3).max(Duration::from_secs(1)));
        socket2::SockRef::from(self.tcp()).set_tcp_keepalive(&keepalive)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

impl Source for Stream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.tcp_mut().register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.tcp_mut().reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.tcp_mut().deregister(registry)
    }
}
