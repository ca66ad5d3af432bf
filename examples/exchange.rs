//! An exchange server: client processes connect to it and see each other's
//! services as if they were local.
//!
//! `cargo run --example exchange -- [--host 127.0.0.1] [--port 11111]
//! [--secret KEY] [--group NAME]` (port 0 lets the OS choose; `--help`
//! lists the options). Prints `LISTENING <address>`, then a line per client
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
        common::EXCHANGE,
    );
    let d = Dispatcher::builder().name("exchange").build()?;
    stop_on_signals(&d)?;
    let ex = args
        .server_builder(&d)
        .listen((args.host.as_str(), args.port))?;
    common::log_connections(&ex);
    say(format!("LISTENING {}", ex.local_addr()));
    d.wait();
    say("STOPPED");
    Ok(())
}
