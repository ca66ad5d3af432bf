//! The service registry and its announcements, all in one process.

mod util;

use std::collections::HashSet;

use netsvc::{
    Dispatcher, Error, Event, Lifetime, Service, ServiceAnnouncement, ServiceBinding, ServiceStatus,
};
use util::*;

use ServiceStatus::{Available, Withdrawn};

/// Checks an announcement: the agent, the group it is about, the status.
fn assert_ann(
    a: &ServiceAnnouncement,
    binding: &ServiceBinding,
    group: Option<&str>,
    status: ServiceStatus,
) {
    assert_eq!(a.binding(), binding, "binding of {a:?}");
    assert_eq!(
        a.binding().service_name(),
        binding.service_name(),
        "name of {a:?}"
    );
    assert_eq!(a.group(), group, "group of {a:?}");
    assert_eq!(a.status(), status, "status of {a:?}");
}

/// The next event of `svc`, which must be that announcement.
fn expect_ann(svc: &Service, binding: &ServiceBinding, group: Option<&str>, status: ServiceStatus) {
    let a = announcement(svc);
    assert_ann(&a, binding, group, status);
}

/// A spawned service that answers every request with `()`.
fn spawn_ack(d: &Dispatcher, name: &str) -> netsvc::ServiceHandle {
    d.service(name)
        .spawn(|_svc, ev| {
            if let Event::Request(r) = ev {
                let _ = r.reply(&());
            }
        })
        .expect("spawn")
}

fn agents(list: &[ServiceBinding]) -> Vec<netsvc::AgentId> {
    list.iter().map(|b| b.agent_identity()).collect()
}

// ----- registration and bindings -----

#[test]
fn opened_service_is_found_by_name_with_its_binding_fields() {
    let d = Dispatcher::new().unwrap();
    let svc = d.service("echo").open().unwrap();

    let b = svc.binding();
    assert_eq!(b.service_name(), "echo");
    assert_eq!(b.service_audience(), "*");
    assert_eq!(b.process_identity(), &d.process_id());
    assert!(b.groups().is_empty(), "groups: {:?}", b.groups());

    let found = d.lookup_service_name("echo");
    assert_eq!(found.len(), 1, "{found:?}");
    let f = &found[0];
    assert_eq!(f, b);
    assert_eq!(f.agent_identity(), b.agent_identity());
    assert_eq!(f.service_name(), "echo");
    assert_eq!(f.service_audience(), "*");
    assert_eq!(f.process_identity(), &d.process_id());
    assert!(f.groups().is_empty(), "groups: {:?}", f.groups());

    assert!(d.lookup_service_name("ech").is_empty());
    assert!(d.lookup_service_name("echo2").is_empty());
    assert!(d.lookup_service_name("").is_empty());
}

#[test]
fn explicit_audience_is_kept_in_the_binding() {
    let d = Dispatcher::new().unwrap();
    let local = d.service("local").audience("").open().unwrap();
    let plant = d.service("plant").audience("plant").open().unwrap();
    let star = d.service("star").audience("*").open().unwrap();

    assert_eq!(local.binding().service_audience(), "");
    assert_eq!(plant.binding().service_audience(), "plant");
    assert_eq!(star.binding().service_audience(), "*");

    let found = d.lookup_service_name("local");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].service_audience(), "");
    let found = d.lookup_service_name("plant");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].service_audience(), "plant");
}

#[test]
fn spawned_service_is_found_by_name() {
    let d = Dispatcher::new().unwrap();
    let h = spawn_ack(&d, "worker");
    let b = h.binding();
    assert_eq!(b.service_name(), "worker");
    assert_eq!(b.service_audience(), "*");
    assert_eq!(b.process_identity(), &d.process_id());

    let found = d.lookup_service_name("worker");
    assert_eq!(found, vec![b.clone()]);
    assert_eq!(found[0].agent_identity(), b.agent_identity());
    h.stop();
}

