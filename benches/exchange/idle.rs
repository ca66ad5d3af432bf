//! Idle connections and the exchange's memory with them (M2): a netsvc
//! hello frame built by hand, the `idle` role that opens many connections
//! that say hello and then stay silent, and the parent's run of it.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use crate::child::{child_init, fail, park_forever};
use crate::cli::Args;
use crate::proc::{port_of, proc_status_bytes, spawn};

/// Idle client connections of the memory measurement.
pub(crate) const IDLE_CLIENTS: u64 = 1000;

/// The netsvc protocol version the idle connections announce (src/wire.rs).
const PROTOCOL_VERSION: u16 = 6;

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
/// version (u16 BE) and the bincode of `{ process: { uid, label }, group,
/// auth, identity, bind }`, for the client numbered `seed` (its uid is the
/// one its identity token stands for, as the server checks).
fn hello_frame(seed: u64, label: &str) -> Vec<u8> {
    let mut body = b"NETSVC".to_vec();
    body.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    varint(&mut body, netsvc::peer_frames::uid(seed));
    varint(&mut body, label.len() as u64);
    body.extend_from_slice(label.as_bytes());
    varint(&mut body, 0); // group: ""
    body.push(0); // auth: false (no secret)
    let token = netsvc::peer_frames::token(seed);
    varint(&mut body, token.len() as u64);
    body.extend_from_slice(&token);
    body.push(0); // bind: false
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// `idle --port P --n N`: opens N raw connections that each send a valid
/// hello, then stay silent. Prints how many are still open a second later.
pub(crate) fn role_idle(a: &Args) {
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

/// The exchange's RSS before and with idle clients: (before, with, opened, alive).
pub(crate) fn idle_memory(n: u64) -> Result<(u64, u64, u64, u64), String> {
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
