//! Publish/subscribe reports inside one process: subject patterns, the report
//! cache and its lifetimes, subscription and publisher announcements,
//! subscriptions by name and by binding, `send_report`, fan-out and a slow
//! subscriber.

mod util;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use netsvc::{
    Dispatcher, DropReason, Event, Lifetime, Service, ServiceBinding, ServiceStatus,
    SubscriptionStatus,
};
use util::*;

// ----- helpers -----

/// The next event must be a report from `from` with this subject and value.
fn expect_report(svc: &Service, from: &ServiceBinding, subject: &str, value: u32) {
    let r = report(svc);
    assert_eq!(
        r.subject(),
        subject,
        "subject of the report to {}",
        svc.binding()
    );
    assert_eq!(r.publisher(), from, "publisher of report {subject}");
    assert_eq!(
        r.publisher().agent_identity(),
        from.agent_identity(),
        "publisher agent of report {subject}"
    );
    assert_eq!(
        r.decode::<u32>().unwrap(),
        value,
        "content of report {subject}"
    );
}

/// The next event must be a publisher announcement about `from` with `status`.
fn expect_publisher(svc: &Service, from: &ServiceBinding, status: ServiceStatus) {
    let p = publisher(svc);
    assert_eq!(
        p.status(),
        status,
        "publisher status seen by {}",
        svc.binding()
    );
    assert_eq!(
        p.publisher(),
        from,
        "publisher announced to {}",
        svc.binding()
    );
    assert_eq!(p.publisher().agent_identity(), from.agent_identity());
    assert_eq!(p.publisher().service_name(), from.service_name());
}

/// The next event must be a subscription announcement for `subscriber` and
/// `pattern` with `status`.
fn expect_subscription(
    svc: &Service,
    subscriber: &ServiceBinding,
    pattern: &str,
    status: SubscriptionStatus,
) {
    let s = subscription(svc);
    assert_eq!(
        s.status(),
        status,
        "subscription status seen by {}",
        svc.binding()
    );
    assert_eq!(
        s.subscriber(),
        subscriber,
        "subscriber seen by {}",
        svc.binding()
    );
    assert_eq!(s.subscriber().agent_identity(), subscriber.agent_identity());
    assert_eq!(s.subject(), pattern, "pattern seen by {}", svc.binding());
}

/// Collects the reports `svc` receives up to (excluding) the one with the
/// subject `sentinel`, which must come; any other kind of event fails.
/// Returns (subject, value) pairs sorted by subject (the order in which
/// cached reports are replayed is not promised).
fn reports_until(svc: &Service, sentinel: &str) -> Vec<(String, u32)> {
    let mut got = Vec::new();
    loop {
        let r = report(svc);
        if r.subject() == sentinel {
            break;
        }
        got.push((r.subject().to_owned(), r.decode::<u32>().unwrap()));
    }
    got.sort();
    got
}

/// What a subscriber that comes now gets from the publisher's cache: it
/// subscribes to everything, and receives the reports up to a marker the
/// publisher sends after; nothing may follow the marker.
fn cached_for_late_subscriber(d: &Dispatcher, publ: &Service) -> Vec<(String, u32)> {
    let sub = d.service("subscriber").open().unwrap();
    sub.subscribe_reports("publisher", "*");
    expect_publisher(&sub, publ.binding(), ServiceStatus::Available);
    publ.publish_report("end", &0u32, Lifetime::None).unwrap();
    let got = reports_until(&sub, "end");
    assert_quiet(&sub);
    got
}

fn pairs(items: &[(&str, u32)]) -> Vec<(String, u32)> {
    let mut v: Vec<(String, u32)> = items.iter().map(|(s, n)| (s.to_string(), *n)).collect();
    v.sort();
    v
}

/// Returns once the dispatcher has handled every command this thread sent
/// before (commands from one thread are handled in order).
fn barrier(d: &Dispatcher) {
    let _ = d.lookup_service_name("no-such-service-barrier");
}

// ----- subject patterns -----

#[test]
fn star_pattern_matches_dotted_subjects_but_not_the_bare_prefix() {
    let d = Dispatcher::new().unwrap();
    let publ = d.service("publisher").open().unwrap();
    let sub = d.service("subscriber").open().unwrap();
    sub.subscribe_reports("publisher", "system.*");
    expect_publisher(&sub, publ.binding(), ServiceStatus::Available);

    publ.publish_report("system", &1u32, Lifetime::None)
        .unwrap();
    publ.publish_report("system.time", &2u32, Lifetime::None)
        .unwrap();
    publ.publish_report("systemx", &3u32, Lifetime::None)
        .unwrap();
    publ.publish_report("user.system.time", &4u32, Lifetime::None)
        .unwrap();
    publ.publish_report("system.a.b", &5u32, Lifetime::None)
        .unwrap();
    publ.publish_report("system.", &6u32, Lifetime::None)
        .unwrap();
    publ.publish_report("System.time", &7u32, Lifetime::None)
        .unwrap();

    expect_report(&sub, publ.binding(), "system.time", 2);
    expect_report(&sub, publ.binding(), "system.a.b", 5);
    expect_report(&sub, publ.binding(), "system.", 6);
    assert_quiet(&sub);
}

#[test]
fn question_mark_matches_exactly_one_character() {
    let d = Dispatcher::new().unwrap();
    let publ = d.service("publisher").open().unwrap();
    let sub = d.service("subscriber").open().unwrap();
    sub.subscribe_reports("publisher", "load?");
    expect_publisher(&sub, publ.binding(), ServiceStatus::Available);

    publ.publish_report("load", &1u32, Lifetime::None).unwrap();
    publ.publish_report("load12", &2u32, Lifetime::None)
        .unwrap();
    publ.publish_report("load1", &3u32, Lifetime::None).unwrap();
    publ.publish_report("xload1", &4u32, Lifetime::None)
        .unwrap();
    publ.publish_report("load.", &5u32, Lifetime::None).unwrap();
    publ.publish_report("loadX", &6u32, Lifetime::None).unwrap();

    expect_report(&sub, publ.binding(), "load1", 3);
    expect_report(&sub, publ.binding(), "load.", 5);
    expect_report(&sub, publ.binding(), "loadX", 6);
    assert_quiet(&sub);
}

