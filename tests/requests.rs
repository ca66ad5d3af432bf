//! Request/reply within one process: calls, pending replies, failures with
//! OSE codes, delayed responses, forwarding, timeouts, busy services.

mod util;
use util::*;

use std::thread;
use std::time::{Duration, Instant};

use netsvc::{codes, Dispatcher, Error, Event, Methods, ServiceFailure, ServiceHandle, Stats};

/// A long call timeout, for checks that a call fails *before* it.
const LONG: Duration = Duration::from_secs(30);

/// A failure that must come well before [`LONG`].
const PROMPT: Duration = Duration::from_secs(5);

/// A spawned service answering "shout" with its argument in upper case.
fn spawn_shouter(d: &Dispatcher) -> ServiceHandle {
    d.service("shouter")
        .spawn(|_svc, event| {
            if let Event::Request(request) = event {
                assert_eq!(request.method(), "shout");
                let text: String = request.decode().expect("shout takes a string");
                request.reply(&text.to_uppercase()).expect("reply");
            }
        })
        .expect("spawn shouter")
}

/// Returns once the dispatcher has handled every command this thread sent
/// before: commands from one thread are handled in order, and a lookup is
/// answered only when the dispatcher reaches it. After it, a reply this
/// thread sent has been handed to its caller's `PendingReply`.
fn sync_with_dispatcher(d: &Dispatcher) {
    let _ = d.lookup_service_name("no-such-service");
}

