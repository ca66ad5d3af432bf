//! oslo.messaging's notification scenarios (notify package and functional
//! tests), in one process: one Dispatcher, no exchange.

mod util;
use util::*;

use std::collections::{BTreeMap, BTreeSet};

use crossbeam_channel::{unbounded, Receiver, Sender};
use netsvc::{
    Context, Dispatcher, Error, Notification, NotificationListener, NotificationListenerHandle,
    Notifier, Priority, Value,
};
use serde::{Deserialize, Serialize};

/// What a handler saw: the listener's label, the context, the notification.
type Seen = (String, Context, Notification);

/// Receives `n` items (each within WAIT), then checks that no more arrive
/// within QUIET.
fn collect_exactly<T: std::fmt::Debug>(rx: &Receiver<T>, n: usize) -> Vec<T> {
    let mut got = Vec::new();
    for i in 0..n {
        match rx.recv_timeout(WAIT) {
            Ok(t) => got.push(t),
            Err(_) => panic!("only {i} of {n} items within {WAIT:?}: {got:?}"),
        }
    }
    if let Ok(extra) = rx.recv_timeout(QUIET) {
        panic!("more than {n} items: extra {extra:?} after {got:?}");
    }
    got
}

/// A listener on "notifications" handling `info` only, labelled `label`.
fn info_listener(
    d: &Dispatcher,
    label: &str,
    pool: Option<&str>,
    tx: &Sender<Seen>,
) -> NotificationListenerHandle {
    let mut l = NotificationListener::new(d, &["notifications"]);
    if let Some(p) = pool {
        l = l.pool(p);
    }
    let (label, tx) = (label.to_owned(), tx.clone());
    l.on("info", move |c: &Context, n: &Notification| {
        tx.send((label.clone(), c.clone(), n.clone())).unwrap();
    })
    .start()
    .unwrap()
}

fn ctx_with(key: &str, v: &str) -> Context {
    let mut c = Context::new();
    c.insert(key.to_owned(), Value::from(v));
    c
}

#[test]
fn each_priority_reaches_its_handler_in_send_order() {
    let d = Dispatcher::new().unwrap();
    let (tx, rx) = unbounded::<Seen>();
    let handler = |label: &'static str, tx: Sender<Seen>| {
        move |c: &Context, n: &Notification| {
            tx.send((label.to_owned(), c.clone(), n.clone())).unwrap();
        }
    };
    let _l = NotificationListener::new(&d, &["notifications"])
        .on("info", handler("info", tx.clone()))
        .on("warning", handler("warning", tx.clone()))
        .on("error", handler("error", tx.clone()))
        .start()
        .unwrap();
    let n = Notifier::new(&d, "compute.host1", &["notifications"]);
    let c = ctx_with("request_id", "req-1");
    n.debug(&c, "e.debug", &0u32).unwrap(); // no handler: dropped
    n.info(&c, "e.info", &1u32).unwrap();
    n.warn(&c, "e.warn", &2u32).unwrap();
    n.critical(&c, "e.critical", &3u32).unwrap(); // no handler: dropped
    n.error(&c, "e.error", &4u32).unwrap();

    let got = collect_exactly(&rx, 3);
    let summary: Vec<(&str, Priority, &str, u32)> = got
        .iter()
        .map(|(label, _, n)| {
            (
                label.as_str(),
                n.priority,
                n.event_type.as_str(),
                n.decode_payload::<u32>().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("info", Priority::Info, "e.info", 1),
            ("warning", Priority::Warn, "e.warn", 2),
            ("error", Priority::Error, "e.error", 4),
        ]
    );
    for (_, ctx, n) in &got {
        assert_eq!(ctx, &c);
        assert_eq!(n.publisher_id, "compute.host1");
        assert!(n.timestamp > 0.0, "{n:?}");
        assert!(!n.message_id.is_empty(), "{n:?}");
    }
    let ids: BTreeSet<&str> = got.iter().map(|(_, _, n)| n.message_id.as_str()).collect();
    assert_eq!(ids.len(), 3, "message ids are unique: {ids:?}");
}