#[test]
fn literal_and_inner_wildcard_patterns_match_the_whole_subject() {
    let d = Dispatcher::new().unwrap();
    let publ = d.service("publisher").open().unwrap();
    let literal = d.service("literal").open().unwrap();
    let inner = d.service("inner").open().unwrap();
    literal.subscribe_reports("publisher", "a.b");
    inner.subscribe_reports("publisher", "*.t?me");
    expect_publisher(&literal, publ.binding(), ServiceStatus::Available);
    expect_publisher(&inner, publ.binding(), ServiceStatus::Available);

    publ.publish_report("a.b", &1u32, Lifetime::None).unwrap();
    publ.publish_report("a.bc", &2u32, Lifetime::None).unwrap();
    publ.publish_report("xa.b", &3u32, Lifetime::None).unwrap();
    publ.publish_report("system.time", &4u32, Lifetime::None)
        .unwrap();
    publ.publish_report("x.y.tame", &5u32, Lifetime::None)
        .unwrap();
    publ.publish_report("system.times", &6u32, Lifetime::None)
        .unwrap();
    publ.publish_report(".time", &7u32, Lifetime::None).unwrap();

    expect_report(&literal, publ.binding(), "a.b", 1);
    expect_report(&inner, publ.binding(), "system.time", 4);
    expect_report(&inner, publ.binding(), "x.y.tame", 5);
    expect_report(&inner, publ.binding(), ".time", 7);
    assert_quiet(&literal);
    assert_quiet(&inner);
}

#[test]
fn reports_of_other_publishers_do_not_arrive() {
    let d = Dispatcher::new().unwrap();
    let publ = d.service("publisher").open().unwrap();
    let other = d.service("other").open().unwrap();
    let sub = d.service("subscriber").open().unwrap();
    sub.subscribe_reports("publisher", "*");
    expect_publisher(&sub, publ.binding(), ServiceStatus::Available);

    other.publish_report("x", &1u32, Lifetime::None).unwrap();
    publ.publish_report("y", &2u32, Lifetime::None).unwrap();
    expect_report(&sub, publ.binding(), "y", 2);
    assert_quiet(&sub);
}

// ----- the cache -----

#[test]
fn forever_report_reaches_late_subscriber_right_after_publisher_available() {
    let d = Dispatcher::new().unwrap();
    let publ = d.service("publisher").open().unwrap();
    publ.publish_report("system.startup", &1234u32, Lifetime::Forever)
        .unwrap();

    let sub = d.service("subscriber").open().unwrap();
    sub.subscribe_reports("publisher", "system.*");
    expect_publisher(&sub, publ.binding(), ServiceStatus::Available);
    expect_report(&sub, publ.binding(), "system.startup", 1234);
    assert_quiet(&sub);
}

#[test]
fn cached_report_is_replayed_only_if_the_pattern_matches() {
    let d = Dispatcher::new().unwrap();
    let publ = d.service("publisher").open().unwrap();
    publ.publish_report("system.startup", &1u32, Lifetime::Forever)
        .unwrap();
    publ.publish_report("user.login", &2u32, Lifetime::Forever)
        .unwrap();

    let sub = d.service("subscriber").open().unwrap();
    sub.subscribe_reports("publisher", "user.*");
    expect_publisher(&sub, publ.binding(), ServiceStatus::Available);
    expect_report(&sub, publ.binding(), "user.login", 2);
    assert_quiet(&sub);
}

#[test]
fn only_latest_report_per_subject_is_cached() {
    let d = Dispatcher::new().unwrap();
    let publ = d.service("publisher").open().unwrap();
    publ.publish_report("state", &1u32, Lifetime::Forever)
        .unwrap();
    publ.publish_report("state", &2u32, Lifetime::Forever)
        .unwrap();
    publ.publish_report("other", &7u32, Lifetime::Forever)
        .unwrap();

    assert_eq!(
        cached_for_late_subscriber(&d, &publ),
        pairs(&[("state", 2), ("other", 7)])
    );
}

#[test]
fn lifetime_none_report_is_not_cached() {
    let d = Dispatcher::new().unwrap();
    let publ = d.service("publisher").open().unwrap();
    publ.publish_report("volatile", &1u32, Lifetime::None)
        .unwrap();
    publ.publish_report("kept", &2u32, Lifetime::Forever)
        .unwrap();

    let sub = d.service("subscriber").open().unwrap();
    sub.subscribe_reports("publisher", "*");
    expect_publisher(&sub, publ.binding(), ServiceStatus::Available);
    publ.publish_report("end", &0u32, Lifetime::None).unwrap();
    assert_eq!(reports_until(&sub, "end"), pairs(&[("kept", 2)]));
    assert_quiet(&sub);
}

#[test]
fn lifetime_none_removes_cached_report_of_that_exact_subject_only() {
    let d = Dispatcher::new().unwrap();
    let publ = d.service("publisher").open().unwrap();
    publ.publish_report("a.b", &1u32, Lifetime::Forever)
        .unwrap();
    publ.publish_report("a.c", &2u32, Lifetime::Forever)
        .unwrap();
    publ.publish_report("a.bb", &3u32, Lifetime::Forever)
        .unwrap();
    publ.publish_report("a.b", &4u32, Lifetime::None).unwrap();
    // A pattern-looking subject is a subject like any other: it removes
    // nothing but itself.
    publ.publish_report("a.*", &5u32, Lifetime::None).unwrap();

    assert_eq!(
        cached_for_late_subscriber(&d, &publ),
        pairs(&[("a.c", 2), ("a.bb", 3)])
    );
}

