//! TLS on exchange links (issue 16), over loopback TCP with certificates
//! made in the test: calls and reports over TLS, mutual TLS with the
//! client's certificate as its identity (announcements, stats,
//! permissions), TLS composed with the shared secret, reconnecting after
//! an exchange restart, reloading the server's certificate, and bad input
//! that closes only its own connection.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netsvc::{
    codes, ConnectionAnnouncement, ConnectionState, Credential, Dispatcher, Error, Event, Exchange,
    InactiveReason, Lifetime, ServiceStatus, TlsClientConfig, TlsServerConfig,
};
use util::certs::{Ca, Pem};
use util::*;

const RETRY: Duration = Duration::from_millis(100);

fn server_tls(ca: &Ca) -> TlsServerConfig {
    let pem = ca.server();
    TlsServerConfig::from_pem(pem.cert.as_bytes(), pem.key.as_bytes()).unwrap()
}

fn mutual_tls(ca: &Ca, clients: &Ca) -> TlsServerConfig {
    server_tls(ca)
        .client_ca_pem(clients.pem.as_bytes())
        .unwrap()
}

fn client_tls(ca: &Ca) -> TlsClientConfig {
    TlsClientConfig::from_ca_pem(ca.pem.as_bytes()).unwrap()
}

fn with_cert(tls: TlsClientConfig, pem: &Pem) -> TlsClientConfig {
    tls.client_certificate_pem(pem.cert.as_bytes(), pem.key.as_bytes())
        .unwrap()
}

/// The next announcement of `ex` that is `state`, skipping others.
fn next_state(ex: &Exchange, state: ConnectionState) -> ConnectionAnnouncement {
    let rx = ex.connections();
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(a) if a.state() == state => return a,
            Ok(_) => continue,
            Err(_) => panic!("no {state:?} announcement within {WAIT:?}"),
        }
    }
}

fn active(ex: &Exchange) -> ConnectionAnnouncement {
    next_state(ex, ConnectionState::Active)
}

fn inactive(ex: &Exchange) -> ConnectionAnnouncement {
    next_state(ex, ConnectionState::Inactive)
}

/// A client dispatcher linked to `addr` with `tls`, its link up.
fn tls_client(name: &str, addr: SocketAddr, tls: TlsClientConfig) -> (Dispatcher, Exchange) {
    let d = Dispatcher::builder().name(name).build().unwrap();
    let ex = Exchange::client(&d).tls(tls).connect(addr, RETRY).unwrap();
    let up = active(&ex);
    assert!(up.reason().is_none(), "{up}");
    (d, ex)
}

#[test]
fn calls_and_reports_cross_an_exchange_over_tls() {
    let ca = Ca::new("test CA");
    let ds = Dispatcher::builder().name("server").build().unwrap();
    let ex = Exchange::server(&ds)
        .tls(server_tls(&ca))
        .listen("127.0.0.1:0")
        .unwrap();
    let _double = spawn_u64(&ds, "double", |x| x * 2);
    let publisher = ds.service("publisher").open().unwrap();
    publisher
        .publish_report("system.startup", &7u64, Lifetime::Forever)
        .unwrap();

    // The server name is 127.0.0.1 by default: its IP address SAN.
    let (dc, cx) = tls_client("client", ex.local_addr(), client_tls(&ca));
    let up = active(&ex);
    assert_eq!(up.remote_process(), Some(&dc.process_id()));
    assert_eq!(up.identity(), None, "no client certificate: no identity");

    let me = dc.service("me").open().unwrap();
    let double = await_service(&dc, "double");
    for x in 0..100u64 {
        let r: u64 = me.call(&double, "double", &x).unwrap();
        assert_eq!(r, 2 * x);
    }
    // A large payload crosses in many TLS records, both ways.
    let big = vec![0xa5u8; 3 << 20];
    let echo = ds
        .service("echo")
        .spawn(|_s, ev| {
            if let Event::Request(r) = ev {
                let v: Vec<u8> = r.decode().unwrap();
                let _ = r.reply(&v);
            }
        })
        .unwrap();
    let echo_b = await_service(&dc, "echo");
    assert_eq!(echo_b, *echo.binding());
    let back: Vec<u8> = me.call(&echo_b, "echo", &big).unwrap();
    assert_eq!(back, big);

    me.subscribe_reports("publisher", "system.*");
    let rep = wait_for(&me, "the cached report", |e| match e {
        Event::Report(r) => Some(r),
        _ => None,
    });
    assert_eq!(rep.decode::<u64>().unwrap(), 7);
    subscription(&publisher);
    for i in 0..1000u64 {
        publisher
            .publish_report("system.time", &i, Lifetime::None)
            .unwrap();
    }
    for i in 0..1000u64 {
        assert_eq!(report(&me).decode::<u64>().unwrap(), i);
    }
    assert_eq!(dc.stats().tls_failures, 0);
    assert_eq!(ds.stats().tls_failures, 0);
    drop(cx);
}

