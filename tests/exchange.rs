//! Exchange semantics: several Dispatchers in one test process, each acting
//! as a separate "process", linked over real loopback TCP.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netsvc::*;
use util::*;

/// Reconnect delay of the clients in these tests.
const RETRY: Duration = Duration::from_millis(200);

fn dispatcher(name: &str) -> Dispatcher {
    Dispatcher::builder().name(name).build().unwrap()
}

fn listen(d: &Dispatcher, group: &str) -> Exchange {
    Exchange::server(d)
        .group(group)
        .listen("127.0.0.1:0")
        .unwrap()
}

/// The next connection announcement of `ex`, or panic after WAIT.
fn connection(ex: &Exchange) -> ConnectionAnnouncement {
    ex.connections()
        .recv_timeout(WAIT)
        .expect("no connection announcement within WAIT")
}

/// The next announcement must be Active, from `remote`.
fn expect_active(ex: &Exchange, remote: &Dispatcher) -> ConnectionAnnouncement {
    let a = connection(ex);
    assert_eq!(a.state(), ConnectionState::Active, "{a:?}");
    assert_eq!(a.remote_process(), Some(&remote.process_id()), "{a:?}");
    a
}

/// Skips Inactive announcements (failed attempts) until an Active one,
/// which must come from `remote`.
fn wait_active(ex: &Exchange, remote: &Dispatcher) -> ConnectionAnnouncement {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let a = ex
            .connections()
            .recv_timeout(left)
            .expect("no Active announcement within WAIT");
        if a.state() == ConnectionState::Active {
            assert_eq!(a.remote_process(), Some(&remote.process_id()), "{a:?}");
            return a;
        }
        assert_eq!(a.remote_process(), None, "{a:?}");
    }
}

/// Asserts that no connection announcement arrives within QUIET.
fn assert_no_connection(ex: &Exchange) {
    if let Ok(a) = ex.connections().recv_timeout(QUIET) {
        panic!("unexpected connection announcement {a:?}");
    }
}

/// Connects a client of `dc` to the server `sx` of `ds` and waits for
/// Active on both sides.
fn connect(dc: &Dispatcher, ds: &Dispatcher, sx: &Exchange, group: &str) -> Exchange {
    let cx = Exchange::client(dc)
        .group(group)
        .connect(sx.local_addr(), RETRY)
        .unwrap();
    expect_active(&cx, ds);
    expect_active(sx, dc);
    cx
}

/// A spawned service of audience "*" answering every request with twice
/// its u64 argument.
fn doubler(d: &Dispatcher, name: &str) -> ServiceHandle {
    d.service(name)
        .spawn(|_svc, ev| {
            if let Event::Request(r) = ev {
                let x: u64 = r.decode().unwrap();
                let _ = r.reply(&(x * 2));
            }
        })
        .unwrap()
}

/// Calls the doubler `name` (in another process) from `d`: when the reply
/// is back, `d` has taken in everything the path to that service sent
/// before it (frames are ordered on each link).
fn sync(d: &Dispatcher, name: &str) {
    let target = await_service(d, name);
    assert_ne!(target.process_identity(), &d.process_id());
    let caller = d.service("sync-caller").audience("").open().unwrap();
    let r: u64 = caller
        .call_timeout(&target, "double", &21u64, WAIT)
        .unwrap();
    assert_eq!(r, 42);
}

fn service_failure(e: Error) -> ServiceFailure {
    match e {
        Error::Service(f) => f,
        other => panic!("expected Error::Service, got {other:?}"),
    }
}

// ----- handshake -----

#[test]
fn handshake_announces_active_on_both_sides_and_exchanges_tables() {
    let ds = dispatcher("server");
    let srv = ds.service("srv").open().unwrap();
    let sx = listen(&ds, "");

    let dc = dispatcher("client");
    let cli = dc.service("cli").open().unwrap();
    let cx = Exchange::client(&dc)
        .connect(sx.local_addr(), RETRY)
        .unwrap();
    let on_client = expect_active(&cx, &ds);
    assert_eq!(on_client.remote_address(), sx.local_addr());
    let on_server = expect_active(&sx, &dc);
    // The server sees the client's own address, as the client's exchange reports it.
    assert_eq!(on_server.remote_address(), cx.local_addr());

    // The server's service, in the client: monitor, then lookup.
    let mon = dc.service("mon").audience("").open().unwrap();
    mon.monitor_service_name("srv");
    let a = wait_announcement(&mon, "srv", None, ServiceStatus::Available);
    assert_eq!(a.binding(), srv.binding());
    assert_eq!(a.binding().process_identity(), &ds.process_id());
    assert_eq!(a.binding().service_audience(), "*");
    assert_eq!(dc.lookup_service_name("srv"), vec![srv.binding().clone()]);

    // The client's service, in the server.
    let smon = ds.service("smon").audience("").open().unwrap();
    smon.monitor_service_name("cli");
    let a = wait_announcement(&smon, "cli", None, ServiceStatus::Available);
    assert_eq!(a.binding(), cli.binding());
    assert_eq!(a.binding().process_identity(), &dc.process_id());
    assert_eq!(ds.lookup_service_name("cli"), vec![cli.binding().clone()]);

    // A service opened after the handshake crosses too.
    let late = ds.service("late").open().unwrap();
    mon.monitor_service_name("late");
    let a = wait_announcement(&mon, "late", None, ServiceStatus::Available);
    assert_eq!(a.binding(), late.binding());
    // ...and so does its withdrawal.
    drop(late);
    let a = wait_announcement(&mon, "late", None, ServiceStatus::Withdrawn);
    assert_eq!(a.binding().process_identity(), &ds.process_id());
    assert!(dc.lookup_service_name("late").is_empty());
}