#[test]
fn timed_report_is_cached_within_its_lifetime() {
    let d = Dispatcher::new().unwrap();
    let publ = d.service("publisher").open().unwrap();
    publ.publish_report("load", &42u32, Lifetime::For(Duration::from_secs(60)))
        .unwrap();

    let sub = d.service("subscriber").open().unwrap();
    sub.subscribe_reports("publisher", "load");
    expect_publisher(&sub, publ.binding(), ServiceStatus::Available);
    expect_report(&sub, publ.binding(), "load", 42);
    assert_quiet(&sub);
}

#[test]
fn timed_report_is_not_replayed_after_its_lifetime() {
    let d = Dispatcher::new().unwrap();
    let publ = d.service("publisher").open().unwrap();
    let short = Duration::from_millis(300);
    publ.publish_report("short", &1u32, Lifetime::For(short))
        .unwrap();
    publ.publish_report("long", &2u32, Lifetime::For(Duration::from_secs(60)))
        .unwrap();
    publ.publish_report("forever", &3u32, Lifetime::Forever)
        .unwrap();
    // The dispatcher has stamped the publishes by the time the barrier
    // returns, so the short report expires before `processed + short`.
    barrier(&d);
    let processed = Instant::now();
    // The behaviour under test is time itself: wait well past the expiry
    // deadline computed above.
    let deadline = processed + short * 2;
    while Instant::now() < deadline {
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    }

    assert_eq!(
        cached_for_late_subscriber(&d, &publ),
        pairs(&[("long", 2), ("forever", 3)])
    );
}

#[test]
fn expire_reports_removes_only_matching_cached_subjects() {
    let d = Dispatcher::new().unwrap();
    let publ = d.service("publisher").open().unwrap();
    publ.publish_report("system.time", &1u32, Lifetime::Forever)
        .unwrap();
    publ.publish_report("system.load.avg", &2u32, Lifetime::Forever)
        .unwrap();
    publ.publish_report("system", &3u32, Lifetime::Forever)
        .unwrap();
    publ.publish_report("user.count", &4u32, Lifetime::For(Duration::from_secs(60)))
        .unwrap();
    publ.expire_reports("system.*");

    assert_eq!(
        cached_for_late_subscriber(&d, &publ),
        pairs(&[("system", 3), ("user.count", 4)])
    );
}

#[test]
fn expire_reports_does_not_touch_other_publishers_caches() {
    let d = Dispatcher::new().unwrap();
    let a = d.service("a").open().unwrap();
    let b = d.service("b").open().unwrap();
    a.publish_report("x", &1u32, Lifetime::Forever).unwrap();
    b.publish_report("x", &2u32, Lifetime::Forever).unwrap();
    a.expire_reports("*");

    let sub = d.service("subscriber").open().unwrap();
    sub.subscribe_reports("a", "*");
    sub.subscribe_reports("b", "*");
    expect_publisher(&sub, a.binding(), ServiceStatus::Available);
    expect_publisher(&sub, b.binding(), ServiceStatus::Available);
    expect_report(&sub, b.binding(), "x", 2);
    assert_quiet(&sub);
}

#[test]
fn purge_reports_removes_every_cached_report() {
    let d = Dispatcher::new().unwrap();
    let publ = d.service("publisher").open().unwrap();
    publ.publish_report("system.time", &1u32, Lifetime::Forever)
        .unwrap();
    publ.publish_report("user.count", &2u32, Lifetime::Forever)
        .unwrap();
    publ.publish_report("load", &3u32, Lifetime::For(Duration::from_secs(60)))
        .unwrap();
    publ.purge_reports();
    // The cache works again after a purge.
    publ.publish_report("after", &4u32, Lifetime::Forever)
        .unwrap();

    let sub = d.service("subscriber").open().unwrap();
    sub.subscribe_reports("publisher", "*");
    expect_publisher(&sub, publ.binding(), ServiceStatus::Available);
    expect_report(&sub, publ.binding(), "after", 4);
    assert_quiet(&sub);
}

// ----- subscription and publisher announcements -----

#[test]
fn subscription_requested_reaches_publisher_with_subscriber_and_pattern() {
    let d = Dispatcher::new().unwrap();
    let publ = d.service("publisher").open().unwrap();
    let sub = d.service("subscriber").open().unwrap();
    sub.subscribe_reports("publisher", "system.*");
    sub.subscribe_reports("publisher", "load?");
    expect_subscription(
        &publ,
        sub.binding(),
        "system.*",
        SubscriptionStatus::Requested,
    );
    expect_subscription(&publ, sub.binding(), "load?", SubscriptionStatus::Requested);
    assert_quiet(&publ);
}

#[test]
fn subscribing_twice_to_the_same_pattern_is_one_subscription() {
    let d = Dispatcher::new().unwrap();
    let publ = d.service("publisher").open().unwrap();
    let sub = d.service("subscriber").open().unwrap();
    sub.subscribe_reports("publisher", "x");
    sub.subscribe_reports("publisher", "x");
    expect_subscription(&publ, sub.binding(), "x", SubscriptionStatus::Requested);
    expect_publisher(&sub, publ.binding(), ServiceStatus::Available);

    publ.publish_report("x", &1u32, Lifetime::None).unwrap();
    expect_report(&sub, publ.binding(), "x", 1);
    assert_quiet(&sub);
    assert_quiet(&publ);
}

