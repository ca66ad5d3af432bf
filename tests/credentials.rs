//! Named credentials on an exchange server: who is let in, the identity
//! the link gets, and the permissions (offer, call, subscribe, join) the
//! server holds each client to, over real dispatchers on loopback TCP.

mod util;

use std::io::Write;
use std::net::SocketAddr;

use netsvc::peer_frames::{self, Key};
use netsvc::{
    codes, ClientBuilder, ConnectionAnnouncement, ConnectionState, Credential, Dispatcher, Error,
    Event, Exchange, InactiveReason, Lifetime, ServerBuilder, ServiceStatus,
};
use util::*;

fn server(configure: impl FnOnce(ServerBuilder) -> ServerBuilder) -> (Dispatcher, Exchange) {
    let d = Dispatcher::builder().name("server").build().unwrap();
    let ex = configure(Exchange::server(&d))
        .listen("127.0.0.1:0")
        .unwrap();
    (d, ex)
}

fn client(
    addr: SocketAddr,
    configure: impl FnOnce(ClientBuilder) -> ClientBuilder,
) -> (Dispatcher, Exchange) {
    let d = Dispatcher::builder().name("client").build().unwrap();
    let ex = configure(Exchange::client(&d)).connect_once(addr).unwrap();
    (d, ex)
}

/// The exchange's next connection announcement.
fn next_conn(ex: &Exchange) -> ConnectionAnnouncement {
    ex.connections()
        .recv_timeout(WAIT)
        .expect("a connection announcement")
}

fn active(ex: &Exchange) -> ConnectionAnnouncement {
    let ann = next_conn(ex);
    assert_eq!(ann.state(), ConnectionState::Active, "{ann}");
    ann
}

fn permission_denied(d: &Dispatcher) -> u64 {
    d.stats().permission_denied
}

/// A client and its server, linked with `name`'s credential, the link up
/// on both sides.
fn linked(credential: Credential) -> (Dispatcher, Exchange, Dispatcher, Exchange) {
    let (name, secret) = (credential.name().to_owned(), "k");
    let (ds, sx) = server(|b| b.credential(credential));
    let (dc, cx) = client(sx.local_addr(), |b| b.credential(name, secret));
    active(&cx);
    active(&sx);
    (ds, sx, dc, cx)
}

