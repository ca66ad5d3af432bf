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
