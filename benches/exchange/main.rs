//! The exchange benchmark (issue 5): `cargo bench --bench exchange`, or
//! `cargo bench --bench exchange -- --quick` for a shortened run.
//!
//! Prints one table. Every workload runs over 127.0.0.1 with the exchange,
//! the server side and the client side as separate processes: this binary
//! re-executes itself in a role (`exchange`, `server`, `client`, `publisher`,
//! `subscriber`, `echo`, `relay`, `rawclient`, `local`, `idle`). A child
//! prints `READY ...` when it is set up and `RESULT key=value ...` when it has
//! measured; the parent parses those lines. The TLS rows (W1-TLS, W2-TLS,
//! H1) run the same roles with `--tls DIR`, a directory of certificates
//! the parent makes first. Every child exits when its stdin
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

mod calls;
mod child;
mod cli;
mod exchange;
mod idle;
mod measure;
mod nats;
mod proc;
mod raw;
mod streams;
mod table;
mod tls;

use std::thread;
use std::time::{Duration, Instant};

use calls::{role_client, role_local, role_server, W4_THREADS};
use cli::{Args, Sizes};
use exchange::role_exchange;
use idle::{idle_memory, role_idle, IDLE_CLIENTS};
use measure::{latency, Latency};
use proc::{kill_all, open_files_limit, port_of, spawn, Guard, Proc, SETUP};
use raw::{raw_ping, raw_stream, role_echo, role_rawclient, role_relay};
use streams::{pubsub, role_publisher, role_subscriber, PubSub, W3_SUBSCRIBERS};
use table::{failed, load_average, met, mib, print_table, row, thousands, us, utc_now};

