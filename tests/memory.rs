//! The transport seam: the exchange's semantics hold over the in-memory
//! transport ([`MemoryLink`]) exactly as over TCP. Every scenario here runs
//! twice, once over each transport, with the same code and the same checks:
//! the routing core cannot tell its links apart.

mod util;

use std::time::{Duration, Instant};

use netsvc::*;
use util::*;

/// The two ways of joining a client dispatcher to a server dispatcher.
#[derive(Debug, Clone, Copy)]
enum Via {
    Tcp,
    Memory,
}

/// A link of a client to the server, of either kind; dropping it closes it.
enum Joined {
    Tcp(Exchange),
    Memory(MemoryLink),
}

impl Joined {
    fn close(self) {
        match self {
            Joined::Tcp(x) => x.close(),
            Joined::Memory(m) => m.close(),
        }
    }
}

/// A server dispatcher that clients join over one transport.
struct Server {
    via: Via,
    d: Dispatcher,
    /// The TCP exchange (kept open for the test; unused over memory).
    tcp: Option<Exchange>,
    group: String,
}

impl Server {
    fn new(via: Via, group: &str) -> Server {
        let d = dispatcher("server");
        let tcp = match via {
            Via::Tcp => Some(
                Exchange::server(&d)
                    .group(group)
                    .listen("127.0.0.1:0")
                    .unwrap(),
            ),
            Via::Memory => None,
        };
        Server {
            via,
            d,
            tcp,
            group: group.to_owned(),
        }
    }

    /// Joins `client` to this server; over TCP, waits until the link is up
    /// on both sides (over memory it is up when `join` returns).
    fn join(&self, client: &Dispatcher) -> Joined {
        match self.via {
            Via::Tcp => {
                let sx = self.tcp.as_ref().unwrap();
                let cx = Exchange::client(client)
                    .group(&self.group)
                    .connect(sx.local_addr(), Duration::from_millis(200))
                    .unwrap();
                let a = cx.connections().recv_timeout(WAIT).unwrap();
                assert_eq!(a.state(), ConnectionState::Active, "{a:?}");
                let a = sx.connections().recv_timeout(WAIT).unwrap();
                assert_eq!(a.state(), ConnectionState::Active, "{a:?}");
                Joined::Tcp(cx)
            }
            Via::Memory => {
                Joined::Memory(MemoryLink::join_group(client, &self.d, &self.group).unwrap())
            }
        }
    }
}

fn dispatcher(name: &str) -> Dispatcher {
    Dispatcher::builder().name(name).build().unwrap()
}

/// A spawned service of audience "*" answering with twice its u64 argument.
fn doubler(d: &Dispatcher, name: &str) -> ServiceHandle {
    spawn_u64(d, name, |x| x * 2)
}

/// Calls the doubler `name` of another dispatcher from `d`: once answered,
/// `d` has taken in everything the path to it sent before.
fn sync(d: &Dispatcher, name: &str) {
    let target = await_service(d, name);
    let caller = d.service("sync-caller").audience("").open().unwrap();
    let r: u64 = caller
        .call_timeout(&target, "double", &21u64, WAIT)
        .unwrap();
    assert_eq!(r, 42);
}

fn both(scenario: fn(Via)) {
    scenario(Via::Tcp);
    scenario(Via::Memory);
}

// ----- scenarios -----

/// Two clients of one server: services, calls and reports cross the
/// server's relay, and subscriptions are announced to the publisher.
fn relay_between_clients(via: Via) {
    let s = Server::new(via, "");
    let da = dispatcher("a");
    let _a = s.join(&da);
    let db = dispatcher("b");
    let _b = s.join(&db);

    let calc = doubler(&da, "calc");
    let seen = await_service(&db, "calc");
    assert_eq!(&seen, calc.binding(), "{via:?}");
    let caller = db.service("caller").open().unwrap();
    let r: u64 = caller.call_timeout(&seen, "double", &21u64, WAIT).unwrap();
    assert_eq!(r, 42, "{via:?}");

    let news = da.service("pub").open().unwrap();
    await_service(&db, "pub");
    let sub = db.service("sub").open().unwrap();
    sub.subscribe_reports("pub", "news.*");
    let p = subscription(&news);
    assert_eq!(p.status(), SubscriptionStatus::Requested, "{via:?}");
    assert_eq!(p.subscriber(), sub.binding());
    assert_eq!(publisher(&sub).status(), ServiceStatus::Available);
    news.publish_report("news.today", &7u64, Lifetime::None)
        .unwrap();
    news.publish_report("other.today", &8u64, Lifetime::None)
        .unwrap();
    news.publish_report("news.tomorrow", &9u64, Lifetime::None)
        .unwrap();
    let r = report(&sub);
    assert_eq!(
        (r.subject(), r.decode::<u64>().unwrap()),
        ("news.today", 7),
        "{via:?}"
    );
    let r = report(&sub);
    assert_eq!(
        (r.subject(), r.decode::<u64>().unwrap()),
        ("news.tomorrow", 9)
    );

    sub.unsubscribe_reports("pub", "news.*");
    assert_eq!(subscription(&news).status(), SubscriptionStatus::Withdrawn);
    assert_eq!(publisher(&sub).status(), ServiceStatus::Withdrawn);
    news.publish_report("news.later", &10u64, Lifetime::None)
        .unwrap();
    assert_quiet(&sub);
}

