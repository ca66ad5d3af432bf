//! The exchange benchmark (issue 5): `cargo bench --bench exchange`, or
//! `cargo bench --bench exchange -- --quick` for a shortened run.
//!
//! Prints one table. Every workload runs over 127.0.0.1 with the exchange,
//! the server side and the client side as separate processes: this binary
//! re-executes itself in a role (`exchange`, `server`, `client`, `publisher`,
//! `subscriber`, `echo`, `relay`, `rawclient`, `local`, `idle`). A child
//! prints `READY ...` when it is set up and `RESULT key=value ...` when it has
//! measured; the parent parses those lines. Every child exits when its stdin
//! closes (so none outlives the parent), and the parent kills them all at the
//! end, on panic, and when its overall time limit passes.
//!
//! The floors: B1 a blocking ping-pong, B2 the same through a blocking
//! relay, B3 frames streamed through the relay, and B4 B2 again with
//! threads that hand each message over as netsvc's do (a caller thread and
//! an I/O thread at the client; reader, worker and writer threads at the
//! server): what the dispatcher-and-worker shape costs before any of
//! netsvc's code runs.
//!
//! Latencies are percentiles of recorded samples (nearest rank); rates are
//! counted from the first to the last message seen by the receiver. Payloads
//! are 64 bytes. Targets are printed beside the figures; nothing is asserted.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use netsvc::{
    ConnectionState, Context, Dispatcher, Endpoint, Event, Exchange, Lifetime, Methods, Request,
    RpcClient, RpcFailure, RpcServer, ServiceBinding, ServiceFailure, SubscriptionStatus, Target,
};

/// Bytes of every payload.
const PAYLOAD: usize = 64;
/// Frames per write in the raw streaming baseline (B3).
const STREAM_BATCH: usize = 1024;
/// Client threads of W4.
const W4_THREADS: usize = 8;
/// Subscriber processes of W3.
const W3_SUBSCRIBERS: usize = 8;
/// Idle client connections of the memory measurement.
const IDLE_CLIENTS: u64 = 1000;
/// The netsvc protocol version the idle connections announce (src/wire.rs).
const PROTOCOL_VERSION: u16 = 2;

// ===================================================================
// Entry: a role, or the parent.
// ===================================================================

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = Args(args);
    match a.0.first().map(String::as_str).unwrap_or("") {
        "echo" => role_echo(),
        "relay" => role_relay(&a),
        "rawclient" => role_rawclient(&a),
        "exchange" => role_exchange(),
        "server" => role_server(&a),
        "client" => role_client(&a),
        "local" => role_local(&a),
        "publisher" => role_publisher(&a),
        "subscriber" => role_subscriber(&a),
        "idle" => role_idle(&a),
        // `cargo bench` passes `--bench`; unknown flags are ignored.
        _ => parent(&a),
    }
}

/// Command-line arguments: `--name value` pairs and flags.
struct Args(Vec<String>);

impl Args {
    fn get(&self, name: &str) -> Option<&str> {
        let i = self.0.iter().position(|a| a == name)?;
        self.0.get(i + 1).map(String::as_str)
    }

    fn num(&self, name: &str, default: u64) -> u64 {
        self.get(name)
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    }

    fn flag(&self, name: &str) -> bool {
        self.0.iter().any(|a| a == name)
    }
}

// ===================================================================
// Child side: common pieces.
// ===================================================================

/// Every child: a thread reads stdin line by line (commands such as `go`)
/// and ends the process when stdin closes, so that no child outlives the
/// parent even if the parent is killed.
fn child_init() -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let stdin = io::stdin();
        for line in stdin.lock().lines() {
            match line {
                Ok(l) => {
                    let _ = tx.send(l);
                }
                Err(_) => break,
            }
        }
        std::process::exit(0);
    });
    rx
}

/// Reports a failure to the parent and ends the child.
fn fail(msg: &str) -> ! {
    println!("FAILED {}", msg.replace('\n', " "));
    eprintln!("bench child {}: {msg}", std::process::id());
    std::process::exit(1);
}

/// Keeps a child alive until the parent closes its stdin or kills it.
fn park_forever() -> ! {
    loop {
        thread::park();
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn epoch_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(nanos)
        .unwrap_or(0)
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (sorted.len() as f64 * p).ceil() as usize;
    sorted[rank.saturating_sub(1).min(sorted.len() - 1)]
}

/// Prints a latency result from recorded samples.
fn print_latency(samples: &mut [u64], total: Duration, extra: &str) {
    samples.sort_unstable();
    let rate = samples.len() as f64 / total.as_secs_f64().max(1e-9);
    println!(
        "RESULT n={} p50_ns={} p99_ns={} max_ns={} rate={rate:.0}{extra}",
        samples.len(),
        percentile(samples, 0.50),
        percentile(samples, 0.99),
        samples.last().copied().unwrap_or(0),
    );
}

/// Runs `warmup` then `n` timed round trips of `f`; prints the latencies.
fn measure_calls(warmup: u64, n: u64, mut f: impl FnMut() -> Result<(), String>, extra: &str) {
    for _ in 0..warmup {
        if let Err(e) = f() {
            fail(&format!("warm-up call failed: {e}"));
        }
    }
    let mut samples = Vec::with_capacity(n as usize);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        if let Err(e) = f() {
            fail(&format!("call failed: {e}"));
        }
        samples.push(nanos(t.elapsed()));
    }
    print_latency(&mut samples, start.elapsed(), extra);
}

// ===================================================================
// Raw TCP roles: echo (and sink), relay, raw client.
// ===================================================================

