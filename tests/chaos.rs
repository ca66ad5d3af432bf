//! Chaos (issue 6): an exchange with 2 publishers, 2 subscribers and 4
//! callers, each in a process of its own, linked over 127.0.0.1. The
//! exchange is killed with SIGKILL and restarted on the same port 5 times,
//! at moments drawn from a seeded PRNG (the seed is printed; set
//! `NETSVC_CHAOS_SEED` to replay a run).
//!
//! Checked throughout:
//! - every call returns Ok or a clear Err within its timeout: a call that
//!   takes longer than timeout + 1 s, or a caller silent for longer than
//!   that, is HUNG; the only Err accepted is "service unavailable" (a link
//!   lost mid-call) or a timeout, and no call fails while everything is up;
//! - after each restart everything resumes without user code: the new
//!   exchange links all 8 clients; each publisher loses both subscriptions
//!   and gets both back; each subscriber hears both publishers withdrawn,
//!   then available again, gets both cached startup reports again and new
//!   time reports from both publishers; each caller links to the new
//!   exchange and then gets an Ok;
//! - no process other than the killed exchange exits (its output never
//!   ends, and `try_wait()` is `None` for every one of them at the end).
//!
//! Publishers, subscribers and the exchange are the example binaries. The
//! callers are this test binary run again in a role: `caller_role` returns
//! at once unless `NETSVC_CHAOS_ROLE=caller` is set.
//!
//! Both publishers display as the same binding (`publisher@N`: agent ids
//! count per dispatcher), so a subscriber's time reports do not say which
//! publisher sent them. But one publisher never sends two time reports
//! stamped with the same second (it publishes `now`, then waits a second),
//! so two reports stamped with the same second, received while both
//! publishers are available, come from both publishers.
//!
//! `cargo test` builds the examples first; to run this file alone, run
//! `cargo build --examples` before `cargo test --test chaos`.
//!
//! The machinery (the caller role, the child processes, the parent's model
//! of them and its checks of every line) is in `tests/util/chaos/`.

#[path = "util/chaos/mod.rs"]
mod chaos_util;
mod util;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chaos_util::caller::run_caller;
use chaos_util::proc::Proc;
use chaos_util::rng::Rng;
use chaos_util::state::{CallerState, PublisherState, SubscriberState};
use chaos_util::summary::{summary, RoundRecord};
use chaos_util::world::World;
use util::WAIT;

const ROLE_VAR: &str = "NETSVC_CHAOS_ROLE";
const PORT_VAR: &str = "NETSVC_CHAOS_PORT";
const SEED_VAR: &str = "NETSVC_CHAOS_SEED";

const PUBLISHERS: usize = 2;
const SUBSCRIBERS: usize = 2;
const CALLERS: usize = 4;
const RESTARTS: usize = 5;

/// Each caller's call timeout.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// A call taking longer than this is HUNG: its timeout + 1 s.
const HUNG_AFTER: Duration = Duration::from_secs(3);
/// A caller waiting for a publisher prints `IDLE` this often.
const IDLE_WAIT: Duration = Duration::from_millis(500);
/// A caller silent for longer than this is HUNG (a call, then an idle wait).
const SILENT_AFTER: Duration = Duration::from_millis(3500);
/// The callers' reconnect delay.
const CALLER_RETRY: Duration = Duration::from_millis(200);
/// The pause between two calls of one caller (events are handled during it).
const PACE: Duration = Duration::from_millis(5);
/// A caller stops by itself after this long at most.
const CALLER_BOUND: Duration = Duration::from_secs(60);
/// How long the exchange stays up after everything recovered, then how long
/// it stays down (milliseconds, drawn from the PRNG).
const UPTIME_MS: (u64, u64) = (300, 3500);
const DOWNTIME_MS: (u64, u64) = (0, 1500);

