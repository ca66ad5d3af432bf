//! A link speaks only for the process it proved it is: identities that
//! cannot be claimed by another, announcements and subscriptions only for
//! a client's own process, and a process that reconnects taking its place
//! back at once, across an exchange restart with an attacker racing it.

mod util;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use netsvc::fuzzing::{available_frame, binding_of, subscribe_frame};
use netsvc::*;
use util::raw::wait_closed;
use util::*;

const RETRY: Duration = Duration::from_millis(50);

#[test]
fn a_hello_claiming_another_process_is_refused() {
    let ds = Dispatcher::builder().name("server").build().unwrap();
    let ex = Exchange::server(&ds).listen("127.0.0.1:0").unwrap();
    let victim = Dispatcher::builder().name("victim").build().unwrap();
    // The victim's uid is public (every binding carries it); its token is not.
    let mut raw = TcpStream::connect(ex.local_addr()).unwrap();
    raw.write_all(&raw::hello_claiming(victim.process_id().uid(), 9))
        .unwrap();
    wait_closed(&mut raw);
    wait_stat(&ds, "auth_failures", 1, |s| s.auth_failures);
    assert!(
        ex.connections().recv_timeout(QUIET).is_err(),
        "the impostor's link was announced"
    );
}

#[test]
fn a_client_announces_and_subscribes_only_for_its_own_process() {
    let ds = Dispatcher::builder().name("server").build().unwrap();
    let ex = Exchange::server(&ds).listen("127.0.0.1:0").unwrap();
    let publisher = ds.service("pub").open().unwrap();
    let mut raw = raw::handshake(ex.local_addr(), 21);
    // Another process's service, and its own.
    let theirs = binding_of(22, "stolen", "*", 1, vec![]);
    let own = binding_of(21, "own", "*", 1, vec![]);
    raw.write_all(&available_frame(&theirs)).unwrap();
    raw.write_all(&available_frame(&own)).unwrap();
    // A subscription for a hidden subscriber of another process.
    let hidden = binding_of(22, "hidden", "", 2, vec![]);
    raw.write_all(&subscribe_frame(&hidden, publisher.binding(), "t", true))
        .unwrap();
    wait_stat(&ds, "refused_frames", 2, |s| s.refused_frames);
    let watcher = ds.service("watcher").open().unwrap();
    watcher.monitor_service_name("own");
    wait_announcement(&watcher, "own", None, ServiceStatus::Available);
    assert!(ds.lookup_service_name("stolen").is_empty());
    // The publisher heard of no subscription.
    assert_quiet(&publisher);
}

#[test]
fn a_process_that_connects_again_supersedes_its_old_link() {
    let ds = Dispatcher::builder().name("server").build().unwrap();
    let ex = Exchange::server(&ds).listen("127.0.0.1:0").unwrap();
    let conns = ex.connections();
    let watcher = ds.service("watcher").open().unwrap();
    watcher.monitor_service_name("svc");
    // The process's first link, still open (as a half-open one would be).
    let mut first = raw::handshake(ex.local_addr(), 31);
    assert_eq!(
        conns.recv_timeout(WAIT).unwrap().state(),
        ConnectionState::Active
    );
    let b = binding_of(31, "svc", "*", 1, vec![]);
    first.write_all(&available_frame(&b)).unwrap();
    wait_announcement(&watcher, "svc", None, ServiceStatus::Available);
    // It connects again: the new link takes the old one's place, and what
    // the old one carried is withdrawn until the process announces it anew.
    let mut second = raw::handshake(ex.local_addr(), 31);
    let (mut active, mut superseded) = (false, false);
    for _ in 0..2 {
        let a = conns.recv_timeout(WAIT).unwrap();
        match a.state() {
            ConnectionState::Active => active = true,
            ConnectionState::Inactive => {
                assert_eq!(a.reason(), Some(InactiveReason::Superseded), "{a}");
                superseded = true;
            }
        }
    }
    assert!(active && superseded);
    wait_announcement(&watcher, "svc", None, ServiceStatus::Withdrawn);
    wait_closed(&mut first);
    second.write_all(&available_frame(&b)).unwrap();
    let a = wait_announcement(&watcher, "svc", None, ServiceStatus::Available);
    assert_eq!(a.binding(), &b);
}

