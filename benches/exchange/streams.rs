//! The report streams: the `publisher` and `subscriber` roles, and the
//! parent's run of one publisher to one (W2) or eight (W3) subscriber
//! processes through a fresh exchange, with the exchange's memory across
//! it (M1).

use std::thread;
use std::time::{Duration, Instant};

use netsvc::{Event, Lifetime, ServiceBinding, SubscriptionStatus};

use crate::child::{child_init, fail, park_forever};
use crate::cli::{Args, Sizes};
use crate::exchange::{connect_exchange, dispatcher};
use crate::measure::{epoch_ns, nanos, rate};
use crate::proc::{port_of, proc_status_bytes, spawn, SETUP};
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
    loop {
        match cmds.recv() {
            Ok(l) if l.trim() == "go" => break,
            Ok(_) => {}
            Err(_) => std::process::exit(0),
        }
    }
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
    let svc = d
        .service("bench-sub")
        .queue_capacity(n as usize + 10_000)
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
        "RESULT count={count} first_ns={first_ns} last_ns={last_ns} dropped={} bad={bad}",
        stats.reports_dropped
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
    let mut received = 0;
    let mut dropped = 0;
    let mut first = u64::MAX;
    let mut last = 0;
    for p in &subscribers {
        let r = p.expect("RESULT", budget)?;
        received += r.u("count")?;
        dropped += r.u("dropped")?;
        let f = r.u("first_ns")?;
        if f > 0 {
            first = first.min(f);
            last = last.max(r.u("last_ns")?);
        }
    }
    let publish_rate = publisher
        .expect("RESULT", Duration::from_secs(5))
        .and_then(|r| Ok(n as f64 * 1e9 / r.u("elapsed_ns")?.max(1) as f64))
        .unwrap_or(0.0);
    thread::sleep(Duration::from_millis(500));
    let rss_peak = proc_status_bytes(exchange.pid, "VmHWM").unwrap_or(0);
    let rss_after = proc_status_bytes(exchange.pid, "VmRSS").unwrap_or(0);
    Ok(PubSub {
        expected: n * subs as u64,
        received,
        dropped,
        rate: rate(received, last.saturating_sub(first)),
        publish_rate,
        rss_before,
        rss_peak,
        rss_after,
    })
}
