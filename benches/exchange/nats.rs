//! The NATS rows: the same report streams as W2 and W3 through a
//! `nats-server` (Debian package `nats-server`) started for the run, with
//! a minimal client of NATS's text protocol written here (CONNECT, SUB,
//! PUB, PING/PONG; one connection per process). Skipped with a note when
//! `nats-server` is not installed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::child::{child_init, fail, park_forever, wait_for_go};
use crate::cli::{Args, Sizes};
use crate::measure::{epoch_ns, nanos};
use crate::proc::{spawn, SETUP};
use crate::streams::{self_peak_rss, PubSub};
use crate::PAYLOAD;

/// Where `nats-server` is, if it is installed.
pub(crate) fn nats_server() -> Option<String> {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(|p| p.to_string())
}

/// A `nats-server` on a free loopback port, killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(exe: &str) -> Result<Server, String> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("free port: {e}"))?
        .port();
    let child = Command::new(exe)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("nats-server: {e}"))?;
    let server = Server { child, port };
    let deadline = Instant::now() + SETUP;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("nats-server did not listen".into());
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(server)
}

/// A NATS connection: CONNECT sent, the server's INFO read.
fn connect(port: u16) -> Result<(BufReader<TcpStream>, TcpStream), String> {
    let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut r = BufReader::with_capacity(1 << 16, s.try_clone().map_err(|e| e.to_string())?);
    let mut info = String::new();
    r.read_line(&mut info).map_err(|e| e.to_string())?;
    if !info.starts_with("INFO") {
        return Err(format!("not a NATS server: {info}"));
    }
    let mut w = s;
    w.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n")
        .map_err(|e| e.to_string())?;
    Ok((r, w))
}

/// Sends PING and reads up to its PONG (answering the server's PINGs).
fn ping(r: &mut BufReader<TcpStream>, w: &mut TcpStream) -> Result<(), String> {
    w.write_all(b"PING\r\n").map_err(|e| e.to_string())?;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err("NATS closed".into());
        }
        match line.trim_end() {
            "PONG" => return Ok(()),
            "PING" => w.write_all(b"PONG\r\n").map_err(|e| e.to_string())?,
            l if l.starts_with("-ERR") => return Err(l.to_owned()),
            _ => {}
        }
    }
}

/// `natspub --port P --n N`: READY, waits for `go`, publishes N messages
/// of the bench's payload on `bench.data`, PINGs to flush, RESULT.
pub(crate) fn role_nats_publisher(a: &Args) {
    let cmds = child_init();
    let port = a.num("--port", 4222) as u16;
    let n = a.num("--n", 100_000);
    let (mut r, w) = connect(port).unwrap_or_else(|e| fail(&e));
    let mut w = std::io::BufWriter::with_capacity(1 << 16, w);
    println!("READY");
    wait_for_go(&cmds);
    // The same bytes a netsvc report of `vec![7u8; PAYLOAD]` carries.
    let payload = netsvc::encode(&vec![7u8; PAYLOAD]).unwrap_or_else(|e| fail(&e.to_string()));
    let head = format!("PUB bench.data {}\r\n", payload.len());
    let start = Instant::now();
    for _ in 0..n {
        let ok = w
            .write_all(head.as_bytes())
            .and_then(|()| w.write_all(&payload))
            .and_then(|()| w.write_all(b"\r\n"));
        if let Err(e) = ok {
            fail(&format!("publish: {e}"));
        }
    }
    let mut s = w.into_inner().unwrap_or_else(|e| fail(&e.to_string()));
    ping(&mut r, &mut s).unwrap_or_else(|e| fail(&e));
    println!("RESULT published={n} elapsed_ns={}", nanos(start.elapsed()));
    park_forever();
}