/// `echo`: accepts connections; the first byte chooses `P` ping-pong (echo
/// 64-byte messages) or `S` sink (count length-prefixed frames, answer with
/// the count and the time from the first to the last).
fn role_echo() {
    let _cmds = child_init();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| fail(&e.to_string()));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    println!("READY port={port}");
    for stream in listener.incoming() {
        let Ok(mut s) = stream else { continue };
        thread::spawn(move || {
            let _ = serve_raw(&mut s);
        });
    }
}

fn serve_raw(s: &mut TcpStream) -> io::Result<()> {
    s.set_nodelay(true)?;
    let mut mode = [0u8; 1];
    s.read_exact(&mut mode)?;
    match mode[0] {
        b'P' => {
            let mut buf = [0u8; PAYLOAD];
            loop {
                s.read_exact(&mut buf)?;
                s.write_all(&buf)?;
            }
        }
        b'S' => sink(s),
        b'T' => echo_in_threads(s),
        _ => Ok(()),
    }
}

/// B4's server side: netsvc's thread shape without netsvc. A reader
/// thread hands each message over a channel to a worker thread, which
/// hands its answer to a writer thread: the hand-offs a request makes
/// through a dispatcher and a service worker.
fn echo_in_threads(s: &mut TcpStream) -> io::Result<()> {
    let (work_tx, work_rx) = crossbeam_channel::bounded::<[u8; PAYLOAD]>(1024);
    let (out_tx, out_rx) = crossbeam_channel::bounded::<[u8; PAYLOAD]>(1024);
    let mut w = s.try_clone()?;
    thread::spawn(move || {
        while let Ok(m) = work_rx.recv() {
            if out_tx.send(m).is_err() {
                break;
            }
        }
    });
    thread::spawn(move || {
        while let Ok(m) = out_rx.recv() {
            if w.write_all(&m).is_err() {
                break;
            }
        }
    });
    let mut buf = [0u8; PAYLOAD];
    loop {
        s.read_exact(&mut buf)?;
        if work_tx.send(buf).is_err() {
            return Ok(());
        }
    }
}

fn sink(s: &mut TcpStream) -> io::Result<()> {
    let mut n = [0u8; 8];
    s.read_exact(&mut n)?;
    let n = u64::from_le_bytes(n);
    let mut r = BufReader::with_capacity(1 << 18, s.try_clone()?);
    let mut body = vec![0u8; 1 << 16];
    let mut first: Option<Instant> = None;
    let mut count = 0u64;
    while count < n {
        let mut len = [0u8; 4];
        r.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > body.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too long"));
        }
        r.read_exact(&mut body[..len])?;
        if first.is_none() {
            first = Some(Instant::now());
        }
        count += 1;
    }
    let span = first.map(|f| nanos(f.elapsed())).unwrap_or(0);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&count.to_le_bytes());
    out[8..].copy_from_slice(&span.to_le_bytes());
    s.write_all(&out)
}

/// `relay --to ADDR`: a minimal blocking relay, two threads per connection
/// copying bytes each way.
fn role_relay(a: &Args) {
    let _cmds = child_init();
    let to = a
        .get("--to")
        .unwrap_or_else(|| fail("relay needs --to"))
        .to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| fail(&e.to_string()));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    println!("READY port={port}");
    for stream in listener.incoming() {
        let Ok(down) = stream else { continue };
        let to = to.clone();
        thread::spawn(move || {
            let Ok(up) = TcpStream::connect(&to) else {
                return;
            };
            let _ = down.set_nodelay(true);
            let _ = up.set_nodelay(true);
            let (Ok(down2), Ok(up2)) = (down.try_clone(), up.try_clone()) else {
                return;
            };
            let t = thread::spawn(move || pump(down, up));
            pump(up2, down2);
            let _ = t.join();
        });
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// `rawclient --addr A --mode ping|stream ...`.
fn role_rawclient(a: &Args) {
    let _cmds = child_init();
    let addr = a
        .get("--addr")
        .unwrap_or_else(|| fail("rawclient needs --addr"));
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| fail(&format!("connect {addr}: {e}")));
    let _ = s.set_nodelay(true);
    let n = a.num("--n", 10_000);
    match a.get("--mode").unwrap_or("ping") {
        "ping" => {
            s.write_all(b"P").unwrap_or_else(|e| fail(&e.to_string()));
            let msg = [7u8; PAYLOAD];
            let mut buf = [0u8; PAYLOAD];
            let mut s2 = s.try_clone().unwrap_or_else(|e| fail(&e.to_string()));
            measure_calls(
                a.num("--warmup", 1000),
                n,
                || {
                    s2.write_all(&msg).map_err(|e| e.to_string())?;
                    s.read_exact(&mut buf).map_err(|e| e.to_string())
                },
                "",
            );
        }
        "threads" => {
            // B4's client side: the caller hands each message to a writer
            // thread and a reader thread hands the answer back, as a caller
            // and its dispatcher do.
            s.write_all(b"T").unwrap_or_else(|e| fail(&e.to_string()));
            let (req_tx, req_rx) = crossbeam_channel::bounded::<[u8; PAYLOAD]>(16);
            let (resp_tx, resp_rx) = crossbeam_channel::bounded::<[u8; PAYLOAD]>(16);
            let mut w = s.try_clone().unwrap_or_else(|e| fail(&e.to_string()));
            thread::spawn(move || {
                while let Ok(m) = req_rx.recv() {
                    if w.write_all(&m).is_err() {
                        break;
                    }
                }
            });
            thread::spawn(move || {
                let mut buf = [0u8; PAYLOAD];
                while s.read_exact(&mut buf).is_ok() {
                    if resp_tx.send(buf).is_err() {
                        break;
                    }
                }
            });
            let msg = [7u8; PAYLOAD];
            measure_calls(
                a.num("--warmup", 1000),
                n,
                || {
                    req_tx.send(msg).map_err(|e| e.to_string())?;
                    resp_rx.recv().map(drop).map_err(|e| e.to_string())
                },
                "",
            );
        }
        _ => {
            let mut head = vec![b'S'];
            head.extend_from_slice(&n.to_le_bytes());
            s.write_all(&head).unwrap_or_else(|e| fail(&e.to_string()));
            let frame_len = 4 + PAYLOAD;
            let mut batch = Vec::with_capacity(STREAM_BATCH * frame_len);
            for _ in 0..STREAM_BATCH {
                batch.extend_from_slice(&(PAYLOAD as u32).to_be_bytes());
                batch.extend_from_slice(&[7u8; PAYLOAD]);
            }
            let start = Instant::now();
            let mut sent = 0u64;
            while sent < n {
                let k = (n - sent).min(STREAM_BATCH as u64) as usize;
                s.write_all(&batch[..k * frame_len])
                    .unwrap_or_else(|e| fail(&e.to_string()));
                sent += k as u64;
            }
            let send_ns = nanos(start.elapsed());
            let mut out = [0u8; 16];
            s.read_exact(&mut out)
                .unwrap_or_else(|e| fail(&e.to_string()));
            let count = u64::from_le_bytes(out[..8].try_into().unwrap_or_default());
            let span = u64::from_le_bytes(out[8..].try_into().unwrap_or_default());
            println!("RESULT count={count} span_ns={span} send_ns={send_ns}");
        }
    }
    std::process::exit(0);
}