#[test]
fn a_client_certificate_is_the_identity_in_announcements_and_stats() {
    let ca = Ca::new("test CA");
    let ds = Dispatcher::builder().name("server").build().unwrap();
    let ex = Exchange::server(&ds)
        .tls(mutual_tls(&ca, &ca))
        .listen("127.0.0.1:0")
        .unwrap();
    let _double = spawn_u64(&ds, "double", |x| x * 2);
    let tls = with_cert(client_tls(&ca), &ca.client("alice"));
    let (dc, cx) = tls_client("alice-host", ex.local_addr(), tls);
    let up = active(&ex);
    assert_eq!(up.identity(), Some("alice"), "{up}");
    assert!(up.to_string().contains("as \"alice\""), "{up}");
    assert_eq!(
        ds.stats().identities,
        vec![("alice".to_owned(), dc.process_id())]
    );
    // Without named credentials, the certificate's name may do everything.
    let me = dc.service("me").open().unwrap();
    let double = await_service(&dc, "double");
    assert_eq!(me.call::<u64, _>(&double, "double", &4u64).unwrap(), 8);
    assert_eq!(ds.stats().permission_denied, 0);
    // The identity is in the announcement of the link going down too.
    cx.close();
    let down = inactive(&ex);
    assert_eq!(down.identity(), Some("alice"), "{down}");
    wait_stat(&ds, "no identities once the link is down", 0, |s| {
        s.identities.len() as u64
    });
}

#[test]
fn a_client_certificate_selects_its_credential_and_its_permissions() {
    let ca = Ca::new("test CA");
    let ds = Dispatcher::builder().name("server").build().unwrap();
    let ex = Exchange::server(&ds)
        .tls(mutual_tls(&ca, &ca))
        .credential(
            Credential::for_certificate("calc-host")
                .deny_all()
                .offer(&["calc.*"])
                .call(&["calc.*"]),
        )
        .listen("127.0.0.1:0")
        .unwrap();
    let _secret = spawn_u64(&ds, "secret.service", |x| x);
    let _mul = spawn_u64(&ds, "calc.mul", |x| x * 3);
    let tls = with_cert(client_tls(&ca), &ca.client("calc-host"));
    // No secret: a credential for certificates does not require one.
    let (dc, _cx) = tls_client("calc", ex.local_addr(), tls);
    assert_eq!(active(&ex).identity(), Some("calc-host"));

    // What it may offer is taken in, the rest is not.
    let _evil = spawn_u64(&dc, "evil", |x| x);
    let _add = spawn_u64(&dc, "calc.add", |x| x + 1);
    await_service(&ds, "calc.add");
    assert!(ds.lookup_service_name("evil").is_empty(), "evil taken in");
    // What it may call answers, the rest fails with PERMISSION_DENIED.
    let me = dc.service("calc.me").open().unwrap();
    let mul = await_service(&dc, "calc.mul");
    assert_eq!(me.call::<u64, _>(&mul, "x", &5u64).unwrap(), 15);
    let secret = await_service(&dc, "secret.service");
    match me.call::<u64, _>(&secret, "x", &5u64) {
        Err(Error::Service(f)) => assert_eq!(f.code, codes::PERMISSION_DENIED, "{f}"),
        other => panic!("a call its certificate's credential does not allow: {other:?}"),
    }
    assert_eq!(ds.stats().permission_denied, 2);
    assert_eq!(
        ds.stats().identities,
        vec![("calc-host".to_owned(), dc.process_id())]
    );
}