/// `natssub --port P --n N --idle-ms M`: subscribes to `bench.>`, counts
/// messages until N arrived or none came for M ms (after the first).
pub(crate) fn role_nats_subscriber(a: &Args) {
    let _cmds = child_init();
    let port = a.num("--port", 4222) as u16;
    let n = a.num("--n", 100_000);
    let idle = Duration::from_millis(a.num("--idle-ms", 2000));
    let (mut r, mut w) = connect(port).unwrap_or_else(|e| fail(&e));
    w.write_all(b"SUB bench.> 1\r\n")
        .unwrap_or_else(|e| fail(&e.to_string()));
    ping(&mut r, &mut w).unwrap_or_else(|e| fail(&e));
    println!("READY");
    let mut count = 0u64;
    let mut bad = 0u64;
    let mut first: Option<(Instant, u64)> = None;
    let mut last = Instant::now();
    let mut line = String::new();
    let mut body = Vec::new();
    let _ = r.get_ref().set_read_timeout(Some(Duration::from_secs(60)));
    while count < n {
        // (A read timeout, after the first message, ends the count.)
        let len = match next_msg(&mut r, &mut w, &mut line, &mut body) {
            Ok(_) => body.len(),
            Err(_) => break,
        };
        if netsvc::decode::<Vec<u8>>(&body[..len]).map_or(true, |v| v.len() != PAYLOAD) {
            bad += 1;
        }
        last = Instant::now();
        if first.is_none() {
            first = Some((last, epoch_ns()));
            let _ = r.get_ref().set_read_timeout(Some(idle));
        }
        count += 1;
    }
    let (first_ns, last_ns) = match first {
        Some((at, epoch)) => (epoch, epoch + nanos(last.duration_since(at))),
        None => (0, 0),
    };
    println!(
        "RESULT count={count} first_ns={first_ns} last_ns={last_ns} dropped=0 bad={bad} rss_peak={}",
        self_peak_rss()
    );
    std::process::exit(0);
}

/// W2 and W3 through `nats-server`: one publisher, `subs` subscribers.
pub(crate) fn nats_pubsub(s: &Sizes, exe: &str, subs: usize, n: u64) -> Result<PubSub, String> {
    let server = start_server(exe)?;
    let port = server.port.to_string();
    let n_s = n.to_string();
    let mut subscribers = Vec::new();
    for i in 0..subs {
        let args = ["natssub", "--port", &port, "--n", &n_s, "--idle-ms", "3000"];
        subscribers.push(spawn(&format!("natssub{i}"), &args)?);
    }
    for p in &subscribers {
        p.expect("READY", SETUP)?;
    }
    let publisher = spawn("natspub", &["natspub", "--port", &port, "--n", &n_s])?;
    publisher.expect("READY", SETUP)?;
    let server_pid = server.child.id();
    let rss_before = crate::proc::proc_status_bytes(server_pid, "VmRSS").unwrap_or(0);
    publisher.send("go")?;
    let budget = s.budget() + Duration::from_secs(n * subs as u64 / 100_000);
    let run = crate::streams::collect(&subscribers, &publisher, budget, n)?;
    let rss_peak = crate::proc::proc_status_bytes(server_pid, "VmHWM").unwrap_or(0);
    let rss_after = crate::proc::proc_status_bytes(server_pid, "VmRSS").unwrap_or(0);
    Ok(run.into_pubsub(n * subs as u64, rss_before, rss_peak, rss_after))
}

/// Reads up to the next `MSG` line (answering the server's PINGs) and its
/// body into `body`; returns the reply subject, if the message has one.
fn next_msg(
    r: &mut BufReader<TcpStream>,
    w: &mut TcpStream,
    line: &mut String,
    body: &mut Vec<u8>,
) -> Result<Option<String>, String> {
    loop {
        line.clear();
        if r.read_line(line).map_err(|e| e.to_string())? == 0 {
            return Err("NATS closed".into());
        }
        let l = line.trim_end();
        if l == "PING" {
            w.write_all(b"PONG\r\n").map_err(|e| e.to_string())?;
            continue;
        }
        let Some(rest) = l.strip_prefix("MSG ") else {
            if l.starts_with("-ERR") {
                return Err(l.to_owned());
            }
            continue;
        };
        // MSG <subject> <sid> [reply-to] <#bytes> (parsed without
        // allocating: this loop is also W2-NATS's subscriber)
        let mut fields = rest.split(' ').skip(2);
        let (reply, len) = match (fields.next(), fields.next()) {
            (Some(reply), Some(len)) => (Some(reply.to_owned()), len),
            (Some(len), None) => (None, len),
            _ => return Err(format!("bad MSG line {l}")),
        };
        let len: usize = len.parse().map_err(|_| format!("bad MSG line {l}"))?;
        body.resize(len + 2, 0);
        r.read_exact(body).map_err(|e| e.to_string())?;
        body.truncate(len);
        return Ok(reply);
    }
}

