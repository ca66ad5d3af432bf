//! An oslo.messaging-style RPC server in its own process, reached through
//! an exchange: topic `calculator`, server `--server NAME` (default
//! `server1`), methods `add`, `divide` (fails with a RemoteError on zero)
//! and `sleep` (milliseconds; to try timeouts).
//!
//! `cargo run --example exchange` in one terminal, then
//! `cargo run --example rpc_server [-- --server s2]` in one or more others,
//! then `cargo run --example rpc_client`. Also `--host H`, `--port N`,
//! `--secret KEY`, `--group NAME`, TLS with `--tls-ca FILE
//! [--tls-server-name NAME] [--tls-cert FILE --tls-key FILE]` (`--help` lists them; `RUST_LOG`
//! chooses what is logged on stderr, default `warn`). Stops on
//! SIGINT/SIGTERM.

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use common::{say, stop_on_signals, Opt};
use netsvc::{Context, Dispatcher, Endpoint, RpcFailure, RpcServer, Target};

fn main() -> netsvc::Result<()> {
    let args = common::args(
        "rpc_server",
        "An RPC server of topic calculator (methods add, divide, sleep, \
         whoami), reached through an exchange.",
        &[
            Opt::Host,
            Opt::Port,
            Opt::Secret,
            Opt::Group,
            Opt::TlsCa,
            Opt::TlsServerName,
            Opt::TlsCert,
            Opt::TlsKey,
            Opt::Server,
        ],
    );
    let d = Dispatcher::builder().name("rpc-server").build()?;
    stop_on_signals(&d)?;
    let ex = args.connect(&d, Duration::from_secs(1))?;
    common::log_connections(&ex);

    let me = args.server.clone();
    let endpoint = Endpoint::new()
        .version("1.2")
        .method("add", |_ctx: &Context, (a, b): (i64, i64)| {
            a.checked_add(b)
                .ok_or_else(|| RpcFailure::new("OverflowError", "sum out of range"))
        })
        .method("divide", |_ctx: &Context, (a, b): (i64, i64)| {
            if b == 0 {
                Err(RpcFailure::new("ZeroDivisionError", "division by zero"))
            } else {
                Ok(a / b)
            }
        })
        .method("sleep", |_ctx: &Context, ms: u64| {
            std::thread::sleep(Duration::from_millis(ms));
            Ok(ms)
        })
        .method("whoami", move |ctx: &Context, (): ()| {
            let user = ctx.get("user").and_then(|v| v.as_str()).unwrap_or("nobody");
            Ok(format!("{me}, at the service of {user}"))
        });
    let server = RpcServer::new(&d, Target::new("calculator").server(&args.server))
        .endpoint(endpoint)
        .threads(4)
        .start()?;
    say(format!("SERVING calculator on {}", args.server));
    d.wait()?;
    server.wait();
    say("STOPPED");
    Ok(())
}
