//! Calls across an exchange under the conditions that the call path must
//! survive (issue 14): many threads calling through one link at once, the
//! link lost while callers are writing, and replies arriving while the
//! caller's dispatcher is busy with another peer. Dispatchers in one test
//! process, each acting as a separate process, over real loopback TCP.

mod util;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use netsvc::*;
use util::*;

/// A call's own timeout: far beyond what any of these calls takes, so that
/// a call that ends with `Timeout` is one that was lost, not a slow one.
const LONG: Duration = Duration::from_secs(60);

/// A server dispatcher with an exchange and the service `echo` (answers
/// each request with its argument), and a client dispatcher connected to
/// it that sees `echo`.
struct Pair {
    server: Dispatcher,
    server_ex: Exchange,
    _echo: ServiceHandle,
    client: Dispatcher,
    _client_ex: Exchange,
    echo: ServiceBinding,
}

impl Pair {
    /// A calling service of the client, seen nowhere else.
    fn caller(&self, name: &str) -> Service {
        self.client.service(name).audience("").open().unwrap()
    }
}

fn pair() -> Pair {
    let server = Dispatcher::builder().name("server").build().unwrap();
    let server_ex = Exchange::server(&server).listen("127.0.0.1:0").unwrap();
    let echo = server
        .service("echo")
        .spawn(|_svc, ev| {
            if let Event::Request(r) = ev {
                match r.decode::<(u64, u64, Vec<u8>)>() {
                    Ok(v) => {
                        let _ = r.reply(&v);
                    }
                    Err(e) => {
                        let _ = r.fail(54, e.to_string());
                    }
                }
            }
        })
        .unwrap();
    let client = Dispatcher::builder().name("client").build().unwrap();
    let client_ex = Exchange::client(&client)
        .connect(server_ex.local_addr(), Duration::from_millis(200))
        .unwrap();
    let binding = await_service(&client, "echo");
    Pair {
        server,
        server_ex,
        _echo: echo,
        client,
        _client_ex: client_ex,
        echo: binding,
    }
}

/// Eight threads call `echo` through the one link at once, each with
/// sixteen calls in flight: every reply is the answer to its own request
/// (none crossed to another thread or another call), in each thread's
/// order.
#[test]
fn threads_calling_through_one_link_each_get_their_own_replies() {
    const THREADS: u64 = 8;
    const ROUNDS: u64 = 40;
    const IN_FLIGHT: u64 = 16;
    let p = pair();
    let barrier = Arc::new(Barrier::new(THREADS as usize));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let me = p.caller(&format!("caller-{t}"));
            let (echo, barrier) = (p.echo.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                for round in 0..ROUNDS {
                    let calls: Vec<_> = (0..IN_FLIGHT)
                        .map(|i| {
                            let seq = round * IN_FLIGHT + i;
                            // Sizes differ per call, so that frames of many
                            // lengths interleave on the link.
                            let body = vec![t as u8; ((seq * 97 + t * 31) % 3000) as usize];
                            let pending = me
                                .request_timeout::<(u64, u64, Vec<u8>), _>(
                                    &echo,
                                    "echo",
                                    &(t, seq, body.clone()),
                                    LONG,
                                )
                                .unwrap_or_else(|e| panic!("thread {t} call {seq}: {e}"));
                            (seq, body, pending)
                        })
                        .collect();
                    for (seq, body, pending) in calls {
                        let got = pending
                            .wait()
                            .unwrap_or_else(|e| panic!("thread {t} call {seq}: {e}"));
                        assert_eq!(got, (t, seq, body), "thread {t} call {seq}");
                    }
                }
                ROUNDS * IN_FLIGHT
            })
        })
        .collect();
    let answered: u64 = workers
        .into_iter()
        .map(|w| within("a calling thread", move || w.join().unwrap()))
        .sum();
    assert_eq!(answered, THREADS * ROUNDS * IN_FLIGHT);
}