/// The caller role: returns at once unless this binary was started by
/// `exchange_killed_and_restarted_five_times_everything_resumes` as one of
/// its callers.
#[test]
fn caller_role() {
    let Ok(role) = std::env::var(ROLE_VAR) else {
        return;
    };
    assert_eq!(role, "caller", "unknown {ROLE_VAR}={role}");
    let port: u16 = std::env::var(PORT_VAR)
        .unwrap_or_else(|_| panic!("{PORT_VAR} is not set"))
        .parse()
        .unwrap_or_else(|e| panic!("{PORT_VAR}: {e}"));
    run_caller(port);
}

#[test]
fn exchange_killed_and_restarted_five_times_everything_resumes() {
    if std::env::var_os(ROLE_VAR).is_some() {
        return; // a caller process runs only its role
    }
    let seed = match std::env::var(SEED_VAR) {
        Ok(s) => s.parse().unwrap_or_else(|e| panic!("{SEED_VAR}: {e}")),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_nanos() as u64,
    };
    println!("chaos seed {seed} (replay with {SEED_VAR}={seed})");
    let mut rng = Rng(seed);
    let test_started = Instant::now();

    let mut w = World::new();
    w.start_exchange();
    let port = w.port;

    for _ in 0..PUBLISHERS {
        w.pubs
            .push(PublisherState::new(Proc::example("publisher", port)));
    }
    // The subscribers map the publishers' bindings: know them first.
    w.wait_until("PUBLISHING from each publisher", WAIT, |w| {
        w.pubs.iter().all(|p| p.binding.is_some())
    });
    for _ in 0..SUBSCRIBERS {
        w.subs
            .push(SubscriberState::new(Proc::example("subscriber", port)));
    }
    for _ in 0..CALLERS {
        w.callers.push(CallerState::new(Proc::caller(port)));
    }
    let [.., first] = w.wait_recovered("first start", test_started);

    let mut rounds: Vec<RoundRecord> = Vec::new();
    for round in 1..=RESTARTS {
        let uptime = rng.millis(UPTIME_MS);
        let downtime = rng.millis(DOWNTIME_MS);
        w.pump_for(uptime);
        w.kill_exchange();
        w.pump_for(downtime);
        let restarted = Instant::now();
        w.start_exchange();
        assert_eq!(w.port, port, "the exchange restarts on its port");
        let [links, publishers, subscribers, callers, all] =
            w.wait_recovered(&format!("recovery after restart {round}"), restarted);
        rounds.push(RoundRecord {
            uptime,
            downtime,
            links,
            publishers,
            subscribers,
            callers,
            all,
        });
    }

    // No process but the killed exchanges exited.
    for who in w.everyone() {
        let p = w.proc_mut(who).expect("a live child");
        let status = p.child.try_wait().expect("try_wait");
        let name = p.name.clone();
        if status.is_some() {
            w.fail(who, &format!("{name} exited: {status:?}"));
        }
    }
    assert_eq!(w.dead.len(), RESTARTS);

    // The callers stop when their stdin closes, after their current call.
    for c in &mut w.callers {
        c.closing = true;
        drop(c.proc.stdin.take());
    }
    w.wait_until("CALLER DONE from every caller, then its exit", WAIT, |w| {
        w.callers.iter().all(|c| c.done.is_some() && c.proc.eof)
    });
    for (i, c) in w.callers.iter_mut().enumerate() {
        let status = c.proc.child.wait().expect("reap a caller");
        assert!(status.success(), "caller {i} exited with {status}");
    }

    // The summary.
    let total = test_started.elapsed();
    println!("{}", summary(seed, total, first, &rounds, &w));

    // What the summary says must hold.
    for c in &w.callers {
        assert!(
            c.calls.hung.is_empty(),
            "{}: HUNG calls (over {HUNG_AFTER:?}): {:?}",
            c.proc.name,
            c.calls.hung
        );
        assert_eq!(
            format!("CALLER DONE ok={} err={}", c.calls.ok, c.calls.err),
            c.done.clone().unwrap(),
            "{}: its count and ours differ",
            c.proc.name
        );
    }
    for s in &w.subs {
        // Each connection: both cached startup reports again.
        assert_eq!(
            s.startup_reports,
            ((RESTARTS + 1) * PUBLISHERS) as u64,
            "{}",
            s.proc.name
        );
    }
}
