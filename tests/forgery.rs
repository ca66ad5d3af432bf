//! A peer may answer only the calls sent to it, and may not take over
//! another caller's conversation: forged replies and hijacking requests
//! (and heartbeats) from a raw peer are dropped and counted, and the real
//! answer wins.

mod util;

use std::io::Write;
use std::time::Duration;

use crossbeam_channel::bounded;
use netsvc::peer_frames::{self, Key};
use netsvc::{ConversationId, Dispatcher, Event, Exchange, ServiceStatus};
use util::*;

/// `(process uid, sequence)` of a conversation id, from its display
/// (`<16 hex digits>:<decimal>`).
fn parts(conv: &ConversationId) -> (u64, u64) {
    let text = conv.to_string();
    let (p, s) = text.split_once(':').expect("process:seq");
    (
        u64::from_str_radix(p, 16).expect("hex process"),
        s.parse().expect("decimal seq"),
    )
}

#[test]
fn forged_replies_and_hijacking_requests_are_dropped() {
    // A server whose local caller calls a service of an honest client;
    // that service holds the request until the test releases it.
    let ds = Dispatcher::builder().name("server").build().unwrap();
    let ex = Exchange::server(&ds).listen("127.0.0.1:0").unwrap();
    let addr = ex.local_addr();
    let echo = spawn_u64(&ds, "echo", |_| 999);

    let db = Dispatcher::builder().name("honest").build().unwrap();
    let _cx = Exchange::client(&db)
        .connect(addr, Duration::from_millis(100))
        .unwrap();
    let (conv_tx, conv_rx) = bounded(1);
    let (release_tx, release_rx) = bounded::<()>(1);
    let _slow = db
        .service("slow")
        .spawn(move |_s, ev| {
            if let Event::Request(r) = ev {
                let _ = conv_tx.send(*r.conversation_id());
                let _ = release_rx.recv_timeout(WAIT);
                let _ = r.reply(&1u64);
            }
        })
        .unwrap();

    let me = ds.service("me").open().unwrap();
    me.monitor_service_name("slow");
    let slow = wait_announcement(&me, "slow", None, ServiceStatus::Available)
        .binding()
        .clone();
    let pending = me.request::<u64, _>(&slow, "m", &0u64).unwrap();
    let conv = conv_rx.recv_timeout(WAIT).unwrap();
    let (process, seq) = parts(&conv);
    assert_eq!(process, ds.process_id().uid());

    // A raw peer, with the server's table (so it knows every key).
    let mut raw = raw::handshake(addr, 66);
    let forged = peer_frames::reply(process, seq, &peer_frames::payload(&666u64));
    for _ in 0..10 {
        raw.write_all(&forged).unwrap();
    }
    wait_stat(&ds, "refused_frames", 10, |s| s.refused_frames);
    assert!(pending.try_get().is_none(), "a forged reply was taken");
    // Nor may it keep the call's heartbeat monitor alive.
    raw.write_all(&peer_frames::progress(process, seq)).unwrap();
    wait_stat(&ds, "refused_frames", 11, |s| s.refused_frames);

    // The same conversation id, as a request of the raw peer's to echo:
    // taken, it would move the call to echo (999) and its answer to us.
    let sender = peer_frames::binding(
        "raw",
        "*",
        Key {
            process: raw::uid(66),
            agent: 1,
        },
        &[],
    );
    raw.write_all(&peer_frames::announce(&sender)).unwrap();
    let hijack = peer_frames::request_in(
        (process, seq),
        &sender,
        echo.binding().into(),
        "m",
        &peer_frames::payload(&0u64),
        1000,
        None,
    );
    raw.write_all(&hijack).unwrap();
    wait_stat(&ds, "refused_frames", 12, |s| s.refused_frames);

    // The honest answer is the one the caller gets.
    release_tx.send(()).unwrap();
    let got = pending.wait_timeout(WAIT).unwrap();
    assert_eq!(got, 1);
    // And the server still serves the raw peer's own calls.
    let r: u64 = me.call_timeout(echo.binding(), "m", &0u64, WAIT).unwrap();
    assert_eq!(r, 999);
}