/// Bytes of every payload.
const PAYLOAD: usize = 64;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = Args(args);
    match a.0.first().map(String::as_str).unwrap_or("") {
        "echo" => role_echo(),
        "relay" => role_relay(&a),
        "rawclient" => role_rawclient(&a),
        "exchange" => role_exchange(&a),
        "handshake" => tls::role_handshake(&a),
        "server" => role_server(&a),
        "client" => role_client(&a),
        "local" => role_local(&a),
        "publisher" => role_publisher(&a),
        "subscriber" => role_subscriber(&a),
        "idle" => role_idle(&a),
        "natspub" => nats::role_nats_publisher(&a),
        "natssub" => nats::role_nats_subscriber(&a),
        "natsecho" => nats::role_nats_echo(&a),
        "natscall" => nats::role_nats_call(&a),
        // `cargo bench` passes `--bench`; unknown flags are ignored.
        _ => parent(&a),
    }
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

    // The same calls through nats-server: request with a reply inbox.
    let nats_exe = nats::nats_server();
    let w1_nats_what = "W1 through nats-server (request, reply inbox)";
    let w1_nats_target = "W1 p50 <= 1.0 x, p99 <= 1.2 x";
    if let Some(exe) = &nats_exe {
        progress("W1-NATS request/reply via nats-server");
        match (nats::nats_calls(&s, exe), &w1) {
            (Ok(n), Ok(l)) => {
                let (r50, r99) = (l.p50 as f64 / n.p50 as f64, l.p99 as f64 / n.p99 as f64);
                rows.push(row(
                    "W1-NATS",
                    w1_nats_what,
                    format!(
                        "{}; W1 p50/NATS = {r50:.2}, p99/NATS = {r99:.2}",
                        lat_text(&n, "calls")
                    ),
                    w1_nats_target,
                    met(r50 <= 1.0 && r99 <= 1.2),
                ));
            }
            (Ok(n), Err(_)) => rows.push(row(
                "W1-NATS",
                w1_nats_what,
                lat_text(&n, "calls"),
                w1_nats_target,
                "no W1".into(),
            )),
            (Err(e), _) => rows.push(failed("W1-NATS", w1_nats_what, &e, w1_nats_target)),
        }
    }

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
    // Issue 14: eight callers make at least this many times one caller's calls/s.
    const W4_SCALE: f64 = 2.5;
    let w4_target = format!("calls/s >= {W4_SCALE} x W1 calls/s");
    let w4_target = w4_target.as_str();
    match (&w4, w1_rate) {
        (Ok(r), Some(w1r)) => rows.push(row(
            "W4",
            "8 client threads calling via exchange",
            format!("{} calls/s = {:.2} x W1", thousands(*r), r / w1r),
            w4_target,
            met(*r >= W4_SCALE * w1r),
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
    // The server's counts of requests refused busy and of casts dropped
    // (both at a full queue).
    let server_full = shared.as_ref().ok().and_then(|(_, server, _)| {
        server.send("stats").ok()?;
        let st = server.expect("STATS", SETUP).ok()?;
        Some((st.u("busy").ok()?, st.u("casts_dropped").ok()?))
    });
    let w5_target = "p50 <= 1.1 x W1 p50";
    match (&w5, w1_p50) {
        (Ok((l, cast_rate, cast_n, arrived)), w1p) => {
            let (busy, dropped) = server_full.map_or(("?".to_owned(), "?".to_owned()), |(b, c)| {
                (thousands(b as f64), thousands(c as f64))
            });
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
                    "{} casts/s; {}/{} arrived; server refused {} requests busy, dropped {} casts",
                    thousands(*cast_rate),
                    thousands(*arrived as f64),
                    thousands(*cast_n as f64),
                    busy,
                    dropped,
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

    // The same W1 over TLS: its own exchange and server, every link TLS.
    let certs = tls::make_certs();
    let tls_dir = certs
        .as_ref()
        .map(|c| c.dir().to_owned())
        .map_err(Clone::clone);
    progress("W1-TLS svc.call via exchange over TLS");
    let w1_tls = tls_dir.clone().and_then(|dir| {
        let exchange = spawn("exchange-tls", &["exchange", "--tls", &dir])?;
        let port = port_of(&exchange)?;
        let server = spawn("server-tls", &["server", "--port", &port, "--tls", &dir])?;
        server.expect("READY", SETUP)?;
        let args = [
            "client", "--port", &port, "--mode", "call", "--warmup", &w, "--n", &n, "--tls", &dir,
        ];
        let client = spawn("client-call-tls", &args)?;
        let l = latency(&client.expect("RESULT", s.budget())?);
        drop((client, server, exchange));
        l
    });
    let w1_tls_target = "p50 <= 1.15 x W1 p50";
    match (&w1_tls, w1_p50) {
        (Ok(l), Some(w1p)) => {
            let ratio = l.p50 as f64 / w1p as f64;
            let p99 = w1
                .as_ref()
                .map(|w| format!(", p99/W1 = {:.2}", l.p99 as f64 / w.p99 as f64))
                .unwrap_or_default();
            rows.push(row(
                "W1-TLS",
                "svc.call via exchange, TLS",
                format!("{}; p50/W1 = {ratio:.2}{p99}", lat_text(l, "calls")),
                w1_tls_target,
                met(ratio <= 1.15),
            ));
        }
        (Ok(l), None) => rows.push(row(
            "W1-TLS",
            "svc.call via exchange, TLS",
            lat_text(l, "calls"),
            w1_tls_target,
            "no W1".into(),
        )),
        (Err(e), _) => rows.push(failed(
            "W1-TLS",
            "svc.call via exchange, TLS",
            e,
            w1_tls_target,
        )),
    }

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

    // The stream rows and their NATS rows, in alternating rounds (the
    // machine's speed drifts between runs): each row shows its median
    // round and the range.
    if nats_exe.is_none() {
        notes
            .push("nats-server is not installed (Debian package nats-server): no NATS rows".into());
    }
    let rounds = streams::stream_rounds(&s);
    let alternate = |subs: usize, n: u64, what: &str| {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let (mut our_err, mut their_err) = (None, None);
        for round in 1..=rounds {
            if let Some(exe) = &nats_exe {
                progress(&format!(
                    "{what}-NATS via nats-server, round {round} of {rounds}"
                ));
                match nats::nats_pubsub(&s, exe, subs, n) {
                    Ok(p) => theirs.push(p),
                    Err(e) => their_err = Some(e),
                }
            }
            progress(&format!("{what} via exchange, round {round} of {rounds}"));
            match pubsub(&s, subs, n, None) {
                Ok(p) => ours.push(p),
                Err(e) => our_err = Some(e),
            }
        }
        let take = |runs: Vec<PubSub>, err: Option<String>| match err {
            Some(e) => Err(e),
            None => streams::median_of(runs).ok_or_else(|| "no round ran".to_owned()),
        };
        let theirs = nats_exe.as_ref().map(|_| take(theirs, their_err));
        (take(ours, our_err), theirs)
    };
    let (w2, n2) = alternate(1, s.w2, "W2");
    let (w3, n3) = alternate(W3_SUBSCRIBERS, s.w3, "W3");
    let range = |r: &Result<(PubSub, f64, f64), String>| match r {
        Ok((_, low, high)) if rounds > 1 => format!(
            " (median of {rounds} rounds, {}-{})",
            thousands(*low),
            thousands(*high)
        ),
        _ => String::new(),
    };
    let (w2_range, w3_range) = (range(&w2), range(&w3));
    let (n2_range, n3_range) = (
        n2.as_ref().map(range).unwrap_or_default(),
        n3.as_ref().map(range).unwrap_or_default(),
    );
    let first = |r: Result<(PubSub, f64, f64), String>| r.map(|(p, _, _)| p);
    let (w2, w3) = (first(w2), first(w3));
    let (n2, n3) = (n2.map(first), n3.map(first));
    let nats_rate = |n: &Option<Result<PubSub, String>>| match n {
        Some(Ok(p)) if p.rate > 0.0 => Some(p.rate),
        _ => None,
    };
    let (n2_rate, n3_rate) = (nats_rate(&n2), nats_rate(&n3));

    let w2_target = ">= 1.2 x W2-NATS, all arrive";
    match &w2 {
        Ok(p) => {
            let (ratio, ok) = match n2_rate {
                Some(n) => (format!("; {:.2} x NATS", p.rate / n), p.rate >= 1.2 * n),
                None => (String::new(), false),
            };
            rows.push(row(
                "W2",
                "1 publisher -> 1 subscriber",
                format!(
                    "{} reports/s{w2_range}{}{ratio}; {}; published at {}/s",
                    thousands(p.rate),
                    of_b3(p.rate),
                    loss(p),
                    thousands(p.publish_rate)
                ),
                w2_target,
                if n2_rate.is_some() {
                    met(ok && p.received == p.expected)
                } else {
                    "no NATS".into()
                },
            ));
        }
        Err(e) => rows.push(failed("W2", "1 publisher -> 1 subscriber", e, w2_target)),
    }
    if let Some(n2) = &n2 {
        match n2 {
            Ok(p) => rows.push(row(
                "W2-NATS",
                "W2 through nats-server",
                format!(
                    "{} msgs/s{n2_range}{}; {}",
                    thousands(p.rate),
                    of_b3(p.rate),
                    loss(p)
                ),
                "(peer)",
                "-".into(),
            )),
            Err(e) => rows.push(failed("W2-NATS", "W2 through nats-server", e, "(peer)")),
        }
    }

    progress("W2-TLS 1 publisher -> 1 subscriber via exchange over TLS");
    let w2_tls = tls_dir
        .clone()
        .and_then(|dir| pubsub(&s, 1, s.w2, Some(&dir)));
    let w2_tls_target = "reports/s >= 0.8 x W2";
    match (&w2_tls, &w2) {
        (Ok(p), Ok(clear)) => {
            let ratio = p.rate / clear.rate.max(1.0);
            rows.push(row(
                "W2-TLS",
                "1 publisher -> 1 subscriber, TLS",
                format!(
                    "{} reports/s = {ratio:.2} x W2; {}; published at {}/s",
                    thousands(p.rate),
                    loss(p),
                    thousands(p.publish_rate)
                ),
                w2_tls_target,
                met(ratio >= 0.8 && p.received == p.expected),
            ));
        }
        (Ok(p), Err(_)) => rows.push(row(
            "W2-TLS",
            "1 publisher -> 1 subscriber, TLS",
            format!("{} reports/s; {}", thousands(p.rate), loss(p)),
            w2_tls_target,
            "no W2".into(),
        )),
        (Err(e), _) => rows.push(failed(
            "W2-TLS",
            "1 publisher -> 1 subscriber, TLS",
            e,
            w2_tls_target,
        )),
    }

    progress("H1 connection handshakes, clear and TLS");
    let handshakes = |tls: Option<&str>| -> Result<Latency, String> {
        let mut args = vec!["exchange"];
        args.extend(tls.iter().flat_map(|dir| ["--tls", dir]));
        let exchange = spawn("exchange-h1", &args)?;
        let port = port_of(&exchange)?;
        let n_h = if quick { "200" } else { "1000" };
        let mut args = vec!["handshake", "--port", &port, "--n", n_h];
        args.extend(tls.iter().flat_map(|dir| ["--tls", dir]));
        let p = spawn("handshake", &args)?;
        let l = latency(&p.expect("RESULT", s.budget())?);
        drop((p, exchange));
        l
    };
    let h1_clear = handshakes(None);
    let h1_tls = tls_dir.clone().and_then(|dir| handshakes(Some(&dir)));
    let hs_text = |l: &Latency| format!("p50 {}, p99 {}", us(l.p50), us(l.p99));
    match (&h1_clear, &h1_tls) {
        (Ok(c), Ok(t)) => rows.push(row(
            "H1",
            "connect to link up, per connection",
            format!("clear {}; TLS (full handshake) {}", hs_text(c), hs_text(t)),
            "(printed)",
            "-".into(),
        )),
        (Err(e), _) | (_, Err(e)) => rows.push(failed(
            "H1",
            "connect to link up, per connection",
            e,
            "(printed)",
        )),
    }
    drop(certs);

    let w3_target = ">= 1.0 x W3-NATS, all arrive";
    match &w3 {
        Ok(p) => {
            let (ratio, ok) = match n3_rate {
                Some(n) => (format!("; {:.2} x NATS", p.rate / n), p.rate >= n),
                None => (String::new(), false),
            };
            rows.push(row(
                "W3",
                "1 publisher -> 8 subscriber processes",
                format!(
                    "{} deliveries/s{w3_range}{}{ratio}; {}; published at {}/s",
                    thousands(p.rate),
                    of_b3(p.rate),
                    loss(p),
                    thousands(p.publish_rate)
                ),
                w3_target,
                if n3_rate.is_some() {
                    met(ok && p.received == p.expected)
                } else {
                    "no NATS".into()
                },
            ))
        }
        Err(e) => rows.push(failed(
            "W3",
            "1 publisher -> 8 subscriber processes",
            e,
            w3_target,
        )),
    }
    if let Some(n3) = &n3 {
        match n3 {
            Ok(p) => rows.push(row(
                "W3-NATS",
                "W3 through nats-server",
                format!(
                    "{} deliveries/s{n3_range}{}; {}",
                    thousands(p.rate),
                    of_b3(p.rate),
                    loss(p)
                ),
                "(peer)",
                "-".into(),
            )),
            Err(e) => rows.push(failed("W3-NATS", "W3 through nats-server", e, "(peer)")),
        }
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
    let m3_target = "subscriber <= 32 MiB, exchange <= 16 MiB";
    match &w2 {
        Ok(p) => rows.push(row(
            "M3",
            "peak RSS during W2 (VmHWM)",
            format!(
                "subscriber {}, exchange {}",
                mib(p.subscriber_peak),
                mib(p.rss_peak)
            ),
            m3_target,
            met(p.subscriber_peak <= 32 << 20 && p.rss_peak <= 16 << 20),
        )),
        Err(e) => rows.push(failed("M3", "peak RSS during W2", e, m3_target)),
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
        "calls: {} warm-up + {} measured; W2 {} reports; W3 {} reports x {W3_SUBSCRIBERS}; \
         streams in {rounds} alternating rounds with their NATS rows (counts arrived: all rounds); \
         W4 {W4_THREADS} x {}; casts {}",
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
