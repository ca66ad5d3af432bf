//! Every TLS refusal, with its `InactiveReason` at the client and its
//! reason in the server's log and `stats().tls_failures`: a plain client on
//! a TLS port, a TLS client on a plain port, an unknown CA (either side's
//! certificate), a wrong server name, an expired certificate (either
//! side's), a missing client certificate, and a client certificate naming
//! no credential of the server. No link comes up in any of them.
//!
//! One test, its cases one after the other: the server's log is captured
//! for the whole process, and only this test writes to it.

mod util;

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

use log::{Log, Metadata, Record};
use netsvc::{
    ConnectionAnnouncement, ConnectionState, Credential, Dispatcher, Exchange, InactiveReason,
    TlsClientConfig, TlsServerConfig,
};
use util::certs::{Ca, Pem};
use util::WAIT;

/// Every log line of the process, as `LEVEL target: message`.
static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl Log for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &Record<'_>) {
        let line = format!("{} {}: {}", record.level(), record.target(), record.args());
        LINES.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }
    fn flush(&self) {}
}

fn capture_logs() {
    if log::set_logger(&Capture).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
}

/// Waits (bounded) for a netsvc log line that contains every one of `parts`.
fn logged(parts: &[&str]) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        {
            let lines = LINES.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(l) = lines
                .iter()
                .find(|l| l.contains("netsvc") && parts.iter().all(|p| l.contains(p)))
            {
                return l.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {parts:?} within {WAIT:?}; the lines:\n{}",
            LINES.lock().unwrap().join("\n")
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn forget_logs() {
    LINES.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// What a server is given.
enum Server {
    Plain,
    Tls(TlsServerConfig),
    TlsWith(TlsServerConfig, Credential),
}

/// One attempt of a client with `client` (TLS or not) at a server made of
/// `server`: the client's announcement; the server's log must then say
/// `server_says`, and its tls_failures (or auth_failures, for `auth`) grow.
fn refused(
    case: &str,
    server: Server,
    client: Option<TlsClientConfig>,
    reason: InactiveReason,
    client_says: &str,
    server_says: &str,
) {
    forget_logs();
    let ds = Dispatcher::builder().name("server").build().unwrap();
    let builder = Exchange::server(&ds);
    let builder = match server {
        Server::Plain => builder,
        Server::Tls(tls) => builder.tls(tls),
        Server::TlsWith(tls, c) => builder.tls(tls).credential(c),
    };
    let ex = builder.listen("127.0.0.1:0").unwrap();
    let addr: SocketAddr = ex.local_addr();
    let dc = Dispatcher::builder().name("client").build().unwrap();
    let cb = Exchange::client(&dc);
    let cb = match client {
        Some(tls) => cb.tls(tls),
        None => cb,
    };
    let cx = cb.connect_once(addr).unwrap();
    let a: ConnectionAnnouncement = cx
        .connections()
        .recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("{case}: no announcement at the client"));
    assert_eq!(a.state(), ConnectionState::Inactive, "{case}: {a}");
    assert_eq!(a.reason(), Some(reason), "{case}: {a}");
    assert!(a.detail().contains(client_says), "{case}: {a}");
    assert!(a.to_string().contains(reason.as_str()), "{case}: {a}");
    let line = logged(&["closing connection", server_says]);
    eprintln!("{case}:\n  client: {a}\n  server: {line}");
    let auth = reason == InactiveReason::AuthenticationFailed;
    let counted = |d: &Dispatcher| {
        let s = d.stats();
        if auth {
            s.auth_failures
        } else {
            s.tls_failures
        }
    };
    util::wait_stat(&ds, "the server's count", 1, |s| {
        if auth {
            s.auth_failures
        } else {
            s.tls_failures
        }
    });
    assert_eq!(counted(&dc), 1, "{case}: the client's count");
    assert!(
        ex.connections()
            .try_iter()
            .all(|a| a.state() != ConnectionState::Active),
        "{case}: a link came up at the server"
    );
    assert!(reason.is_tls() != auth, "{case}");
    ds.shutdown();
    dc.shutdown();
}

fn server_tls(pem: &Pem) -> TlsServerConfig {
    TlsServerConfig::from_pem(pem.cert.as_bytes(), pem.key.as_bytes()).unwrap()
}

fn trusting(ca: &Ca) -> TlsClientConfig {
    TlsClientConfig::from_ca_pem(ca.pem.as_bytes()).unwrap()
}

fn with_cert(tls: TlsClientConfig, pem: &Pem) -> TlsClientConfig {
    tls.client_certificate_pem(pem.cert.as_bytes(), pem.key.as_bytes())
        .unwrap()
}

#[test]
fn every_tls_refusal_says_why_on_both_sides() {
    capture_logs();
    let ca = Ca::new("netsvc test CA");
    let other = Ca::new("another CA");
    let good = ca.server();
    let mutual = || server_tls(&good).client_ca_pem(ca.pem.as_bytes()).unwrap();
    use InactiveReason as R;

    refused(
        "a plain client on a TLS port",
        Server::Tls(server_tls(&good)),
        None,
        R::TlsRequiredByPeer,
        "the server speaks TLS",
        "a netsvc client without TLS on this TLS exchange port",
    );
    refused(
        "a TLS client on a plain port",
        Server::Plain,
        Some(trusting(&ca)),
        R::PeerWithoutTls,
        "the server is a netsvc exchange without TLS",
        "a TLS client on this plain (non-TLS) exchange port",
    );
    refused(
        "a server certificate of an unknown CA",
        Server::Tls(server_tls(&good)),
        Some(trusting(&other)),
        R::UnknownCa,
        "the server's certificate is not issued by a CA this side trusts",
        "the client does not trust this side's certificate",
    );
    refused(
        "a wrong server name",
        Server::Tls(server_tls(&good)),
        Some(trusting(&ca).server_name("exchange.example.com").unwrap()),
        R::CertificateNameMismatch,
        "not valid for the server name asked for",
        "alert bad_certificate",
    );
    refused(
        "an expired server certificate",
        Server::Tls(server_tls(&ca.server_for(&["127.0.0.1"], true))),
        Some(trusting(&ca)),
        R::CertificateExpired,
        "the server's certificate has expired or is not valid yet",
        "the client refused this side's certificate as expired",
    );
    refused(
        "no client certificate for mutual TLS",
        Server::Tls(mutual()),
        Some(trusting(&ca)),
        R::ClientCertificateRequired,
        "this client presented none",
        "the client presented no certificate",
    );
    refused(
        "a client certificate of an unknown CA",
        Server::Tls(mutual()),
        Some(with_cert(trusting(&ca), &other.client("alice"))),
        R::UnknownCa,
        "the server does not trust this side's certificate",
        "the client's certificate is not issued by a CA this side trusts",
    );
    refused(
        "an expired client certificate",
        Server::Tls(mutual()),
        Some(with_cert(trusting(&ca), &ca.client_with("alice", true))),
        R::CertificateExpired,
        "the server refused this side's certificate as expired",
        "the client's certificate has expired",
    );
    refused(
        "a client certificate naming no credential",
        Server::TlsWith(mutual(), Credential::for_certificate("bob")),
        Some(with_cert(trusting(&ca), &ca.client("alice"))),
        R::AuthenticationFailed,
        "the server does not take the name in this client's certificate",
        "names no identity this server takes",
    );
    // (and the name is in the server's log)
    logged(&["\"alice\"", "no credential of that name"]);
}