#[test]
fn every_service_gets_its_own_agent_identity() {
    let d = Dispatcher::new().unwrap();
    let a = d.service("same").open().unwrap();
    let b = d.service("same").open().unwrap();
    let c = d.service("other").open().unwrap();
    let h = spawn_ack(&d, "same");

    let ids: HashSet<_> = [
        a.binding().agent_identity(),
        b.binding().agent_identity(),
        c.binding().agent_identity(),
        h.binding().agent_identity(),
    ]
    .into_iter()
    .collect();
    assert_eq!(ids.len(), 4, "agent ids: {ids:?}");
    assert_ne!(a.binding(), b.binding());
    assert_ne!(a.binding(), h.binding());
    for bnd in [a.binding(), b.binding(), c.binding(), h.binding()] {
        assert_eq!(bnd.process_identity(), &d.process_id());
    }
    h.stop();
}

#[test]
fn service_binding_carries_the_groups_given_to_the_builder() {
    let d = Dispatcher::new().unwrap();
    let svc = d.service("member").group("a").group("b").open().unwrap();

    // The binding at open time, with the builder's groups.
    assert_eq!(svc.binding().groups(), ["a".to_string(), "b".to_string()]);

    let found = d.lookup_service_name("member");
    assert_eq!(found.len(), 1);
    assert_eq!(&found[0], svc.binding());
    assert_eq!(found[0].groups(), ["a".to_string(), "b".to_string()]);
    assert_eq!(d.lookup_service_group("a"), vec![svc.binding().clone()]);
    assert_eq!(d.lookup_service_group("b"), vec![svc.binding().clone()]);
}

#[test]
fn lookup_by_name_lists_every_service_of_that_name_in_order_of_opening() {
    let d = Dispatcher::new().unwrap();
    let w1 = d.service("worker").open().unwrap();
    let _other = d.service("boss").open().unwrap();
    let w2 = spawn_ack(&d, "worker");
    let w3 = d.service("worker").group("g").open().unwrap();

    let found = d.lookup_service_name("worker");
    assert_eq!(
        agents(&found),
        vec![
            w1.binding().agent_identity(),
            w2.binding().agent_identity(),
            w3.binding().agent_identity()
        ]
    );
    assert!(found.iter().all(|b| b.service_name() == "worker"));
    assert_eq!(d.lookup_service_name("boss").len(), 1);

    // One withdrawn: the others stay, in order.
    drop(w1);
    let found = d.lookup_service_name("worker");
    assert_eq!(
        agents(&found),
        vec![w2.binding().agent_identity(), w3.binding().agent_identity()]
    );

    // A new one goes last.
    let w4 = d.service("worker").open().unwrap();
    let found = d.lookup_service_name("worker");
    assert_eq!(
        agents(&found),
        vec![
            w2.binding().agent_identity(),
            w3.binding().agent_identity(),
            w4.binding().agent_identity()
        ]
    );
    w2.stop();
}

#[test]
fn lookup_by_group_lists_members_in_order_of_joining() {
    let d = Dispatcher::new().unwrap();
    let a = d.service("a").group("g").open().unwrap();
    let b = d.service("b").open().unwrap();
    let c = d.service("c").group("g").group("h").open().unwrap();
    let _outsider = d.service("d").group("h").open().unwrap();

    assert!(d.lookup_service_group("nobody").is_empty());
    assert_eq!(
        agents(&d.lookup_service_group("g")),
        vec![a.binding().agent_identity(), c.binding().agent_identity()]
    );

    b.join_group("g");
    let g = d.lookup_service_group("g");
    assert_eq!(
        agents(&g),
        vec![
            a.binding().agent_identity(),
            c.binding().agent_identity(),
            b.binding().agent_identity()
        ]
    );
    // The looked-up binding shows the agent's current groups.
    assert_eq!(g[2].groups(), ["g".to_string()]);
    assert_eq!(g[2].service_name(), "b");

    a.leave_group("g");
    assert_eq!(
        agents(&d.lookup_service_group("g")),
        vec![c.binding().agent_identity(), b.binding().agent_identity()]
    );
    // Membership in "h" is untouched.
    assert_eq!(d.lookup_service_group("h").len(), 2);

    drop(c);
    assert_eq!(
        agents(&d.lookup_service_group("g")),
        vec![b.binding().agent_identity()]
    );
    assert_eq!(d.lookup_service_group("h").len(), 1);
}