/// `natsecho --port P`: the NATS service of W1-NATS: subscribed to
/// `bench.echo`, it publishes each request's payload to its reply subject.
pub(crate) fn role_nats_echo(a: &Args) {
    let _cmds = child_init();
    let port = a.num("--port", 4222) as u16;
    let (mut r, mut w) = connect(port).unwrap_or_else(|e| fail(&e));
    w.write_all(b"SUB bench.echo 1\r\n")
        .unwrap_or_else(|e| fail(&e.to_string()));
    ping(&mut r, &mut w).unwrap_or_else(|e| fail(&e));
    println!("READY");
    let _ = r.get_ref().set_read_timeout(None);
    let (mut line, mut body, mut out) = (String::new(), Vec::new(), Vec::new());
    loop {
        let reply = match next_msg(&mut r, &mut w, &mut line, &mut body) {
            Ok(Some(reply)) => reply,
            Ok(None) => continue,
            Err(_) => std::process::exit(0),
        };
        out.clear();
        out.extend_from_slice(format!("PUB {reply} {}\r\n", body.len()).as_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(b"\r\n");
        if w.write_all(&out).is_err() {
            std::process::exit(0);
        }
    }
}

/// `natscall --port P --warmup W --n N`: the caller of W1-NATS: a request
/// on `bench.echo` with the reply inbox `_INBOX.bench`, then its reply
/// read, N times in sequence (as a NATS client's request does, less the
/// client library).
pub(crate) fn role_nats_call(a: &Args) {
    let _cmds = child_init();
    let port = a.num("--port", 4222) as u16;
    let (warmup, n) = (a.num("--warmup", 2000), a.num("--n", 20_000));
    let (mut r, mut w) = connect(port).unwrap_or_else(|e| fail(&e));
    w.write_all(b"SUB _INBOX.bench 1\r\n")
        .unwrap_or_else(|e| fail(&e.to_string()));
    ping(&mut r, &mut w).unwrap_or_else(|e| fail(&e));
    let payload = netsvc::encode(&vec![7u8; PAYLOAD]).unwrap_or_else(|e| fail(&e.to_string()));
    let mut request = format!("PUB bench.echo _INBOX.bench {}\r\n", payload.len()).into_bytes();
    request.extend_from_slice(&payload);
    request.extend_from_slice(b"\r\n");
    let (mut line, mut body) = (String::new(), Vec::new());
    let mut call = || -> Result<(), String> {
        w.write_all(&request).map_err(|e| e.to_string())?;
        next_msg(&mut r, &mut w, &mut line, &mut body)?;
        if body != payload {
            return Err(format!(
                "a reply of {} bytes, not the request's",
                body.len()
            ));
        }
        Ok(())
    };
    crate::measure::measure_calls(warmup, n, &mut call, "");
    park_forever();
}

/// W1 through `nats-server`: a `natsecho` service and a `natscall` caller.
pub(crate) fn nats_calls(s: &Sizes, exe: &str) -> Result<crate::measure::Latency, String> {
    let server = start_server(exe)?;
    let port = server.port.to_string();
    let echo = spawn("natsecho", &["natsecho", "--port", &port])?;
    echo.expect("READY", SETUP)?;
    let (w, n) = (s.warmup.to_string(), s.calls.to_string());
    let caller = spawn(
        "natscall",
        &["natscall", "--port", &port, "--warmup", &w, "--n", &n],
    )?;
    crate::measure::latency(&caller.expect("RESULT", s.budget())?)
}