#[test]
fn every_priority_method_sends_its_priority() {
    let d = Dispatcher::new().unwrap();
    let (tx, rx) = unbounded::<Priority>();
    let mut l = NotificationListener::new(&d, &["notifications"]);
    for p in Priority::ALL {
        let tx = tx.clone();
        l = l.on(p.as_str(), move |_c: &Context, n: &Notification| {
            tx.send(n.priority).unwrap();
        });
    }
    let _l = l.start().unwrap();
    let n = Notifier::new(&d, "p", &["notifications"]);
    let c = Context::new();
    n.audit(&c, "e", &()).unwrap();
    n.debug(&c, "e", &()).unwrap();
    n.info(&c, "e", &()).unwrap();
    n.warn(&c, "e", &()).unwrap();
    n.error(&c, "e", &()).unwrap();
    n.critical(&c, "e", &()).unwrap();
    n.sample(&c, "e", &()).unwrap();
    assert_eq!(collect_exactly(&rx, 7), Priority::ALL);
}

#[test]
fn publisher_id_filter_drops_other_publishers() {
    let d = Dispatcher::new().unwrap();
    let (tx, rx) = unbounded::<Seen>();
    let _l = NotificationListener::new(&d, &["notifications"])
        .filter_publisher_id("compute.*")
        .on("info", move |c: &Context, n: &Notification| {
            tx.send(("l".to_owned(), c.clone(), n.clone())).unwrap();
        })
        .start()
        .unwrap();
    let n = Notifier::new(&d, "network.host2", &["notifications"]);
    n.info(&Context::new(), "first", &()).unwrap();
    n.prepare("compute.host1")
        .info(&Context::new(), "second", &())
        .unwrap();
    n.info(&Context::new(), "third", &()).unwrap();
    let got = collect_exactly(&rx, 1);
    assert_eq!(got[0].2.publisher_id, "compute.host1");
    assert_eq!(got[0].2.event_type, "second");
}

#[test]
fn event_type_filter_drops_other_events() {
    let d = Dispatcher::new().unwrap();
    let (tx, rx) = unbounded::<Seen>();
    let _l = NotificationListener::new(&d, &["notifications"])
        .filter_event_type("instance.*")
        .on("info", move |c: &Context, n: &Notification| {
            tx.send(("l".to_owned(), c.clone(), n.clone())).unwrap();
        })
        .start()
        .unwrap();
    let n = Notifier::new(&d, "compute.host1", &["notifications"]);
    for e in [
        "volume.create",
        "instance.create.end",
        "instance",
        "instance.delete",
    ] {
        n.info(&Context::new(), e, &()).unwrap();
    }
    let got: Vec<String> = collect_exactly(&rx, 2)
        .into_iter()
        .map(|(_, _, n)| n.event_type)
        .collect();
    assert_eq!(got, ["instance.create.end", "instance.delete"]);
}

#[test]
fn pools_share_the_stream_and_each_pool_gets_everything() {
    let d = Dispatcher::new().unwrap();
    let (tx, rx) = unbounded::<Seen>();
    let _p1 = info_listener(&d, "p1", Some("p"), &tx);
    let _p2 = info_listener(&d, "p2", Some("p"), &tx);
    let _q1 = info_listener(&d, "q1", Some("q"), &tx);
    let _u = info_listener(&d, "u", None, &tx);
    let n = Notifier::new(&d, "compute.host1", &["notifications"]);
    for i in 0..10u32 {
        n.info(&Context::new(), "tick", &i).unwrap();
    }
    let got = collect_exactly(&rx, 30);
    let mut per: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (label, _, n) in got {
        per.entry(label)
            .or_default()
            .push(n.decode_payload::<u32>().unwrap());
    }
    let all: Vec<u32> = (0..10).collect();
    // Delivery to one listener's queue is in send order.
    assert_eq!(per["q1"], all, "pool q gets everything");
    assert_eq!(per["u"], all, "the unpooled listener gets everything");
    assert_eq!(per["p1"].len(), 5, "{per:?}");
    assert_eq!(per["p2"].len(), 5, "{per:?}");
    let mut pool_p: Vec<u32> = per["p1"].iter().chain(&per["p2"]).copied().collect();
    pool_p.sort();
    assert_eq!(pool_p, all, "pool p shares the stream, each once");
}