#[test]
fn subscription_withdrawn_reaches_publisher_on_unsubscribe() {
    let d = Dispatcher::new().unwrap();
    let publ = d.service("publisher").open().unwrap();
    let sub = d.service("subscriber").open().unwrap();
    sub.subscribe_reports("publisher", "a.*");
    sub.subscribe_reports("publisher", "b.*");
    expect_subscription(&publ, sub.binding(), "a.*", SubscriptionStatus::Requested);
    expect_subscription(&publ, sub.binding(), "b.*", SubscriptionStatus::Requested);
    expect_publisher(&sub, publ.binding(), ServiceStatus::Available);

    // One of two patterns goes: the publisher hears of it, the subscriber
    // stays tied to the publisher and gets only the other pattern's reports.
    sub.unsubscribe_reports("publisher", "a.*");
    expect_subscription(&publ, sub.binding(), "a.*", SubscriptionStatus::Withdrawn);
    publ.publish_report("a.x", &1u32, Lifetime::None).unwrap();
    publ.publish_report("b.x", &2u32, Lifetime::None).unwrap();
    expect_report(&sub, publ.binding(), "b.x", 2);

    // The last one goes: Withdrawn both ways, then nothing more arrives.
    sub.unsubscribe_reports("publisher", "b.*");
    expect_subscription(&publ, sub.binding(), "b.*", SubscriptionStatus::Withdrawn);
    expect_publisher(&sub, publ.binding(), ServiceStatus::Withdrawn);
    publ.publish_report("b.y", &3u32, Lifetime::None).unwrap();
    assert_quiet(&sub);
    assert_quiet(&publ);
}

#[test]
fn unsubscribing_a_pattern_never_subscribed_announces_nothing() {
    let d = Dispatcher::new().unwrap();
    let publ = d.service("publisher").open().unwrap();
    let sub = d.service("subscriber").open().unwrap();
    sub.subscribe_reports("publisher", "a");
    expect_subscription(&publ, sub.binding(), "a", SubscriptionStatus::Requested);
    expect_publisher(&sub, publ.binding(), ServiceStatus::Available);

    sub.unsubscribe_reports("publisher", "b");
    publ.publish_report("a", &1u32, Lifetime::None).unwrap();
    expect_report(&sub, publ.binding(), "a", 1);
    assert_quiet(&publ);
    assert_quiet(&sub);
}

#[test]
fn subscription_withdrawn_reaches_publisher_when_subscriber_is_dropped() {
    let d = Dispatcher::new().unwrap();
    let publ = d.service("publisher").open().unwrap();
    let sub = d.service("subscriber").open().unwrap();
    let sub_binding = sub.binding().clone();
    sub.subscribe_reports("publisher", "a.*");
    sub.subscribe_reports("publisher", "b.*");
    expect_subscription(&publ, &sub_binding, "a.*", SubscriptionStatus::Requested);
    expect_subscription(&publ, &sub_binding, "b.*", SubscriptionStatus::Requested);

    drop(sub);
    let mut withdrawn = BTreeSet::new();
    for _ in 0..2 {
        let s = subscription(&publ);
        assert_eq!(s.status(), SubscriptionStatus::Withdrawn);
        assert_eq!(s.subscriber(), &sub_binding);
        withdrawn.insert(s.subject().to_owned());
    }
    assert_eq!(
        withdrawn,
        BTreeSet::from(["a.*".to_owned(), "b.*".to_owned()])
    );
    assert_quiet(&publ);
}

#[test]
fn publisher_available_once_per_publisher_even_with_two_patterns() {
    let d = Dispatcher::new().unwrap();
    let publ = d.service("publisher").open().unwrap();
    let sub = d.service("subscriber").open().unwrap();
    sub.subscribe_reports("publisher", "a.*");
    sub.subscribe_reports("publisher", "b.*");
    expect_publisher(&sub, publ.binding(), ServiceStatus::Available);
    // The next event is the report, not a second Available.
    publ.publish_report("b.x", &1u32, Lifetime::None).unwrap();
    expect_report(&sub, publ.binding(), "b.x", 1);
    assert_quiet(&sub);
}

#[test]
fn publisher_available_once_per_agent_of_the_subscribed_name() {
    let d = Dispatcher::new().unwrap();
    let p1 = d.service("publisher").open().unwrap();
    let p2 = d.service("publisher").open().unwrap();
    let sub = d.service("subscriber").open().unwrap();
    sub.subscribe_reports("publisher", "a");
    sub.subscribe_reports("publisher", "b");
    let mut seen = Vec::new();
    for _ in 0..2 {
        let p = publisher(&sub);
        assert_eq!(p.status(), ServiceStatus::Available);
        seen.push(p.publisher().agent_identity());
    }
    seen.sort();
    let mut expected = vec![p1.binding().agent_identity(), p2.binding().agent_identity()];
    expected.sort();
    assert_eq!(seen, expected);

    p1.publish_report("a", &1u32, Lifetime::None).unwrap();
    p2.publish_report("b", &2u32, Lifetime::None).unwrap();
    expect_report(&sub, p1.binding(), "a", 1);
    expect_report(&sub, p2.binding(), "b", 2);
    assert_quiet(&sub);
}

#[test]
fn publisher_withdrawn_reaches_subscriber_when_publisher_is_dropped() {
    let d = Dispatcher::new().unwrap();
    let publ = d.service("publisher").open().unwrap();
    let publ_binding = publ.binding().clone();
    let sub = d.service("subscriber").open().unwrap();
    sub.subscribe_reports("publisher", "a.*");
    sub.subscribe_reports("publisher", "b.*");
    expect_publisher(&sub, &publ_binding, ServiceStatus::Available);

    drop(publ);
    expect_publisher(&sub, &publ_binding, ServiceStatus::Withdrawn);
    assert_quiet(&sub);
}

