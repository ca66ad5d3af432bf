//! netsvc in one process: a publisher with a cached startup report and a
//! periodic time report, a subscriber that reads them, a service answering
//! calls, and a monitor printing announcements as they happen.
//!
//! Run with `cargo run --example quickstart`; it ends by itself in a few
//! seconds. It takes no options but `--help`; `RUST_LOG` chooses what is
//! logged on stderr (default `warn`).

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use netsvc::{Dispatcher, Event, Lifetime, Methods, ServiceFailure, ServiceStatus};

/// Timer tag of the publisher's periodic report.
const TICK: u64 = 1;

/// Prints a line and flushes it, so the output interleaves as it happens.
fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Seconds since the epoch as `HH:MM:SS` UTC.
fn clock(secs: u64) -> String {
    format!(
        "{:02}:{:02}:{:02} UTC",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn main() -> netsvc::Result<()> {
    common::args(
        "quickstart",
        "netsvc in one process: a publisher, a subscriber, a service answering \
         calls and a monitor; it ends by itself.",
        &[],
    );
    let d = Dispatcher::builder().name("quickstart").build()?;

    // A monitor: opened, told what to watch, then handed to a worker thread
    // that prints every announcement as it happens.
    let monitor = d.service("monitor").open()?;
    monitor.monitor_service_name("publisher");
    monitor.monitor_service_name("calculator");
    monitor.monitor_service_group("workers");
    let _monitor = monitor.spawn(|_svc, event| {
        if let Event::Announcement(a) = event {
            let status = match a.status() {
                ServiceStatus::Available => "AVAILABLE",
                ServiceStatus::Withdrawn => "WITHDRAWN",
            };
            let scope = a
                .group()
                .map(|g| format!(" in group {g}"))
                .unwrap_or_default();
            say(format!("[monitor] {status} {}{scope}", a.binding()));
        }
    })?;

    // A service answering calls, from a table of typed methods.
    let calculator = d
        .service("calculator")
        .group("workers")
        .serve(Methods::new().method("add", |_req, (a, b): (i64, i64)| {
            a.checked_add(b)
                .ok_or_else(|| ServiceFailure::parameters_incorrect("overflow"))
        }))?;

    // The publisher, pulled by a plain thread of its own (as a legacy
    // application would): a cached startup report, then the time each second.
    let publisher = d.service("publisher").open()?;
    let publisher_thread = thread::spawn(move || -> netsvc::Result<()> {
        publisher.publish_report("system.startup", &now_secs(), Lifetime::Forever)?;
        publisher.start_timer(Duration::from_millis(500), TICK);
        loop {
            match publisher.recv()? {
                Event::Timer(TICK) => {
                    publisher.publish_report("system.time", &now_secs(), Lifetime::None)?;
                    publisher.start_timer(Duration::from_secs(1), TICK);
                }
                Event::Subscription(s) => say(format!(
                    "[publisher] {} {:?} reports on {:?}",
                    s.subscriber(),
                    s.status(),
                    s.subject()
                )),
                Event::Shutdown => return Ok(()),
                _ => {}
            }
        }
    });

    // The subscriber, on this thread. It subscribes after the startup report
    // was published: the cache delivers it all the same.
    let subscriber = d.service("subscriber").open()?;
    subscriber.monitor_service_name("publisher");
    subscriber.subscribe_reports("publisher", "system.*");
    let mut ticks = 0;
    while ticks < 3 {
        let Some(event) = subscriber.recv_timeout(Duration::from_secs(5))? else {
            say("[subscriber] no report within 5 s".to_owned());
            break;
        };
        match event {
            Event::Report(r) => {
                let t: u64 = r.decode()?;
                match r.subject() {
                    "system.startup" => say(format!(
                        "[subscriber] {} originally started at {}",
                        r.publisher(),
                        clock(t)
                    )),
                    _ => {
                        ticks += 1;
                        say(format!(
                            "[subscriber] {} was still alive at {}",
                            r.publisher(),
                            clock(t)
                        ))
                    }
                }
            }
            Event::Publisher(p) => say(format!(
                "[subscriber] publisher {} {:?}",
                p.publisher(),
                p.status()
            )),
            _ => {}
        }
    }

    // Request/reply: a blocking call, then a failure with its OSE code.
    let sum: i64 = subscriber.call(calculator.binding(), "add", &(40, 2))?;
    say(format!("[subscriber] calculator says 40 + 2 = {sum}"));
    match subscriber.call::<i64, _>(calculator.binding(), "add", &(i64::MAX, 1)) {
        Ok(v) => say(format!("[subscriber] unexpected sum {v}")),
        Err(e) => say(format!(
            "[subscriber] calculator refused: {e} (code {})",
            e.code()
        )),
    }

    // Shut down: every service hears Event::Shutdown, then all are withdrawn
    // (the monitor prints it) and every thread is joined.
    d.shutdown_after(Duration::from_millis(200));
    d.wait()?;
    match publisher_thread.join() {
        Ok(result) => result?,
        Err(_) => say("[publisher] thread panicked".to_owned()),
    }
    say("done".to_owned());
    Ok(())
}