#[test]
fn tls_and_secrets_compose_and_must_agree_on_the_name() {
    let ca = Ca::new("test CA");
    let ds = Dispatcher::builder().name("server").build().unwrap();
    let ex = Exchange::server(&ds)
        .tls(mutual_tls(&ca, &ca))
        .secret("shared")
        .credential(Credential::new("alice", "k-alice"))
        .credential(Credential::new("bob", "k-bob").deny_all())
        .listen("127.0.0.1:0")
        .unwrap();
    let addr = ex.local_addr();
    let alice = ca.client("alice");

    // The certificate and the credential agree: up, as alice.
    let d1 = Dispatcher::builder().name("c1").build().unwrap();
    let c1 = Exchange::client(&d1)
        .tls(with_cert(client_tls(&ca), &alice))
        .credential("alice", "k-alice")
        .connect(addr, RETRY)
        .unwrap();
    active(&c1);
    assert_eq!(active(&ex).identity(), Some("alice"));

    // The shared secret with alice's certificate: up, as alice.
    let d2 = Dispatcher::builder().name("c2").build().unwrap();
    let c2 = Exchange::client(&d2)
        .tls(with_cert(client_tls(&ca), &alice))
        .secret("shared")
        .connect(addr, RETRY)
        .unwrap();
    active(&c2);
    assert_eq!(active(&ex).identity(), Some("alice"));

    // Alice's certificate proving bob's credential: refused on both sides.
    let d3 = Dispatcher::builder().name("c3").build().unwrap();
    let c3 = Exchange::client(&d3)
        .tls(with_cert(client_tls(&ca), &alice))
        .credential("bob", "k-bob")
        .connect_once(addr)
        .unwrap();
    let refused = inactive(&c3);
    assert_eq!(
        refused.reason(),
        Some(InactiveReason::AuthenticationFailed),
        "{refused}"
    );
    assert!(refused.detail().contains("must agree"), "{refused}");
    wait_stat(&ds, "the refusal counted", 1, |s| s.auth_failures);

    // A wrong secret over TLS is refused as without TLS.
    let d4 = Dispatcher::builder().name("c4").build().unwrap();
    let c4 = Exchange::client(&d4)
        .tls(with_cert(client_tls(&ca), &alice))
        .secret("not-shared")
        .connect_once(addr)
        .unwrap();
    let refused = inactive(&c4);
    assert_eq!(
        refused.reason(),
        Some(InactiveReason::AuthenticationFailed),
        "{refused}"
    );
    wait_stat(&ds, "the refusal counted", 2, |s| s.auth_failures);
    let ids: Vec<String> = ds.stats().identities.into_iter().map(|(n, _)| n).collect();
    assert_eq!(ids, ["alice", "alice"]);
}