/// Four threads call with 256 KiB arguments without pause (so that the
/// client has a request half written most of the time) while the server's
/// exchange closes. Every call ends, and none by its timeout: each has its
/// reply, or fails at once with the link. Calls after that fail at once:
/// the service is gone.
#[test]
fn a_link_lost_while_callers_are_writing_ends_every_call_at_once() {
    const THREADS: usize = 4;
    let p = pair();
    let answered = Arc::new(AtomicUsize::new(0));
    let (tx, started) = crossbeam_channel::bounded::<()>(THREADS);
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let me = p.caller(&format!("writer-{t}"));
            let (echo, answered, tx) = (p.echo.clone(), answered.clone(), tx.clone());
            thread::spawn(move || {
                let body = vec![t as u8; 256 * 1024];
                let mut seq = 0u64;
                loop {
                    match me.call_timeout::<(u64, u64, Vec<u8>), _>(
                        &echo,
                        "echo",
                        &(t as u64, seq, body.clone()),
                        LONG,
                    ) {
                        Ok(got) => {
                            assert_eq!(got, (t as u64, seq, body.clone()), "thread {t}");
                            if answered.fetch_add(1, Ordering::SeqCst) < THREADS {
                                let _ = tx.try_send(());
                            }
                            seq += 1;
                        }
                        Err(e) => return (seq, e),
                    }
                }
            })
        })
        .collect();
    // Once the calls flow, the link goes.
    for _ in 0..THREADS {
        started
            .recv_timeout(WAIT)
            .expect("calls answered before the loss");
    }
    p.server_ex.close();
    for (t, w) in workers.into_iter().enumerate() {
        let (seq, e) = within("a writing caller", move || w.join().unwrap());
        eprintln!("thread {t}: call {seq} ended with {e}");
        assert!(
            !matches!(e, Error::Timeout),
            "thread {t}: call {seq} was lost with the link, not failed by it: {e:?}"
        );
    }
    // The service went with the link: a new call fails at once.
    let me = p.caller("after");
    let outcome = within("a call after the loss", move || {
        me.call_timeout::<(u64, u64, Vec<u8>), _>(
            &p.echo,
            "echo",
            &(0u64, 0u64, Vec::<u8>::new()),
            LONG,
        )
    });
    assert!(
        matches!(
            outcome,
            Err(Error::ServiceUnavailable(_) | Error::DeliveryFailure(_))
        ),
        "{outcome:?}"
    );
    drop(p.server);
}

