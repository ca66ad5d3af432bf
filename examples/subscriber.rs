//! The OSE subscriber example: monitors publishers, subscribes to
//! `system.*` through an exchange, and says what it hears.
//!
//! `cargo run --example subscriber -- [--host 127.0.0.1] [--port 11111]
//! [--secret KEY] [--group NAME] [--tls-ca FILE [--tls-server-name NAME]
//! [--tls-cert FILE --tls-key FILE]]` (`--help` lists them; `RUST_LOG` chooses
//! what is logged on stderr, default `warn`).
//! Prints `<publisher> originally started at <t>` for the cached startup
//! report, `<publisher> was still alive at <t>` for each time report,
//! `AVAILABLE|WITHDRAWN <publisher>` as publishers come and go, and
//! `ACTIVE|INACTIVE <process> (<address>)` for the exchange link. The
//! subscription needs no renewing: after a lost link or a restarted
//! publisher, reports flow again by themselves. Stops on SIGINT/SIGTERM.

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use common::{clock, say, stop_on_signals};
use netsvc::{Dispatcher, Event, ServiceStatus};

fn main() -> netsvc::Result<()> {
    let args = common::args(
        "subscriber",
        "A subscriber: monitors publishers, subscribes to their system.* \
         reports through an exchange, and says what it hears.",
        common::EXCHANGE_CLIENT,
    );
    let d = Dispatcher::builder().name("subscriber").build()?;
    stop_on_signals(&d)?;
    let ex = args.connect(&d, Duration::from_secs(1))?;
    common::log_connections(&ex);

    let subscriber = d.service("subscriber").open()?;
    subscriber.monitor_service_name("publisher");
    subscriber.subscribe_reports("publisher", "system.*");
    loop {
        match subscriber.recv() {
            Ok(Event::Report(r)) => {
                let t: u64 = match r.decode() {
                    Ok(t) => t,
                    Err(e) => {
                        say(format!(
                            "BAD REPORT {} from {}: {e}",
                            r.subject(),
                            r.publisher()
                        ));
                        continue;
                    }
                };
                match r.subject() {
                    "system.startup" => say(format!(
                        "{} originally started at {}",
                        r.publisher(),
                        clock(t)
                    )),
                    "system.time" => {
                        say(format!("{} was still alive at {}", r.publisher(), clock(t)))
                    }
                    other => say(format!("{} reported {other}", r.publisher())),
                }
            }
            Ok(Event::Announcement(a)) => {
                let status = match a.status() {
                    ServiceStatus::Available => "AVAILABLE",
                    ServiceStatus::Withdrawn => "WITHDRAWN",
                };
                say(format!(
                    "{status} {} {}",
                    a.binding(),
                    a.binding().process_identity()
                ));
            }
            Ok(Event::Shutdown) | Err(_) => break,
            Ok(_) => {}
        }
    }
    drop(subscriber);
    d.wait()?;
    say("STOPPED");
    Ok(())
}