/// The exchange restarts on its port; an attacker that was connected
/// before (and so knows every key) races the victim to it. It can neither
/// claim the victim's identity nor announce the victim's services in its
/// own; the victim's link comes back and its calls reach it.
#[test]
fn squatting_after_an_exchange_restart_captures_nothing() {
    let ds = Dispatcher::builder().name("exchange").build().unwrap();
    let ex = Exchange::server(&ds).listen("127.0.0.1:0").unwrap();
    let addr = ex.local_addr();
    let victim = Dispatcher::builder().name("victim").build().unwrap();
    let calc = spawn_u64(&victim, "calc", |x| x + 1);
    let vx = Exchange::client(&victim).connect(addr, RETRY).unwrap();
    let caller = Dispatcher::builder().name("caller").build().unwrap();
    let cx = Exchange::client(&caller).connect(addr, RETRY).unwrap();
    let seen = await_service(&caller, "calc");
    assert_eq!(&seen, calc.binding());
    for x in [&vx, &cx] {
        let a = x.connections().recv_timeout(WAIT).unwrap();
        assert_eq!(a.state(), ConnectionState::Active, "{a}");
    }

    // The restart: the exchange's dispatcher goes, a new one takes the port.
    ds.shutdown();
    for x in [&vx, &cx] {
        let a = x.connections().recv_timeout(WAIT).unwrap();
        assert_eq!(a.state(), ConnectionState::Inactive, "{a}");
    }
    let ds2 = Dispatcher::builder().name("exchange-2").build().unwrap();
    // (The port is free: the old listener closed before the links did.)
    let ex2 = Exchange::server(&ds2).listen(addr).unwrap();
    // The attacker races: first as the victim (without its token), then as
    // itself announcing the victim's service.
    let mut impostor = TcpStream::connect(addr).unwrap();
    impostor
        .write_all(&raw::hello_claiming(victim.process_id().uid(), 41))
        .unwrap();
    let mut squatter = raw::handshake(addr, 42);
    squatter
        .write_all(&available_frame(calc.binding()))
        .unwrap();
    wait_stat(&ds2, "refused_frames", 1, |s| s.refused_frames);
    wait_closed(&mut impostor);
    wait_stat(&ds2, "auth_failures", 1, |s| s.auth_failures);

    // The victim and the caller come back; the victim's service is its own.
    let back = await_service(&caller, "calc");
    assert_eq!(&back, calc.binding());
    let me = caller.service("me").open().unwrap();
    let r: u64 = me.call_timeout(&back, "add", &41u64, WAIT).unwrap();
    assert_eq!(r, 42, "the call reached the victim");
    let in_exchange = ds2.lookup_service_name("calc");
    assert_eq!(in_exchange, vec![calc.binding().clone()]);
    drop(ex2);
}

/// A forged unsubscribe, in a real remote subscriber's name, cuts nobody off.
#[test]
fn a_forged_unsubscribe_is_refused_and_the_subscriber_keeps_its_reports() {
    let ds = Dispatcher::builder().name("server").build().unwrap();
    let ex = Exchange::server(&ds).listen("127.0.0.1:0").unwrap();
    let news = ds.service("pub").open().unwrap();
    let dc = Dispatcher::builder().name("subscriber").build().unwrap();
    let _cx = Exchange::client(&dc)
        .connect(ex.local_addr(), RETRY)
        .unwrap();
    await_service(&dc, "pub");
    let sub = dc.service("sub").open().unwrap();
    sub.subscribe_reports("pub", "t.*");
    let s = subscription(&news);
    assert_eq!(s.status(), SubscriptionStatus::Requested);
    assert_eq!(publisher(&sub).status(), ServiceStatus::Available);

    let mut raw = raw::handshake(ex.local_addr(), 51);
    raw.write_all(&subscribe_frame(
        sub.binding(),
        news.binding(),
        "t.*",
        false,
    ))
    .unwrap();
    wait_stat(&ds, "refused_frames", 1, |s| s.refused_frames);
    assert_quiet(&news);
    news.publish_report("t.x", &7u64, Lifetime::None).unwrap();
    let r = report(&sub);
    assert_eq!(r.decode::<u64>().unwrap(), 7);
}