// ===================================================================
// netsvc roles.
// ===================================================================

fn dispatcher(name: &str) -> Dispatcher {
    Dispatcher::builder()
        .name(name)
        .build()
        .unwrap_or_else(|e| fail(&format!("dispatcher: {e}")))
}

/// Connects an exchange client and waits until its link is active.
fn connect_exchange(d: &Dispatcher, a: &Args) -> Exchange {
    let port = a.get("--port").unwrap_or_else(|| fail("needs --port"));
    let addr = format!("127.0.0.1:{port}");
    let ex = Exchange::client(d)
        .connect(addr.as_str(), Duration::from_millis(200))
        .unwrap_or_else(|e| fail(&format!("connect {addr}: {e}")));
    let conns = ex.connections();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match conns.recv_deadline(deadline) {
            Ok(ann) if ann.state() == ConnectionState::Active => return ex,
            Ok(_) => continue,
            Err(_) => fail(&format!("exchange link to {addr} not active within 15 s")),
        }
    }
}

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

/// `exchange`: an exchange server on an ephemeral port, nothing else.
fn role_exchange() {
    let _cmds = child_init();
    let d = dispatcher("bench-exchange");
    let ex = Exchange::server(&d)
        .listen("127.0.0.1:0")
        .unwrap_or_else(|e| fail(&format!("listen: {e}")));
    println!("READY port={}", ex.local_addr().port());
    park_forever();
}

/// `server --port P`: the service `bench-echo` (method `echo`) and the RPC
/// server `bench`/`s1` (methods `echo`, `tick`, `count`), behind an
/// exchange client. Answers `stats` on stdin with its busy refusals.
fn role_server(a: &Args) {
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
                    "STATS requests={} busy={}",
                    st.requests_delivered, st.busy_replies
                );
            }
            Ok(_) => {}
            Err(_) => std::process::exit(0),
        }
    }
}