#[test]
fn relay_between_clients_holds_over_both_transports() {
    both(relay_between_clients);
}

/// Audiences: through a link of group "plant", services of audience "*"
/// and "plant" cross; "" and "other" do not, in either direction.
fn audiences(via: Via) {
    let s = Server::new(via, "plant");
    let _ping = doubler(&s.d, "ping-server");
    let server_side: Vec<Service> = ["*", "", "plant", "other"]
        .iter()
        .map(|a| s.d.service(&format!("s-{a}")).audience(a).open().unwrap())
        .collect();
    let dc = dispatcher("client");
    let _c = s.join(&dc);
    let _ping_c = doubler(&dc, "ping-client");
    let client_side: Vec<Service> = ["*", "", "plant", "other"]
        .iter()
        .map(|a| dc.service(&format!("c-{a}")).audience(a).open().unwrap())
        .collect();
    sync(&dc, "ping-server");
    sync(&s.d, "ping-client");
    for (observer, prefix, services) in [(&dc, "s", &server_side), (&s.d, "c", &client_side)] {
        for (audience, svc) in ["*", "", "plant", "other"].iter().zip(services) {
            let found = observer.lookup_service_name(&format!("{prefix}-{audience}"));
            if ["*", "plant"].contains(audience) {
                assert_eq!(found, vec![svc.binding().clone()], "{via:?}: {audience:?}");
            } else {
                assert!(found.is_empty(), "{via:?}: {audience:?} crossed: {found:?}");
            }
        }
    }
}

#[test]
fn audiences_hold_over_both_transports() {
    both(audiences);
}

