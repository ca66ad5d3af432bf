//! Flow control: a publisher that publishes as fast as `publish_report`
//! lets it, through an exchange. Nothing is dropped on the way: while a
//! subscriber's queue is full, the reports wait and `publish_report` waits
//! with them (see the README's guarantees).
//!
//! `cargo run --example flood -- [--host 127.0.0.1] [--port 11111]
//! [--secret KEY] [--group NAME] [--count N]` (`--help` lists them).
//! Waits for a subscription to `flood`, says `SUBSCRIBED`, publishes N
//! reports `flood.data` carrying 0, 1, 2, ... in order, says
//! `PUBLISHED n in s`, then stays up (its reports may still be on their
//! way) until SIGINT/SIGTERM.
//!
//! Try it beside `cargo run --example exchange` and a subscriber to
//! `flood` `flood.*` that reads slowly: every report arrives, in order.

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use common::{say, stop_on_signals, Opt};
use netsvc::{Dispatcher, Event, Lifetime, SubscriptionStatus};

fn main() -> netsvc::Result<()> {
    let args = common::args(
        "flood",
        "A publisher that publishes --count reports as fast as it is let, \
         once someone subscribes; nothing is lost on the way.",
        &[Opt::Host, Opt::Port, Opt::Secret, Opt::Group, Opt::Count],
    );
    let d = Dispatcher::builder().name("flood").build()?;
    stop_on_signals(&d)?;
    let ex = args.connect(&d, std::time::Duration::from_secs(1))?;
    common::log_connections(&ex);
    let publisher = d.service("flood").open()?;
    loop {
        match publisher.recv()? {
            Event::Subscription(s) if s.status() == SubscriptionStatus::Requested => break,
            _ => {}
        }
    }
    say("SUBSCRIBED");
    let started = Instant::now();
    for seq in 0..args.count {
        publisher.publish_report("flood.data", &seq, Lifetime::None)?;
    }
    say(format!(
        "PUBLISHED {} in {:.2} s",
        args.count,
        started.elapsed().as_secs_f64()
    ));
    d.wait()
}