#[test]
fn prepare_changes_only_the_publisher_id() {
    let d = Dispatcher::new().unwrap();
    let (tx, rx) = unbounded::<Seen>();
    let _l = info_listener(&d, "l", None, &tx);
    let n = Notifier::new(&d, "compute.host1", &["notifications"]);
    let other = n.prepare("other.id");
    other.info(&Context::new(), "a", &()).unwrap();
    n.info(&Context::new(), "b", &()).unwrap();
    let got: Vec<(String, String)> = collect_exactly(&rx, 2)
        .into_iter()
        .map(|(_, _, n)| (n.publisher_id, n.event_type))
        .collect();
    assert_eq!(
        got,
        [
            ("other.id".to_owned(), "a".to_owned()),
            ("compute.host1".to_owned(), "b".to_owned())
        ]
    );
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Instance {
    id: String,
    vcpus: u32,
    tags: Vec<String>,
}

#[test]
fn payload_decodes_as_sent() {
    let d = Dispatcher::new().unwrap();
    let (tx, rx) = unbounded::<Seen>();
    let _l = info_listener(&d, "l", None, &tx);
    let n = Notifier::new(&d, "compute.host1", &["notifications"]);
    let sent = Instance {
        id: "vm-1".to_owned(),
        vcpus: 4,
        tags: vec!["a".to_owned(), "b".to_owned()],
    };
    n.info(&Context::new(), "instance.create.end", &sent)
        .unwrap();
    let got = collect_exactly(&rx, 1);
    assert_eq!(got[0].2.decode_payload::<Instance>().unwrap(), sent);
}

#[test]
fn topics_and_exchanges_scope_notifications() {
    let d = Dispatcher::new().unwrap();
    let (tx, rx) = unbounded::<(String, String)>();
    let listen = |topic: &str, exchange: Option<&str>| {
        let mut l = NotificationListener::new(&d, &[topic]);
        if let Some(x) = exchange {
            l = l.exchange(x);
        }
        let (label, tx) = (format!("{}/{topic}", exchange.unwrap_or("-")), tx.clone());
        l.on("info", move |_c: &Context, n: &Notification| {
            tx.send((label.clone(), n.event_type.clone())).unwrap();
        })
        .start()
        .unwrap()
    };
    let _a = listen("a", None);
    let _b = listen("b", None);
    let _c = listen("c", None);
    let _xa = listen("a", Some("x"));
    let n = Notifier::new(&d, "pub", &["a", "b"]);
    n.info(&Context::new(), "to-ab", &()).unwrap();
    n.clone()
        .exchange("x")
        .info(&Context::new(), "to-x", &())
        .unwrap();
    let mut got = collect_exactly(&rx, 3);
    got.sort();
    assert_eq!(
        got,
        [
            ("-/a".to_owned(), "to-ab".to_owned()),
            ("-/b".to_owned(), "to-ab".to_owned()),
            ("x/a".to_owned(), "to-x".to_owned()),
        ]
    );
}

#[test]
fn notifying_with_no_listener_is_ok() {
    let d = Dispatcher::new().unwrap();
    let n = Notifier::new(&d, "compute.host1", &["notifications", "other"]);
    n.info(&Context::new(), "nobody.listens", &1u32).unwrap();
    n.error(&Context::new(), "nobody.listens", &2u32).unwrap();
}

#[test]
fn stopped_listener_receives_nothing() {
    let d = Dispatcher::new().unwrap();
    let (tx, rx) = unbounded::<Seen>();
    let l = info_listener(&d, "l", None, &tx);
    let n = Notifier::new(&d, "compute.host1", &["notifications"]);
    n.info(&Context::new(), "before", &()).unwrap();
    assert_eq!(collect_exactly(&rx, 1)[0].2.event_type, "before");
    l.stop();
    within("NotificationListenerHandle::wait", move || l.wait());
    n.info(&Context::new(), "after", &()).unwrap();
    assert!(rx.recv_timeout(QUIET).is_err(), "a stopped listener got it");
}

#[test]
fn notify_after_shutdown_is_closed() {
    let d = Dispatcher::new().unwrap();
    let n = Notifier::new(&d, "compute.host1", &["notifications"]);
    n.info(&Context::new(), "before", &()).unwrap();
    d.shutdown();
    let r = n.info(&Context::new(), "after", &());
    assert!(matches!(r, Err(Error::Closed)), "{r:?}");
    // A notifier made after the shutdown says the same.
    let late = Notifier::new(&d, "late", &["notifications"]);
    let r = late.warn(&Context::new(), "after", &());
    assert!(matches!(r, Err(Error::Closed)), "{r:?}");
}

#[test]
fn unknown_priority_name_fails_start() {
    let d = Dispatcher::new().unwrap();
    let r = NotificationListener::new(&d, &["notifications"])
        .on("info", |_c: &Context, _n: &Notification| {})
        .on("loud", |_c: &Context, _n: &Notification| {})
        .start();
    assert!(matches!(r, Err(Error::InvalidTarget(_))), "{r:?}");
    // Nothing was left listening.
    assert!(d
        .lookup_service_name("notify:openstack:notifications")
        .is_empty());
}