// ----- name monitors -----

#[test]
fn name_monitor_announces_existing_services_then_each_change() {
    let d = Dispatcher::new().unwrap();
    let first = d.service("echo").open().unwrap();
    let second = d.service("echo").open().unwrap();
    let _unrelated = d.service("other").open().unwrap();
    let m = d.service("monitor").open().unwrap();

    m.monitor_service_name("echo");
    // What exists is announced at once, in order of opening, group None.
    expect_ann(&m, first.binding(), None, Available);
    expect_ann(&m, second.binding(), None, Available);
    assert_quiet(&m);

    // A new one.
    let third = d.service("echo").open().unwrap();
    expect_ann(&m, third.binding(), None, Available);

    // Drop of a pulled service.
    let first_b = first.binding().clone();
    drop(first);
    expect_ann(&m, &first_b, None, Withdrawn);

    // A spawned one, then its stop().
    let h = spawn_ack(&d, "echo");
    expect_ann(&m, h.binding(), None, Available);
    h.stop();
    expect_ann(&m, h.binding(), None, Withdrawn);

    // Other names are not announced.
    let other = d.service("other").open().unwrap();
    drop(other);
    assert_quiet(&m);

    let (second_b, third_b) = (second.binding().clone(), third.binding().clone());
    drop(third);
    drop(second);
    expect_ann(&m, &third_b, None, Withdrawn);
    expect_ann(&m, &second_b, None, Withdrawn);
    assert_quiet(&m);
}

#[test]
fn name_monitor_announces_the_monitoring_service_itself() {
    let d = Dispatcher::new().unwrap();
    let other = d.service("echo").open().unwrap();
    let me = d.service("echo").open().unwrap();
    me.monitor_service_name("echo");
    expect_ann(&me, other.binding(), None, Available);
    expect_ann(&me, me.binding(), None, Available);
    assert_quiet(&me);
}

#[test]
fn name_monitor_of_an_unknown_name_is_quiet_until_it_appears() {
    let d = Dispatcher::new().unwrap();
    let m = d.service("monitor").open().unwrap();
    m.monitor_service_name("later");
    assert_quiet(&m);
    let later = d.service("later").open().unwrap();
    expect_ann(&m, later.binding(), None, Available);
}

#[test]
fn monitoring_a_name_twice_announces_once() {
    let d = Dispatcher::new().unwrap();
    let echo = d.service("echo").open().unwrap();
    let m = d.service("monitor").open().unwrap();
    m.monitor_service_name("echo");
    m.monitor_service_name("echo");
    expect_ann(&m, echo.binding(), None, Available);
    assert_quiet(&m);
    drop(echo);
    let a = announcement(&m);
    assert_eq!(a.status(), Withdrawn);
    assert_quiet(&m);
}

#[test]
fn name_monitor_does_not_see_group_changes() {
    let d = Dispatcher::new().unwrap();
    let echo = d.service("echo").open().unwrap();
    let m = d.service("monitor").open().unwrap();
    m.monitor_service_name("echo");
    expect_ann(&m, echo.binding(), None, Available);
    echo.join_group("g");
    echo.leave_group("g");
    // The group changes are applied (a lookup is ordered after them) and
    // the name monitor heard nothing.
    assert!(d.lookup_service_group("g").is_empty());
    assert_quiet(&m);
}

// ----- group monitors -----

#[test]
fn group_monitor_announces_members_then_joins_and_leaves() {
    let d = Dispatcher::new().unwrap();
    let a = d.service("a").group("g").open().unwrap();
    let b = d.service("b").group("g").open().unwrap();
    let c = d.service("c").open().unwrap();
    let m = d.service("monitor").open().unwrap();

    m.monitor_service_group("g");
    expect_ann(&m, a.binding(), Some("g"), Available);
    expect_ann(&m, b.binding(), Some("g"), Available);
    assert_quiet(&m);

    c.join_group("g");
    expect_ann(&m, c.binding(), Some("g"), Available);
    // Joining again changes nothing.
    c.join_group("g");
    // Another group is not announced here.
    c.join_group("h");
    assert_quiet(&m);

    a.leave_group("g");
    expect_ann(&m, a.binding(), Some("g"), Withdrawn);
    // Leaving a group one is not in changes nothing.
    a.leave_group("g");
    a.leave_group("never");
    assert_quiet(&m);

    // Dropping a member: group Withdrawn (a group monitor sees no service
    // announcement).
    let b_binding = b.binding().clone();
    drop(b);
    expect_ann(&m, &b_binding, Some("g"), Withdrawn);
    assert_quiet(&m);

    assert_eq!(d.lookup_service_group("g"), vec![c.binding().clone()]);
}

