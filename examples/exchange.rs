//! An exchange server: client processes connect to it and see each other's
//! services as if they were local.
//!
//! `cargo run --example exchange -- [--port 11111]` (port 0 lets the OS
//! choose). Prints `LISTENING <address>`, then a line per client link.
//! Stops cleanly on SIGINT or SIGTERM.

#[path = "common/mod.rs"]
mod common;

use common::{say, stop_on_signals};
use netsvc::{Dispatcher, Exchange};

fn main() -> netsvc::Result<()> {
    let args = common::args();
    let d = Dispatcher::builder().name("exchange").build()?;
    stop_on_signals(&d)?;
    let ex = Exchange::server(&d).listen((args.host.as_str(), args.port))?;
    common::log_connections(&ex);
    say(format!("LISTENING {}", ex.local_addr()));
    d.wait()?;
    say("STOPPED");
    Ok(())
}
