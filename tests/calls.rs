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