#[test]
fn subscribing_to_an_absent_name_announces_nothing_until_it_appears() {
    let d = Dispatcher::new().unwrap();
    let sub = d.service("subscriber").open().unwrap();
    sub.subscribe_reports("publisher", "x*");
    sub.subscribe_reports("publisher", "*x");
    assert_quiet(&sub);

    // Both subscriptions take effect; the subscriber hears of the new
    // publisher once, then gets each matching report once.
    let publ = d.service("publisher").open().unwrap();
    expect_subscription(&publ, sub.binding(), "x*", SubscriptionStatus::Requested);
    expect_subscription(&publ, sub.binding(), "*x", SubscriptionStatus::Requested);
    expect_publisher(&sub, publ.binding(), ServiceStatus::Available);
    publ.publish_report("x", &1u32, Lifetime::None).unwrap();
    publ.publish_report("yx", &2u32, Lifetime::None).unwrap();
    publ.publish_report("y", &3u32, Lifetime::None).unwrap();
    expect_report(&sub, publ.binding(), "x", 1);
    expect_report(&sub, publ.binding(), "yx", 2);
    assert_quiet(&sub);
    assert_quiet(&publ);
}

// ----- subscriptions by name across publisher restarts -----

#[test]
fn subscription_by_name_survives_publisher_going_away_and_coming_back() {
    let d = Dispatcher::new().unwrap();
    let sub = d.service("subscriber").open().unwrap();
    let first = d.service("publisher").open().unwrap();
    let first_binding = first.binding().clone();
    sub.subscribe_reports("publisher", "state.*");
    expect_subscription(
        &first,
        sub.binding(),
        "state.*",
        SubscriptionStatus::Requested,
    );
    expect_publisher(&sub, &first_binding, ServiceStatus::Available);
    first
        .publish_report("state.value", &1u32, Lifetime::Forever)
        .unwrap();
    expect_report(&sub, &first_binding, "state.value", 1);

    drop(first);
    expect_publisher(&sub, &first_binding, ServiceStatus::Withdrawn);

    // A new agent of the same name: the subscription is requested again
    // without any subscriber code.
    let second = d.service("publisher").open().unwrap();
    assert_ne!(second.binding(), &first_binding);
    expect_subscription(
        &second,
        sub.binding(),
        "state.*",
        SubscriptionStatus::Requested,
    );
    expect_publisher(&sub, second.binding(), ServiceStatus::Available);
    // The first agent's cache went with it: nothing is replayed.
    second
        .publish_report("state.value", &2u32, Lifetime::Forever)
        .unwrap();
    expect_report(&sub, second.binding(), "state.value", 2);
    second
        .publish_report("other", &9u32, Lifetime::None)
        .unwrap();
    second
        .publish_report("state.other", &3u32, Lifetime::None)
        .unwrap();
    expect_report(&sub, second.binding(), "state.other", 3);
    assert_quiet(&sub);
    assert_quiet(&second);

    // The new cached report (not the first agent's) reaches a late subscriber.
    let late = d.service("late").open().unwrap();
    late.subscribe_reports("publisher", "state.*");
    expect_publisher(&late, second.binding(), ServiceStatus::Available);
    expect_report(&late, second.binding(), "state.value", 2);
    assert_quiet(&late);
}

#[test]
fn returning_publisher_replays_its_cache_to_subscribers_by_name() {
    let d = Dispatcher::new().unwrap();
    let sub = d.service("subscriber").open().unwrap();
    sub.subscribe_reports("publisher", "*");
    let first = d.service("publisher").open().unwrap();
    let first_binding = first.binding().clone();
    expect_publisher(&sub, &first_binding, ServiceStatus::Available);
    first.publish_report("x", &1u32, Lifetime::Forever).unwrap();
    expect_report(&sub, &first_binding, "x", 1);
    drop(first);
    expect_publisher(&sub, &first_binding, ServiceStatus::Withdrawn);

    // The new agent publishes a Forever report; a second subscription
    // pattern taken after that replays it (the first pattern delivered it live).
    let second = d.service("publisher").open().unwrap();
    expect_publisher(&sub, second.binding(), ServiceStatus::Available);
    second
        .publish_report("y", &2u32, Lifetime::Forever)
        .unwrap();
    expect_report(&sub, second.binding(), "y", 2);
    sub.subscribe_reports("publisher", "y");
    expect_report(&sub, second.binding(), "y", 2);
    assert_quiet(&sub);
}

// ----- subscriptions by binding -----

#[test]
fn subscribe_reports_from_receives_only_that_agents_reports() {
    let d = Dispatcher::new().unwrap();
    let p1 = d.service("publisher").open().unwrap();
    let p2 = d.service("publisher").open().unwrap();
    p2.publish_report("cached", &20u32, Lifetime::Forever)
        .unwrap();
    p1.publish_report("cached", &10u32, Lifetime::Forever)
        .unwrap();

    let sub = d.service("subscriber").open().unwrap();
    sub.subscribe_reports_from(p1.binding(), "*");
    expect_subscription(&p1, sub.binding(), "*", SubscriptionStatus::Requested);
    expect_publisher(&sub, p1.binding(), ServiceStatus::Available);
    expect_report(&sub, p1.binding(), "cached", 10);

    p2.publish_report("live", &2u32, Lifetime::None).unwrap();
    p1.publish_report("live", &1u32, Lifetime::None).unwrap();
    expect_report(&sub, p1.binding(), "live", 1);
    assert_quiet(&sub);
    assert_quiet(&p2);
}

#[test]
fn subscription_by_binding_ends_with_that_agent_and_is_not_revived_by_its_name() {
    let d = Dispatcher::new().unwrap();
    let first = d.service("publisher").open().unwrap();
    let first_binding = first.binding().clone();
    let sub = d.service("subscriber").open().unwrap();
    let observer = d.service("observer").open().unwrap();
    sub.subscribe_reports_from(&first_binding, "*");
    observer.subscribe_reports("publisher", "*");
    expect_publisher(&sub, &first_binding, ServiceStatus::Available);
    expect_publisher(&observer, &first_binding, ServiceStatus::Available);
    first.publish_report("x", &1u32, Lifetime::None).unwrap();
    expect_report(&sub, &first_binding, "x", 1);
    expect_report(&observer, &first_binding, "x", 1);

    drop(first);
    expect_publisher(&sub, &first_binding, ServiceStatus::Withdrawn);
    expect_publisher(&observer, &first_binding, ServiceStatus::Withdrawn);

    let second = d.service("publisher").open().unwrap();
    // Only the subscription by name is requested of the new agent.
    expect_subscription(
        &second,
        observer.binding(),
        "*",
        SubscriptionStatus::Requested,
    );
    second
        .publish_report("y", &2u32, Lifetime::Forever)
        .unwrap();
    second.publish_report("z", &3u32, Lifetime::None).unwrap();
    // The observer (by name) has received them, so they have been routed.
    expect_publisher(&observer, second.binding(), ServiceStatus::Available);
    expect_report(&observer, second.binding(), "y", 2);
    expect_report(&observer, second.binding(), "z", 3);
    assert_quiet(&sub);
    assert_quiet(&second);
}