// ----- relay -----

#[test]
fn server_relays_services_calls_and_reports_between_clients() {
    let ds = dispatcher("server");
    let sx = listen(&ds, "");
    let da = dispatcher("a");
    let _ax = connect(&da, &ds, &sx, "");
    let db = dispatcher("b");
    let _bx = connect(&db, &ds, &sx, "");

    // A service in A is visible in B and answers B's call.
    let calc = doubler(&da, "calc");
    let seen = await_service(&db, "calc");
    assert_eq!(&seen, calc.binding());
    assert_eq!(seen.process_identity(), &da.process_id());
    let caller = db.service("caller").open().unwrap();
    let r: u64 = caller.call_timeout(&seen, "double", &21u64, WAIT).unwrap();
    assert_eq!(r, 42);

    // Reports: a subscription by name in B reaches the publisher in A.
    let news = da.service("pub").open().unwrap();
    let pub_in_b = await_service(&db, "pub");
    assert_eq!(&pub_in_b, news.binding());
    let sub = db.service("sub").open().unwrap();
    sub.subscribe_reports("pub", "news.*");
    let p = publisher_requested(&news);
    assert_eq!(p.subscriber(), sub.binding());
    assert_eq!(p.subscriber().process_identity(), &db.process_id());
    assert_eq!(p.subject(), "news.*");
    let pa = publisher(&sub);
    assert_eq!(pa.status(), ServiceStatus::Available);
    assert_eq!(pa.publisher(), news.binding());

    news.publish_report("news.today", &7u64, Lifetime::None)
        .unwrap();
    news.publish_report("other.today", &8u64, Lifetime::None)
        .unwrap();
    news.publish_report("news.tomorrow", &9u64, Lifetime::None)
        .unwrap();
    let r = report(&sub);
    assert_eq!(r.publisher(), news.binding());
    assert_eq!(r.subject(), "news.today");
    assert_eq!(r.decode::<u64>().unwrap(), 7);
    let r = report(&sub);
    assert_eq!(r.subject(), "news.tomorrow");
    assert_eq!(r.decode::<u64>().unwrap(), 9);

    // Unsubscribing in B withdraws the subscription in A.
    sub.unsubscribe_reports("pub", "news.*");
    let s = subscription(&news);
    assert_eq!(s.status(), SubscriptionStatus::Withdrawn);
    assert_eq!(s.subscriber(), sub.binding());
    assert_eq!(s.subject(), "news.*");
    let pa = publisher(&sub);
    assert_eq!(pa.status(), ServiceStatus::Withdrawn);
    assert_eq!(pa.publisher(), news.binding());
    // Nothing more reaches B.
    news.publish_report("news.later", &10u64, Lifetime::None)
        .unwrap();
    assert_quiet(&sub);
    assert_quiet(&news);
}

/// The next event of a publisher: a Subscription Requested.
fn publisher_requested(publisher: &Service) -> SubscriptionAnnouncement {
    let s = subscription(publisher);
    assert_eq!(s.status(), SubscriptionStatus::Requested, "{s:?}");
    s
}

// ----- audience -----

const AUDIENCES: [(&str, &str); 4] = [
    ("star", "*"),
    ("local", ""),
    ("plant", "plant"),
    ("other", "other"),
];

/// Opens `<owner>-star`, `<owner>-local`, `<owner>-plant`, `<owner>-other`
/// with the audiences "*", "", "plant", "other".
fn open_audiences(d: &Dispatcher, owner: &str) -> Vec<Service> {
    AUDIENCES
        .iter()
        .map(|(suffix, audience)| {
            d.service(&format!("{owner}-{suffix}"))
                .audience(audience)
                .open()
                .unwrap()
        })
        .collect()
}