/// Reads `stats()` until `pick` gives `expected` (replies are handled by the
/// dispatcher thread asynchronously), at most [`WAIT`]; returns the stats.
fn wait_stat(d: &Dispatcher, what: &str, pick: impl Fn(&Stats) -> u64, expected: u64) -> Stats {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = d.stats();
        if pick(&stats) == expected {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "{what} is {} after {WAIT:?}, expected {expected}: {stats:?}",
            pick(&stats)
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Answers a request whose caller no longer waits; returns the stats once
/// the answer was counted as late.
fn answer_late(d: &Dispatcher, held: netsvc::Request, before: &Stats) -> Stats {
    held.reply(&0u64).unwrap();
    wait_stat(
        d,
        "late_replies",
        |s| s.late_replies,
        before.late_replies + 1,
    )
}

fn service_failure(e: Error) -> ServiceFailure {
    match e {
        Error::Service(f) => f,
        other => panic!("expected Error::Service, got {other:?}"),
    }
}

#[test]
fn call_to_spawned_service_returns_decoded_reply() {
    let d = Dispatcher::new().unwrap();
    let shouter = spawn_shouter(&d);
    let me = d.service("caller").open().unwrap();

    let r: String = me.call(shouter.binding(), "shout", "hello").unwrap();
    assert_eq!(r, "HELLO");

    let r: String = me
        .call_timeout(shouter.binding(), "shout", "timed", WAIT)
        .unwrap();
    assert_eq!(r, "TIMED");

    let p = me
        .request::<String, _>(shouter.binding(), "shout", "pending")
        .unwrap();
    assert_eq!(p.wait().unwrap(), "PENDING");
    d.shutdown();
}

#[test]
fn try_get_is_none_before_reply_some_once_then_none() {
    let d = Dispatcher::new().unwrap();
    let server = d.service("server").open().unwrap();
    let me = d.service("caller").open().unwrap();

    let p = me
        .request::<u64, _>(server.binding(), "get", &7u64)
        .unwrap();
    let request = request(&server);
    // The server holds the request unanswered: nothing to get yet.
    assert!(p.try_get().is_none());
    assert!(p.try_get().is_none());

    request.reply(&70u64).unwrap();
    sync_with_dispatcher(&d);
    match p.try_get() {
        Some(Ok(v)) => assert_eq!(v, 70),
        other => panic!("expected Some(Ok(70)), got {other:?}"),
    }
    assert!(p.try_get().is_none(), "try_get gave the reply twice");
    assert!(p.try_get().is_none());
    d.shutdown();
}

#[test]
fn wait_timeout_times_out_while_unanswered_and_reply_comes_later() {
    let d = Dispatcher::new().unwrap();
    let server = d.service("server").open().unwrap();
    let me = d.service("caller").open().unwrap();

    let p = me
        .request::<u64, _>(server.binding(), "get", &1u64)
        .unwrap();
    let request = request(&server);
    assert!(matches!(p.wait_timeout(QUIET), Err(Error::Timeout)));
    assert!(matches!(p.wait_timeout(QUIET), Err(Error::Timeout)));

    request.reply(&11u64).unwrap();
    assert_eq!(p.wait_timeout(WAIT).unwrap(), 11);
    assert!(p.try_get().is_none());
    d.shutdown();
}

#[test]
fn wait_after_wait_timeout_timed_out_still_gets_reply() {
    let d = Dispatcher::new().unwrap();
    let server = d.service("server").open().unwrap();
    let me = d.service("caller").open().unwrap();

    let p = me
        .request::<u64, _>(server.binding(), "get", &1u64)
        .unwrap();
    let request = request(&server);
    assert!(matches!(p.wait_timeout(QUIET), Err(Error::Timeout)));
    request.reply(&12u64).unwrap();
    assert_eq!(p.wait().unwrap(), 12);
    d.shutdown();
}

#[test]
fn request_carries_sender_method_and_conversation_id() {
    let d = Dispatcher::new().unwrap();
    let server = d.service("server").open().unwrap();
    let me = d.service("caller").open().unwrap();
    let other = d.service("caller").open().unwrap();

    let p = me
        .request::<(), _>(server.binding(), "describe", &(1u8, "x"))
        .unwrap();
    let request = request(&server);
    assert_eq!(request.sender(), me.binding());
    assert_ne!(request.sender(), other.binding());
    assert_eq!(request.sender().service_name(), "caller");
    assert_eq!(request.method(), "describe");
    assert_eq!(request.receiver(), server.binding());
    assert_eq!(request.conversation_id(), p.conversation_id());
    assert_eq!(request.decode::<(u8, String)>().unwrap(), (1, "x".into()));

    // Another request of the same caller is another conversation.
    let p2 = me
        .request::<(), _>(server.binding(), "describe2", &())
        .unwrap();
    let request2 = util::request(&server);
    assert_eq!(request2.method(), "describe2");
    assert_eq!(request2.conversation_id(), p2.conversation_id());
    assert_ne!(request2.conversation_id(), request.conversation_id());

    request.reply(&()).unwrap();
    request2.reply(&()).unwrap();
    p.wait().unwrap();
    p2.wait().unwrap();
    d.shutdown();
}

#[test]
fn delayed_response_from_another_thread_reaches_caller() {
    let d = Dispatcher::new().unwrap();
    let server = d.service("server").open().unwrap();
    let me = d.service("caller").open().unwrap();

    let p = me
        .request::<String, _>(server.binding(), "later", "job")
        .unwrap();
    let request = request(&server);
    let (go_tx, go_rx) = crossbeam_channel::bounded::<()>(1);
    let replier = thread::spawn(move || {
        go_rx.recv_timeout(WAIT).expect("go signal");
        let job: String = request.decode().unwrap();
        request.reply(&format!("{job} done")).unwrap();
    });

    // The request lives on another thread, unanswered.
    assert!(matches!(p.wait_timeout(QUIET), Err(Error::Timeout)));
    go_tx.send(()).unwrap();
    assert_eq!(p.wait_timeout(WAIT).unwrap(), "job done");
    replier.join().unwrap();
    d.shutdown();
}

#[test]
fn fail_gives_service_failure_with_code_description_and_origin() {
    let d = Dispatcher::new().unwrap();
    let refuser = d
        .service("refuser")
        .spawn(|_svc, event| {
            if let Event::Request(request) = event {
                request.fail(77, "not today").unwrap();
            }
        })
        .unwrap();
    let me = d.service("caller").open().unwrap();

    let err = me
        .call_timeout::<u64, _>(refuser.binding(), "anything", &(), WAIT)
        .unwrap_err();
    assert_eq!(err.code(), 77);
    let f = service_failure(err);
    assert_eq!(f.code, 77);
    assert_eq!(f.description, "not today");
    assert_eq!(f.origin, "refuser");
    d.shutdown();
}

#[test]
fn request_dropped_unanswered_fails_call_with_58_promptly() {
    let d = Dispatcher::new().unwrap();
    let dropper = d
        .service("dropper")
        .spawn(|_svc, event| {
            if let Event::Request(request) = event {
                drop(request);
            }
        })
        .unwrap();
    let me = d.service("caller").open().unwrap();

    let started = Instant::now();
    let err = me
        .call_timeout::<u64, _>(dropper.binding(), "ignored", &(), LONG)
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.code(), codes::RESPONSE_ABORTED);
    assert_eq!(service_failure(err).code, 58);
    assert!(took < PROMPT, "the failure took {took:?}");
    d.shutdown();
}

#[test]
fn pulled_request_dropped_unanswered_fails_call_with_58() {
    let d = Dispatcher::new().unwrap();
    let server = d.service("server").open().unwrap();
    let me = d.service("caller").open().unwrap();

    let started = Instant::now();
    let p = me
        .request_timeout::<u64, _>(server.binding(), "x", &(), LONG)
        .unwrap();
    drop(request(&server));
    let err = p.wait().unwrap_err();
    assert!(started.elapsed() < PROMPT);
    assert_eq!(service_failure(err).code, 58);
    d.shutdown();
}

#[test]
fn panic_in_spawned_handler_fails_request_with_57_and_service_goes_on() {
    let d = Dispatcher::new().unwrap();
    let fragile = d
        .service("fragile")
        .spawn(|_svc, event| {
            if let Event::Request(request) = event {
                if request.method() == "boom" {
                    let n: u32 = request.decode().unwrap();
                    panic!("kaboom number {n}");
                }
                let n: u32 = request.decode().unwrap();
                request.reply(&(n + 1)).unwrap();
            }
        })
        .unwrap();
    let me = d.service("caller").open().unwrap();

    let started = Instant::now();
    let err = me
        .call_timeout::<u32, _>(fragile.binding(), "boom", &42u32, LONG)
        .unwrap_err();
    assert!(started.elapsed() < PROMPT);
    assert_eq!(err.code(), codes::APPLICATION_ERROR);
    let f = service_failure(err);
    assert_eq!(f.code, 57);
    assert!(
        f.details.contains("kaboom number 42"),
        "details without the panic message: {f:?}"
    );

    // The same worker answers the next request normally.
    let r: u32 = me
        .call_timeout(fragile.binding(), "inc", &1u32, WAIT)
        .unwrap();
    assert_eq!(r, 2);
    let r: u32 = me
        .call_timeout(fragile.binding(), "inc", &41u32, WAIT)
        .unwrap();
    assert_eq!(r, 42);
    d.shutdown();
}

fn spawn_calc(d: &Dispatcher) -> ServiceHandle {
    d.service("calc")
        .serve(
            Methods::new()
                .method("add", |_req, (a, b): (i64, i64)| {
                    Ok::<_, ServiceFailure>(a + b)
                })
                .method("refuse", |_req, ()| {
                    Err::<i64, _>(ServiceFailure::new(61, "x"))
                })
                .method("boom", |_req, n: i64| -> Result<i64, ServiceFailure> {
                    panic!("method exploded at {n}")
                }),
        )
        .unwrap()
}

#[test]
fn methods_answer_with_method_result() {
    let d = Dispatcher::new().unwrap();
    let calc = spawn_calc(&d);
    let me = d.service("caller").open().unwrap();
    let sum: i64 = me.call(calc.binding(), "add", &(2i64, 3i64)).unwrap();
    assert_eq!(sum, 5);
    let sum: i64 = me.call(calc.binding(), "add", &(-10i64, 3i64)).unwrap();
    assert_eq!(sum, -7);
    d.shutdown();
}

#[test]
fn methods_unknown_method_fails_with_55() {
    let d = Dispatcher::new().unwrap();
    let calc = spawn_calc(&d);
    let me = d.service("caller").open().unwrap();
    let err = me
        .call::<i64, _>(calc.binding(), "mul", &(2i64, 3i64))
        .unwrap_err();
    assert_eq!(err.code(), codes::METHOD_UNAVAILABLE);
    let f = service_failure(err);
    assert_eq!(f.code, 55);
    assert_eq!(f.origin, "calc");
    d.shutdown();
}

#[test]
fn methods_wrong_argument_type_fails_with_54() {
    let d = Dispatcher::new().unwrap();
    let calc = spawn_calc(&d);
    let me = d.service("caller").open().unwrap();
    let err = me
        .call::<i64, _>(calc.binding(), "add", "not a pair")
        .unwrap_err();
    assert_eq!(err.code(), codes::REQUEST_DECODING_ERROR);
    assert_eq!(service_failure(err).code, 54);
    let err = me.call::<i64, _>(calc.binding(), "add", &()).unwrap_err();
    assert_eq!(service_failure(err).code, 54);
    // The right arguments still work afterwards.
    assert_eq!(
        me.call::<i64, _>(calc.binding(), "add", &(1i64, 1i64))
            .unwrap(),
        2
    );
    d.shutdown();
}

#[test]
fn methods_closure_failure_reaches_caller_with_origin() {
    let d = Dispatcher::new().unwrap();
    let calc = spawn_calc(&d);
    let me = d.service("caller").open().unwrap();
    let err = me
        .call::<i64, _>(calc.binding(), "refuse", &())
        .unwrap_err();
    assert_eq!(err.code(), 61);
    let f = service_failure(err);
    assert_eq!(f.code, 61);
    assert_eq!(f.description, "x");
    assert_eq!(f.origin, "calc");
    d.shutdown();
}

#[test]
fn methods_panic_fails_with_57_and_table_goes_on() {
    let d = Dispatcher::new().unwrap();
    let calc = spawn_calc(&d);
    let me = d.service("caller").open().unwrap();
    let err = me
        .call::<i64, _>(calc.binding(), "boom", &9i64)
        .unwrap_err();
    assert_eq!(err.code(), codes::APPLICATION_ERROR);
    let f = service_failure(err);
    assert_eq!(f.code, 57);
    assert_eq!(f.origin, "calc");
    assert!(
        f.details.contains("method exploded at 9"),
        "details without the panic message: {f:?}"
    );
    assert_eq!(
        me.call::<i64, _>(calc.binding(), "add", &(4i64, 5i64))
            .unwrap(),
        9
    );
    d.shutdown();
}

#[test]
fn unanswered_call_times_out_with_47_and_late_reply_is_counted() {
    let d = Dispatcher::new().unwrap();
    let sink = d.service("sink").open().unwrap();
    let me = d.service("caller").open().unwrap();
    let before = d.stats();

    let err = me
        .call_timeout::<u64, _>(sink.binding(), "hold", &5u64, Duration::from_millis(200))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout), "got {err:?}");
    assert_eq!(err.code(), codes::REQUEST_TIMEOUT);
    assert_eq!(err.code(), 47);
    assert_eq!(d.stats().calls_timed_out, before.calls_timed_out + 1);

    // The sink was holding the request all along; it answers too late.
    let request = request(&sink);
    assert_eq!(request.decode::<u64>().unwrap(), 5);
    assert_eq!(d.stats().late_replies, before.late_replies);
    answer_late(&d, request, &before);
    sync_with_dispatcher(&d);
    assert_eq!(d.stats().late_replies, before.late_replies + 1);
    d.shutdown();
}

