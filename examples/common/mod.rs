//! What the exchange examples share: arguments, output, signals.
#![allow(dead_code)]

use std::io::Write;
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use netsvc::{ConnectionState, Dispatcher, Exchange};

/// `--port N` (default 11111), `--host H` (default 127.0.0.1) and
/// `--server NAME` (RPC examples; default `server1`).
pub struct Args {
    pub host: String,
    pub port: u16,
    pub server: String,
}

pub fn args() -> Args {
    let mut args = Args {
        host: "127.0.0.1".to_owned(),
        port: 11111,
        server: "server1".to_owned(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--port" => match it.next().and_then(|p| p.parse().ok()) {
                Some(p) => args.port = p,
                None => usage("--port takes a number"),
            },
            "--host" => match it.next() {
                Some(h) => args.host = h,
                None => usage("--host takes a name or address"),
            },
            "--server" => match it.next() {
                Some(s) => args.server = s,
                None => usage("--server takes a name"),
            },
            other => usage(&format!("unknown argument {other}")),
        }
    }
    args
}

fn usage(problem: &str) -> ! {
    eprintln!("{problem}\nusage: [--host H] [--port N] [--server NAME]");
    std::process::exit(2)
}

/// Prints a line to stdout and flushes it, so that another process reading
/// the output sees each line as it happens.
pub fn say(line: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.as_ref());
    let _ = out.flush();
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Seconds since the epoch as `HH:MM:SS UTC`.
pub fn clock(secs: u64) -> String {
    format!(
        "{:02}:{:02}:{:02} UTC",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

/// Prints every connection announcement of the exchange as
/// `ACTIVE|INACTIVE <process> (<address>)`, on a thread of its own.
pub fn log_connections(ex: &Exchange) {
    let rx = ex.connections();
    thread::spawn(move || {
        for ann in rx.iter() {
            let state = match ann.state() {
                ConnectionState::Active => "ACTIVE",
                ConnectionState::Inactive => "INACTIVE",
            };
            let process = ann
                .remote_process()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".to_owned());
            say(format!("{state} {process} ({})", ann.remote_address()));
        }
    });
}

/// Shuts the dispatcher down on SIGINT or SIGTERM (services first hear
/// `Event::Shutdown`).
pub fn stop_on_signals(d: &Dispatcher) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    let d = d.clone();
    thread::spawn(move || {
        if signals.forever().next().is_some() {
            d.shutdown_after(std::time::Duration::from_millis(100));
        }
    });
    Ok(())
}