/// `client --port P --mode call|threads|rpc`: calls through the exchange.
fn role_client(a: &Args) {
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
fn role_local(a: &Args) {
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

/// `publisher --port P --n N --subs K`: waits for K subscriptions, says
/// READY, waits for `go` on stdin, publishes N reports, stays alive so its
/// dispatcher flushes everything.
fn role_publisher(a: &Args) {
    let cmds = child_init();
    let d = dispatcher("bench-pub");
    let _ex = connect_exchange(&d, a);
    let n = a.num("--n", 100_000);
    let want = a.num("--subs", 1) as usize;
    let svc = d
        .service("bench-pub")
        .open()
        .unwrap_or_else(|e| fail(&e.to_string()));
    let mut subscribers: Vec<ServiceBinding> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while subscribers.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        match svc.recv_timeout(left) {
            Ok(Some(Event::Subscription(s))) if s.status() == SubscriptionStatus::Requested => {
                if !subscribers.contains(s.subscriber()) {
                    subscribers.push(s.subscriber().clone());
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => fail(&format!(
                "{} of {want} subscriptions within 30 s",
                subscribers.len()
            )),
        }
    }
    println!("READY");
    loop {
        match cmds.recv() {
            Ok(l) if l.trim() == "go" => break,
            Ok(_) => {}
            Err(_) => std::process::exit(0),
        }
    }
    let msg = vec![7u8; PAYLOAD];
    let start = Instant::now();
    for _ in 0..n {
        if let Err(e) = svc.publish_report("bench.data", &msg, Lifetime::None) {
            fail(&format!("publish: {e}"));
        }
    }
    println!("RESULT published={n} elapsed_ns={}", nanos(start.elapsed()));
    park_forever();
}

/// `subscriber --port P --n N --idle-ms M`: subscribes to `bench-pub`
/// `bench.*`, counts reports until N arrived or none came for M ms (after
/// the first), and prints the count and the first and last arrival times.
fn role_subscriber(a: &Args) {
    let _cmds = child_init();
    let d = dispatcher("bench-sub");
    let _ex = connect_exchange(&d, a);
    let n = a.num("--n", 100_000);
    let idle = Duration::from_millis(a.num("--idle-ms", 2000));
    let first_wait = Duration::from_millis(a.num("--first-ms", 60_000));
    let svc = d
        .service("bench-sub")
        .queue_capacity(n as usize + 10_000)
        .open()
        .unwrap_or_else(|e| fail(&e.to_string()));
    svc.subscribe_reports("bench-pub", "bench.*");
    println!("READY");
    let mut count = 0u64;
    let mut bad = 0u64;
    let mut first: Option<(Instant, u64)> = None;
    let mut last = Instant::now();
    while count < n {
        let wait = if first.is_none() { first_wait } else { idle };
        match svc.recv_timeout(wait) {
            Ok(Some(Event::Report(r))) => {
                match r.decode::<Vec<u8>>() {
                    Ok(v) if v.len() == PAYLOAD => {}
                    _ => bad += 1,
                }
                last = Instant::now();
                if first.is_none() {
                    first = Some((last, epoch_ns()));
                }
                count += 1;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let (first_ns, last_ns) = match first {
        Some((at, epoch)) => (epoch, epoch + nanos(last.duration_since(at))),
        None => (0, 0),
    };
    let stats = d.stats();
    println!(
        "RESULT count={count} first_ns={first_ns} last_ns={last_ns} dropped={} bad={bad}",
        stats.reports_dropped
    );
    std::process::exit(0);
}

/// bincode's standard varint encoding of an unsigned integer.
fn varint(out: &mut Vec<u8>, v: u64) {
    if v < 251 {
        out.push(v as u8);
    } else if v <= u64::from(u16::MAX) {
        out.push(251);
        out.extend_from_slice(&(v as u16).to_le_bytes());
    } else if v <= u64::from(u32::MAX) {
        out.push(252);
        out.extend_from_slice(&(v as u32).to_le_bytes());
    } else {
        out.push(253);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// A netsvc hello frame built by hand: u32 BE length, then `NETSVC`, the
/// version (u16 BE) and the bincode of `{ process: { uid, label }, group }`.
fn hello_frame(uid: u64, label: &str) -> Vec<u8> {
    let mut body = b"NETSVC".to_vec();
    body.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    varint(&mut body, uid);
    varint(&mut body, label.len() as u64);
    body.extend_from_slice(label.as_bytes());
    varint(&mut body, 0); // group: ""
    body.push(0); // auth: false (no secret)
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// `idle --port P --n N`: opens N raw connections that each send a valid
/// hello, then stay silent. Prints how many are still open a second later.
fn role_idle(a: &Args) {
    let _cmds = child_init();
    let port = a.get("--port").unwrap_or_else(|| fail("needs --port"));
    let addr = format!("127.0.0.1:{port}");
    let n = a.num("--n", IDLE_CLIENTS);
    let pid = u64::from(std::process::id());
    let mut conns = Vec::with_capacity(n as usize);
    for i in 0..n {
        match TcpStream::connect(addr.as_str()) {
            Ok(mut s) => {
                let uid = (pid << 32) | (i + 1);
                let frame = hello_frame(uid, &format!("bench-idle@{pid}/{i}"));
                if s.write_all(&frame).is_ok() {
                    conns.push(s);
                }
            }
            Err(e) => {
                eprintln!("idle: connection {i}: {e}");
                break;
            }
        }
    }
    thread::sleep(Duration::from_secs(1));
    // Drain what the exchange sent (its hello, its table); a connection it
    // refused reads as closed.
    let mut alive = 0;
    let mut buf = vec![0u8; 1 << 16];
    for s in &mut conns {
        let _ = s.set_nonblocking(true);
        let open = loop {
            match s.read(&mut buf) {
                Ok(0) => break false,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
                Err(_) => break false,
            }
        };
        if open {
            alive += 1;
        }
    }
    println!("READY opened={} alive={alive}", conns.len());
    park_forever();
}

// ===================================================================
// Parent side: children, workloads, the table.
// ===================================================================

/// Every child still running, killed by [`kill_all`].
static CHILDREN: Mutex<Vec<(u32, Child)>> = Mutex::new(Vec::new());

fn children() -> std::sync::MutexGuard<'static, Vec<(u32, Child)>> {
    CHILDREN.lock().unwrap_or_else(|e| e.into_inner())
}

fn kill_pid(pid: u32) {
    let child = {
        let mut list = children();
        list.iter()
            .position(|(p, _)| *p == pid)
            .map(|i| list.remove(i).1)
    };
    if let Some(mut c) = child {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn kill_all() {
    let all: Vec<(u32, Child)> = children().drain(..).collect();
    for (_, mut c) in all {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Kills every child when dropped: at the end, and on a panic.
struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        kill_all();
    }
}

/// The key=value fields of a child's line.
struct Fields(HashMap<String, String>);

impl Fields {
    fn parse(line: &str) -> Fields {
        Fields(
            line.split_whitespace()
                .filter_map(|t| t.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    fn u(&self, key: &str) -> Result<u64, String> {
        self.0
            .get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no {key} in result"))
    }

    fn f(&self, key: &str) -> Result<f64, String> {
        self.0
            .get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no {key} in result"))
    }

    fn s(&self, key: &str) -> Result<String, String> {
        self.0
            .get(key)
            .cloned()
            .ok_or_else(|| format!("no {key} in result"))
    }
}

/// A child process in a role; killed when dropped.
struct Proc {
    pid: u32,
    name: String,
    lines: Receiver<String>,
}

fn spawn(name: &str, args: &[&str]) -> Result<Proc, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn {name}: {e}"))?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let pid = child.id();
    children().push((pid, child));
    Ok(Proc {
        pid,
        name: name.to_owned(),
        lines: rx,
    })
}

impl Proc {
    /// Waits for a line starting with `prefix` (`FAILED` lines end the wait).
    fn expect(&self, prefix: &str, timeout: Duration) -> Result<Fields, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return Ok(Fields::parse(&l)),
                Ok(l) if l.starts_with("FAILED") => return Err(format!("{}: {l}", self.name)),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("{}: no {prefix} within {timeout:?}", self.name))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("{}: exited before {prefix}", self.name))
                }
            }
        }
    }

    /// Sends a command line to the child's stdin.
    fn send(&self, line: &str) -> Result<(), String> {
        let mut list = children();
        let child = list
            .iter_mut()
            .find(|(p, _)| *p == self.pid)
            .map(|(_, c)| c)
            .ok_or("child gone")?;
        let stdin = child.stdin.as_mut().ok_or("no stdin")?;
        writeln!(stdin, "{line}").map_err(|e| format!("{}: {e}", self.name))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        kill_pid(self.pid);
    }
}

/// A field of /proc/<pid>/status in bytes (VmRSS, VmHWM).
fn proc_status_bytes(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The soft limit on open files, from /proc/self/limits.
fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Run sizes: full or `--quick`.
struct Sizes {
    quick: bool,
    warmup: u64,
    calls: u64,
    stream: u64,
    w2: u64,
    w3: u64,
    w4_per_thread: u64,
    casts: u64,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                quick,
                warmup: 500,
                calls: 5_000,
                stream: 1_000_000,
                w2: 100_000,
                w3: 20_000,
                w4_per_thread: 1_000,
                casts: 10_000,
            }
        } else {
            Sizes {
                quick,
                warmup: 2_000,
                calls: 20_000,
                stream: 5_000_000,
                w2: 1_000_000,
                w3: 200_000,
                w4_per_thread: 5_000,
                casts: 50_000,
            }
        }
    }

    /// How long a measuring child may take to report.
    fn budget(&self) -> Duration {
        Duration::from_secs(if self.quick { 20 } else { 90 })
    }
}

const SETUP: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug)]
struct Latency {
    p50: u64,
    p99: u64,
    rate: f64,
}

fn latency(f: &Fields) -> Result<Latency, String> {
    Ok(Latency {
        p50: f.u("p50_ns")?,
        p99: f.u("p99_ns")?,
        rate: f.f("rate")?,
    })
}

fn port_of(p: &Proc) -> Result<String, String> {
    p.expect("READY", SETUP)?.s("port")
}

/// B1, B2 and B4: raw ping-pong, directly or through the relay; `mode`
/// `ping` (one thread at each end) or `threads` (B4: netsvc's hand-offs).
fn raw_ping(s: &Sizes, relayed: bool, mode: &str) -> Result<Latency, String> {
    let echo = spawn("echo", &["echo"])?;
    let mut port = port_of(&echo)?;
    let _relay = if relayed {
        let to = format!("127.0.0.1:{port}");
        let relay = spawn("relay", &["relay", "--to", &to])?;
        port = port_of(&relay)?;
        Some(relay)
    } else {
        None
    };
    let addr = format!("127.0.0.1:{port}");
    let (w, n) = (s.warmup.to_string(), s.calls.to_string());
    let client = spawn(
        "rawclient",
        &[
            "rawclient",
            "--addr",
            &addr,
            "--mode",
            mode,
            "--warmup",
            &w,
            "--n",
            &n,
        ],
    )?;
    latency(&client.expect("RESULT", s.budget())?)
}

/// B3: frames streamed through the relay; messages/s at the receiver.
fn raw_stream(s: &Sizes) -> Result<(f64, u64), String> {
    let echo = spawn("echo", &["echo"])?;
    let to = format!("127.0.0.1:{}", port_of(&echo)?);
    let relay = spawn("relay", &["relay", "--to", &to])?;
    let addr = format!("127.0.0.1:{}", port_of(&relay)?);
    let n = s.stream.to_string();
    let client = spawn(
        "rawclient",
        &["rawclient", "--addr", &addr, "--mode", "stream", "--n", &n],
    )?;
    let r = client.expect("RESULT", s.budget())?;
    let (count, span) = (r.u("count")?, r.u("span_ns")?);
    Ok((rate(count, span), count))
}

/// Messages per second from the first to the last.
fn rate(count: u64, span_ns: u64) -> f64 {
    if count < 2 || span_ns == 0 {
        0.0
    } else {
        (count - 1) as f64 * 1e9 / span_ns as f64
    }
}

/// The results of a publish/subscribe run.
struct PubSub {
    expected: u64,
    received: u64,
    dropped: u64,
    rate: f64,
    rss_before: u64,
    rss_peak: u64,
    rss_after: u64,
    /// Reports per second handed to `publish_report` by the publisher.
    publish_rate: f64,
}

/// W2 and W3: one publisher, `subs` subscriber processes, a fresh exchange.
fn pubsub(s: &Sizes, subs: usize, n: u64) -> Result<PubSub, String> {
    let exchange = spawn("exchange", &["exchange"])?;
    let port = port_of(&exchange)?;
    let n_s = n.to_string();
    let mut subscribers = Vec::new();
    for i in 0..subs {
        let p = spawn(
            &format!("subscriber{i}"),
            &[
                "subscriber",
                "--port",
                &port,
                "--n",
                &n_s,
                "--idle-ms",
                "3000",
            ],
        )?;
        subscribers.push(p);
    }
    for p in &subscribers {
        p.expect("READY", SETUP)?;
    }
    let subs_s = subs.to_string();
    let publisher = spawn(
        "publisher",
        &["publisher", "--port", &port, "--n", &n_s, "--subs", &subs_s],
    )?;
    publisher.expect("READY", Duration::from_secs(35))?;
    thread::sleep(Duration::from_millis(200));
    let rss_before = proc_status_bytes(exchange.pid, "VmRSS").unwrap_or(0);
    publisher.send("go")?;
    let budget = s.budget() + Duration::from_secs(n * subs as u64 / 100_000);
    let mut received = 0;
    let mut dropped = 0;
    let mut first = u64::MAX;
    let mut last = 0;
    for p in &subscribers {
        let r = p.expect("RESULT", budget)?;
        received += r.u("count")?;
        dropped += r.u("dropped")?;
        let f = r.u("first_ns")?;
        if f > 0 {
            first = first.min(f);
            last = last.max(r.u("last_ns")?);
        }
    }
    let publish_rate = publisher
        .expect("RESULT", Duration::from_secs(5))
        .and_then(|r| Ok(n as f64 * 1e9 / r.u("elapsed_ns")?.max(1) as f64))
        .unwrap_or(0.0);
    thread::sleep(Duration::from_millis(500));
    let rss_peak = proc_status_bytes(exchange.pid, "VmHWM").unwrap_or(0);
    let rss_after = proc_status_bytes(exchange.pid, "VmRSS").unwrap_or(0);
    Ok(PubSub {
        expected: n * subs as u64,
        received,
        dropped,
        rate: rate(received, last.saturating_sub(first)),
        publish_rate,
        rss_before,
        rss_peak,
        rss_after,
    })
}

/// The exchange's RSS before and with idle clients: (before, with, opened, alive).
fn idle_memory(n: u64) -> Result<(u64, u64, u64, u64), String> {
    let exchange = spawn("exchange", &["exchange"])?;
    let port = port_of(&exchange)?;
    thread::sleep(Duration::from_millis(200));
    let before = proc_status_bytes(exchange.pid, "VmRSS").unwrap_or(0);
    let n_s = n.to_string();
    let idle = spawn("idle", &["idle", "--port", &port, "--n", &n_s])?;
    let r = idle.expect("READY", Duration::from_secs(30))?;
    thread::sleep(Duration::from_millis(500));
    let with = proc_status_bytes(exchange.pid, "VmRSS").unwrap_or(0);
    Ok((before, with, r.u("opened")?, r.u("alive")?))
}

// ----- formatting -----

fn us(ns: u64) -> String {
    format!("{:.1} us", ns as f64 / 1000.0)
}

fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn met(ok: bool) -> String {
    if ok { "met" } else { "NOT MET" }.to_owned()
}

/// One line of the table.
struct Row {
    id: &'static str,
    what: &'static str,
    result: String,
    target: String,
    status: String,
}

fn row(id: &'static str, what: &'static str, result: String, target: &str, status: String) -> Row {
    Row {
        id,
        what,
        result,
        target: target.to_owned(),
        status,
    }
}

fn failed(id: &'static str, what: &'static str, err: &str, target: &str) -> Row {
    row(
        id,
        what,
        format!("failed: {err}"),
        target,
        "NOT MET".to_owned(),
    )
}

fn print_table(rows: &[Row]) {
    let heads = ["id", "workload", "result", "target", "status"];
    let cells: Vec<[&str; 5]> = rows
        .iter()
        .map(|r| [r.id, r.what, &r.result, &r.target, &r.status])
        .collect();
    let mut width = heads.map(str::len);
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c.iter()) {
            *w = (*w).max(s.chars().count());
        }
    }
    let line = |c: [&str; 5]| {
        let parts: Vec<String> = c
            .iter()
            .zip(width.iter())
            .map(|(s, w)| format!("{s:<w$}"))
            .collect();
        println!("| {} |", parts.join(" | "));
    };
    line(heads);
    let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
    println!("|-{}-|", rule.join("-|-"));
    for c in cells {
        line(c);
    }
}