#[test]
fn call_to_withdrawn_binding_is_service_unavailable() {
    let d = Dispatcher::new().unwrap();
    let gone = d.service("gone").open().unwrap();
    let binding = gone.binding().clone();
    drop(gone);
    let me = d.service("caller").open().unwrap();

    let started = Instant::now();
    let err = me
        .call_timeout::<u64, _>(&binding, "anyone", &(), LONG)
        .unwrap_err();
    assert!(started.elapsed() < PROMPT);
    assert!(matches!(err, Error::ServiceUnavailable(_)), "got {err:?}");
    assert_eq!(err.code(), codes::SERVICE_UNAVAILABLE);
    assert_eq!(err.code(), 46);
    d.shutdown();
}

#[test]
fn pending_call_fails_promptly_when_target_is_withdrawn() {
    let d = Dispatcher::new().unwrap();
    let holder = d.service("holder").open().unwrap();
    let target = holder.binding().clone();
    let me = d.service("caller").open().unwrap();

    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let caller = thread::spawn(move || {
        let started = Instant::now();
        let result = me.call_timeout::<u64, _>(&target, "hold", &(), LONG);
        done_tx.send((result, started.elapsed())).unwrap();
    });

    // The target holds the request, then another thread drops the service.
    let held = request(&holder);
    thread::spawn(move || drop(holder)).join().unwrap();

    let (result, took) = done_rx
        .recv_timeout(WAIT)
        .expect("the call did not end after its target was withdrawn");
    let err = result.unwrap_err();
    assert!(matches!(err, Error::ServiceUnavailable(_)), "got {err:?}");
    assert_eq!(err.code(), 46);
    assert!(took < PROMPT, "the failure took {took:?}");
    caller.join().unwrap();
    drop(held);
    d.shutdown();
}