#[test]
fn builder_group_joins_at_open_after_the_service_is_announced() {
    let d = Dispatcher::new().unwrap();
    let m = d.service("monitor").open().unwrap();
    m.monitor_service_name("member");
    m.monitor_service_group("g");
    assert_quiet(&m);

    let member = d.service("member").group("g").open().unwrap();
    // Both announcements are queued before open() returns.
    let first = m.try_recv().expect("service announcement queued by open()");
    let Event::Announcement(first) = first else {
        panic!("expected an announcement, got {first:?}");
    };
    assert_ann(&first, member.binding(), None, Available);
    let second = m.try_recv().expect("group announcement queued by open()");
    let Event::Announcement(second) = second else {
        panic!("expected an announcement, got {second:?}");
    };
    assert_ann(&second, member.binding(), Some("g"), Available);
    assert_eq!(second.binding().groups(), ["g".to_string()]);
    assert_quiet(&m);

    assert_eq!(d.lookup_service_group("g"), vec![member.binding().clone()]);

    // A monitor started later sees it as a member at once.
    let late = d.service("late").open().unwrap();
    late.monitor_service_group("g");
    expect_ann(&late, member.binding(), Some("g"), Available);
    assert_quiet(&late);
}

#[test]
fn spawned_service_with_builder_group_is_announced_to_group_monitors() {
    let d = Dispatcher::new().unwrap();
    let m = d.service("monitor").open().unwrap();
    m.monitor_service_group("pool");
    let h = d
        .service("worker")
        .group("pool")
        .spawn(|_svc, _ev| {})
        .unwrap();
    expect_ann(&m, h.binding(), Some("pool"), Available);
    h.stop();
    expect_ann(&m, h.binding(), Some("pool"), Withdrawn);
    assert_quiet(&m);
    assert!(d.lookup_service_group("pool").is_empty());
}

// ----- withdrawal order -----

/// Reads three announcements: the two group withdrawals (either order),
/// then the service withdrawal.
fn expect_groups_then_service_withdrawn(m: &Service, binding: &ServiceBinding) {
    let mut groups = Vec::new();
    for _ in 0..2 {
        let a = announcement(m);
        assert_eq!(a.binding(), binding, "{a:?}");
        assert_eq!(a.status(), Withdrawn, "{a:?}");
        let g = a
            .group()
            .unwrap_or_else(|| panic!("service Withdrawn before its groups: {a:?}"));
        groups.push(g.to_owned());
    }
    groups.sort();
    assert_eq!(groups, ["a", "b"]);
    expect_ann(m, binding, None, Withdrawn);
    assert_quiet(m);
}

#[test]
fn dropped_service_is_withdrawn_from_its_groups_before_itself() {
    let d = Dispatcher::new().unwrap();
    let m = d.service("monitor").open().unwrap();
    let svc = d.service("member").group("a").open().unwrap();
    svc.join_group("b");
    m.monitor_service_name("member");
    m.monitor_service_group("a");
    m.monitor_service_group("b");
    expect_ann(&m, svc.binding(), None, Available);
    expect_ann(&m, svc.binding(), Some("a"), Available);
    expect_ann(&m, svc.binding(), Some("b"), Available);
    assert_quiet(&m);

    let binding = svc.binding().clone();
    drop(svc);
    expect_groups_then_service_withdrawn(&m, &binding);
    assert!(d.lookup_service_name("member").is_empty());
    assert!(d.lookup_service_group("a").is_empty());
    assert!(d.lookup_service_group("b").is_empty());
}