#[test]
fn subscribe_reports_from_a_gone_binding_is_withdrawn_at_once() {
    let d = Dispatcher::new().unwrap();
    let gone = d.service("publisher").open().unwrap();
    let gone_binding = gone.binding().clone();
    drop(gone);
    // A live agent of the same name must not stand in for the gone one.
    let live = d.service("publisher").open().unwrap();

    let sub = d.service("subscriber").open().unwrap();
    sub.subscribe_reports_from(&gone_binding, "*");
    expect_publisher(&sub, &gone_binding, ServiceStatus::Withdrawn);
    live.publish_report("x", &1u32, Lifetime::None).unwrap();
    assert_quiet(&sub);
    assert_quiet(&live);
}

#[test]
fn unsubscribe_reports_from_ends_the_subscription_by_binding() {
    let d = Dispatcher::new().unwrap();
    let publ = d.service("publisher").open().unwrap();
    let sub = d.service("subscriber").open().unwrap();
    sub.subscribe_reports_from(publ.binding(), "a");
    expect_subscription(&publ, sub.binding(), "a", SubscriptionStatus::Requested);
    expect_publisher(&sub, publ.binding(), ServiceStatus::Available);

    sub.unsubscribe_reports_from(publ.binding(), "a");
    expect_subscription(&publ, sub.binding(), "a", SubscriptionStatus::Withdrawn);
    expect_publisher(&sub, publ.binding(), ServiceStatus::Withdrawn);
    publ.publish_report("a", &1u32, Lifetime::None).unwrap();
    assert_quiet(&sub);
}

// ----- send_report -----

#[test]
fn send_report_reaches_a_subscriber_with_a_matching_pattern() {
    let d = Dispatcher::new().unwrap();
    let publ = d.service("publisher").open().unwrap();
    let sub = d.service("subscriber").open().unwrap();
    sub.subscribe_reports("publisher", "private.*");
    expect_publisher(&sub, publ.binding(), ServiceStatus::Available);

    publ.send_report(sub.binding(), "private.hello", &1u32)
        .unwrap();
    expect_report(&sub, publ.binding(), "private.hello", 1);

    // A subject the subscriber's pattern does not match is not delivered:
    // the next report is the one published after it.
    publ.send_report(sub.binding(), "public.hello", &2u32)
        .unwrap();
    publ.publish_report("private.next", &3u32, Lifetime::None)
        .unwrap();
    expect_report(&sub, publ.binding(), "private.next", 3);
    assert_quiet(&sub);
}

/// A report's bytes are shared by every subscriber of it in the process,
/// and kept (`shared_bytes`) without a copy: those of `publish_encoded`
/// are the very bytes published.
#[test]
fn subscribers_share_a_reports_bytes_without_a_copy() {
    let d = Dispatcher::new().unwrap();
    let publ = d.service("publisher").open().unwrap();
    let subs: Vec<Service> = (0..2)
        .map(|_| {
            let s = d.service("subscriber").open().unwrap();
            s.subscribe_reports("publisher", "t");
            expect_publisher(&s, publ.binding(), ServiceStatus::Available);
            s
        })
        .collect();
    let bytes: std::sync::Arc<[u8]> = netsvc::encode(&"some content").unwrap().into();
    publ.publish_encoded("t", bytes.clone(), Lifetime::None)
        .unwrap();
    let kept: Vec<std::sync::Arc<[u8]>> = subs.iter().map(|s| report(s).shared_bytes()).collect();
    // The very bytes published: no copy on the way.
    assert!(std::sync::Arc::ptr_eq(&kept[0], &bytes));
    assert!(std::sync::Arc::ptr_eq(&kept[1], &bytes));
}

/// Published reports travel staged, many to one command (`staged.rs`):
/// they must still keep their order with each other, with the same
/// thread's `send_report`s and with the reports of another thread of the
/// same service, through a subscriber queue full most of the time.
#[test]
fn reports_keep_their_order_with_the_publishers_other_commands() {
    const N: u32 = 3_000;
    let d = Dispatcher::new().unwrap();
    let publ = std::sync::Arc::new(d.service("publisher").open().unwrap());
    let sub = d.service("subscriber").open().unwrap();
    sub.subscribe_reports("publisher", "t.*");
    expect_publisher(&sub, publ.binding(), ServiceStatus::Available);
    let to = sub.binding().clone();
    // Thread k publishes k*N..(k+1)*N; every fifth value goes by
    // send_report, and the subject changes every third.
    let threads: Vec<_> = (0..2u32)
        .map(|k| {
            let (publ, to) = (publ.clone(), to.clone());
            std::thread::spawn(move || {
                for i in k * N..(k + 1) * N {
                    let subject = if (i / 3) % 2 == 0 { "t.a" } else { "t.b" };
                    if i % 5 == 0 {
                        publ.send_report(&to, subject, &i).unwrap();
                    } else {
                        publ.publish_report(subject, &i, Lifetime::None).unwrap();
                    }
                }
            })
        })
        .collect();
    let mut next = [0, N];
    for _ in 0..2 * N {
        let r = report(&sub);
        let i = r.decode::<u32>().unwrap();
        let k = (i / N) as usize;
        assert_eq!(i, next[k], "thread {k}'s reports out of order");
        let subject = if (i / 3) % 2 == 0 { "t.a" } else { "t.b" };
        assert_eq!(r.subject(), subject, "the subject of report {i}");
        next[k] += 1;
    }
    for t in threads {
        t.join().unwrap();
    }
    assert_quiet(&sub);
}