#[test]
fn forward_renames_method_keeps_sender_and_conversation() {
    let d = Dispatcher::new().unwrap();
    let a = d.service("front").open().unwrap();
    let b = d.service("back").open().unwrap();
    let me = d.service("caller").open().unwrap();

    let p = me.request::<String, _>(a.binding(), "orig", &5u32).unwrap();
    let at_a = request(&a);
    assert_eq!(at_a.method(), "orig");
    assert_eq!(at_a.conversation_id(), p.conversation_id());
    at_a.forward(b.binding(), Some("other")).unwrap();

    let at_b = request(&b);
    assert_eq!(at_b.method(), "other");
    assert_eq!(at_b.sender(), me.binding());
    assert_eq!(at_b.receiver(), b.binding());
    assert_eq!(at_b.conversation_id(), p.conversation_id());
    assert_eq!(at_b.decode::<u32>().unwrap(), 5);
    at_b.reply("from back").unwrap();

    assert_eq!(p.wait_timeout(WAIT).unwrap(), "from back");
    // Nothing came back to the forwarding service.
    assert_quiet(&a);
    d.shutdown();
}

#[test]
fn forward_without_method_keeps_method_name() {
    let d = Dispatcher::new().unwrap();
    let a = d.service("front").open().unwrap();
    let b = d.service("back").open().unwrap();
    let me = d.service("caller").open().unwrap();

    let p = me.request::<u32, _>(a.binding(), "orig", &8u32).unwrap();
    request(&a).forward(b.binding(), None).unwrap();
    let at_b = request(&b);
    assert_eq!(at_b.method(), "orig");
    assert_eq!(at_b.sender(), me.binding());
    assert_eq!(at_b.conversation_id(), p.conversation_id());
    let n: u32 = at_b.decode().unwrap();
    at_b.reply(&(n * 2)).unwrap();
    assert_eq!(p.wait_timeout(WAIT).unwrap(), 16);
    d.shutdown();
}