#[test]
fn stopped_service_is_withdrawn_from_its_groups_before_itself() {
    let d = Dispatcher::new().unwrap();
    let m = d.service("monitor").open().unwrap();
    m.monitor_service_name("member");
    m.monitor_service_group("a");
    m.monitor_service_group("b");
    let h = d
        .service("member")
        .group("a")
        .group("b")
        .spawn(|_svc, _ev| {})
        .unwrap();
    expect_ann(&m, h.binding(), None, Available);
    let mut joined: Vec<String> = (0..2)
        .map(|_| {
            let a = announcement(&m);
            assert_eq!(a.binding(), h.binding());
            assert_eq!(a.status(), Available);
            a.group().expect("a group announcement").to_owned()
        })
        .collect();
    joined.sort();
    assert_eq!(joined, ["a", "b"]);

    h.stop();
    expect_groups_then_service_withdrawn(&m, h.binding());
}

// ----- unmonitor -----

#[test]
fn unmonitor_service_name_stops_the_announcements() {
    let d = Dispatcher::new().unwrap();
    let m = d.service("monitor").open().unwrap();
    m.monitor_service_name("echo");
    let echo = d.service("echo").open().unwrap();
    expect_ann(&m, echo.binding(), None, Available);

    m.unmonitor_service_name("echo");
    let echo2 = d.service("echo").open().unwrap();
    drop(echo);
    drop(echo2);
    assert!(d.lookup_service_name("echo").is_empty());
    assert_quiet(&m);

    // Monitoring again works, and announces only what exists now.
    let echo3 = d.service("echo").open().unwrap();
    m.monitor_service_name("echo");
    expect_ann(&m, echo3.binding(), None, Available);
    assert_quiet(&m);
}

#[test]
fn unmonitor_service_group_stops_the_announcements() {
    let d = Dispatcher::new().unwrap();
    let m = d.service("monitor").open().unwrap();
    let member = d.service("member").open().unwrap();
    m.monitor_service_group("g");
    m.monitor_service_name("member");
    expect_ann(&m, member.binding(), None, Available);
    member.join_group("g");
    expect_ann(&m, member.binding(), Some("g"), Available);

    m.unmonitor_service_group("g");
    member.leave_group("g");
    member.join_group("g");
    let other = d.service("other").group("g").open().unwrap();
    assert_eq!(d.lookup_service_group("g").len(), 2);
    assert_quiet(&m);

    // The name monitor is independent and still works.
    let member_b = member.binding().clone();
    drop(member);
    expect_ann(&m, &member_b, None, Withdrawn);
    assert_quiet(&m);
    drop(other);
}

#[test]
fn unmonitor_of_a_name_never_monitored_is_harmless() {
    let d = Dispatcher::new().unwrap();
    let m = d.service("monitor").open().unwrap();
    m.unmonitor_service_name("nothing");
    m.unmonitor_service_group("nothing");
    m.monitor_service_name("echo");
    let echo = d.service("echo").open().unwrap();
    expect_ann(&m, echo.binding(), None, Available);
}

// ----- spawned handlers -----

#[test]
fn spawned_handler_receives_events_in_order() {
    const N: u64 = 200;
    let d = Dispatcher::new().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let h = d
        .service("counter")
        .spawn(move |_svc, ev| match ev {
            Event::Request(r) => {
                let n: u64 = r.decode().unwrap();
                tx.send(n).unwrap();
                r.reply(&(n * 2)).unwrap();
            }
            other => panic!("unexpected {other:?}"),
        })
        .unwrap();
    let client = d.service("client").open().unwrap();
    let pending: Vec<_> = (0..N)
        .map(|n| client.request::<u64, _>(h.binding(), "double", &n).unwrap())
        .collect();
    for (n, p) in pending.iter().enumerate() {
        assert_eq!(p.wait_timeout(WAIT).unwrap(), n as u64 * 2);
    }
    let seen: Vec<u64> = rx.try_iter().collect();
    assert_eq!(seen, (0..N).collect::<Vec<_>>());
    h.stop();
}

