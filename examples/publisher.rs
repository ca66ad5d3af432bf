//! A publisher, the OSE example's other half: a cached `system.startup`
//! report, then `system.time` every second, through an exchange.
//!
//! `cargo run --example publisher -- [--host 127.0.0.1] [--port 11111]
//! [--secret KEY] [--group NAME] [--tls-ca FILE [--tls-server-name NAME]
//! [--tls-cert FILE --tls-key FILE]]` (`--help` lists them; `RUST_LOG` chooses
//! what is logged on stderr, default `warn`). Connects with a 1-second
//! retry delay, so it may start before the exchange. It also answers
//! `uptime` requests. Stops on SIGINT/SIGTERM.

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{now_secs, say, stop_on_signals};
use netsvc::{Dispatcher, Event, Lifetime};

const TICK: u64 = 1;

fn main() -> netsvc::Result<()> {
    let args = common::args(
        "publisher",
        "A publisher: a cached system.startup report, then system.time every \
         second, through an exchange; it answers uptime requests.",
        common::EXCHANGE_CLIENT,
    );
    let d = Dispatcher::builder().name("publisher").build()?;
    stop_on_signals(&d)?;
    let ex = args.connect(&d, Duration::from_secs(1))?;
    common::log_connections(&ex);

    let started = Instant::now();
    let publisher = d.service("publisher").open()?;
    publisher.publish_report("system.startup", &now_secs(), Lifetime::Forever)?;
    say(format!("PUBLISHING as {}", publisher.binding()));
    publisher.start_timer(Duration::from_secs(1), TICK);
    loop {
        match publisher.recv() {
            Ok(Event::Timer(TICK)) => {
                publisher.publish_report("system.time", &now_secs(), Lifetime::None)?;
                publisher.start_timer(Duration::from_secs(1), TICK);
            }
            Ok(Event::Request(request)) => match request.method() {
                "uptime" => {
                    let _ = request.reply(&started.elapsed().as_secs_f64());
                }
                _ => {
                    let method = request.method().to_owned();
                    let _ = request.fail(
                        netsvc::codes::METHOD_UNAVAILABLE,
                        format!("no method {method}"),
                    );
                }
            },
            Ok(Event::Subscription(s)) => say(format!(
                "SUBSCRIPTION {:?} {} {}",
                s.status(),
                s.subscriber(),
                s.subject()
            )),
            Ok(Event::Shutdown) | Err(_) => break,
            Ok(_) => {}
        }
    }
    drop(publisher);
    d.wait()?;
    say("STOPPED");
    Ok(())
}