#[test]
fn a_credential_lets_its_client_in_and_names_the_link() {
    let (ds, sx) = server(|b| {
        b.credential(Credential::new("alice", "s1"))
            .credential(Credential::new("bob", "s2"))
    });
    let _echo = spawn_u64(&ds, "echo", |x| x + 1);
    let (dc, cx) = client(sx.local_addr(), |b| b.credential("bob", "s2"));

    let up = active(&cx);
    assert_eq!(
        up.identity(),
        None,
        "a client names no identity for its server"
    );
    let up = active(&sx);
    assert_eq!(up.identity(), Some("bob"));
    assert!(up.to_string().contains(r#" as "bob""#), "{up}");

    // Services flow as with the shared secret (no list: everything allowed).
    let echo = await_service(&dc, "echo");
    let me = dc.service("me").open().unwrap();
    let r: u64 = me.call_timeout(&echo, "m", &41u64, WAIT).unwrap();
    assert_eq!(r, 42);
    await_service(&ds, "me");
    // (The server has taken in what the link carried: its identity too.)
    assert_eq!(
        ds.stats().identities,
        vec![("bob".to_owned(), dc.process_id())],
        "the link's identity in the server's stats"
    );

    dc.shutdown();
    let down = next_conn(&sx);
    assert_eq!(down.state(), ConnectionState::Inactive);
    assert_eq!(down.identity(), Some("bob"), "{down}");
    assert!(
        ds.stats().identities.is_empty(),
        "a link gone is no identity"
    );
    assert_eq!(ds.stats().auth_failures, 0);
    assert_eq!(permission_denied(&ds), 0);
}

/// A client refused at authentication: Inactive at once (never Active),
/// having learned no service; the detail it was given.
fn refused(addr: SocketAddr, configure: impl FnOnce(ClientBuilder) -> ClientBuilder) -> String {
    let (dc, cx) = client(addr, configure);
    let ann = next_conn(&cx);
    assert_eq!(ann.state(), ConnectionState::Inactive, "{ann}");
    assert_eq!(
        ann.reason(),
        Some(InactiveReason::AuthenticationFailed),
        "{ann}"
    );
    assert!(dc.lookup_service_name("echo").is_empty());
    ann.detail().to_owned()
}

#[test]
fn an_unknown_name_is_refused_exactly_as_a_wrong_secret_is() {
    let (ds, sx) = server(|b| b.credential(Credential::new("alice", "s1")));
    let _echo = spawn_u64(&ds, "echo", |x| x);
    let addr = sx.local_addr();

    // alice's secret under a name the server does not have.
    let unknown = refused(addr, |b| b.credential("mallory", "s1"));
    wait_stat(&ds, "auth_failures", 1, |s| s.auth_failures);
    let wrong = refused(addr, |b| b.credential("alice", "s2"));
    wait_stat(&ds, "auth_failures", 2, |s| s.auth_failures);
    assert_eq!(unknown, wrong, "the refusals tell names apart");
    assert!(
        !unknown.contains("mallory") && !unknown.contains("alice"),
        "{unknown}"
    );
    // The shared secret, which this server does not have, is no way in.
    let shared = refused(addr, |b| b.secret("s1"));
    wait_stat(&ds, "auth_failures", 3, |s| s.auth_failures);
    assert_eq!(shared, wrong);
    assert!(
        sx.connections().recv_timeout(QUIET).is_err(),
        "the server announced a refused client"
    );

    // Nor is a credential a way into a server of the shared secret only.
    let (ds2, sx2) = server(|b| b.secret("s1"));
    let _echo2 = spawn_u64(&ds2, "echo", |x| x);
    let named = refused(sx2.local_addr(), |b| b.credential("alice", "s1"));
    wait_stat(&ds2, "auth_failures", 1, |s| s.auth_failures);
    assert_eq!(named, wrong);
}

#[test]
fn a_relay_cannot_swap_the_credential_name() {
    // Two credentials with one secret: only the name tells them apart, so
    // a relay that rewrote it would lift a client to the other's rights.
    // (Proofs not bound to addresses, as behind a proxy: the name is then
    // all that could refuse the relay.)
    let (ds, sx) = server(|b| {
        b.bind_proofs_to_addresses(false)
            .credential(Credential::new("cred-lo", "k").deny_all())
            .credential(Credential::new("cred-hi", "k"))
    });
    let swapped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = swapped.clone();
    let (proxy_addr, relay) = util::relay::relay(sx.local_addr(), move |chunk| {
        if let Some(at) = chunk.windows(7).position(|w| w == b"cred-lo") {
            chunk[at..at + 7].copy_from_slice(b"cred-hi");
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let (_dc, cx) = client(proxy_addr, |b| b.credential("cred-lo", "k"));
    let ann = next_conn(&cx);
    assert_eq!(ann.state(), ConnectionState::Inactive, "{ann}");
    assert_eq!(ann.reason(), Some(InactiveReason::AuthenticationFailed));
    wait_stat(&ds, "auth_failures", 1, |s| s.auth_failures);
    relay.join().unwrap();
    assert!(
        swapped.load(std::sync::atomic::Ordering::SeqCst),
        "the relay found no name to swap"
    );
    assert!(
        sx.connections().recv_timeout(QUIET).is_err(),
        "the server took the swapped name"
    );
}

#[test]
fn a_service_it_may_not_offer_is_not_taken_in() {
    let (ds, _sx, dc, cx) = linked(
        Credential::new("calc-host", "k")
            .deny_all()
            .offer(&["calc.*"]),
    );
    // In this order on the one link: the refusal is done when calc.add is in.
    let _evil = spawn_u64(&dc, "evil", |x| x);
    let _add = spawn_u64(&dc, "calc.add", |x| x + 1);
    await_service(&ds, "calc.add");
    assert!(
        ds.lookup_service_name("evil").is_empty(),
        "evil was taken in"
    );
    assert_eq!(permission_denied(&ds), 1);
    // A refusal is not a breach: the link stays up.
    assert!(cx.connections().recv_timeout(QUIET).is_err());
    assert_eq!(ds.stats().limits_breached, 0);
}

#[test]
fn a_group_it_may_not_join_is_refused_at_announcement_and_at_join() {
    let (ds, _sx, dc, _cx) = linked(
        Credential::new("workers", "k")
            .deny_all()
            .offer(&["w?"])
            .join(&["pool-?"]),
    );
    let watch = ds.service("watch").audience("").open().unwrap();
    watch.monitor_service_group("pool-2");

    // Announced with a group it may not join: not taken in at all.
    let _w2 = dc.service("w2").group("admins").open().unwrap();
    let w1 = dc.service("w1").group("pool-1").open().unwrap();
    let b1 = await_service(&ds, "w1");
    assert_eq!(b1.groups(), ["pool-1"]);
    assert!(ds.lookup_service_name("w2").is_empty(), "w2 was taken in");
    assert_eq!(permission_denied(&ds), 1);

    // Joined later: the join it may not make is refused, the other taken.
    w1.join_group("admins");
    w1.join_group("pool-2");
    wait_announcement(&watch, "w1", Some("pool-2"), ServiceStatus::Available);
    assert!(ds.lookup_service_group("admins").is_empty());
    assert_eq!(ds.lookup_service_group("pool-1").len(), 1);
    assert_eq!(permission_denied(&ds), 2);
}

#[test]
fn a_call_it_may_not_make_fails_with_permission_denied() {
    let (ds, _sx, dc, _cx) = linked(Credential::new("caller", "k").deny_all().call(&["calc"]));
    let _calc = spawn_u64(&ds, "calc", |x| x * 2);
    let vault = ds.service("vault").open().unwrap();
    let calc = await_service(&dc, "calc");
    let vault_b = await_service(&dc, "vault");
    // (Audience "": it announces nothing, which this credential may not.)
    let me = dc.service("me").audience("").open().unwrap();

    let r: u64 = me.call_timeout(&calc, "m", &21u64, WAIT).unwrap();
    assert_eq!(r, 42);
    let err = me
        .call_timeout::<u64, _>(&vault_b, "m", &1u64, WAIT)
        .unwrap_err();
    assert_eq!(err.code(), codes::PERMISSION_DENIED, "{err}");
    match &err {
        Error::Service(f) => {
            assert_eq!(f.code, 59);
            assert_eq!(f.origin, "vault");
            assert!(f.details.contains("caller"), "{f}");
        }
        other => panic!("expected a service failure, got {other:?}"),
    }
    // Counted before it was answered; the vault never saw it.
    assert_eq!(permission_denied(&ds), 1);
    assert!(vault.try_recv().is_none(), "the request reached the vault");
    // The link is up, the allowed calls go on.
    let r: u64 = me.call_timeout(&calc, "m", &5u64, WAIT).unwrap();
    assert_eq!(r, 10);
    assert_eq!(ds.stats().limits_breached, 0);
}

#[test]
fn a_subscription_it_may_not_hold_is_refused_and_the_subscriber_sees_it() {
    let (ds, _sx, dc, _cx) = linked(Credential::new("reader", "k").subscribe(&["news"]));
    let news = ds.service("news").open().unwrap();
    let stocks = ds.service("stocks").open().unwrap();
    news.publish_report("n.1", &1u64, Lifetime::Forever)
        .unwrap();
    stocks
        .publish_report("s.1", &2u64, Lifetime::Forever)
        .unwrap();
    let stocks_b = await_service(&dc, "stocks");
    await_service(&dc, "news");

    let sub = dc.service("sub").open().unwrap();
    sub.subscribe_reports("news", "*");
    sub.subscribe_reports("stocks", "*");
    // News: Available and its cached report. Stocks: Available (from the
    // subscriber's own dispatcher), then Withdrawn once the server refused.
    let (mut news_report, mut stocks_up, mut stocks_down) = (false, false, false);
    while !(news_report && stocks_down) {
        match next(&sub) {
            Event::Report(r) => {
                assert_eq!(r.publisher().service_name(), "news", "{r:?}");
                assert_eq!(r.subject(), "n.1");
                news_report = true;
            }
            Event::Publisher(p) if p.publisher().service_name() == "stocks" => {
                assert_eq!(p.publisher(), &stocks_b);
                match p.status() {
                    ServiceStatus::Available => stocks_up = true,
                    ServiceStatus::Withdrawn => {
                        assert!(stocks_up, "Withdrawn before Available");
                        stocks_down = true;
                    }
                }
            }
            Event::Publisher(p) => assert_eq!(p.status(), ServiceStatus::Available),
            // (news confirms the subscription; stocks, which refused it, not.)
            Event::Confirmed(c) => assert_eq!(c.publisher().service_name(), "news"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(permission_denied(&ds), 1);
    // The publisher never heard of the subscription; news did.
    let s = wait_for(&news, "the subscription", |e| match e {
        Event::Subscription(s) => Some(s),
        _ => None,
    });
    assert_eq!(s.subscriber().service_name(), "sub");
    assert!(
        stocks.try_recv().is_none(),
        "stocks heard of the subscription"
    );

    // Later reports: stocks' (sent first, on the same link) never arrive.
    stocks.publish_report("s.2", &3u64, Lifetime::None).unwrap();
    news.publish_report("n.2", &4u64, Lifetime::None).unwrap();
    let r = report(&sub);
    assert_eq!((r.publisher().service_name(), r.subject()), ("news", "n.2"));
    assert_eq!(ds.stats().limits_breached, 0);
}

#[test]
fn the_shared_secret_and_a_credential_side_by_side() {
    let (ds, sx) = server(|b| {
        b.secret("shared").credential(
            Credential::new("limited", "k")
                .deny_all()
                .call(&["echo"])
                .subscribe(&["*"]),
        )
    });
    let _echo = spawn_u64(&ds, "echo", |x| x + 1);
    let _private = spawn_u64(&ds, "private", |x| x + 2);
    let addr = sx.local_addr();

    let (da, ca) = client(addr, |b| b.secret("shared"));
    active(&ca);
    assert_eq!(
        active(&sx).identity(),
        None,
        "the shared secret names no one"
    );
    let (db, cb) = client(addr, |b| b.credential("limited", "k"));
    active(&cb);
    assert_eq!(active(&sx).identity(), Some("limited"));

    // The shared secret may do everything: offer, and call anything.
    let _a_svc = spawn_u64(&da, "a-svc", |x| x + 3);
    let a = da.service("a").open().unwrap();
    let private = await_service(&da, "private");
    let r: u64 = a.call_timeout(&private, "m", &1u64, WAIT).unwrap();
    assert_eq!(r, 3);
    await_service(&ds, "a-svc");

    // The credential only what it lists: not offer, not call private nor
    // a-svc (relayed from the other client), but echo.
    let b = db.service("b").open().unwrap(); // (refused: counted once)
    let echo = await_service(&db, "echo");
    let private = await_service(&db, "private");
    let a_svc = await_service(&db, "a-svc");
    for to in [&private, &a_svc] {
        let e = b.call_timeout::<u64, _>(to, "m", &1u64, WAIT).unwrap_err();
        assert_eq!(e.code(), codes::PERMISSION_DENIED, "{e}");
    }
    let r: u64 = b.call_timeout(&echo, "m", &1u64, WAIT).unwrap();
    assert_eq!(r, 2);
    assert!(ds.lookup_service_name("b").is_empty());
    assert!(
        da.lookup_service_name("b").is_empty(),
        "relayed to the other client"
    );
    assert_eq!(permission_denied(&ds), 3);
    assert_eq!(ds.stats().auth_failures, 0);
}

#[test]
fn credentials_that_cannot_work_are_refused_by_the_builders() {
    let d = Dispatcher::new().unwrap();
    let twice = Exchange::server(&d)
        .credential(Credential::new("a", "k1"))
        .credential(Credential::new("a", "k2"))
        .listen("127.0.0.1:0");
    assert!(matches!(twice, Err(Error::InvalidArgument(ref e)) if e.contains("twice")));
    for name in [String::new(), "n".repeat(256)] {
        let r = Exchange::server(&d)
            .credential(Credential::new(name.clone(), "k"))
            .listen("127.0.0.1:0");
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{name:?}");
        let r = Exchange::client(&d)
            .credential(name.clone(), "k")
            .connect_once("127.0.0.1:1");
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{name:?}");
    }
    // Names show, secrets never.
    let b = Exchange::server(&d).credential(Credential::new("alice", "hunter2").call(&["x"]));
    let shown = format!("{b:?}");
    assert!(
        shown.contains("alice") && !shown.contains("hunter2"),
        "{shown}"
    );
    let c = Exchange::client(&d).credential("alice", "hunter2");
    let shown = format!("{c:?}");
    assert!(
        shown.contains("alice") && !shown.contains("hunter2"),
        "{shown}"
    );
}

#[test]
fn only_a_server_may_refuse_a_subscription() {
    // A client (a raw peer) telling the server its subscriber was refused:
    // a frame it had no right to send, dropped and counted.
    let (ds, sx) = server(|b| b);
    let sub = ds.service("sub").open().unwrap();
    let mut raw = raw::handshake(sx.local_addr(), 71);
    let publisher = Key {
        process: raw::uid(71),
        agent: 1,
    };
    raw.write_all(&peer_frames::available("pub", "*", publisher, &[]))
        .unwrap();
    await_service(&ds, "pub");
    sub.subscribe_reports("pub", "*");
    assert_eq!(publisher_status(&sub), ServiceStatus::Available);
    raw.write_all(&peer_frames::subscribe_denied(
        sub.binding().into(),
        publisher,
    ))
    .unwrap();
    wait_stat(&ds, "refused_frames", 1, |s| s.refused_frames);
    assert_quiet(&sub);
    assert_eq!(permission_denied(&ds), 0);
}

fn publisher_status(svc: &netsvc::Service) -> ServiceStatus {
    publisher(svc).status()
}

#[test]
fn a_cast_it_may_not_make_is_dropped_and_counted() {
    use netsvc::{Context, Endpoint, RpcClient, RpcFailure, RpcServer, Target};
    // A server offering an RPC topic, and two clients: one whose
    // credential allows casting to it, one whose credential allows nothing.
    let (ds, sx) = server(|b| {
        b.credential(Credential::new("caster", "k1").call(&["rpc:*:vault:*"]))
            .credential(Credential::new("mute", "k2").deny_all())
    });
    let (tx, rx) = crossbeam_channel::unbounded();
    let _vault = RpcServer::new(&ds, Target::new("vault").server("s1"))
        .endpoint(Endpoint::new().method("poke", move |_c: &Context, x: u64| {
            tx.send(x)
                .map_err(|e| RpcFailure::new("Closed", e.to_string()))
        }))
        .start()
        .unwrap();
    let name = "rpc:openstack:vault:s1";
    let (allowed, _ax) = client(sx.local_addr(), |b| b.credential("caster", "k1"));
    let (mute, _mx) = client(sx.local_addr(), |b| b.credential("mute", "k2"));
    await_service(&allowed, name);
    await_service(&mute, name);

    // A cast is done once handed on: the refusal is the server's to count.
    let to_vault = |d: &Dispatcher| RpcClient::new(d, Target::new("vault"));
    to_vault(&mute)
        .cast(&Context::new(), "poke", &1u64)
        .unwrap();
    wait_stat(&ds, "permission_denied", 1, |s| s.permission_denied);
    to_vault(&allowed)
        .cast(&Context::new(), "poke", &2u64)
        .unwrap();
    assert_eq!(
        rx.recv_timeout(WAIT).unwrap(),
        2,
        "the allowed cast arrives"
    );
    assert!(rx.recv_timeout(QUIET).is_err(), "the refused cast arrived");
    assert_eq!(permission_denied(&ds), 1);
}
