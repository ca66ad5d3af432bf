//! The netsvc call workloads: the `server` role (service `bench-echo`, RPC
//! server `bench`/`s1`), the `client` role (W1 `svc.call`, W4 client
//! threads, W5 `RpcClient` call and cast, all through the exchange) and the
//! `local` role (W1-local, one process).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use netsvc::{
    Context, Dispatcher, Endpoint, Methods, Request, RpcClient, RpcFailure, RpcServer,
    ServiceBinding, ServiceFailure, Target,
};

use crate::child::{child_init, fail};
use crate::cli::Args;
use crate::exchange::{connect_exchange, dispatcher};
use crate::measure::{measure_calls, nanos};
use crate::PAYLOAD;

/// Client threads of W4.
pub(crate) const W4_THREADS: usize = 8;

/// Waits until a service of that name is visible.
fn wait_service(d: &Dispatcher, name: &str) -> ServiceBinding {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(b) = d.lookup_service_name(name).into_iter().next() {
            return b;
        }
        if Instant::now() > deadline {
            fail(&format!("service {name} not visible within 15 s"));
        }
        thread::sleep(Duration::from_millis(2));
    }
}

fn echo_methods() -> Methods {
    Methods::new().method("echo", |_req: &Request, v: Vec<u8>| {
        Ok::<_, ServiceFailure>(v)
    })
}

/// `server --port P`: the service `bench-echo` (method `echo`) and the RPC
/// server `bench`/`s1` (methods `echo`, `tick`, `count`), behind an
/// exchange client. Answers `stats` on stdin with its busy refusals and
/// the casts it dropped at a full queue.
pub(crate) fn role_server(a: &Args) {
    let cmds = child_init();
    let d = dispatcher("bench-server");
    let _echo = d
        .service("bench-echo")
        .serve(echo_methods())
        .unwrap_or_else(|e| fail(&e.to_string()));
    let ticks = Arc::new(AtomicU64::new(0));
    let (t1, t2) = (ticks.clone(), ticks);
    let _rpc = RpcServer::new(&d, Target::new("bench").server("s1"))
        .endpoint(
            Endpoint::new()
                .method("echo", |_ctx: &Context, v: Vec<u8>| Ok::<_, RpcFailure>(v))
                .method("tick", move |_ctx: &Context, _v: Vec<u8>| {
                    t1.fetch_add(1, Ordering::Relaxed);
                    Ok::<_, RpcFailure>(())
                })
                .method("count", move |_ctx: &Context, (): ()| {
                    Ok::<_, RpcFailure>(t2.load(Ordering::Relaxed))
                }),
        )
        .start()
        .unwrap_or_else(|e| fail(&e.to_string()));
    let _ex = connect_exchange(&d, a);
    println!("READY");
    loop {
        match cmds.recv() {
            Ok(l) if l.trim() == "stats" => {
                let st = d.stats();
                println!(
                    "STATS requests={} busy={} casts_dropped={}",
                    st.requests_delivered, st.busy_replies, st.casts_dropped
                );
            }
            Ok(_) => {}
            Err(_) => std::process::exit(0),
        }
    }
}

/// `client --port P --mode call|threads|rpc`: calls through the exchange.
pub(crate) fn role_client(a: &Args) {
    let _cmds = child_init();
    let d = dispatcher("bench-client");
    let _ex = connect_exchange(&d, a);
    let warmup = a.num("--warmup", 2000);
    let n = a.num("--n", 20_000);
    let msg = vec![7u8; PAYLOAD];
    match a.get("--mode").unwrap_or("call") {
        "call" => {
            let me = d
                .service("bench-client")
                .open()
                .unwrap_or_else(|e| fail(&e.to_string()));
            let echo = wait_service(&d, "bench-echo");
            measure_calls(
                warmup,
                n,
                || {
                    me.call::<Vec<u8>, _>(&echo, "echo", &msg)
                        .map(drop)
                        .map_err(|e| e.to_string())
                },
                "",
            );
        }
        "threads" => {
            let echo = wait_service(&d, "bench-echo");
            let threads = a.num("--threads", W4_THREADS as u64) as usize;
            let barrier = Arc::new(Barrier::new(threads + 1));
            let mut handles = Vec::new();
            for i in 0..threads {
                let (d, echo, barrier, msg) =
                    (d.clone(), echo.clone(), barrier.clone(), msg.clone());
                handles.push(thread::spawn(move || {
                    let me = d
                        .service(&format!("bench-client-{i}"))
                        .open()
                        .unwrap_or_else(|e| fail(&e.to_string()));
                    let call = || me.call::<Vec<u8>, _>(&echo, "echo", &msg).map(drop);
                    for _ in 0..warmup / threads as u64 {
                        call().unwrap_or_else(|e| fail(&format!("warm-up call: {e}")));
                    }
                    barrier.wait();
                    for _ in 0..n {
                        call().unwrap_or_else(|e| fail(&format!("call: {e}")));
                    }
                }));
            }
            barrier.wait();
            let start = Instant::now();
            for h in handles {
                let _ = h.join();
            }
            let total = start.elapsed();
            let calls = n * threads as u64;
            println!(
                "RESULT calls={calls} elapsed_ns={} rate={:.0}",
                nanos(total),
                calls as f64 / total.as_secs_f64().max(1e-9)
            );
        }
        _ => {
            let client = RpcClient::new(&d, Target::new("bench")).timeout(Duration::from_secs(30));
            let ctx = Context::new();
            // The first call waits (retry until the timeout) for the server
            // to be visible through the exchange.
            let casts = a.num("--casts", 50_000);
            measure_calls(
                warmup,
                n,
                || {
                    client
                        .call::<Vec<u8>, _>(&ctx, "echo", &msg)
                        .map(drop)
                        .map_err(|e| e.to_string())
                },
                "",
            );
            let before: u64 = client
                .call(&ctx, "count", &())
                .unwrap_or_else(|e| fail(&format!("count: {e}")));
            let start = Instant::now();
            for _ in 0..casts {
                client
                    .cast(&ctx, "tick", &msg)
                    .unwrap_or_else(|e| fail(&format!("cast: {e}")));
            }
            let cast_ns = nanos(start.elapsed());
            // Every cast should arrive; wait a little for the last ones.
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut arrived = 0;
            while Instant::now() < deadline {
                let now: u64 = client
                    .call(&ctx, "count", &())
                    .unwrap_or_else(|e| fail(&format!("count: {e}")));
                arrived = now - before;
                if arrived >= casts {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
            println!(
                "CASTS casts={casts} elapsed_ns={cast_ns} rate={:.0} arrived={arrived}",
                casts as f64 * 1e9 / cast_ns.max(1) as f64
            );
        }
    }
    std::process::exit(0);
}

/// `local`: W1 within one process, no exchange.
pub(crate) fn role_local(a: &Args) {
    let _cmds = child_init();
    let d = dispatcher("bench-local");
    let echo = d
        .service("bench-echo")
        .serve(echo_methods())
        .unwrap_or_else(|e| fail(&e.to_string()));
    let me = d
        .service("bench-client")
        .open()
        .unwrap_or_else(|e| fail(&e.to_string()));
    let msg = vec![7u8; PAYLOAD];
    measure_calls(
        a.num("--warmup", 2000),
        a.num("--n", 20_000),
        || {
            me.call::<Vec<u8>, _>(echo.binding(), "echo", &msg)
                .map(drop)
                .map_err(|e| e.to_string())
        },
        "",
    );
    std::process::exit(0);
}