#[test]
fn full_queue_refuses_fifth_request_with_busy_then_answers_the_four() {
    let d = Dispatcher::new().unwrap();
    let slow = d.service("slow").queue_capacity(4).open().unwrap();
    let me = d.service("caller").open().unwrap();
    let before = d.stats();

    let pending: Vec<_> = (0..4u64)
        .map(|i| me.request::<u64, _>(slow.binding(), "work", &i).unwrap())
        .collect();
    let started = Instant::now();
    let fifth = me.request::<u64, _>(slow.binding(), "work", &4u64).unwrap();
    let err = fifth.wait().unwrap_err();
    assert!(started.elapsed() < PROMPT);
    assert_eq!(err.code(), codes::SERVICE_BUSY);
    assert_eq!(service_failure(err).code, 50);
    let stats = d.stats();
    assert_eq!(stats.busy_replies, before.busy_replies + 1);
    assert_eq!(stats.requests_delivered, before.requests_delivered + 4);

    // The four queued requests are still answered, each to its caller.
    for i in 0..4u64 {
        let request = request(&slow);
        assert_eq!(request.decode::<u64>().unwrap(), i);
        request.reply(&(i * 100)).unwrap();
    }
    for (i, p) in pending.into_iter().enumerate() {
        assert_eq!(p.wait_timeout(WAIT).unwrap(), i as u64 * 100);
    }
    assert_quiet(&slow);
    assert_eq!(d.stats().busy_replies, before.busy_replies + 1);
    d.shutdown();
}