// ----- a party in the middle that terminates TLS on both sides -----

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A relay that holds the server's certificate and key (stolen, say):
/// clients connect to it over TLS, and it connects to `server` over TLS
/// and carries the plaintext both ways. Its address.
fn tls_relay(server: SocketAddr, ca: &Ca, cert: &Pem) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let chain = vec![CertificateDer::from_pem_slice(cert.cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(cert.key.as_bytes()).unwrap();
    let accept = Arc::new(
        rustls::ServerConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
    );
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
        .unwrap();
    let connect = Arc::new(
        rustls::ClientConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let Ok((down, _)) = listener.accept() else {
            return;
        };
        let Ok(up) = TcpStream::connect(server) else {
            return;
        };
        let tick = Some(Duration::from_millis(2));
        for s in [&down, &up] {
            s.set_read_timeout(tick).unwrap();
            s.set_nodelay(true).unwrap();
        }
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut down =
            rustls::StreamOwned::new(rustls::ServerConnection::new(accept).unwrap(), down);
        let mut up =
            rustls::StreamOwned::new(rustls::ClientConnection::new(connect, name).unwrap(), up);
        // Bounded: the test is over well within this.
        let deadline = Instant::now() + WAIT;
        let mut buf = vec![0u8; 1 << 16];
        while Instant::now() < deadline {
            for (from, to) in [(0, 1), (1, 0)] {
                let read = if from == 0 {
                    down.read(&mut buf)
                } else {
                    up.read(&mut buf)
                };
                match read {
                    Ok(0) => return,
                    Ok(n) => {
                        let written = if to == 1 {
                            up.write_all(&buf[..n]).and_then(|_| up.flush())
                        } else {
                            down.write_all(&buf[..n]).and_then(|_| down.flush())
                        };
                        if written.is_err() {
                            return;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                }
            }
        }
    });
    addr
}

#[test]
fn a_proof_relayed_into_another_tls_session_is_refused() {
    let ca = Ca::new("test CA");
    let cert = ca.server();
    let tls = TlsServerConfig::from_pem(cert.cert.as_bytes(), cert.key.as_bytes()).unwrap();

    // Without a secret, the relay carries a link: it relays faithfully.
    let d0 = Dispatcher::builder().name("open-server").build().unwrap();
    let open = Exchange::server(&d0)
        .tls(tls.clone())
        .listen("127.0.0.1:0")
        .unwrap();
    let relay = tls_relay(open.local_addr(), &ca, &cert);
    let dc0 = Dispatcher::builder().name("c0").build().unwrap();
    let c0 = Exchange::client(&dc0)
        .tls(client_tls(&ca))
        .connect_once(relay)
        .unwrap();
    let up = active(&c0);
    assert_eq!(up.remote_process(), Some(&d0.process_id()), "{up}");

    // With a secret, and proofs not bound to addresses: only the TLS
    // session binding tells the two sessions apart, and refuses the relay.
    let ds = Dispatcher::builder().name("server").build().unwrap();
    let ex = Exchange::server(&ds)
        .tls(tls)
        .secret("K")
        .bind_proofs_to_addresses(false)
        .listen("127.0.0.1:0")
        .unwrap();
    let relay = tls_relay(ex.local_addr(), &ca, &cert);
    let dc = Dispatcher::builder().name("client").build().unwrap();
    let cx = Exchange::client(&dc)
        .tls(client_tls(&ca))
        .secret("K")
        .connect_once(relay)
        .unwrap();
    let refused = inactive(&cx);
    assert_eq!(
        refused.reason(),
        Some(InactiveReason::AuthenticationFailed),
        "{refused}"
    );
    wait_stat(&ds, "the server refused the relayed proof", 1, |s| {
        s.auth_failures
    });
    assert!(ex
        .connections()
        .try_iter()
        .all(|a| a.state() != ConnectionState::Active));

    // And a client straight to the server: up.
    let dd = Dispatcher::builder().name("direct").build().unwrap();
    let dx = Exchange::client(&dd)
        .tls(client_tls(&ca))
        .secret("K")
        .connect_once(ex.local_addr())
        .unwrap();
    active(&dx);
}

#[test]
fn a_tls_client_reconnects_after_its_exchange_restarts() {
    let ca = Ca::new("test CA");
    let start = |port: u16| {
        let ds = Dispatcher::builder().name("server").build().unwrap();
        let ex = Exchange::server(&ds)
            .tls(mutual_tls(&ca, &ca))
            .listen(("127.0.0.1", port))
            .unwrap();
        let svc = spawn_u64(&ds, "double", |x| x * 2);
        (ds, ex, svc)
    };
    let (ds, ex, svc) = start(0);
    let addr = ex.local_addr();
    let tls = with_cert(client_tls(&ca), &ca.client("alice"));
    let (dc, cx) = tls_client("client", addr, tls);
    assert_eq!(active(&ex).identity(), Some("alice"));
    let me = dc.service("me").open().unwrap();
    me.monitor_service_name("double");
    wait_announcement(&me, "double", None, ServiceStatus::Available);

    drop(svc);
    ds.shutdown();
    let down = inactive(&cx);
    assert!(down.reason().is_some(), "{down}");
    wait_announcement(&me, "double", None, ServiceStatus::Withdrawn);

    let (ds2, ex2, _svc2) = start(addr.port());
    active(&cx);
    let up = active(&ex2);
    assert_eq!(up.identity(), Some("alice"), "{up}");
    let again = wait_announcement(&me, "double", None, ServiceStatus::Available);
    assert_eq!(me.call::<u64, _>(again.binding(), "x", &21u64).unwrap(), 42);
    assert!(dc.stats().reconnects >= 1);
    ds2.shutdown();
}

#[test]
fn a_reloaded_certificate_serves_new_connections_and_links_up_stay() {
    let (ca1, ca2) = (Ca::new("first CA"), Ca::new("second CA"));
    let ds = Dispatcher::builder().name("server").build().unwrap();
    let ex = Exchange::server(&ds)
        .tls(server_tls(&ca1))
        .listen("127.0.0.1:0")
        .unwrap();
    let _double = spawn_u64(&ds, "double", |x| x * 2);
    let addr = ex.local_addr();
    let (d1, c1) = tls_client("old", addr, client_tls(&ca1));
    active(&ex);
    let me = d1.service("me").open().unwrap();
    let double = await_service(&d1, "double");

    // A configuration that cannot work changes nothing.
    let a = ca2.server();
    let b = ca2.server();
    let mismatched = TlsServerConfig::from_pem(a.cert.as_bytes(), b.key.as_bytes()).unwrap();
    match ex.reload_tls(&mismatched) {
        Err(Error::InvalidArgument(e)) => assert!(e.contains("key"), "{e}"),
        other => panic!("a key that is not the certificate's: {other:?}"),
    }
    let dq = Dispatcher::builder().name("still-old").build().unwrap();
    let cq = Exchange::client(&dq)
        .tls(client_tls(&ca1))
        .connect_once(addr)
        .unwrap();
    active(&cq);
    cq.close();

    ex.reload_tls(&server_tls(&ca2)).unwrap();
    // A new connection sees the new certificate: trusted by ca2 only.
    let (_d2, _c2) = tls_client("new", addr, client_tls(&ca2));
    let d3 = Dispatcher::builder().name("stale").build().unwrap();
    let c3 = Exchange::client(&d3)
        .tls(client_tls(&ca1))
        .connect_once(addr)
        .unwrap();
    let refused = inactive(&c3);
    assert_eq!(
        refused.reason(),
        Some(InactiveReason::UnknownCa),
        "{refused}"
    );
    // The link up before the reload stays up, and carries calls.
    assert_eq!(me.call::<u64, _>(&double, "x", &8u64).unwrap(), 16);
    assert!(
        c1.connections()
            .try_iter()
            .all(|a| a.state() == ConnectionState::Active),
        "the old link went down"
    );

    // A server without TLS has nothing to reload.
    let plain = Exchange::server(&ds)
        .group("plain")
        .listen("127.0.0.1:0")
        .unwrap();
    assert!(matches!(
        plain.reload_tls(&server_tls(&ca2)),
        Err(Error::InvalidArgument(_))
    ));
}

// ----- bad input -----

/// Reads from a raw connection until the server closes it.
fn closed_by_server(s: &mut TcpStream) {
    util::raw::wait_closed(s);
}

#[test]
fn bad_input_closes_only_its_own_connection() {
    let ca = Ca::new("test CA");
    let ds = Dispatcher::builder()
        .name("server")
        .handshake_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let ex = Exchange::server(&ds)
        .tls(server_tls(&ca))
        .listen("127.0.0.1:0")
        .unwrap();
    let addr = ex.local_addr();
    let _double = spawn_u64(&ds, "double", |x| x * 2);
    let (dc, cx) = tls_client("good", addr, client_tls(&ca));
    let me = dc.service("me").open().unwrap();
    let double = await_service(&dc, "double");
    let still_works = |what: &str| {
        let r: u64 = me
            .call(&double, "x", &7u64)
            .unwrap_or_else(|e| panic!("after {what}: {e}"));
        assert_eq!(r, 14, "after {what}");
        assert!(
            cx.connections().try_iter().next().is_none(),
            "after {what}: the good client's link changed"
        );
    };
    let raw = || {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s
    };

    // Garbage instead of a TLS record.
    let mut s = raw();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    closed_by_server(&mut s);
    still_works("garbage");
    wait_stat(&ds, "garbage counted", 1, |s| s.tls_failures);

    // A record header that claims more than a record may hold.
    let mut s = raw();
    s.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff]).unwrap();
    s.write_all(&[0u8; 64]).unwrap();
    closed_by_server(&mut s);
    still_works("an oversized record");
    wait_stat(&ds, "the oversized record counted", 2, |s| s.tls_failures);

    // A truncated record: its header, part of it, then the end.
    let mut s = raw();
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
    s.write_all(&[0x01; 100]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    closed_by_server(&mut s);
    still_works("a truncated record");

    // A truncated record, and then silence: the handshake times out.
    let mut s = raw();
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
    s.write_all(&[0x01; 100]).unwrap();
    closed_by_server(&mut s);
    still_works("a truncated record and silence");

    // A TLS client that stops in the middle of its handshake.
    let mut s = raw();
    let mut tls = rustls::ClientConnection::new(
        Arc::new(
            rustls::ClientConfig::builder_with_provider(ring())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        ),
        rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
    )
    .unwrap();
    tls.write_tls(&mut s).unwrap(); // its ClientHello, and nothing more
    closed_by_server(&mut s);
    still_works("a TLS client that stopped mid-handshake");

    // Garbage inside a TLS session: a record that does not decrypt.
    let mut s = raw();
    let mut tls = rustls::ClientConnection::new(
        Arc::new(
            rustls::ClientConfig::builder_with_provider(ring())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates({
                    let mut r = rustls::RootCertStore::empty();
                    use rustls::pki_types::pem::PemObject;
                    r.add(
                        rustls::pki_types::CertificateDer::from_pem_slice(ca.pem.as_bytes())
                            .unwrap(),
                    )
                    .unwrap();
                    r
                })
                .with_no_client_auth(),
        ),
        rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
    )
    .unwrap();
    while tls.is_handshaking() {
        tls.complete_io(&mut s).unwrap();
    }
    let before = ds.stats().tls_failures;
    s.write_all(&[0x17, 0x03, 0x03, 0x00, 0x20]).unwrap();
    s.write_all(&[0x42; 0x20]).unwrap();
    closed_by_server(&mut s);
    still_works("a record that does not decrypt");
    wait_stat(&ds, "the bad record counted", before + 1, |s| {
        s.tls_failures
    });
    drop(ex);
}

#[test]
fn a_client_that_reconnects_to_the_same_server_keeps_its_certificate_identity() {
    // The client's link dies of silence while the server is stalled; it
    // reconnects with the same TLS configuration (a resumed session where
    // the server allows it, which carries the client's certificate).
    let ca = Ca::new("test CA");
    let ds = Dispatcher::builder().name("server").build().unwrap();
    let ex = Exchange::server(&ds)
        .tls(mutual_tls(&ca, &ca))
        .listen("127.0.0.1:0")
        .unwrap();
    let dc = Dispatcher::builder()
        .name("client")
        .heartbeat(Duration::from_millis(50), Duration::from_millis(300))
        .build()
        .unwrap();
    let cx = Exchange::client(&dc)
        .tls(with_cert(client_tls(&ca), &ca.client("alice")))
        .connect(ex.local_addr(), RETRY)
        .unwrap();
    active(&cx);
    assert_eq!(active(&ex).identity(), Some("alice"));
    let (release, stalled) = crossbeam_channel::bounded::<()>(0);
    netsvc::stall_dispatcher(&ds, stalled).unwrap();
    let down = inactive(&cx);
    assert_eq!(
        down.reason(),
        Some(InactiveReason::HeartbeatTimeout),
        "{down}"
    );
    drop(release);
    active(&cx);
    let up = active(&ex);
    assert_eq!(up.identity(), Some("alice"), "{up}");
    assert_eq!(
        ds.stats().identities.len(),
        1,
        "{:?}",
        ds.stats().identities
    );
}
