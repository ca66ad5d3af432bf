//! The raw TCP floors, without netsvc: B1 a blocking ping-pong, B2 the
//! same through a relay, B3 frames streamed through the relay, B4 B2 with
//! netsvc's thread hand-offs. The `echo` (and sink), `relay` and
//! `rawclient` roles, and the parent's runs of them.

use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::Instant;

use crate::child::{child_init, fail};
use crate::cli::{Args, Sizes};
use crate::measure::{latency, measure_calls, nanos, rate, Latency};
use crate::proc::{port_of, spawn};
use crate::PAYLOAD;

/// Frames per write in the raw streaming baseline (B3).
const STREAM_BATCH: usize = 1024;

/// `echo`: accepts connections; the first byte chooses `P` ping-pong (echo
/// 64-byte messages) or `S` sink (count length-prefixed frames, answer with
/// the count and the time from the first to the last).
pub(crate) fn role_echo() {
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
pub(crate) fn role_relay(a: &Args) {
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
pub(crate) fn role_rawclient(a: &Args) {
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

/// B1, B2 and B4: raw ping-pong, directly or through the relay; `mode`
/// `ping` (one thread at each end) or `threads` (B4: netsvc's hand-offs).
pub(crate) fn raw_ping(s: &Sizes, relayed: bool, mode: &str) -> Result<Latency, String> {
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
pub(crate) fn raw_stream(s: &Sizes) -> Result<(f64, u64), String> {
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