/// A server and two clients of exchange group `group`, each with the four
/// audiences: checks exactly which services each process sees of the others.
fn check_audiences(group: &str, visible: &[&str]) {
    let ds = dispatcher("server");
    let sx = listen(&ds, group);
    let _sp = doubler(&ds, "ping-server");
    let s_services = open_audiences(&ds, "server");

    let da = dispatcher("a");
    let _ap = doubler(&da, "ping-a");
    let a_services = open_audiences(&da, "a");
    let _ax = connect(&da, &ds, &sx, group);

    let db = dispatcher("b");
    let _bx = connect(&db, &ds, &sx, group);
    // B's services appear after its handshake: they cross as announcements.
    let _bp = doubler(&db, "ping-b");
    let b_services = open_audiences(&db, "b");

    // Each side has taken in everything the other sent before a reply.
    sync(&da, "ping-server");
    sync(&da, "ping-b");
    sync(&db, "ping-server");
    sync(&db, "ping-a");
    sync(&ds, "ping-a");
    sync(&ds, "ping-b");

    let owners: [(&str, &Dispatcher, &Vec<Service>); 3] = [
        ("server", &ds, &s_services),
        ("a", &da, &a_services),
        ("b", &db, &b_services),
    ];
    for (observer_name, observer, _) in owners.iter() {
        for (owner_name, owner, services) in owners.iter() {
            for ((suffix, audience), svc) in AUDIENCES.iter().zip(services.iter()) {
                let name = format!("{owner_name}-{suffix}");
                let found = observer.lookup_service_name(&name);
                let expected = observer_name == owner_name || visible.contains(suffix);
                if expected {
                    assert_eq!(
                        found,
                        vec![svc.binding().clone()],
                        "group {group:?}: {name} (audience {audience:?}) should be visible in {observer_name}"
                    );
                    assert_eq!(found[0].service_audience(), *audience);
                    assert_eq!(found[0].process_identity(), &owner.process_id());
                } else {
                    assert!(
                        found.is_empty(),
                        "group {group:?}: {name} (audience {audience:?}) must not be visible in {observer_name}: {found:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn audience_through_an_exchange_of_group_plant() {
    check_audiences("plant", &["star", "plant"]);
}

#[test]
fn audience_through_an_exchange_without_group() {
    check_audiences("", &["star"]);
}

// ----- groups -----

#[test]
fn client_of_another_group_is_refused() {
    let ds = dispatcher("server");
    let sx = listen(&ds, "plant");
    let _srv = ds.service("srv").open().unwrap();

    for client_group in ["other", ""] {
        let dc = dispatcher("client");
        let cx = Exchange::client(&dc)
            .group(client_group)
            .connect_once(sx.local_addr())
            .unwrap();
        let a = connection(&cx);
        assert_eq!(a.state(), ConnectionState::Inactive, "{a:?}");
        assert_eq!(a.remote_process(), None);
        assert_eq!(a.remote_address(), sx.local_addr());
        assert_no_connection(&cx);
        assert!(dc.lookup_service_name("srv").is_empty());
        assert_eq!(dc.stats().reconnects, 0);
    }
    // The server never had an active link.
    assert_no_connection(&sx);

    // The same server does accept a client of its own group.
    let dc = dispatcher("client");
    let _cx = connect(&dc, &ds, &sx, "plant");
    assert_eq!(
        await_service(&dc, "srv").process_identity(),
        &ds.process_id()
    );
}

#[test]
fn group_membership_crosses_the_exchange_and_the_relay() {
    let ds = dispatcher("server");
    // A builder group, opened before anyone connects: crosses in the table.
    let crewman = ds.service("crewman").group("crew").open().unwrap();
    let sx = listen(&ds, "");
    let da = dispatcher("a");
    let _ax = connect(&da, &ds, &sx, "");
    let db = dispatcher("b");
    let _bx = connect(&db, &ds, &sx, "");

    let mon_s = ds.service("mon-s").audience("").open().unwrap();
    let mon_a = da.service("mon-a").audience("").open().unwrap();
    let mon_b = db.service("mon-b").audience("").open().unwrap();

    // Builder group of the server, seen in A.
    mon_a.monitor_service_group("crew");
    let a = wait_announcement(&mon_a, "crewman", Some("crew"), ServiceStatus::Available);
    assert_eq!(a.binding(), crewman.binding());
    assert_eq!(a.binding().groups(), ["crew".to_string()]);
    assert_eq!(
        da.lookup_service_group("crew"),
        vec![crewman.binding().clone()]
    );

    // Builder group of client A, opened after the handshake: seen in the
    // server and, through the relay, in B.
    mon_s.monitor_service_group("crew");
    wait_announcement(&mon_s, "crewman", Some("crew"), ServiceStatus::Available);
    mon_b.monitor_service_group("crew");
    wait_announcement(&mon_b, "crewman", Some("crew"), ServiceStatus::Available);
    let crew_a = da.service("crew-a").group("crew").open().unwrap();
    for (mon, d) in [(&mon_s, &ds), (&mon_b, &db)] {
        let a = wait_announcement(mon, "crew-a", Some("crew"), ServiceStatus::Available);
        assert_eq!(a.binding(), crew_a.binding());
        assert_eq!(a.binding().groups(), ["crew".to_string()]);
        let mut members = d.lookup_service_group("crew");
        members.sort_by_key(|b| b.service_name().to_owned());
        assert_eq!(
            members,
            vec![crew_a.binding().clone(), crewman.binding().clone()]
        );
    }

    // join_group / leave_group in A: seen by group monitors in the server and in B.
    let worker = da.service("worker").open().unwrap();
    mon_s.monitor_service_group("team");
    mon_b.monitor_service_group("team");
    await_service(&db, "worker");
    worker.join_group("team");
    for (mon, d) in [(&mon_s, &ds), (&mon_b, &db)] {
        let a = wait_announcement(mon, "worker", Some("team"), ServiceStatus::Available);
        assert_eq!(a.binding(), worker.binding());
        assert_eq!(a.binding().groups(), ["team".to_string()]);
        assert_eq!(
            d.lookup_service_group("team"),
            vec![worker.binding().clone()]
        );
    }
    worker.leave_group("team");
    for (mon, d) in [(&mon_s, &ds), (&mon_b, &db)] {
        let a = wait_announcement(mon, "worker", Some("team"), ServiceStatus::Withdrawn);
        assert_eq!(a.binding(), worker.binding());
        assert!(d.lookup_service_group("team").is_empty());
    }

    // And the other way: a server service joins, client A's monitor sees it.
    let boss = ds.service("boss").open().unwrap();
    mon_a.monitor_service_group("team");
    await_service(&da, "boss");
    boss.join_group("team");
    let a = wait_announcement(&mon_a, "boss", Some("team"), ServiceStatus::Available);
    assert_eq!(a.binding(), boss.binding());
    boss.leave_group("team");
    let a = wait_announcement(&mon_a, "boss", Some("team"), ServiceStatus::Withdrawn);
    assert_eq!(a.binding(), boss.binding());
    assert!(da.lookup_service_group("team").is_empty());
}

// ----- one exchange per group per dispatcher -----

#[test]
fn second_exchange_of_the_same_group_is_invalid() {
    let d = dispatcher("d");
    let _sx = listen(&d, "");
    let other = dispatcher("other");
    let ox = listen(&other, "x");
    let oy = listen(&other, "plant");

    assert!(matches!(
        Exchange::server(&d).listen("127.0.0.1:0"),
        Err(Error::InvalidTarget(_))
    ));
    assert!(matches!(
        Exchange::client(&d).connect(ox.local_addr(), RETRY),
        Err(Error::InvalidTarget(_))
    ));
    assert!(matches!(
        Exchange::client(&d).connect_once(ox.local_addr()),
        Err(Error::InvalidTarget(_))
    ));

    // Another group is another exchange; then that group is taken too.
    let _px = listen(&d, "plant");
    assert!(matches!(
        Exchange::server(&d).group("plant").listen("127.0.0.1:0"),
        Err(Error::InvalidTarget(_))
    ));
    assert!(matches!(
        Exchange::client(&d)
            .group("plant")
            .connect_once(oy.local_addr()),
        Err(Error::InvalidTarget(_))
    ));
    let cx = Exchange::client(&d)
        .group("x")
        .connect(ox.local_addr(), RETRY)
        .unwrap();
    expect_active(&cx, &other);
    assert!(matches!(
        Exchange::client(&d)
            .group("x")
            .connect(ox.local_addr(), RETRY),
        Err(Error::InvalidTarget(_))
    ));
    assert!(matches!(
        Exchange::server(&d).group("x").listen("127.0.0.1:0"),
        Err(Error::InvalidTarget(_))
    ));
    // The refused attempts made no connection.
    expect_active(&ox, &d);
    assert_no_connection(&ox);
    assert_no_connection(&oy);
    assert_no_connection(&cx);
}

// ----- link loss -----

/// A client calls a pulled service of the server that holds the request;
/// `lose` takes the link down. The call fails promptly, the monitor sees
/// the group withdrawn then the service, the client sees Inactive.
fn check_link_loss(lose: impl FnOnce(&Dispatcher, &Exchange)) {
    let ds = dispatcher("server");
    let sx = listen(&ds, "");
    let holder = ds.service("holder").group("g").open().unwrap();
    let dc = dispatcher("client");
    let cx = connect(&dc, &ds, &sx, "");

    let me = dc.service("me").audience("").open().unwrap();
    me.monitor_service_name("holder");
    me.monitor_service_group("g");
    let a = wait_announcement(&me, "holder", None, ServiceStatus::Available);
    assert_eq!(a.binding(), holder.binding());
    let a = wait_announcement(&me, "holder", Some("g"), ServiceStatus::Available);
    assert_eq!(a.binding(), holder.binding());

    let start = Instant::now();
    let pending = me
        .request_timeout::<u64, _>(holder.binding(), "hold", &1u64, Duration::from_secs(30))
        .unwrap();
    let held = request(&holder);
    assert_eq!(held.method(), "hold");
    assert_eq!(held.sender(), me.binding());

    lose(&ds, &sx);

    let outcome = within("the pending call", move || pending.wait());
    assert!(
        matches!(outcome, Err(Error::ServiceUnavailable(_))),
        "{outcome:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));

    // Group withdrawn first, then the service; nothing else.
    let a = announcement(&me);
    assert_eq!(
        (a.binding(), a.group(), a.status()),
        (holder.binding(), Some("g"), ServiceStatus::Withdrawn)
    );
    let a = announcement(&me);
    assert_eq!(
        (a.binding(), a.group(), a.status()),
        (holder.binding(), None, ServiceStatus::Withdrawn)
    );
    assert_quiet(&me);
    assert!(dc.lookup_service_name("holder").is_empty());
    assert!(dc.lookup_service_group("g").is_empty());

    let a = connection(&cx);
    assert_eq!(a.state(), ConnectionState::Inactive, "{a:?}");
    assert_eq!(a.remote_process(), Some(&ds.process_id()));
    drop(held);
}

#[test]
fn server_shutdown_fails_pending_call_and_withdraws_its_services() {
    check_link_loss(|ds, _sx| ds.shutdown());
}

#[test]
fn server_exchange_close_fails_pending_call_and_withdraws_its_services() {
    check_link_loss(|_ds, sx| {
        sx.close();
        let a = connection(sx);
        assert_eq!(a.state(), ConnectionState::Inactive, "{a:?}");
    });
}

// ----- reconnect -----

#[test]
fn client_reconnects_to_a_new_server_on_the_same_port() {
    let ds1 = dispatcher("server-1");
    let sx1 = listen(&ds1, "");
    let addr = sx1.local_addr();
    let pub1 = ds1.service("pub").open().unwrap();
    pub1.publish_report("state", &1u64, Lifetime::Forever)
        .unwrap();
    let srv1 = ds1.service("srv").open().unwrap();

    let dc = dispatcher("client");
    let cx = connect(&dc, &ds1, &sx1, "");
    assert_eq!(dc.stats().reconnects, 0);

    let me = dc.service("me").open().unwrap();
    me.monitor_service_name("srv");
    let a = wait_announcement(&me, "srv", None, ServiceStatus::Available);
    assert_eq!(a.binding(), srv1.binding());
    me.subscribe_reports("pub", "state*");
    let p = publisher(&me);
    assert_eq!(
        (p.publisher(), p.status()),
        (pub1.binding(), ServiceStatus::Available)
    );
    let r = report(&me);
    assert_eq!(r.publisher(), pub1.binding());
    assert_eq!(r.decode::<u64>().unwrap(), 1);

    // The server goes.
    ds1.shutdown();
    let a = connection(&cx);
    assert_eq!(a.state(), ConnectionState::Inactive);
    assert_eq!(a.remote_process(), Some(&ds1.process_id()));
    let mut publisher_gone = false;
    let mut srv_gone = false;
    while !(publisher_gone && srv_gone) {
        match next(&me) {
            Event::Publisher(p) => {
                assert_eq!(
                    (p.publisher(), p.status(), publisher_gone),
                    (pub1.binding(), ServiceStatus::Withdrawn, false)
                );
                publisher_gone = true;
            }
            Event::Announcement(a) => {
                assert_eq!(
                    (a.binding(), a.group(), a.status(), srv_gone),
                    (srv1.binding(), None, ServiceStatus::Withdrawn, false)
                );
                srv_gone = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    // A new server on the same port, with a publisher of the same name.
    let ds2 = dispatcher("server-2");
    let pub2 = ds2.service("pub").open().unwrap();
    pub2.publish_report("state", &2u64, Lifetime::Forever)
        .unwrap();
    let srv2 = ds2.service("srv").open().unwrap();
    let sx2 = Exchange::server(&ds2).listen(addr).unwrap();
    assert_eq!(sx2.local_addr(), addr);

    wait_active(&cx, &ds2);
    expect_active(&sx2, &dc);
    // The new services, and the subscription by name re-activated without user code.
    let mut publisher_back = false;
    let mut report_back = false;
    let mut srv_back = false;
    while !(publisher_back && report_back && srv_back) {
        match next(&me) {
            Event::Publisher(p) => {
                assert_eq!(
                    (p.publisher(), p.status(), publisher_back),
                    (pub2.binding(), ServiceStatus::Available, false)
                );
                publisher_back = true;
            }
            Event::Report(r) => {
                assert!(publisher_back, "report before its publisher");
                assert_eq!((r.publisher(), r.subject()), (pub2.binding(), "state"));
                assert_eq!(r.decode::<u64>().unwrap(), 2);
                assert!(!report_back);
                report_back = true;
            }
            Event::Announcement(a) => {
                assert_eq!(
                    (a.binding(), a.group(), a.status(), srv_back),
                    (srv2.binding(), None, ServiceStatus::Available, false)
                );
                srv_back = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let s = subscription(&pub2);
    assert_eq!(
        (s.subscriber(), s.subject(), s.status()),
        (me.binding(), "state*", SubscriptionStatus::Requested)
    );
    // Live reports flow again.
    pub2.publish_report("state", &3u64, Lifetime::Forever)
        .unwrap();
    let r = report(&me);
    assert_eq!(r.decode::<u64>().unwrap(), 3);
    assert!(dc.stats().reconnects > 0);
}

#[test]
fn client_exchange_close_stops_reconnecting() {
    let ds1 = dispatcher("server-1");
    let sx1 = listen(&ds1, "");
    let addr = sx1.local_addr();
    let _srv1 = ds1.service("srv").open().unwrap();
    let dc = dispatcher("client");
    let cx = connect(&dc, &ds1, &sx1, "");
    assert_eq!(
        await_service(&dc, "srv").process_identity(),
        &ds1.process_id()
    );
    // A second client that does reconnect, to show the new server is reachable.
    let dk = dispatcher("control");
    let kx = connect(&dk, &ds1, &sx1, "");
    let cli = dc.service("cli").open().unwrap();
    let mon = ds1.service("mon").audience("").open().unwrap();
    mon.monitor_service_name("cli");
    wait_announcement(&mon, "cli", None, ServiceStatus::Available);

    cx.close();
    let a = connection(&cx);
    assert_eq!(a.state(), ConnectionState::Inactive);
    assert_eq!(a.remote_process(), Some(&ds1.process_id()));
    // The server sees the link go, and the client's service with it.
    let a = connection(&sx1);
    assert_eq!(a.state(), ConnectionState::Inactive);
    assert_eq!(a.remote_process(), Some(&dc.process_id()));
    let a = wait_announcement(&mon, "cli", None, ServiceStatus::Withdrawn);
    assert_eq!(a.binding(), cli.binding());
    cx.close(); // idempotent
    assert!(dc.lookup_service_name("srv").is_empty());

    ds1.shutdown();
    let a = connection(&kx);
    assert_eq!(a.state(), ConnectionState::Inactive);
    let ds2 = dispatcher("server-2");
    let _srv2 = ds2.service("srv").open().unwrap();
    let sx2 = Exchange::server(&ds2).listen(addr).unwrap();
    wait_active(&kx, &ds2);
    expect_active(&sx2, &dk);
    assert_eq!(
        await_service(&dk, "srv").process_identity(),
        &ds2.process_id()
    );
    // The closed client neither tried nor came back.
    assert_no_connection(&cx);
    assert_no_connection(&sx2);
    assert!(dc.lookup_service_name("srv").is_empty());
}

#[test]
fn connect_once_to_a_closed_port_reports_one_inactive() {
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dc = dispatcher("client");
    let cx = Exchange::client(&dc).connect_once(port).unwrap();
    let a = connection(&cx);
    assert_eq!(a.state(), ConnectionState::Inactive);
    assert_eq!(a.remote_process(), None);
    assert_eq!(a.remote_address(), port);
    assert_no_connection(&cx);
    assert_eq!(dc.stats().reconnects, 0);
}

// ----- authorise -----

#[test]
fn server_refusing_every_peer_never_lets_a_client_in() {
    let ds = dispatcher("server");
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let sx = Exchange::server(&ds)
        .authorise(move |_peer: &SocketAddr| {
            counter.fetch_add(1, Ordering::SeqCst);
            false
        })
        .listen("127.0.0.1:0")
        .unwrap();
    let _srv = ds.service("srv").open().unwrap();
    let dc = dispatcher("client");
    let cx = Exchange::client(&dc)
        .connect(sx.local_addr(), Duration::from_millis(100))
        .unwrap();
    // Two attempts, each refused.
    for _ in 0..2 {
        let a = connection(&cx);
        assert_eq!(a.state(), ConnectionState::Inactive, "{a:?}");
        assert_eq!(a.remote_process(), None);
    }
    assert!(asked.load(Ordering::SeqCst) >= 1);
    cx.close();
    // Attempts announced before the close may still be queued; then nothing.
    let deadline = Instant::now() + WAIT;
    while let Ok(a) = cx.connections().recv_timeout(QUIET) {
        assert_eq!(a.state(), ConnectionState::Inactive, "{a:?}");
        assert!(
            Instant::now() < deadline,
            "the closed client goes on trying"
        );
    }
    assert_no_connection(&sx);
    assert!(dc.lookup_service_name("srv").is_empty());
}

#[test]
fn server_accepting_loopback_lets_a_client_in() {
    let ds = dispatcher("server");
    let peers = Arc::new(Mutex::new(Vec::new()));
    let seen = peers.clone();
    let sx = Exchange::server(&ds)
        .authorise(move |peer: &SocketAddr| {
            seen.lock().unwrap().push(*peer);
            peer.ip().is_loopback()
        })
        .listen("127.0.0.1:0")
        .unwrap();
    let srv = doubler(&ds, "srv");
    let dc = dispatcher("client");
    let cx = connect(&dc, &ds, &sx, "");
    assert_eq!(*peers.lock().unwrap(), vec![cx.local_addr()]);
    let found = await_service(&dc, "srv");
    assert_eq!(&found, srv.binding());
    let me = dc.service("me").open().unwrap();
    let r: u64 = me.call_timeout(&found, "double", &5u64, WAIT).unwrap();
    assert_eq!(r, 10);
}

// ----- forward -----

#[test]
fn forward_across_processes_reaches_the_caller() {
    let ds = dispatcher("server");
    let sx = listen(&ds, "");
    let d1 = dispatcher("client-1");
    let _x1 = connect(&d1, &ds, &sx, "");
    let d2 = dispatcher("client-2");
    let _x2 = connect(&d2, &ds, &sx, "");

    // B in client 2 answers with what it saw.
    let b = d2
        .service("b")
        .spawn(|_svc, ev| {
            if let Event::Request(r) = ev {
                let x: u64 = r.decode().unwrap();
                let seen = (
                    r.method().to_owned(),
                    r.sender().service_name().to_owned(),
                    r.sender().process_identity().uid(),
                    *r.conversation_id(),
                    x + 1,
                );
                let _ = r.reply(&seen);
            }
        })
        .unwrap();
    // A in client 1 forwards everything to B.
    let b_in_1 = await_service(&d1, "b");
    assert_eq!(&b_in_1, b.binding());
    let a = d1
        .service("a")
        .spawn(move |_svc, ev| {
            if let Event::Request(r) = ev {
                r.forward(&b_in_1, Some("answer")).unwrap();
            }
        })
        .unwrap();

    let caller = ds.service("caller").open().unwrap();
    let a_in_s = await_service(&ds, "a");
    assert_eq!(&a_in_s, a.binding());
    let pending = caller
        .request_timeout::<(String, String, u64, ConversationId, u64), _>(
            &a_in_s, "ask", &41u64, WAIT,
        )
        .unwrap();
    let conv = *pending.conversation_id();
    let (method, sender, sender_process, seen_conv, value) =
        within("the forwarded call", move || pending.wait()).unwrap();
    assert_eq!(method, "answer");
    assert_eq!(sender, "caller");
    assert_eq!(sender_process, ds.process_id().uid());
    assert_eq!(seen_conv, conv);
    assert_eq!(value, 42);
}

// ----- failure codes -----

#[test]
fn request_failures_cross_with_their_codes() {
    let ds = dispatcher("server");
    let sx = listen(&ds, "");
    let da = dispatcher("a");
    let _ax = connect(&da, &ds, &sx, "");
    let db = dispatcher("b");
    let _bx = connect(&db, &ds, &sx, "");

    let _failer = da
        .service("failer")
        .spawn(|_svc, ev| {
            if let Event::Request(r) = ev {
                r.fail(61, "x").unwrap();
            }
        })
        .unwrap();
    let _dropper = da
        .service("dropper")
        .spawn(|_svc, ev| {
            if let Event::Request(r) = ev {
                drop(r);
            }
        })
        .unwrap();
    let _methods = da
        .service("methods")
        .serve(Methods::new().method("known", |_r: &Request, x: u64| Ok(x + 1)))
        .unwrap();

    // Callers in the server (one hop) and in client B (through the relay).
    for d in [&ds, &db] {
        let failer = await_service(d, "failer");
        let dropper = await_service(d, "dropper");
        let methods = await_service(d, "methods");
        let caller = d.service("caller").open().unwrap();

        let err = caller
            .call_timeout::<u64, _>(&failer, "m", &1u64, WAIT)
            .unwrap_err();
        assert_eq!(err.code(), 61);
        let f = service_failure(err);
        assert_eq!(
            (f.code, f.description.as_str(), f.origin.as_str()),
            (61, "x", "failer")
        );

        let err = caller
            .call_timeout::<u64, _>(&dropper, "m", &1u64, WAIT)
            .unwrap_err();
        assert_eq!(err.code(), codes::RESPONSE_ABORTED);
        let f = service_failure(err);
        assert_eq!((f.code, f.origin.as_str()), (58, "dropper"));

        let err = caller
            .call_timeout::<u64, _>(&methods, "unknown", &1u64, WAIT)
            .unwrap_err();
        assert_eq!(err.code(), codes::METHOD_UNAVAILABLE);
        let f = service_failure(err);
        assert_eq!((f.code, f.origin.as_str()), (55, "methods"));
        assert!(f.details.contains("unknown"), "{f:?}");

        let r: u64 = caller
            .call_timeout(&methods, "known", &41u64, WAIT)
            .unwrap();
        assert_eq!(r, 42);
    }
}

// ----- slow consumer -----

/// The length of the long service names that fill the slow consumer's table.
const BULK_NAME: usize = 4096;

fn bulk_name(i: usize) -> String {
    format!("bulk-{i:06}-{}", "x".repeat(BULK_NAME))
}

/// The handshake frame of raw peer 7 (uid `raw::uid(7)`), label "raw", group `group`.
fn raw_hello(group: &str) -> Vec<u8> {
    raw::frame(&raw::hello_body(raw::VERSION, 7, "raw", group))
}

#[test]
fn slow_consumer_is_disconnected_and_others_keep_working() {
    let ds = Dispatcher::builder()
        .name("server")
        .max_outbound_buffer(64 * 1024)
        // Names of 4 KB, to fill the buffer with few services.
        .max_name_len(8192)
        .build()
        .unwrap();
    // The bulk services are visible only through the "bulk" exchange, so the
    // normal client on the "" exchange gets a small table.
    let bulk = listen(&ds, "bulk");
    let main = listen(&ds, "");
    let echo = doubler(&ds, "echo");
    let mut keep: Vec<Service> = (0..2000)
        .map(|i| ds.service(&bulk_name(i)).audience("bulk").open().unwrap())
        .collect();

    let dc = dispatcher("client");
    let cx = connect(&dc, &ds, &main, "");

    // A raw peer that shakes hands and then never reads.
    let mut raw = TcpStream::connect(bulk.local_addr()).unwrap();
    raw.write_all(&raw_hello("bulk")).unwrap();
    let a = connection(&bulk);
    assert_eq!(a.state(), ConnectionState::Active, "{a:?}");
    let remote = a.remote_process().unwrap();
    assert_eq!((remote.uid(), remote.as_str()), (raw::uid(7), "raw"));

    // The table (about 8 MB) should already pass the limit; if the
    // kernel's buffers took it all, more announcements follow until they
    // cannot (the peer never reads, so the buffers fill).
    let conns = bulk.connections();
    let deadline = Instant::now() + WAIT;
    let mut extra = 0;
    let gone = loop {
        if let Ok(a) = conns.try_recv() {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "the slow consumer was not disconnected ({extra} more services)"
        );
        keep.push(
            ds.service(&bulk_name(2000 + extra))
                .audience("bulk")
                .open()
                .unwrap(),
        );
        extra += 1;
    };
    assert_eq!(gone.state(), ConnectionState::Inactive, "{gone:?}");
    assert_eq!(gone.reason(), Some(InactiveReason::SlowConsumer), "{gone}");
    assert_eq!(gone.remote_process().map(|p| p.uid()), Some(raw::uid(7)));
    assert_eq!(ds.stats().slow_consumers, 1);

    // The raw peer finds its connection closed: it reads the server's hello
    // first, then less than the whole table, then the end.
    raw.set_read_timeout(Some(WAIT)).unwrap();
    let mut received = Vec::new();
    let end = raw.read_to_end(&mut received);
    if let Err(e) = &end {
        assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the server did not close the slow consumer: {e}"
        );
    }
    assert!(received.len() > 4);
    let hello_len = u32::from_be_bytes(received[..4].try_into().unwrap()) as usize;
    let hello = &received[4..4 + hello_len];
    assert_eq!(&hello[..8], b"NETSVC\x00\x06");
    // (group "bulk", no secret, no identity token from a server, bound proofs)
    assert!(hello.ends_with(b"\x04bulk\x00\x00\x01"));
    let label = ds.process_id().as_str().to_owned();
    assert!(hello.windows(label.len()).any(|w| w == label.as_bytes()));
    assert!(received.len() < (2000 + extra) * BULK_NAME);

    // The normal client is unaffected.
    let me = dc.service("me").open().unwrap();
    let found = await_service(&dc, "echo");
    assert_eq!(&found, echo.binding());
    let r: u64 = me.call_timeout(&found, "double", &21u64, WAIT).unwrap();
    assert_eq!(r, 42);
    assert!(dc.lookup_service_name(&bulk_name(0)).is_empty());
    assert_no_connection(&cx);
    assert_no_connection(&main);
    assert_no_connection(&bulk);
    assert_eq!(ds.stats().slow_consumers, 1);
}

#[test]
fn casts_dropped_at_a_full_queue_are_counted_where_they_are_dropped() {
    use netsvc::{Context, NotificationListener, Notifier};
    let ds = Dispatcher::builder().name("server").build().unwrap();
    let ex = Exchange::server(&ds).listen("127.0.0.1:0").unwrap();
    // A listener whose handler blocks on the first notification: one in hand,
    // 1024 (the default queue) waiting, the rest refused.
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
    let (seen_tx, seen_rx) = crossbeam_channel::unbounded::<u32>();
    let listener = NotificationListener::new(&ds, &["load"])
        .on("info", move |_ctx: &Context, n: &netsvc::Notification| {
            let i: u32 = n.decode_payload().unwrap();
            if i == 0 {
                let _ = release_rx.recv_timeout(WAIT);
            }
            let _ = seen_tx.send(i);
        })
        .start()
        .unwrap();
    let dc = Dispatcher::builder().name("client").build().unwrap();
    let cx = Exchange::client(&dc)
        .connect(ex.local_addr(), Duration::from_millis(100))
        .unwrap();
    assert_eq!(
        cx.connections().recv_timeout(WAIT).unwrap().state(),
        ConnectionState::Active
    );
    let watcher = dc.service("watcher").open().unwrap();
    watcher.monitor_service_name("notify:openstack:load");
    wait_announcement(
        &watcher,
        "notify:openstack:load",
        None,
        ServiceStatus::Available,
    );
    let notifier = Notifier::new(&dc, "client", &["load"]);
    for i in 0..1100u32 {
        // Handed to the link: the sender cannot know the far queue is full.
        notifier.info(&Context::new(), "tick", &i).unwrap();
    }
    let deadline = Instant::now() + WAIT;
    while ds.stats().casts_dropped < 75 {
        assert!(Instant::now() < deadline, "{:?}", ds.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
    release_tx.send(()).unwrap();
    let got: Vec<u32> = (0..1025)
        .map(|_| seen_rx.recv_timeout(WAIT).unwrap())
        .collect();
    assert_eq!(
        got,
        (0..1025).collect::<Vec<_>>(),
        "the first 1025, in order"
    );
    assert!(
        seen_rx.recv_timeout(QUIET).is_err(),
        "the dropped ones never arrive"
    );
    assert_eq!(ds.stats().casts_dropped, 75);
    listener.stop();
    listener.wait();
}