#[test]
fn send_report_reaches_a_subscriber_by_binding() {
    let d = Dispatcher::new().unwrap();
    let publ = d.service("publisher").open().unwrap();
    let sub = d.service("subscriber").open().unwrap();
    sub.subscribe_reports_from(publ.binding(), "hello");
    expect_publisher(&sub, publ.binding(), ServiceStatus::Available);
    publ.send_report(sub.binding(), "hello", &5u32).unwrap();
    expect_report(&sub, publ.binding(), "hello", 5);
    assert_quiet(&sub);
}

#[test]
fn send_report_does_not_reach_a_non_subscriber() {
    let d = Dispatcher::new().unwrap();
    let publ = d.service("publisher").open().unwrap();
    let other = d.service("other").open().unwrap();
    let stranger = d.service("stranger").open().unwrap();
    // Subscribed, but to another publisher: still not a subscriber of `publ`.
    stranger.subscribe_reports("other", "*");
    expect_publisher(&stranger, other.binding(), ServiceStatus::Available);

    publ.send_report(stranger.binding(), "hello", &1u32)
        .unwrap();
    // Commands from this thread are handled in order: had the report been
    // delivered, it would come before the Publisher Available below.
    stranger.subscribe_reports("publisher", "nothing");
    expect_publisher(&stranger, publ.binding(), ServiceStatus::Available);
    assert_quiet(&stranger);
}

#[test]
fn send_report_bypasses_the_cache() {
    let d = Dispatcher::new().unwrap();
    let publ = d.service("publisher").open().unwrap();
    let sub = d.service("subscriber").open().unwrap();
    sub.subscribe_reports("publisher", "*");
    expect_publisher(&sub, publ.binding(), ServiceStatus::Available);
    publ.send_report(sub.binding(), "direct", &1u32).unwrap();
    expect_report(&sub, publ.binding(), "direct", 1);

    let late = d.service("late").open().unwrap();
    late.subscribe_reports("publisher", "*");
    expect_publisher(&late, publ.binding(), ServiceStatus::Available);
    publ.publish_report("end", &0u32, Lifetime::None).unwrap();
    assert_eq!(reports_until(&late, "end"), Vec::new());
    // And the subscriber got it only once, directly.
    expect_report(&sub, publ.binding(), "end", 0);
    assert_quiet(&late);
    assert_quiet(&sub);
}

// ----- fan-out -----

#[test]
fn two_subscribers_both_receive_every_report() {
    let d = Dispatcher::new().unwrap();
    let publ = d.service("publisher").open().unwrap();
    let s1 = d.service("s1").open().unwrap();
    let s2 = d.service("s2").open().unwrap();
    s1.subscribe_reports("publisher", "*");
    s2.subscribe_reports("publisher", "*");
    expect_publisher(&s1, publ.binding(), ServiceStatus::Available);
    expect_publisher(&s2, publ.binding(), ServiceStatus::Available);

    for i in 0..50u32 {
        publ.publish_report(&format!("r.{i}"), &i, Lifetime::None)
            .unwrap();
    }
    for i in 0..50u32 {
        expect_report(&s1, publ.binding(), &format!("r.{i}"), i);
        expect_report(&s2, publ.binding(), &format!("r.{i}"), i);
    }
    assert_quiet(&s1);
    assert_quiet(&s2);
    let stats = d.stats();
    assert_eq!(stats.reports_published, 50);
    assert_eq!(stats.reports_delivered, 100);
}

#[test]
fn report_is_delivered_once_per_subscriber_even_if_two_patterns_match() {
    let d = Dispatcher::new().unwrap();
    let publ = d.service("publisher").open().unwrap();
    let sub = d.service("subscriber").open().unwrap();
    sub.subscribe_reports("publisher", "system.*");
    sub.subscribe_reports("publisher", "*.time");
    sub.subscribe_reports_from(publ.binding(), "system.time");
    expect_publisher(&sub, publ.binding(), ServiceStatus::Available);

    publ.publish_report("system.time", &1u32, Lifetime::Forever)
        .unwrap();
    publ.publish_report("user.time", &2u32, Lifetime::None)
        .unwrap();
    expect_report(&sub, publ.binding(), "system.time", 1);
    expect_report(&sub, publ.binding(), "user.time", 2);
    assert_quiet(&sub);
    assert_eq!(d.stats().reports_delivered, 2);
}

// ----- a slow subscriber -----

