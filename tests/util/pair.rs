//! A well-behaved pair of exchange clients that watches an exchange stay
//! responsive while something else attacks it.
//!
//! Two dispatchers of the test process, each linked to the exchange: A
//! publishes a report on `tick` every 20 ms (service `pair.a`) and answers
//! calls on `pair.echo`; it also offers `pair.sink`, which holds the
//! requests it gets without answering them (a call to it only ends by its
//! timeout). B subscribes to A's `tick` reports and calls `pair.echo` every
//! 20 ms with a short timeout. Two threads of B record the largest gap
//! between consecutive reports received and between consecutive successful
//! calls; [`Pair::stop`] returns them.
//!
//! [`Pair::start`] returns once reports and calls flow (the first of each
//! has arrived); the gaps are measured from then.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netsvc::{
    Dispatcher, Event, Exchange, Lifetime, Request, ServiceBinding, ServiceHandle, ServiceStatus,
};

use super::{wait_announcement, wait_for, Gaps, WAIT};

/// How often A publishes and B calls.
pub const PERIOD: Duration = Duration::from_millis(20);

/// The timeout of each of B's calls.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// What the pair saw between `start` and `stop`.
#[derive(Debug, Clone, Copy)]
pub struct PairReport {
    /// The longest time without a report (also counting from the last one
    /// to `stop`).
    pub max_report_gap: Duration,
    /// The longest time without a successful call (likewise).
    pub max_call_gap: Duration,
    /// Calls that failed or timed out.
    pub failed_calls: u64,
    /// Reports received.
    pub reports: u64,
    /// Calls that succeeded.
    pub calls: u64,
}

/// The running pair.
pub struct Pair {
    a: Dispatcher,
    b: Dispatcher,
    _links: [Exchange; 2],
    _services: Vec<ServiceHandle>,
    /// Requests `pair.sink` holds (at most [`SINK_HOLDS`]).
    held: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    reports: Arc<Mutex<Gaps>>,
    calls: Arc<Mutex<Gaps>>,
    failed: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
    sink: ServiceBinding,
    echo: ServiceBinding,
}

/// How many requests `pair.sink` holds; later ones are dropped (and so
/// fail with code 58).
pub const SINK_HOLDS: usize = 64;

impl Pair {
    /// Starts both sides, linked to the exchange at `addr`, and returns once
    /// a report and a call have gone through it (bounded by [`WAIT`]).
    pub fn start(addr: SocketAddr) -> Pair {
        let retry = Duration::from_millis(100);
        let a = Dispatcher::builder()
            .name("pair-a")
            .build()
            .expect("dispatcher A");
        let b = Dispatcher::builder()
            .name("pair-b")
            .build()
            .expect("dispatcher B");
        let echo = a
            .service("pair.echo")
            .audience("*")
            .spawn(|_svc, event| {
                if let Event::Request(r) = event {
                    let n: u64 = r.decode().unwrap_or_default();
                    let _ = r.reply(&n);
                }
            })
            .expect("pair.echo");
        let held = Arc::new(Mutex::new(Vec::new()));
        let holds = held.clone();
        let sink = a
            .service("pair.sink")
            .audience("*")
            .spawn(move |_svc, event| {
                if let Event::Request(r) = event {
                    let mut held = holds.lock().unwrap_or_else(|e| e.into_inner());
                    if held.len() < SINK_HOLDS {
                        held.push(r);
                    }
                }
            })
            .expect("pair.sink");
        let publisher = a.service("pair.a").audience("*").open().expect("pair.a");
        let subscriber = b.service("pair.b").open().expect("pair.b");
        let caller = b.service("pair.caller").open().expect("pair.caller");
        caller.monitor_service_name("pair.echo");
        subscriber.subscribe_reports("pair.a", "tick");
        let links = [
            Exchange::client(&a).connect(addr, retry).expect("link A"),
            Exchange::client(&b).connect(addr, retry).expect("link B"),
        ];
        let echo_remote = wait_announcement(&caller, "pair.echo", None, ServiceStatus::Available)
            .binding()
            .clone();

        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        // A's publishing thread.
        {
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let _ = publisher.publish_report("tick", &n, Lifetime::None);
                    std::thread::sleep(PERIOD);
                }
            }));
        }
        // The first report and the first call: the pair is flowing.
        wait_for(&subscriber, "the first tick", |e| match e {
            Event::Report(r) if r.subject() == "tick" => Some(()),
            _ => None,
        });
        let first: u64 = caller
            .call_timeout(&echo_remote, "echo", &7u64, WAIT)
            .expect("the first call to pair.echo");
        assert_eq!(first, 7);

        let now = Instant::now();
        let reports = Arc::new(Mutex::new(Gaps {
            last: Some(now),
            ..Gaps::default()
        }));
        let calls = Arc::new(Mutex::new(Gaps {
            last: Some(now),
            ..Gaps::default()
        }));
        let failed = Arc::new(AtomicU64::new(0));
        {
            let (stop, reports) = (stop.clone(), reports.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match subscriber.recv_timeout(Duration::from_millis(50)) {
                        Ok(Some(Event::Report(r))) if r.subject() == "tick" => {
                            reports
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .mark(Instant::now());
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            }));
        }
        {
            let (stop, calls, failed) = (stop.clone(), calls.clone(), failed.clone());
            let echo = echo_remote.clone();
            threads.push(std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    match caller.call_timeout::<u64, _>(&echo, "echo", &n, CALL_TIMEOUT) {
                        Ok(m) if m == n => calls
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .mark(Instant::now()),
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    std::thread::sleep(PERIOD);
                }
            }));
        }
        let sink_binding = sink.binding().clone();
        Pair {
            a,
            b,
            _links: links,
            _services: vec![echo, sink],
            held,
            stop,
            reports,
            calls,
            failed,
            threads,
            sink: sink_binding,
            echo: echo_remote,
        }
    }

    /// `pair.sink`'s binding (a service that never answers).
    pub fn sink(&self) -> &ServiceBinding {
        &self.sink
    }

    /// `pair.echo`'s binding, as B sees it through the exchange.
    pub fn echo(&self) -> &ServiceBinding {
        &self.echo
    }

    /// How many requests `pair.sink` holds.
    pub fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Stops the pair and returns what it saw. Bounded: each thread ends
    /// within one call timeout.
    pub fn stop(mut self) -> PairReport {
        let now = Instant::now();
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let mut reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        PairReport {
            max_report_gap: reports.end(now),
            max_call_gap: calls.end(now),
            failed_calls: self.failed.load(Ordering::Relaxed),
            reports: reports.count,
            calls: calls.count,
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.held.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.a.shutdown();
        self.b.shutdown();
    }
}