#[test]
fn reports_in_another_process_name_are_dropped() {
    let ds = Dispatcher::builder().name("server").build().unwrap();
    let ex = Exchange::server(&ds).listen("127.0.0.1:0").unwrap();
    let addr = ex.local_addr();
    let db = Dispatcher::builder().name("honest").build().unwrap();
    let _cx = Exchange::client(&db)
        .connect(addr, Duration::from_millis(100))
        .unwrap();
    let publisher = db.service("pub").open().unwrap();

    let sub = ds.service("sub").open().unwrap();
    sub.monitor_service_name("pub");
    let pb = wait_announcement(&sub, "pub", None, ServiceStatus::Available)
        .binding()
        .clone();
    sub.subscribe_reports("pub", "t.*");
    // The publisher hears of the subscription once it is in place.
    let s = subscription(&publisher);
    assert_eq!(s.subject(), "t.*");

    // A raw peer publishes in the honest publisher's name.
    let mut raw = raw::handshake(addr, 67);
    let forged = peer_frames::report((&pb).into(), None, "t.x", &peer_frames::payload(&666u64));
    raw.write_all(&forged).unwrap();
    let to_one = peer_frames::report(
        (&pb).into(),
        Some(sub.binding().into()),
        "t.y",
        &peer_frames::payload(&667u64),
    );
    raw.write_all(&to_one).unwrap();
    wait_stat(&ds, "refused_frames", 2, |s| s.refused_frames);

    // The genuine report is the first and only one the subscriber gets.
    publisher
        .publish_report("t.x", &1u64, netsvc::Lifetime::None)
        .unwrap();
    let r = wait_for(&sub, "a report", |e| match e {
        Event::Report(r) => Some(r),
        _ => None,
    });
    assert_eq!(r.decode::<u64>().unwrap(), 1);
    assert_eq!(r.publisher(), &pb);
    assert_quiet(&sub);
}

/// A peer that sees one of a caller's conversation ids (it was called)
/// registers the ones that would come next, as requests of its own: under
/// sequential ids each of the caller's next calls would be refused as
/// another caller's. The ids are unforeseeable: every call goes through.
#[test]
fn a_callers_next_conversation_ids_cannot_be_taken_first() {
    let ds = Dispatcher::builder().name("server").build().unwrap();
    let ex = Exchange::server(&ds).listen("127.0.0.1:0").unwrap();
    let addr = ex.local_addr();
    let echo = spawn_u64(&ds, "echo", |x| x + 1);
    // A service that holds what it is sent (the pre-registered calls stay
    // pending at the server while it holds them).
    let sink = ds.service("sink").open().unwrap();

    // The attacker's process offers a service the victim calls once.
    let da = Dispatcher::builder().name("attacker").build().unwrap();
    let _ax = Exchange::client(&da)
        .connect(addr, Duration::from_millis(100))
        .unwrap();
    let (conv_tx, conv_rx) = bounded(1);
    let _trap = da
        .service("trap")
        .spawn(move |_s, ev| {
            if let Event::Request(r) = ev {
                let _ = conv_tx.try_send(*r.conversation_id());
                let _ = r.reply(&0u64);
            }
        })
        .unwrap();
    let dv = Dispatcher::builder().name("victim").build().unwrap();
    let _vx = Exchange::client(&dv)
        .connect(addr, Duration::from_millis(100))
        .unwrap();
    let trap = await_service(&dv, "trap");
    let echo_seen = await_service(&dv, "echo");
    let me = dv.service("me").open().unwrap();
    let _: u64 = me.call_timeout(&trap, "m", &0u64, WAIT).unwrap();
    let seen = conv_rx.recv_timeout(WAIT).unwrap();
    let (process, seq) = parts(&seen);
    assert_eq!(process, dv.process_id().uid());

    // The next 200 ids the victim would use, were they sequential, taken
    // first as the attacker's own (held) calls to the sink.
    let mut raw = raw::handshake(addr, 83);
    let sender = netsvc::fuzzing::binding_of(83, "raw", "*", 1, vec![]);
    for k in 1..=200 {
        let f = peer_frames::request_in(
            (process, seq.wrapping_add(k)),
            &sender,
            sink.binding().into(),
            "hold",
            &peer_frames::payload(&0u64),
            30_000,
            None,
        );
        raw.write_all(&f).unwrap();
    }
    let mut held = Vec::new();
    while held.len() < 200 {
        match next(&sink) {
            Event::Request(r) => held.push(r),
            other => panic!("the sink got {other:?}"),
        }
    }
    // The victim's next calls all reach echo.
    for i in 0..20u64 {
        let r: u64 = me.call_timeout(&echo_seen, "m", &i, WAIT).unwrap();
        assert_eq!(r, i + 1);
    }
    assert_eq!(ds.stats().refused_frames, 0);
    drop(held);
    drop(echo);
}