#[test]
fn a_stalled_subscriber_holds_its_publisher_for_the_stall_limit_then_is_told_what_it_lost() {
    // (The stall limit is shortened from its 2 s default to keep the test short.)
    const TOTAL: u32 = 10_000;
    const SLOW_CAPACITY: usize = 16;
    let d = Dispatcher::builder()
        .stall_limit(Duration::from_millis(200))
        .build()
        .unwrap();
    let echo = d
        .service("echo")
        .spawn(|_svc, event| {
            if let Event::Request(r) = event {
                let n: u32 = r.decode().unwrap();
                r.reply(&(n + 1)).unwrap();
            }
        })
        .unwrap();
    let client = d.service("client").open().unwrap();
    let publ = d.service("publisher").open().unwrap();
    let slow = d
        .service("slow")
        .queue_capacity(SLOW_CAPACITY)
        .open()
        .unwrap();
    // Large enough for the whole flood, so that whether it keeps up does not
    // depend on thread scheduling: this subscriber does read all the time.
    let fast = d
        .service("fast")
        .queue_capacity(2 * TOTAL as usize)
        .open()
        .unwrap();
    slow.subscribe_reports("publisher", "flood.*");
    fast.subscribe_reports("publisher", "flood.*");
    // The slow one reads its Publisher Available, then never reads again.
    expect_publisher(&slow, publ.binding(), ServiceStatus::Available);
    expect_publisher(&fast, publ.binding(), ServiceStatus::Available);
    for s in [&slow, &fast] {
        wait_for(s, "the confirmation", |e| match e {
            Event::Confirmed(_) => Some(()),
            _ => None,
        });
    }
    let publ_binding = publ.binding().clone();

    let reader = std::thread::spawn(move || {
        for i in 0..TOTAL {
            expect_report(&fast, &publ_binding, &format!("flood.{i}"), i);
        }
        fast
    });

    for i in 0..TOTAL {
        publ.publish_report(&format!("flood.{i}"), &i, Lifetime::None)
            .unwrap_or_else(|e| panic!("publish_report {i} failed: {e}"));
        if i == TOTAL / 2 {
            let n: u32 = client
                .call_timeout(echo.binding(), "inc", &i, WAIT)
                .expect("echo answers during the flood");
            assert_eq!(n, i + 1);
        }
    }
    let n: u32 = client
        .call_timeout(echo.binding(), "inc", &7u32, WAIT)
        .expect("echo answers after the flood");
    assert_eq!(n, 8);

    // The fast subscriber received every report, in order.
    let fast = within("fast subscriber reading the flood", move || {
        reader.join().expect("fast subscriber thread")
    });
    // Every publish has been handled once this returns.
    barrier(&d);
    let stats = d.stats();
    assert_eq!(stats.reports_published, TOTAL as u64);
    assert_eq!(
        stats.reports_dropped,
        TOTAL as u64 - SLOW_CAPACITY as u64,
        "reports dropped for the slow subscriber"
    );
    assert_eq!(stats.subscribers_stalled, 1);
    assert_eq!(stats.reports_delivered, TOTAL as u64 + SLOW_CAPACITY as u64);
    assert_eq!(stats.busy_replies, 0);
    assert_eq!(stats.publish_timeouts, 0);

    // The slow subscriber holds the first reports that fit in its queue,
    // and once it has taken them, it is told what it lost.
    for i in 0..SLOW_CAPACITY as u32 {
        expect_report(&slow, publ.binding(), &format!("flood.{i}"), i);
    }
    let dropped = wait_for(&slow, "the drops told", |e| match e {
        Event::Dropped(d) => Some(d),
        _ => None,
    });
    assert_eq!(dropped.count(), TOTAL as u64 - SLOW_CAPACITY as u64);
    assert_eq!(dropped.reason(), DropReason::Stalled);
    assert_quiet(&slow);
    assert_quiet(&fast);
}

#[test]
fn a_publisher_waits_for_a_full_subscriber_and_fails_distinctly_after_its_timeout() {
    // Stalled subscribers are never dropped here, so the publisher's
    // timeout (1 s: long enough for the reader below to start) is what
    // ends the wait.
    let d = Dispatcher::builder()
        .stall_limit(Duration::MAX)
        .publish_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let publ = d.service("publisher").queue_capacity(8).open().unwrap();
    let sub = d.service("sub").queue_capacity(4).open().unwrap();
    sub.subscribe_reports("publisher", "*");
    expect_publisher(&sub, publ.binding(), ServiceStatus::Available);
    wait_for(&sub, "the confirmation", |e| match e {
        Event::Confirmed(_) => Some(()),
        _ => None,
    });
    // The subscriber reads nothing: 4 reports fill its queue, 8 more wait
    // and hold the publisher, which then fails (a few more may be in the
    // dispatcher's command queue when it starts waiting).
    let mut published = 0u64;
    let err = loop {
        match publ.publish_report("r", &published, Lifetime::None) {
            Ok(()) => published += 1,
            Err(e) => break e,
        }
        assert!(published < 10_000, "the publisher was never held back");
    };
    assert!(matches!(err, netsvc::Error::Backpressure(_)), "{err}");
    assert_eq!(err.code(), netsvc::codes::SERVICE_BUSY);
    // (At most the command queue's 4,096 more, taken before the dispatcher
    // counted them as held.)
    assert!(
        (12..=12 + 4096).contains(&published),
        "{published} published before the wait"
    );
    assert_eq!(d.stats().publish_timeouts, 1);
    assert_eq!(d.stats().reports_dropped, 0);

    // Once the subscriber reads, the publisher goes on, and every report
    // published arrives, in order.
    let reader = std::thread::spawn(move || {
        for i in 0..published + 1 {
            let r = report(&sub);
            assert_eq!(r.decode::<u64>().unwrap(), i);
        }
        sub
    });
    publ.publish_report("r", &published, Lifetime::None)
        .expect("published once the subscriber reads");
    let sub = within("the reader", move || reader.join().unwrap());
    assert_quiet(&sub);
    assert_eq!(d.stats().reports_dropped, 0);
}

#[test]
fn a_subscriber_hears_of_its_publishers_withdrawal_after_the_reports_that_waited_for_it() {
    let d = Dispatcher::new().unwrap();
    let publ = d.service("p").open().unwrap();
    let publisher = publ.binding().clone();
    let sub = d.service("s").queue_capacity(16).open().unwrap();
    sub.subscribe_reports("p", "x.*");
    wait_for(&sub, "the confirmation", |e| match e {
        Event::Confirmed(_) => Some(()),
        _ => None,
    });
    // More than its queue holds: the rest wait for room (nothing is taken
    // meanwhile), and the withdrawal comes behind them.
    for i in 0..100u32 {
        publ.publish_report("x.n", &i, Lifetime::None).unwrap();
    }
    drop(publ);
    for i in 0..100u32 {
        expect_report(&sub, &publisher, "x.n", i);
    }
    expect_publisher(&sub, &publisher, ServiceStatus::Withdrawn);
    assert_eq!(d.stats().reports_dropped, 0);
}