/// While another client floods the caller's process with reports through
/// the same exchange (its dispatcher busy reading and delivering them), a
/// caller's calls are answered, each with its own reply, and every report
/// arrives, in order.
#[test]
fn replies_arrive_while_the_callers_dispatcher_is_busy_with_another_peer() {
    const REPORTS: u64 = 20_000;
    const CALLS: u64 = 300;
    let p = pair();
    let noisy = Dispatcher::builder().name("noisy").build().unwrap();
    let _noisy_ex = Exchange::client(&noisy)
        .connect(p.server_ex.local_addr(), Duration::from_millis(200))
        .unwrap();
    let publisher = noisy.service("publisher").open().unwrap();
    let subscriber = p.client.service("subscriber").open().unwrap();
    subscriber.subscribe_reports("publisher", "flood.*");
    wait_for(&subscriber, "the confirmation", |e| match e {
        Event::Confirmed(_) => Some(()),
        _ => None,
    });
    let flood = thread::spawn(move || {
        let body = vec![9u8; 1024];
        for i in 0..REPORTS {
            publisher
                .publish_report(&format!("flood.{i}"), &(i, &body), Lifetime::None)
                .unwrap_or_else(|e| panic!("report {i}: {e}"));
        }
        publisher
    });
    // The calls start once the flood is arriving.
    let (flowing, is_flowing) = crossbeam_channel::bounded::<()>(1);
    let reader = thread::spawn(move || {
        let mut next = 0u64;
        while next < REPORTS {
            if next == 100 {
                let _ = flowing.try_send(());
            }
            match subscriber.recv_timeout(WAIT) {
                Ok(Some(Event::Report(r))) => {
                    let (i, body): (u64, Vec<u8>) = r.decode().unwrap();
                    assert_eq!((i, r.subject()), (next, format!("flood.{next}").as_str()));
                    assert_eq!(body.len(), 1024);
                    next += 1;
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("no report within WAIT after {next}"),
                Err(e) => panic!("subscriber closed after {next}: {e}"),
            }
        }
        next
    });
    let me = p.caller("caller");
    is_flowing.recv_timeout(WAIT).expect("the flood arriving");
    for seq in 0..CALLS {
        let got: (u64, u64, Vec<u8>) = me
            .call_timeout(&p.echo, "echo", &(7u64, seq, vec![1u8; 64]), LONG)
            .unwrap_or_else(|e| panic!("call {seq}: {e}"));
        assert_eq!(got, (7, seq, vec![1u8; 64]));
    }
    let received = within("the subscriber", move || reader.join().unwrap());
    assert_eq!(received, REPORTS);
    within("the publisher", move || flood.join().unwrap());
}

/// Sequential calls through a quiet link: the calling thread writes its
/// request onto the link, and the server's handler its reply, themselves
/// (counted in `frames_written_by_callers`), and every reply is its own
/// call's.
#[test]
fn callers_and_handlers_write_their_own_frames_onto_a_plain_link() {
    const MAX_CALLS: u64 = 2000;
    let p = pair();
    let me = p.caller("caller");
    let (client_before, server_before) = (
        p.client.stats().frames_written_by_callers,
        p.server.stats().frames_written_by_callers,
    );
    let written = |d: &Dispatcher, before: u64| d.stats().frames_written_by_callers - before;
    let mut calls = 0;
    // A caller writes its own request only while its dispatcher waits in
    // its poll, which right after the last reply it may not yet do: the
    // pause lets it get there. Bounded: at most MAX_CALLS calls.
    while calls < MAX_CALLS
        && (written(&p.client, client_before) == 0 || written(&p.server, server_before) == 0)
    {
        let seq = calls;
        let got: (u64, u64, Vec<u8>) = me
            .call_timeout(&p.echo, "echo", &(1u64, seq, vec![seq as u8; 64]), LONG)
            .unwrap_or_else(|e| panic!("call {seq}: {e}"));
        assert_eq!(got, (1, seq, vec![seq as u8; 64]));
        calls += 1;
        thread::sleep(Duration::from_millis(1));
    }
    let client = written(&p.client, client_before);
    let server = written(&p.server, server_before);
    assert!(client > 0, "no request written by its caller in {calls}");
    assert!(server > 0, "no reply written by its handler in {calls}");
    assert!(client <= calls && server <= calls, "{client} {server}");
}

/// The server's service `counter`, subscribed to `pattern` of the client's
/// service `pub`, and `pub`, once the subscription is in force.
fn counter_and_publisher(p: &Pair, pattern: &str) -> (Service, Service) {
    let counter = p.server.service("counter").open().unwrap();
    counter.subscribe_reports("pub", pattern);
    let publisher = p.client.service("pub").open().unwrap();
    wait_for(&counter, "the confirmation", |e| match e {
        Event::Confirmed(_) => Some(()),
        _ => None,
    });
    (counter, publisher)
}

/// A service that publishes reports and then calls the service that
/// subscribes to them: the call never overtakes the reports on the link
/// (a thread writes its frame itself only once what it sent through the
/// dispatcher is queued ahead of it). The callee counts the reports it has
/// had when the call reaches it, in the same queue.
#[test]
fn a_call_never_overtakes_the_reports_its_caller_published_before_it() {
    const ROUNDS: u64 = 200;
    let p = pair();
    let (counter, publisher) = counter_and_publisher(&p, "ord.*");
    let counting = thread::spawn(move || {
        let mut seen = 0u64;
        loop {
            match counter.recv_timeout(WAIT) {
                Ok(Some(Event::Report(_))) => seen += 1,
                Ok(Some(Event::Request(r))) => {
                    let last = r.method() == "last";
                    r.reply(&seen).unwrap();
                    if last {
                        return seen;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("nothing within WAIT after {seen} reports"),
                Err(e) => panic!("counter closed after {seen} reports: {e}"),
            }
        }
    });
    let target = await_service(&p.client, "counter");
    let mut published = 0u64;
    for round in 0..ROUNDS {
        for _ in 0..(round % 4) {
            publisher
                .publish_report("ord.x", &published, Lifetime::None)
                .unwrap();
            published += 1;
        }
        let method = if round + 1 == ROUNDS { "last" } else { "count" };
        let seen: u64 = publisher
            .call_timeout(&target, method, &(), LONG)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(seen, published, "round {round}: the call overtook reports");
    }
    assert_eq!(
        within("the counter", move || counting.join().unwrap()),
        published
    );
}

/// A service that keeps every request it gets, unanswered, on `held`.
fn holder(d: &Dispatcher, name: &str) -> (ServiceHandle, crossbeam_channel::Receiver<Request>) {
    let (tx, held) = crossbeam_channel::bounded::<Request>(4);
    let handle = d
        .service(name)
        .spawn(move |_svc, ev| {
            if let Event::Request(r) = ev {
                let _ = tx.send(r);
            }
        })
        .unwrap();
    (handle, held)
}

/// A call written by its caller, to a service that holds it unanswered,
/// fails at once when that service is withdrawn, and one pending when the
/// caller's dispatcher shuts down fails with `Closed`: neither waits for
/// its timeout.
#[test]
fn a_call_written_by_its_caller_ends_with_its_callee_or_its_dispatcher() {
    let p = pair();
    let me = p.caller("caller");

    let (sink, held) = holder(&p.server, "sink");
    let target = await_service(&p.client, "sink");
    let pending = me
        .request_timeout::<(), _>(&target, "hold", &(), LONG)
        .unwrap();
    let request = held.recv_timeout(WAIT).expect("the request held");
    sink.stop();
    let outcome = within("the call to a withdrawn service", move || pending.wait());
    assert!(
        matches!(outcome, Err(Error::ServiceUnavailable(_))),
        "{outcome:?}"
    );
    drop(request);

    let (_sink, held) = holder(&p.server, "sink-2");
    let target = await_service(&p.client, "sink-2");
    let pending = me
        .request_timeout::<(), _>(&target, "hold", &(), LONG)
        .unwrap();
    let _request = held.recv_timeout(WAIT).expect("the request held");
    p.client.shutdown();
    let outcome = within("the call at shutdown", move || pending.wait());
    assert!(matches!(outcome, Err(Error::Closed)), "{outcome:?}");
}

/// Calls of 6 MiB, more than a loopback socket takes at once: the calling
/// thread writes what the socket takes and leaves the rest to the
/// dispatcher, which writes it before anything else. Each such call is
/// followed at once by a report and a small call from the same thread:
/// every frame arrives whole and in order (the callee counts the reports
/// it had before each call).
#[test]
fn a_call_the_socket_cannot_take_at_once_is_finished_before_anything_after_it() {
    const ROUNDS: u64 = 6;
    let p = pair();
    let (counter, publisher) = counter_and_publisher(&p, "big.*");
    let counting = thread::spawn(move || {
        let mut seen = 0u64;
        let mut calls = 0u64;
        while calls < 2 * ROUNDS {
            match counter.recv_timeout(WAIT) {
                Ok(Some(Event::Report(_))) => seen += 1,
                Ok(Some(Event::Request(r))) => {
                    calls += 1;
                    let body: Vec<u8> = r.decode().unwrap();
                    r.reply(&(
                        seen,
                        body.len() as u64,
                        body.iter().map(|b| *b as u64).sum::<u64>(),
                    ))
                    .unwrap();
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("nothing within WAIT after {calls} calls"),
                Err(e) => panic!("counter closed after {calls} calls: {e}"),
            }
        }
    });
    let target = await_service(&p.client, "counter");
    let big: Vec<u8> = (0..6 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let big_sum: u64 = big.iter().map(|b| *b as u64).sum();
    for round in 0..ROUNDS {
        let pending = publisher
            .request_timeout::<(u64, u64, u64), _>(&target, "big", &big, LONG)
            .unwrap();
        publisher
            .publish_report("big.x", &round, Lifetime::None)
            .unwrap();
        let small: (u64, u64, u64) = publisher
            .call_timeout(&target, "small", &vec![1u8; 10], LONG)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let got = within("the big call", move || pending.wait()).unwrap();
        assert_eq!(got, (round, big.len() as u64, big_sum), "round {round}");
        assert_eq!(small, (round + 1, 10, 10), "round {round}");
    }
    within("the counter", move || counting.join().unwrap());
}