/// Today's date and time (UTC) as `YYYY-MM-DD HH:MM UTC`, from the system clock.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// The 1-minute load average (other work on the machine skews every figure).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn parent(a: &Args) {
    let quick = a.flag("--quick");
    let _guard = Guard;
    let limit = Duration::from_secs(if quick { 58 } else { 600 });
    thread::spawn(move || {
        thread::sleep(limit);
        eprintln!("exchange bench: time limit of {limit:?} reached; killing every child");
        kill_all();
        std::process::exit(2);
    });
    let s = Sizes::new(quick);
    let load_start = load_average();
    let started = Instant::now();
    let progress = |what: &str| eprintln!("[{:>5.1} s] {what}", started.elapsed().as_secs_f64());
    let mut rows = Vec::new();
    let mut notes: Vec<String> = Vec::new();

    progress("B1 raw ping-pong");
    let b1 = raw_ping(&s, false, "ping");
    progress("B2 raw ping-pong via relay");
    let b2 = raw_ping(&s, true, "ping");
    progress("B4 raw ping-pong via relay, threads handing over as netsvc's do");
    let b4 = raw_ping(&s, true, "threads");
    progress("B3 raw stream via relay");
    let b3 = raw_stream(&s);

    let floor = "(floor)";
    let lat_text = |l: &Latency, unit: &str| {
        format!(
            "p50 {}, p99 {}, {} {unit}/s",
            us(l.p50),
            us(l.p99),
            thousands(l.rate)
        )
    };
    match &b1 {
        Ok(l) => rows.push(row(
            "B1",
            "raw TCP ping-pong, one hop",
            lat_text(l, "rt"),
            floor,
            "-".into(),
        )),
        Err(e) => rows.push(failed("B1", "raw TCP ping-pong, one hop", e, floor)),
    }
    match &b2 {
        Ok(l) => rows.push(row(
            "B2",
            "raw TCP ping-pong via relay",
            lat_text(l, "rt"),
            floor,
            "-".into(),
        )),
        Err(e) => rows.push(failed("B2", "raw TCP ping-pong via relay", e, floor)),
    }
    match &b4 {
        Ok(l) => rows.push(row(
            "B4",
            "B2 with netsvc's thread hand-offs",
            lat_text(l, "rt"),
            floor,
            "-".into(),
        )),
        Err(e) => rows.push(failed("B4", "B2 with netsvc's thread hand-offs", e, floor)),
    }
    match &b3 {
        Ok((r, n)) => rows.push(row(
            "B3",
            "raw TCP stream via relay",
            format!("{} msgs/s ({} frames)", thousands(*r), thousands(*n as f64)),
            floor,
            "-".into(),
        )),
        Err(e) => rows.push(failed("B3", "raw TCP stream via relay", e, floor)),
    }
    let b2_p50 = b2.as_ref().ok().map(|l| l.p50);
    let b4_p50 = b4.as_ref().ok().map(|l| l.p50);
    let b3_rate = b3.as_ref().ok().map(|(r, _)| *r);

    // W1, W4, W5 share one exchange and one server process.
    progress("W1 svc.call via exchange");
    let shared = (|| -> Result<(Proc, Proc, String), String> {
        let exchange = spawn("exchange", &["exchange"])?;
        let port = port_of(&exchange)?;
        let server = spawn("server", &["server", "--port", &port])?;
        server.expect("READY", SETUP)?;
        Ok((exchange, server, port))
    })();
    let (w, n) = (s.warmup.to_string(), s.calls.to_string());
    let client = |mode: &str, extra: &[&str]| -> Result<Proc, String> {
        let port = shared.as_ref().map_err(Clone::clone)?.2.clone();
        let mut args = vec!["client", "--port", &port, "--mode", mode, "--warmup", &w];
        args.extend_from_slice(extra);
        spawn(&format!("client-{mode}"), &args)
    };
    let w1 = client("call", &["--n", &n]).and_then(|p| latency(&p.expect("RESULT", s.budget())?));
    let w1_target = "p50 <= 1.3 x B2 p50";
    match (&w1, b2_p50) {
        (Ok(l), Some(b2)) => {
            let ratio = l.p50 as f64 / b2 as f64;
            rows.push(row(
                "W1",
                "svc.call via exchange",
                format!(
                    "{}; p50/B2 = {ratio:.2}{}",
                    lat_text(l, "calls"),
                    b4_p50
                        .map(|b4| format!(", p50/B4 = {:.2}", l.p50 as f64 / b4 as f64))
                        .unwrap_or_default()
                ),
                w1_target,
                met(ratio <= 1.3),
            ));
        }
        (Ok(l), None) => rows.push(row(
            "W1",
            "svc.call via exchange",
            lat_text(l, "calls"),
            w1_target,
            "no B2".into(),
        )),
        (Err(e), _) => rows.push(failed("W1", "svc.call via exchange", e, w1_target)),
    }
    let w1_p50 = w1.as_ref().ok().map(|l| l.p50);
    let w1_rate = w1.as_ref().ok().map(|l| l.rate);

    progress("W1-local svc.call in one process");
    let local = spawn("local", &["local", "--warmup", &w, "--n", &n])
        .and_then(|p| latency(&p.expect("RESULT", s.budget())?));
    match &local {
        Ok(l) => rows.push(row(
            "W1-local",
            "svc.call in one process",
            lat_text(l, "calls"),
            "p50 <= 15 us",
            met(l.p50 <= 15_000),
        )),
        Err(e) => rows.push(failed(
            "W1-local",
            "svc.call in one process",
            e,
            "p50 <= 15 us",
        )),
    }

    progress("W4 8 threads calling via exchange");
    let per = s.w4_per_thread.to_string();
    let threads = W4_THREADS.to_string();
    let w4 = client("threads", &["--n", &per, "--threads", &threads])
        .and_then(|p| p.expect("RESULT", s.budget())?.f("rate"));
    let w4_target = "calls/s >= 8 x W1 calls/s";
    match (&w4, w1_rate) {
        (Ok(r), Some(w1r)) => rows.push(row(
            "W4",
            "8 client threads calling via exchange",
            format!("{} calls/s = {:.2} x W1", thousands(*r), r / w1r),
            w4_target,
            met(*r >= 8.0 * w1r),
        )),
        (Ok(r), None) => rows.push(row(
            "W4",
            "8 client threads calling via exchange",
            format!("{} calls/s", thousands(*r)),
            w4_target,
            "no W1".into(),
        )),
        (Err(e), _) => rows.push(failed(
            "W4",
            "8 client threads calling via exchange",
            e,
            w4_target,
        )),
    }

    progress("W5 RpcClient call and cast via exchange");
    let casts = s.casts.to_string();
    let w5 = client("rpc", &["--n", &n, "--casts", &casts]).and_then(|p| {
        let call = latency(&p.expect("RESULT", s.budget())?)?;
        let c = p.expect("CASTS", s.budget())?;
        Ok((call, c.f("rate")?, c.u("casts")?, c.u("arrived")?))
    });
    // The server's count of requests refused busy (a full queue).
    let server_busy = shared.as_ref().ok().and_then(|(_, server, _)| {
        server.send("stats").ok()?;
        server.expect("STATS", SETUP).ok()?.u("busy").ok()
    });
    let w5_target = "p50 <= 1.1 x W1 p50";
    match (&w5, w1_p50) {
        (Ok((l, cast_rate, cast_n, arrived)), w1p) => {
            let (ratio, status) = match w1p {
                Some(w1p) => {
                    let r = l.p50 as f64 / w1p as f64;
                    (format!("; p50/W1 = {r:.2}"), met(r <= 1.1))
                }
                None => (String::new(), "no W1".into()),
            };
            rows.push(row(
                "W5 call",
                "RpcClient::call via exchange",
                format!("{}{ratio}", lat_text(l, "calls")),
                w5_target,
                status,
            ));
            rows.push(row(
                "W5 cast",
                "RpcClient::cast via exchange",
                format!(
                    "{} casts/s; {}/{} arrived; server refused {} requests busy",
                    thousands(*cast_rate),
                    thousands(*arrived as f64),
                    thousands(*cast_n as f64),
                    server_busy.map_or("?".to_owned(), |b| thousands(b as f64)),
                ),
                "(no target)",
                "-".into(),
            ));
        }
        (Err(e), _) => rows.push(failed(
            "W5",
            "RpcClient call/cast via exchange",
            e,
            w5_target,
        )),
    }
    drop(shared);

    let of_b3 = |r: f64| match b3_rate {
        Some(b) if b > 0.0 => format!(" = {:.1}% of B3", 100.0 * r / b),
        _ => String::new(),
    };
    let loss = |p: &PubSub| {
        if p.received == p.expected {
            format!("all {} arrived", thousands(p.expected as f64))
        } else {
            format!(
                "LOST {} of {} ({} dropped at subscriber queue)",
                thousands((p.expected - p.received.min(p.expected)) as f64),
                thousands(p.expected as f64),
                thousands(p.dropped as f64)
            )
        }
    };

    progress("W2 1 publisher -> 1 subscriber via exchange");
    let w2 = pubsub(&s, 1, s.w2);
    let w2_target = ">= 3,000,000 reports/s";
    match &w2 {
        Ok(p) => {
            rows.push(row(
                "W2",
                "1 publisher -> 1 subscriber",
                format!(
                    "{} reports/s{}; {}; published at {}/s",
                    thousands(p.rate),
                    of_b3(p.rate),
                    loss(p),
                    thousands(p.publish_rate)
                ),
                w2_target,
                met(p.rate >= 3_000_000.0 && p.received == p.expected),
            ));
        }
        Err(e) => rows.push(failed("W2", "1 publisher -> 1 subscriber", e, w2_target)),
    }

    progress("W3 1 publisher -> 8 subscribers via exchange");
    let w3 = pubsub(&s, W3_SUBSCRIBERS, s.w3);
    let w3_target = ">= 6,000,000 deliveries/s";
    match &w3 {
        Ok(p) => rows.push(row(
            "W3",
            "1 publisher -> 8 subscriber processes",
            format!(
                "{} deliveries/s{}; {}; published at {}/s",
                thousands(p.rate),
                of_b3(p.rate),
                loss(p),
                thousands(p.publish_rate)
            ),
            w3_target,
            met(p.rate >= 6_000_000.0 && p.received == p.expected),
        )),
        Err(e) => rows.push(failed(
            "W3",
            "1 publisher -> 8 subscriber processes",
            e,
            w3_target,
        )),
    }

    // Memory.
    let mem_target = "after <= before + 1 MiB";
    match &w2 {
        Ok(p) => rows.push(row(
            "M1",
            "exchange RSS across W2",
            format!(
                "before {}, peak (VmHWM) {}, after {}",
                mib(p.rss_before),
                mib(p.rss_peak),
                mib(p.rss_after)
            ),
            mem_target,
            met(p.rss_after <= p.rss_before + (1 << 20)),
        )),
        Err(e) => rows.push(failed("M1", "exchange RSS across W2", e, mem_target)),
    }
    progress("M2 exchange RSS with idle clients");
    let mut idle_n = IDLE_CLIENTS;
    if let Some(limit) = open_files_limit() {
        if limit < IDLE_CLIENTS + 100 {
            idle_n = limit.saturating_sub(100).max(1);
            notes.push(format!(
                "open-files soft limit is {limit}: M2 uses {idle_n} idle connections, not {IDLE_CLIENTS}"
            ));
        }
    }
    let m2_target = "<= 64 MiB with 1,000 idle clients";
    match idle_memory(idle_n) {
        Ok((before, with, opened, alive)) => rows.push(row(
            "M2",
            "exchange RSS, idle clients",
            format!(
                "{} with {alive} of {opened} connections alive (empty: {})",
                mib(with),
                mib(before)
            ),
            m2_target,
            met(with <= 64 << 20 && alive >= idle_n.min(IDLE_CLIENTS)),
        )),
        Err(e) => rows.push(failed("M2", "exchange RSS, idle clients", &e, m2_target)),
    }
    kill_all();

    let elapsed = started.elapsed();
    println!();
    println!(
        "netsvc exchange benchmark{}, {}: {} cores, 1-min load average {load_start} at start, {} at end; 64-byte payloads over 127.0.0.1",
        if quick { " (--quick)" } else { "" },
        utc_now(),
        thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        load_average(),
    );
    println!(
        "calls: {} warm-up + {} measured; W2 {} reports; W3 {} reports x {W3_SUBSCRIBERS}; W4 {W4_THREADS} x {}; casts {}",
        s.warmup, s.calls, s.w2, s.w3, s.w4_per_thread, s.casts
    );
    println!();
    print_table(&rows);
    for n in &notes {
        println!("note: {n}");
    }
    println!();
    println!("total run time {:.1} s", elapsed.as_secs_f64());
}