#[test]
fn reply_of_another_type_is_a_decode_error() {
    let d = Dispatcher::new().unwrap();
    let texter = d
        .service("texter")
        .spawn(|_svc, event| {
            if let Event::Request(request) = event {
                request.reply("this is not a number").unwrap();
            }
        })
        .unwrap();
    let me = d.service("caller").open().unwrap();
    let err = me
        .call_timeout::<u64, _>(texter.binding(), "n", &(), WAIT)
        .unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "got {err:?}");
    assert_eq!(err.code(), codes::REQUEST_DECODING_ERROR);
    // The same reply decodes as what it is.
    let s: String = me.call_timeout(texter.binding(), "n", &(), WAIT).unwrap();
    assert_eq!(s, "this is not a number");
    d.shutdown();
}

#[test]
fn pipelined_requests_from_one_thread_are_answered_in_order() {
    let d = Dispatcher::new().unwrap();
    let mut seen = 0u64;
    let counter = d
        .service("counter")
        .spawn(move |_svc, event| {
            if let Event::Request(request) = event {
                let arg: u64 = request.decode().unwrap();
                request.reply(&(seen, arg)).unwrap();
                seen += 1;
            }
        })
        .unwrap();
    let me = d.service("caller").open().unwrap();

    let pending: Vec<_> = (0..100u64)
        .map(|i| {
            me.request::<(u64, u64), _>(counter.binding(), "next", &i)
                .unwrap()
        })
        .collect();
    for (i, p) in pending.into_iter().enumerate() {
        let (handled_as, arg) = p.wait_timeout(WAIT).unwrap();
        assert_eq!(arg, i as u64, "reply {i} belongs to another request");
        assert_eq!(handled_as, i as u64, "request {i} handled out of order");
    }
    d.shutdown();
}

#[test]
fn forwarded_call_keeps_the_callers_deadline() {
    let d = Dispatcher::new().unwrap();
    let a = d.service("front").open().unwrap();
    let b = d.service("back").open().unwrap();
    let me = d.service("caller").open().unwrap();
    let before = d.stats();

    let timeout = Duration::from_millis(300);
    let p = me
        .request_timeout::<u64, _>(a.binding(), "hold", &1u8, timeout)
        .unwrap();
    request(&a).forward(b.binding(), None).unwrap();
    let held = request(&b);

    // The back service holds the call past the caller's deadline: the
    // call itself times out (its outcome is handed over, so a second wait
    // finds nothing), not merely this wait.
    let err = p.wait_timeout(WAIT).unwrap_err();
    assert!(matches!(err, Error::Timeout), "got {err:?}");
    assert!(matches!(p.wait_timeout(WAIT), Err(Error::Closed)));
    assert_eq!(d.stats().calls_timed_out, before.calls_timed_out + 1);

    // Its answer then reaches nobody.
    answer_late(&d, held, &before);
    d.shutdown();
}

#[test]
fn try_get_after_the_deadline_is_a_timeout_once() {
    let d = Dispatcher::new().unwrap();
    let holder = d.service("holder").open().unwrap();
    let me = d.service("caller").open().unwrap();
    let before = d.stats();

    let deadline = Instant::now() + Duration::from_millis(200);
    let p = me
        .request_timeout::<u64, _>(holder.binding(), "hold", &(), Duration::from_millis(200))
        .unwrap();
    let held = request(&holder);
    // Time passing is what this test is about: nothing else to wait on.
    thread::sleep(deadline.saturating_duration_since(Instant::now()));

    assert!(matches!(p.try_get(), Some(Err(Error::Timeout))));
    assert!(p.try_get().is_none());
    assert_eq!(d.stats().calls_timed_out, before.calls_timed_out + 1);
    answer_late(&d, held, &before);
    d.shutdown();
}

#[test]
fn dropping_a_pending_reply_makes_its_answer_late() {
    let d = Dispatcher::new().unwrap();
    let holder = d.service("holder").open().unwrap();
    let me = d.service("caller").open().unwrap();
    let before = d.stats();

    let p = me.request::<u64, _>(holder.binding(), "hold", &()).unwrap();
    let held = request(&holder);
    drop(p);
    let after = answer_late(&d, held, &before);
    assert_eq!(after.replies_delivered, before.replies_delivered);
    assert_eq!(after.requests_delivered, before.requests_delivered + 1);
    d.shutdown();
}
