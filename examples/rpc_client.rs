//! An oslo.messaging-style RPC client in its own process: calls the
//! `calculator` servers of `rpc_server` through an exchange, then exits.
//!
//! `cargo run --example rpc_client [-- --port 11111]` (with the exchange and
//! at least one rpc_server running; it waits up to 10 s for a server).
//! Also `--host H`, `--secret KEY`, `--group NAME`, and TLS with `--tls-ca
//! FILE [--tls-server-name NAME] [--tls-cert FILE --tls-key FILE]` (`--help` lists them;
//! `RUST_LOG` chooses what is logged on stderr, default `warn`).

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use common::say;
use netsvc::{Context, Dispatcher, Error, RpcClient, Target, Value};

fn main() -> netsvc::Result<()> {
    let args = common::args(
        "rpc_client",
        "An RPC client: calls the calculator servers of rpc_server through an \
         exchange, then exits.",
        common::EXCHANGE_CLIENT,
    );
    let d = Dispatcher::builder().name("rpc-client").build()?;
    let _ex = args.connect(&d, Duration::from_secs(1))?;

    let client = RpcClient::new(&d, Target::new("calculator").version("1.1"))
        .timeout(Duration::from_secs(10));
    let mut ctx = Context::new();
    ctx.insert("user".to_owned(), Value::from("alice"));

    // The first call waits (retry None) until a server is reachable.
    let sum: i64 = client.call(&ctx, "add", &(40, 2))?;
    say(format!("add(40, 2) = {sum}"));
    for _ in 0..3 {
        let who: String = client.call(&ctx, "whoami", &())?;
        say(format!("whoami: {who}"));
    }
    match client.call::<i64, _>(&ctx, "divide", &(1, 0)) {
        Err(Error::Remote(e)) => say(format!(
            "divide(1, 0) failed remotely: {}: {}",
            e.exc_type, e.value
        )),
        other => say(format!("divide(1, 0): unexpected {other:?}")),
    }
    match client
        .prepare()
        .version("1.5")
        .build()
        .call::<i64, _>(&ctx, "add", &(1, 1))
    {
        Err(Error::UnsupportedVersion(v)) => say(format!("version 1.5: unsupported ({v})")),
        other => say(format!("version 1.5: unexpected {other:?}")),
    }
    let short = client.prepare().timeout(Duration::from_millis(200)).build();
    match short.call::<u64, _>(&ctx, "sleep", &1_000u64) {
        Err(Error::Timeout) => say("sleep(1000) with a 200 ms timeout: timed out"),
        other => say(format!("sleep: unexpected {other:?}")),
    }
    let everyone = client.prepare().fanout(true).build();
    everyone.cast(&ctx, "sleep", &1u64)?;
    say("fanout cast sent to every server");
    match everyone.call::<u64, _>(&ctx, "sleep", &1u64) {
        Err(Error::InvalidTarget(_)) => say("call on a fanout target: refused, as it should be"),
        other => say(format!("fanout call: unexpected {other:?}")),
    }
    d.shutdown();
    Ok(())
}