#[test]
fn spawned_handler_can_call_back_into_its_service() {
    let d = Dispatcher::new().unwrap();
    let h = d
        .service("helper")
        .spawn(|svc, ev| {
            if let Event::Request(r) = ev {
                match r.method() {
                    "join" => {
                        let g: String = r.decode().unwrap();
                        svc.join_group(&g);
                        r.reply(&()).unwrap();
                    }
                    "leave" => {
                        let g: String = r.decode().unwrap();
                        svc.leave_group(&g);
                        r.reply(&()).unwrap();
                    }
                    "publish" => {
                        let v: u32 = r.decode().unwrap();
                        svc.publish_report("news", &v, Lifetime::None).unwrap();
                        r.reply(&()).unwrap();
                    }
                    "whoami" => {
                        r.reply(&svc.binding().agent_identity().to_string())
                            .unwrap();
                    }
                    _ => {}
                }
            }
        })
        .unwrap();
    let m = d.service("monitor").open().unwrap();
    m.monitor_service_group("g");
    assert_quiet(&m);

    // The handler sees its own binding.
    let me: String = m.call_timeout(h.binding(), "whoami", &(), WAIT).unwrap();
    assert_eq!(me, h.binding().agent_identity().to_string());

    // Joining from the handler: the join is applied before the reply.
    m.call_timeout::<(), _>(h.binding(), "join", "g", WAIT)
        .unwrap();
    assert_eq!(d.lookup_service_group("g"), vec![h.binding().clone()]);
    expect_ann(&m, h.binding(), Some("g"), Available);

    m.call_timeout::<(), _>(h.binding(), "leave", "g", WAIT)
        .unwrap();
    assert!(d.lookup_service_group("g").is_empty());
    expect_ann(&m, h.binding(), Some("g"), Withdrawn);

    // Publishing from the handler.
    let sub = d.service("subscriber").open().unwrap();
    sub.subscribe_reports("helper", "news");
    let p = publisher(&sub);
    assert_eq!(p.publisher(), h.binding());
    assert_eq!(p.status(), Available);
    m.call_timeout::<(), _>(h.binding(), "publish", &7u32, WAIT)
        .unwrap();
    let r = report(&sub);
    assert_eq!(r.publisher(), h.binding());
    assert_eq!(r.subject(), "news");
    assert_eq!(r.decode::<u32>().unwrap(), 7);
    h.stop();
}

// ----- ServiceHandle -----

#[test]
fn dropping_a_service_handle_leaves_the_service_running() {
    let d = Dispatcher::new().unwrap();
    // The handler owns `alive`: it disconnects when the worker has ended.
    let (alive, worker_gone) = crossbeam_channel::bounded::<()>(1);
    let h = d
        .service("echo")
        .spawn(move |_svc, ev| {
            let _owned = &alive;
            if let Event::Request(r) = ev {
                let s: String = r.decode().unwrap();
                r.reply(&s.to_uppercase()).unwrap();
            }
        })
        .unwrap();
    let binding = h.binding().clone();
    let m = d.service("monitor").open().unwrap();
    m.monitor_service_name("echo");
    expect_ann(&m, &binding, None, Available);

    drop(h);

    // Still listed, still answering, no withdrawal announced.
    assert_eq!(d.lookup_service_name("echo"), vec![binding.clone()]);
    let client = d.service("client").open().unwrap();
    let up: String = client.call_timeout(&binding, "shout", "hi", WAIT).unwrap();
    assert_eq!(up, "HI");
    let up: String = client
        .call_timeout(&binding, "shout", "again", WAIT)
        .unwrap();
    assert_eq!(up, "AGAIN");
    assert_quiet(&m);

    assert_eq!(
        worker_gone.try_recv(),
        Err(crossbeam_channel::TryRecvError::Empty)
    );

    // Shutdown still ends its worker (and joins it before returning).
    within("shutdown", move || d.shutdown());
    assert_eq!(
        worker_gone.try_recv(),
        Err(crossbeam_channel::TryRecvError::Disconnected)
    );
}