/// A lost link: the call pending through it fails promptly as
/// unavailable, and the services learned through it are withdrawn, their
/// groups first.
fn link_loss(via: Via) {
    let s = Server::new(via, "");
    let holder = s.d.service("holder").group("g").open().unwrap();
    let dc = dispatcher("client");
    let joined = s.join(&dc);
    let me = dc.service("me").audience("").open().unwrap();
    me.monitor_service_name("holder");
    me.monitor_service_group("g");
    wait_announcement(&me, "holder", None, ServiceStatus::Available);
    wait_announcement(&me, "holder", Some("g"), ServiceStatus::Available);

    let pending = me
        .request_timeout::<u64, _>(holder.binding(), "hold", &1u64, Duration::from_secs(30))
        .unwrap();
    let held = request(&holder);
    assert_eq!(held.sender(), me.binding());
    let start = Instant::now();
    joined.close();
    let outcome = within("the pending call", move || pending.wait());
    assert!(
        matches!(outcome, Err(Error::ServiceUnavailable(_))),
        "{via:?}: {outcome:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(5), "{via:?}");
    let a = announcement(&me);
    assert_eq!(
        (a.group(), a.status()),
        (Some("g"), ServiceStatus::Withdrawn),
        "{via:?}"
    );
    let a = announcement(&me);
    assert_eq!((a.group(), a.status()), (None, ServiceStatus::Withdrawn));
    assert!(dc.lookup_service_name("holder").is_empty());
    // The server forgot the client's side too: nothing of it is left.
    drop(held);
}

#[test]
fn link_loss_holds_over_both_transports() {
    both(link_loss);
}

/// The far dispatcher stops: its services are withdrawn here.
fn far_side_stops(via: Via) {
    let s = Server::new(via, "");
    let dc = dispatcher("client");
    let _c = s.join(&dc);
    let _calc = doubler(&dc, "calc");
    let me = s.d.service("me").audience("").open().unwrap();
    me.monitor_service_name("calc");
    wait_announcement(&me, "calc", None, ServiceStatus::Available);
    dc.shutdown();
    wait_announcement(&me, "calc", None, ServiceStatus::Withdrawn);
    assert!(s.d.lookup_service_name("calc").is_empty(), "{via:?}");
}

#[test]
fn a_stopped_dispatcher_is_withdrawn_over_both_transports() {
    both(far_side_stops);
}

/// A group joined after the link is up crosses it, and its member answers
/// across; a cached report reaches a late subscriber on the other side.
fn groups_and_cached_reports(via: Via) {
    let s = Server::new(via, "");
    let dc = dispatcher("client");
    let _c = s.join(&dc);
    let worker = s.d.service("worker").open().unwrap();
    await_service(&dc, "worker");
    let watcher = dc.service("watcher").audience("").open().unwrap();
    watcher.monitor_service_group("pool");
    worker.join_group("pool");
    let a = wait_announcement(&watcher, "worker", Some("pool"), ServiceStatus::Available);
    assert_eq!(a.binding(), worker.binding(), "{via:?}");
    assert_eq!(
        dc.lookup_service_group("pool"),
        vec![worker.binding().clone()]
    );
    let member = a.binding().clone();
    let _worker = worker
        .spawn(|_svc, ev| {
            if let Event::Request(r) = ev {
                let x: u64 = r.decode().unwrap_or_default();
                let _ = r.reply(&(x * 2));
            }
        })
        .unwrap();
    let caller = dc.service("caller").open().unwrap();
    let r: u64 = caller.call_timeout(&member, "double", &5u64, WAIT).unwrap();
    assert_eq!(r, 10, "{via:?}");

    let news = s.d.service("news").open().unwrap();
    news.publish_report("weather", &3u64, Lifetime::Forever)
        .unwrap();
    await_service(&dc, "news");
    let late = dc.service("late").open().unwrap();
    late.subscribe_reports("news", "*");
    assert_eq!(
        publisher(&late).status(),
        ServiceStatus::Available,
        "{via:?}"
    );
    let r = report(&late);
    assert_eq!(
        (r.subject(), r.decode::<u64>().unwrap()),
        ("weather", 3),
        "{via:?}"
    );
}

#[test]
fn groups_and_cached_reports_hold_over_both_transports() {
    both(groups_and_cached_reports);
}

#[test]
fn a_dispatcher_cannot_be_linked_to_itself() {
    let d = dispatcher("alone");
    let e = MemoryLink::join(&d, &d).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
}

/// An in-memory link is bounded as an exchange link is: a far side that
/// takes nothing (its dispatcher is stalled) is closed as a slow consumer
/// once the frames waiting for it pass `max_outbound_buffer`, and the far
/// side withdraws what it learned through the link when it runs again.
#[test]
fn a_memory_link_whose_far_side_takes_nothing_is_closed_as_a_slow_consumer() {
    let server = Dispatcher::builder()
        .name("server")
        .max_outbound_buffer(64 * 1024)
        .build()
        .unwrap();
    let client = dispatcher("client");
    let _link = MemoryLink::join(&client, &server).unwrap();
    let news = server.service("news").open().unwrap();
    await_service(&client, "news");
    let sub = client.service("sub").open().unwrap();
    let watcher = client.service("watcher").audience("").open().unwrap();
    watcher.monitor_service_name("news");
    wait_announcement(&watcher, "news", None, ServiceStatus::Available);
    sub.subscribe_reports("news", "*");
    assert_eq!(subscription(&news).status(), SubscriptionStatus::Requested);

    let (release, stalled) = crossbeam_channel::bounded::<()>(0);
    stall_dispatcher(&client, stalled).unwrap();
    // 256 reports of 1 KiB: four times the budget, all for the stalled side.
    let payload = vec![7u8; 1024];
    for i in 0..256 {
        news.publish_report(&format!("r{i}"), &payload, Lifetime::None)
            .unwrap();
    }
    wait_stat(&server, "slow_consumers", 1, |s| s.slow_consumers);
    drop(release);
    wait_announcement(&watcher, "news", None, ServiceStatus::Withdrawn);
    assert!(client.lookup_service_name("news").is_empty());
    assert!(server.lookup_service_name("sub").is_empty());
}
