//! An exchange server: client processes connect to it and see each other's
//! services as if they were local.
//!
//! `cargo run --example exchange -- [--host 127.0.0.1] [--port 11111]
//! [--secret KEY] [--group NAME] [--tls-cert FILE --tls-key FILE
//! [--tls-client-ca FILE]]` (port 0 lets the OS choose; `--help` lists the
//! options; with `--tls-cert` every link is TLS, with `--tls-client-ca`
//! mutual TLS, the clients' certificate names showing in the link lines). Prints `LISTENING <address>`, then a line per client
//! link. `RUST_LOG` (e.g. `debug`, `netsvc=info`; default `warn`) chooses
//! what is logged on stderr. Stops cleanly on SIGINT or SIGTERM.

#[path = "common/mod.rs"]
mod common;

use common::{say, stop_on_signals};
use netsvc::Dispatcher;

fn main() -> netsvc::Result<()> {
    let args = common::args(
        "exchange",
        "An exchange server: the client processes connected to it see each \
         other's services.",
        common::EXCHANGE_SERVER,
    );
    let d = Dispatcher::builder().name("exchange").build()?;
    stop_on_signals(&d)?;
    let ex = args
        .server_builder(&d)?
        .listen((args.host.as_str(), args.port))?;
    common::log_connections(&ex);
    say(format!("LISTENING {}", ex.local_addr()));
    // For tests (tests/util/exchange_proc.rs): this dispatcher's counters,
    // as (field, value) pairs, to any client that asks.
    let counted = d.clone();
    let _stats = d
        .service("exchange.stats")
        .audience("*")
        .spawn(move |_svc, event| {
            if let netsvc::Event::Request(request) = event {
                let s = counted.stats();
                let fields: Vec<(String, u64)> = [
                    ("requests_delivered", s.requests_delivered),
                    ("replies_delivered", s.replies_delivered),
                    ("busy_replies", s.busy_replies),
                    ("late_replies", s.late_replies),
                    ("calls_timed_out", s.calls_timed_out),
                    ("reports_published", s.reports_published),
                    ("reports_delivered", s.reports_delivered),
                    ("reports_dropped", s.reports_dropped),
                    ("events_dropped", s.events_dropped),
                    ("frames_in", s.frames_in),
                    ("frames_out", s.frames_out),
                    ("reconnects", s.reconnects),
                    ("slow_consumers", s.slow_consumers),
                    ("limits_breached", s.limits_breached),
                    ("auth_failures", s.auth_failures),
                    ("casts_dropped", s.casts_dropped),
                    ("tls_failures", s.tls_failures),
                    ("refused_frames", s.refused_frames),
                    ("permission_denied", s.permission_denied),
                    ("publish_timeouts", s.publish_timeouts),
                    ("subscribers_stalled", s.subscribers_stalled),
                ]
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect();
                let _ = request.reply(&fields);
            }
        })?;
    d.wait()?;
    say("STOPPED");
    Ok(())
}
