//! The caller role: the chaos test binary run again as a child process
//! (see `caller_role` in `tests/chaos.rs`), calling the publishers and
//! printing one line per call and per link change for the parent to check.

use std::io::Write;
use std::thread;
use std::time::Instant;

use crossbeam_channel::{select, TryRecvError};
use netsvc::{
    ConnectionAnnouncement, ConnectionState, Dispatcher, Event, Exchange, ServiceBinding,
    ServiceStatus,
};

use crate::{CALLER_BOUND, CALLER_RETRY, CALL_TIMEOUT, IDLE_WAIT, PACE};

/// One flushed line on stdout, for the parent to read as it happens.
fn say(line: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.as_ref());
    let _ = out.flush();
}

fn on_link(a: &ConnectionAnnouncement) {
    // Failed attempts (Inactive, no peer) are not worth a line.
    match (a.state(), a.remote_process()) {
        (ConnectionState::Active, Some(p)) => say(format!("LINK ACTIVE {p}")),
        (ConnectionState::Active, None) => say("LINK ACTIVE -"),
        (ConnectionState::Inactive, Some(p)) => say(format!("LINK INACTIVE {p}")),
        (ConnectionState::Inactive, None) => {}
    }
}

fn on_event(publishers: &mut Vec<ServiceBinding>, e: Event) {
    if let Event::Announcement(a) = e {
        if a.group().is_some() || a.binding().service_name() != "publisher" {
            return;
        }
        match a.status() {
            ServiceStatus::Available => {
                if !publishers.contains(a.binding()) {
                    publishers.push(a.binding().clone());
                }
            }
            ServiceStatus::Withdrawn => publishers.retain(|b| b != a.binding()),
        }
    }
}

/// Calls `uptime` on the available publishers in turn, one line per call:
/// `CALL OK <ms>` or `CALL ERR <ms> <error>`; `LINK ACTIVE|INACTIVE
/// <exchange>` as its link comes and goes (from this same thread, so a
/// `CALL OK` after `LINK ACTIVE x` is a call made while linked to x);
/// `IDLE` while waiting (bounded) for a publisher. Stops when stdin closes,
/// or after [`CALLER_BOUND`].
pub fn run_caller(port: u16) {
    let (stdin_open, stdin_closed) = crossbeam_channel::bounded::<()>(0);
    thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        drop(stdin_open);
    });
    // Ends a `test caller_role ... ` line the harness may have left open.
    say("");
    say("CALLER START");
    let d = Dispatcher::builder()
        .name("caller")
        .build()
        .expect("the caller's dispatcher");
    let ex = Exchange::client(&d)
        .connect(("127.0.0.1", port), CALLER_RETRY)
        .expect("the caller's exchange client");
    let links = ex.connections();
    let me = d.service("caller").open().expect("the caller's service");
    me.monitor_service_name("publisher");

    let mut publishers: Vec<ServiceBinding> = Vec::new();
    let (mut ok, mut err, mut turn) = (0u64, 0u64, 0usize);
    let bound = Instant::now() + CALLER_BOUND;
    'calls: loop {
        while let Ok(a) = links.try_recv() {
            on_link(&a);
        }
        while let Some(e) = me.try_recv() {
            on_event(&mut publishers, e);
        }
        if stdin_closed.try_recv() == Err(TryRecvError::Disconnected) || Instant::now() >= bound {
            break;
        }
        if publishers.is_empty() {
            select! {
                recv(me.receiver()) -> e => match e {
                    Ok(e) => on_event(&mut publishers, e),
                    Err(_) => break 'calls,
                },
                recv(links) -> a => if let Ok(a) = a { on_link(&a) },
                recv(stdin_closed) -> _ => break 'calls,
                default(IDLE_WAIT) => say("IDLE"),
            }
            continue;
        }
        let target = publishers[turn % publishers.len()].clone();
        turn += 1;
        let started = Instant::now();
        let r = me.call_timeout::<f64, _>(&target, "uptime", &(), CALL_TIMEOUT);
        let ms = started.elapsed().as_millis();
        match r {
            Ok(up) if up.is_finite() && up > 0.0 => {
                ok += 1;
                say(format!("CALL OK {ms}"));
            }
            Ok(up) => {
                err += 1;
                say(format!("CALL ERR {ms} bad uptime {up}"));
            }
            Err(e) => {
                err += 1;
                say(format!("CALL ERR {ms} {e}"));
            }
        }
        select! {
            recv(me.receiver()) -> e => match e {
                Ok(e) => on_event(&mut publishers, e),
                Err(_) => break 'calls,
            },
            recv(links) -> a => if let Ok(a) = a { on_link(&a) },
            recv(stdin_closed) -> _ => break 'calls,
            default(PACE) => {},
        }
    }
    say(format!("CALLER DONE ok={ok} err={err}"));
    d.shutdown();
}