/// A confirmation is taken only from the link its publisher is reached by,
/// and only for a subscription held: a peer cannot tell a local service
/// that subscriptions it never made are in force, nor confirm in another
/// publisher's name.
#[test]
fn a_confirmation_of_a_subscription_not_held_is_refused() {
    let ds = Dispatcher::new().unwrap();
    let sx = Exchange::server(&ds).listen("127.0.0.1:0").unwrap();
    let sub = ds.service("sub").open().unwrap();
    let local_pub = ds.service("local").open().unwrap();
    let mut raw = raw::handshake(sx.local_addr(), 72);
    let publisher = Key {
        process: raw::uid(72),
        agent: 1,
    };
    raw.write_all(&peer_frames::available("pub", "*", publisher, &[]))
        .unwrap();
    await_service(&ds, "pub");
    // No subscription at all: refused.
    raw.write_all(&peer_frames::subscribed(
        sub.binding().into(),
        publisher,
        "*",
    ))
    .unwrap();
    wait_stat(&ds, "refused_frames", 1, |s| s.refused_frames);
    // Another pattern than the one held: refused.
    sub.subscribe_reports("pub", "a.*");
    wait_for(&sub, "the publisher", |e| match e {
        Event::Publisher(p) if p.status() == ServiceStatus::Available => Some(()),
        _ => None,
    });
    raw.write_all(&peer_frames::subscribed(
        sub.binding().into(),
        publisher,
        "b.*",
    ))
    .unwrap();
    wait_stat(&ds, "refused_frames", 2, |s| s.refused_frames);
    // In the name of a publisher not of its link: refused.
    sub.subscribe_reports("local", "*");
    raw.write_all(&peer_frames::subscribed(
        sub.binding().into(),
        local_pub.binding().into(),
        "*",
    ))
    .unwrap();
    wait_stat(&ds, "refused_frames", 3, |s| s.refused_frames);
    // The genuine one is taken: the subscriber hears of it, and of nothing
    // forged before it (the local publisher's own confirmation aside).
    raw.write_all(&peer_frames::subscribed(
        sub.binding().into(),
        publisher,
        "a.*",
    ))
    .unwrap();
    let mut seen: Vec<(String, String)> = (0..2)
        .map(|_| {
            wait_for(&sub, "a confirmation", |e| match e {
                Event::Confirmed(c) => Some((
                    c.publisher().service_name().to_owned(),
                    c.pattern().to_owned(),
                )),
                _ => None,
            })
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("local".to_owned(), "*".to_owned()),
            ("pub".to_owned(), "a.*".to_owned())
        ]
    );
    assert_quiet(&sub);
    assert_eq!(ds.stats().refused_frames, 3);
}

/// A peer's batch of reports (`Reports`, one frame for many) is taken as
/// its reports one by one, in order; a batch in another publisher's name
/// is refused whole; a batch whose count claims more payloads than it
/// carries is bad input and closes only that connection.
#[test]
fn batches_of_reports_are_taken_whole_or_refused_whole() {
    let ds = Dispatcher::builder().name("server").build().unwrap();
    let ex = Exchange::server(&ds).listen("127.0.0.1:0").unwrap();
    let addr = ex.local_addr();
    let mut raw = raw::handshake(addr, 71);
    let own = Key {
        process: raw::uid(71),
        agent: 5,
    };
    raw.write_all(&peer_frames::available("batcher", "*", own, &[]))
        .unwrap();
    let sub = ds.service("sub").open().unwrap();
    sub.monitor_service_name("batcher");
    let pb = wait_announcement(&sub, "batcher", None, ServiceStatus::Available)
        .binding()
        .clone();
    sub.subscribe_reports("batcher", "t.*");
    // (The subscription reaches the raw peer; it need not read it: it is
    // in force at the server, where the reports are routed.)
    let honest = ds.service("honest").open().unwrap();
    let forged_key: Key = honest.binding().into();

    // In the honest local service's name: refused, none delivered.
    let payloads: Vec<Vec<u8>> = (1..=3u64)
        .map(|i| peer_frames::payload(&(900 + i)))
        .collect();
    let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    raw.write_all(&peer_frames::reports(forged_key, None, "t.x", &refs))
        .unwrap();
    wait_stat(&ds, "refused_frames", 1, |s| s.refused_frames);

    // Its own: every report, in order.
    let payloads: Vec<Vec<u8>> = (1..=200u64).map(|i| peer_frames::payload(&i)).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    raw.write_all(&peer_frames::reports(own, None, "t.x", &refs))
        .unwrap();
    for want in 1..=200u64 {
        let r = wait_for(&sub, "a report of the batch", |e| match e {
            Event::Report(r) => Some(r),
            _ => None,
        });
        assert_eq!(r.publisher(), &pb);
        assert_eq!(r.subject(), "t.x");
        assert_eq!(r.decode::<u64>().unwrap(), want);
        // Its bytes, as read and as kept (copied out of the batch's), are
        // its payload's alone.
        let own = &payloads[want as usize - 1];
        assert_eq!(r.bytes(), &own[..]);
        assert_eq!(&*r.shared_bytes(), &own[..]);
    }
    assert_quiet(&sub);

    // A count of 7 with one payload after it: the frame is bad, the link
    // closed, nothing of it delivered.
    let one = peer_frames::payload(&7u64);
    let mut frame = peer_frames::reports(own, None, "t.x", &[&one]);
    let count_at = frame.len() - one.len() - 2; // (count, length, payload)
    assert_eq!(frame[count_at], 1);
    frame[count_at] = 7;
    raw.write_all(&frame).unwrap();
    raw::wait_closed(&mut raw);
    let gone = wait_announcement(&sub, "batcher", None, ServiceStatus::Withdrawn);
    assert_eq!(gone.binding(), &pb);
    assert_quiet(&sub);
    assert_eq!(
        ds.stats().refused_frames,
        1,
        "(the bad frame is not a refusal)"
    );
}