#[test]
fn stop_withdraws_the_service_and_is_idempotent() {
    let d = Dispatcher::new().unwrap();
    let h = spawn_ack(&d, "echo");
    let keep = spawn_ack(&d, "echo");
    let binding = h.binding().clone();
    let client = d.service("client").open().unwrap();
    client
        .call_timeout::<(), _>(&binding, "ping", &(), WAIT)
        .unwrap();
    assert_eq!(d.lookup_service_name("echo").len(), 2);

    let h = within("stop", move || {
        h.stop();
        h
    });
    assert_eq!(d.lookup_service_name("echo"), vec![keep.binding().clone()]);

    // A second stop changes nothing and returns.
    let h = within("second stop", move || {
        h.stop();
        h
    });
    assert_eq!(d.lookup_service_name("echo"), vec![keep.binding().clone()]);

    // Calls to the stopped agent fail at once; the other one answers.
    match client.call_timeout::<(), _>(&binding, "ping", &(), WAIT) {
        Err(Error::ServiceUnavailable(_)) => {}
        other => panic!("expected ServiceUnavailable, got {other:?}"),
    }
    client
        .call_timeout::<(), _>(keep.binding(), "ping", &(), WAIT)
        .unwrap();
    drop(h);
    keep.stop();
    assert!(d.lookup_service_name("echo").is_empty());
}

#[test]
fn stop_from_inside_the_handler_withdraws_the_service() {
    let d = Dispatcher::new().unwrap();
    let (htx, hrx) = crossbeam_channel::bounded::<netsvc::ServiceHandle>(1);
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let h = d
        .service("quitter")
        .spawn(move |_svc, ev| {
            if let Event::Request(r) = ev {
                r.reply(&()).unwrap();
                let h = hrx.recv().unwrap();
                h.stop(); // on its own worker thread: must not join itself
                done_tx.send(()).unwrap();
            }
        })
        .unwrap();
    let binding = h.binding().clone();
    htx.send(h).unwrap();
    let client = d.service("client").open().unwrap();
    client
        .call_timeout::<(), _>(&binding, "quit", &(), WAIT)
        .unwrap();
    done_rx
        .recv_timeout(WAIT)
        .expect("stop() inside the handler returned");
    assert!(d.lookup_service_name("quitter").is_empty());
}

// ----- several dispatchers -----

#[test]
fn two_dispatchers_in_one_process_are_isolated() {
    let d1 = Dispatcher::new().unwrap();
    let d2 = Dispatcher::new().unwrap();
    assert_ne!(d1.process_id(), d2.process_id());
    assert_ne!(d1.process_id().to_string(), d2.process_id().to_string());

    let m2 = d2.service("monitor").open().unwrap();
    m2.monitor_service_name("echo");
    m2.monitor_service_group("g");

    let e1 = d1.service("echo").group("g").open().unwrap();
    assert_eq!(e1.binding().process_identity(), &d1.process_id());
    assert_eq!(d1.lookup_service_name("echo"), vec![e1.binding().clone()]);
    assert!(d2.lookup_service_name("echo").is_empty());
    assert!(d2.lookup_service_group("g").is_empty());
    assert_quiet(&m2);

    // The same name in the other dispatcher is another agent, even if the
    // agent numbers happen to be equal.
    let e2 = d2.service("echo").open().unwrap();
    assert_eq!(e2.binding().process_identity(), &d2.process_id());
    assert_ne!(e1.binding(), e2.binding());
    expect_ann(&m2, e2.binding(), None, Available);
    assert_eq!(d2.lookup_service_name("echo"), vec![e2.binding().clone()]);
    assert_eq!(d1.lookup_service_name("echo"), vec![e1.binding().clone()]);

    // A binding of one dispatcher cannot be called from the other.
    let c2 = d2.service("client").open().unwrap();
    match c2.call_timeout::<(), _>(e1.binding(), "ping", &(), WAIT) {
        Err(Error::ServiceUnavailable(_)) => {}
        other => panic!("expected ServiceUnavailable, got {other:?}"),
    }

    // Shutting one down leaves the other working.
    drop(e1);
    within("shutdown of d1", move || d1.shutdown());
    assert_eq!(d2.lookup_service_name("echo"), vec![e2.binding().clone()]);
    assert_quiet(&m2);
}
