//! The report streams: the `publisher` and `subscriber` roles, and the
//! parent's run of one publisher to one (W2) or eight (W3) subscriber
//! processes through a fresh exchange, with the exchange's memory across
//! it (M1).

use std::thread;
use std::time::{Duration, Instant};

use netsvc::{Event, Lifetime, ServiceBinding, SubscriptionStatus};

use crate::child::{child_init, fail, park_forever, wait_for_go};
use crate::cli::{Args, Sizes};
use crate::exchange::{connect_exchange, dispatcher};
use crate::measure::{epoch_ns, nanos, rate};
use crate::proc::{port_of, proc_status_bytes, spawn, Proc, SETUP};
use crate::PAYLOAD;

/// Subscriber processes of W3.
pub(crate) const W3_SUBSCRIBERS: usize = 8;

/// `publisher --port P --n N --subs K`: waits for K subscriptions, says
/// READY, waits for `go` on stdin, publishes N reports, stays alive so its
/// dispatcher flushes everything.
pub(crate) fn role_publisher(a: &Args) {
    let cmds = child_init();
    let d = dispatcher("bench-pub");
    let _ex = connect_exchange(&d, a);
    let n = a.num("--n", 100_000);
    let want = a.num("--subs", 1) as usize;
    let svc = d
        .service("bench-pub")
        .open()
        .unwrap_or_else(|e| fail(&e.to_string()));
    let mut subscribers: Vec<ServiceBinding> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while subscribers.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        match svc.recv_timeout(left) {
            Ok(Some(Event::Subscription(s))) if s.status() == SubscriptionStatus::Requested => {
                if !subscribers.contains(s.subscriber()) {
                    subscribers.push(s.subscriber().clone());
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => fail(&format!(
                "{} of {want} subscriptions within 30 s",
                subscribers.len()
            )),
        }
    }
    println!("READY");
    wait_for_go(&cmds);
    let msg = vec![7u8; PAYLOAD];
    let start = Instant::now();
    for _ in 0..n {
        if let Err(e) = svc.publish_report("bench.data", &msg, Lifetime::None) {
            fail(&format!("publish: {e}"));
        }
    }
    println!("RESULT published={n} elapsed_ns={}", nanos(start.elapsed()));
    park_forever();
}

/// `subscriber --port P --n N --idle-ms M`: subscribes to `bench-pub`
/// `bench.*`, counts reports until N arrived or none came for M ms (after
/// the first), and prints the count and the first and last arrival times.
pub(crate) fn role_subscriber(a: &Args) {
    let _cmds = child_init();
    let d = dispatcher("bench-sub");
    let _ex = connect_exchange(&d, a);
    let n = a.num("--n", 100_000);
    let idle = Duration::from_millis(a.num("--idle-ms", 2000));
    let first_wait = Duration::from_millis(a.num("--first-ms", 60_000));
    // The library's default queue capacity (1024): every report arrives
    // all the same, the publisher pushed back on while the queue is full.
    let svc = d
        .service("bench-sub")
        .open()
        .unwrap_or_else(|e| fail(&e.to_string()));
    svc.subscribe_reports("bench-pub", "bench.*");
    println!("READY");
    let mut count = 0u64;
    let mut bad = 0u64;
    let mut first: Option<(Instant, u64)> = None;
    let mut last = Instant::now();
    while count < n {
        let wait = if first.is_none() { first_wait } else { idle };
        match svc.recv_timeout(wait) {
            Ok(Some(Event::Report(r))) => {
                match r.decode::<Vec<u8>>() {
                    Ok(v) if v.len() == PAYLOAD => {}
                    _ => bad += 1,
                }
                last = Instant::now();
                if first.is_none() {
                    first = Some((last, epoch_ns()));
                }
                count += 1;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let (first_ns, last_ns) = match first {
        Some((at, epoch)) => (epoch, epoch + nanos(last.duration_since(at))),
        None => (0, 0),
    };
    let stats = d.stats();
    println!(
        "RESULT count={count} first_ns={first_ns} last_ns={last_ns} dropped={} bad={bad} rss_peak={}",
        stats.reports_dropped,
        self_peak_rss()
    );
    std::process::exit(0);
}

/// The results of a publish/subscribe run.
pub(crate) struct PubSub {
    pub(crate) expected: u64,
    pub(crate) received: u64,
    pub(crate) dropped: u64,
    pub(crate) rate: f64,
    pub(crate) rss_before: u64,
    pub(crate) rss_peak: u64,
    pub(crate) rss_after: u64,
    /// Reports per second handed to `publish_report` by the publisher.
    pub(crate) publish_rate: f64,
    /// The largest peak RSS (VmHWM) of a subscriber process.
    pub(crate) subscriber_peak: u64,
}

/// How many alternating rounds of a stream and its NATS row are run
/// (the rows show the median round, and the range).
pub(crate) fn stream_rounds(s: &Sizes) -> usize {
    if s.quick() {
        1
    } else {
        3
    }
}

/// The rounds of one stream workload, taken together: the median round's
/// rates, every round's deliveries and losses summed (so "all arrived"
/// holds for every round), the largest memory figures of any round.
pub(crate) fn median_of(mut runs: Vec<PubSub>) -> Option<(PubSub, f64, f64)> {
    runs.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    let (low, high) = (runs.first()?.rate, runs.last()?.rate);
    let (expected, received, dropped) = runs.iter().fold((0, 0, 0), |(e, r, d), p| {
        (e + p.expected, r + p.received, d + p.dropped)
    });
    let subscriber_peak = runs.iter().map(|p| p.subscriber_peak).max().unwrap_or(0);
    let rss_peak = runs.iter().map(|p| p.rss_peak).max().unwrap_or(0);
    // The exchange's growth: that of the round in which it grew most.
    let grew = runs
        .iter()
        .max_by_key(|p| p.rss_after.saturating_sub(p.rss_before))
        .map(|p| (p.rss_before, p.rss_after))
        .unwrap_or((0, 0));
    let mid = runs.len() / 2;
    let mut m = runs.swap_remove(mid);
    m.expected = expected;
    m.received = received;
    m.dropped = dropped;
    m.subscriber_peak = subscriber_peak;
    m.rss_peak = rss_peak;
    (m.rss_before, m.rss_after) = grew;
    Some((m, low, high))
}

/// This process's peak RSS (VmHWM), in bytes (0 if unknown).
pub(crate) fn self_peak_rss() -> u64 {
    proc_status_bytes(std::process::id(), "VmHWM").unwrap_or(0)
}

/// W2 and W3: one publisher, `subs` subscriber processes, a fresh
/// exchange; every link with TLS if `tls` names a directory of
/// certificates (see `tls::make_certs`).
pub(crate) fn pubsub(s: &Sizes, subs: usize, n: u64, tls: Option<&str>) -> Result<PubSub, String> {
    let tls: Vec<&str> = tls.map(|dir| vec!["--tls", dir]).unwrap_or_default();
    let with_tls = |args: &[&'static str]| -> Vec<&str> {
        let mut v: Vec<&str> = args.to_vec();
        v.extend_from_slice(&tls);
        v
    };
    let exchange = spawn("exchange", &with_tls(&["exchange"]))?;
    let port = port_of(&exchange)?;
    let n_s = n.to_string();
    let mut subscribers = Vec::new();
    for i in 0..subs {
        let mut args = vec![
            "subscriber",
            "--port",
            &port,
            "--n",
            &n_s,
            "--idle-ms",
            "3000",
        ];
        args.extend_from_slice(&tls);
        let p = spawn(&format!("subscriber{i}"), &args)?;
        subscribers.push(p);
    }
    for p in &subscribers {
        p.expect("READY", SETUP)?;
    }
    let subs_s = subs.to_string();
    let mut args = vec!["publisher", "--port", &port, "--n", &n_s, "--subs", &subs_s];
    args.extend_from_slice(&tls);
    let publisher = spawn("publisher", &args)?;
    publisher.expect("READY", Duration::from_secs(35))?;
    thread::sleep(Duration::from_millis(200));
    let rss_before = proc_status_bytes(exchange.pid, "VmRSS").unwrap_or(0);
    publisher.send("go")?;
    let budget = s.budget() + Duration::from_secs(n * subs as u64 / 100_000);
    let run = collect(&subscribers, &publisher, budget, n)?;
    thread::sleep(Duration::from_millis(500));
    let rss_peak = proc_status_bytes(exchange.pid, "VmHWM").unwrap_or(0);
    let rss_after = proc_status_bytes(exchange.pid, "VmRSS").unwrap_or(0);
    Ok(run.into_pubsub(n * subs as u64, rss_before, rss_peak, rss_after))
}

/// What the subscribers and the publisher of a run said.
pub(crate) struct Run {
    received: u64,
    dropped: u64,
    first: u64,
    last: u64,
    subscriber_peak: u64,
    publish_rate: f64,
}

impl Run {
    pub(crate) fn into_pubsub(self, expected: u64, before: u64, peak: u64, after: u64) -> PubSub {
        PubSub {
            expected,
            received: self.received,
            dropped: self.dropped,
            rate: rate(self.received, self.last.saturating_sub(self.first)),
            publish_rate: self.publish_rate,
            rss_before: before,
            rss_peak: peak,
            rss_after: after,
            subscriber_peak: self.subscriber_peak,
        }
    }
}

/// Reads every subscriber's RESULT (count, dropped, first and last
/// arrival, peak RSS) and the publisher's (its publishing rate of `n`).
pub(crate) fn collect(
    subscribers: &[Proc],
    publisher: &Proc,
    budget: Duration,
    n: u64,
) -> Result<Run, String> {
    let mut run = Run {
        received: 0,
        dropped: 0,
        first: u64::MAX,
        last: 0,
        subscriber_peak: 0,
        publish_rate: 0.0,
    };
    for p in subscribers {
        let r = p.expect("RESULT", budget)?;
        run.received += r.u("count")?;
        run.dropped += r.u("dropped")?;
        run.subscriber_peak = r.u("rss_peak")?.max(run.subscriber_peak);
        let f = r.u("first_ns")?;
        if f > 0 {
            run.first = run.first.min(f);
            run.last = run.last.max(r.u("last_ns")?);
        }
    }
    run.publish_rate = publisher
        .expect("RESULT", Duration::from_secs(5))
        .and_then(|r| Ok(n as f64 * 1e9 / r.u("elapsed_ns")?.max(1) as f64))
        .unwrap_or(0.0);
    Ok(run)
}
