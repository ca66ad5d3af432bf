//! Helpers shared by the integration tests: bounded waits on events.
#![allow(dead_code)]

pub mod certs;
pub mod child;
pub mod exchange_proc;
pub mod link;
pub mod pair;
pub mod raw;
pub mod relay;

use std::time::{Duration, Instant};

use netsvc::{
    Dispatcher, Event, PublisherAnnouncement, Report, Request, Service, ServiceAnnouncement,
    ServiceBinding, ServiceHandle, ServiceStatus, Stats, SubscriptionAnnouncement,
};

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A short wait used to check that nothing (more) arrives. Only ever used
/// for negative checks, never to let something happen.
pub const QUIET: Duration = Duration::from_millis(200);

/// The next event, or panic after [`WAIT`]. Confirmations of
/// subscriptions (`Event::Confirmed`) are passed over: the tests that
/// expect a sequence of events are about other things, and
/// `tests/flow.rs` tests confirmations.
pub fn next(svc: &Service) -> Event {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match svc.recv_timeout(left) {
            Ok(Some(Event::Confirmed(_))) => {}
            Ok(Some(e)) => return e,
            Ok(None) => panic!("{}: no event within {WAIT:?}", svc.binding()),
            Err(e) => panic!("{}: queue closed: {e}", svc.binding()),
        }
    }
}

/// Skips events until `pick` returns `Some`, or panics after [`WAIT`].
pub fn wait_for<T>(svc: &Service, what: &str, mut pick: impl FnMut(Event) -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match svc.recv_timeout(left) {
            Ok(Some(e)) => {
                if let Some(t) = pick(e) {
                    return t;
                }
            }
            Ok(None) => panic!("{}: no {what} within {WAIT:?}", svc.binding()),
            Err(e) => panic!(
                "{}: queue closed while waiting for {what}: {e}",
                svc.binding()
            ),
        }
    }
}

/// Asserts that no event arrives within [`QUIET`] (confirmations of
/// subscriptions aside, as in [`next`]).
pub fn assert_quiet(svc: &Service) {
    let deadline = Instant::now() + QUIET;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match svc.recv_timeout(left) {
            Ok(Some(Event::Confirmed(_))) => {}
            Ok(Some(e)) => panic!("{}: unexpected event {e:?}", svc.binding()),
            _ => return,
        }
    }
}

/// The next event, which must be an announcement.
pub fn announcement(svc: &Service) -> ServiceAnnouncement {
    match next(svc) {
        Event::Announcement(a) => a,
        other => panic!("expected an announcement, got {other:?}"),
    }
}

/// The next event, which must be a report.
pub fn report(svc: &Service) -> Report {
    match next(svc) {
        Event::Report(r) => r,
        other => panic!("expected a report, got {other:?}"),
    }
}

/// The next event, which must be a request.
pub fn request(svc: &Service) -> Request {
    match next(svc) {
        Event::Request(r) => r,
        other => panic!("expected a request, got {other:?}"),
    }
}

/// The next event, which must be a subscription announcement.
pub fn subscription(svc: &Service) -> SubscriptionAnnouncement {
    match next(svc) {
        Event::Subscription(s) => s,
        other => panic!("expected a subscription announcement, got {other:?}"),
    }
}

/// The next event, which must be a publisher announcement.
pub fn publisher(svc: &Service) -> PublisherAnnouncement {
    match next(svc) {
        Event::Publisher(p) => p,
        other => panic!("expected a publisher announcement, got {other:?}"),
    }
}

/// Waits for an announcement about `name` with `status` (and `group`).
pub fn wait_announcement(
    svc: &Service,
    name: &str,
    group: Option<&str>,
    status: ServiceStatus,
) -> ServiceAnnouncement {
    wait_for(
        svc,
        &format!("{status:?} announcement of {name}"),
        |e| match e {
            Event::Announcement(a)
                if a.binding().service_name() == name
                    && a.group() == group
                    && a.status() == status =>
            {
                Some(a)
            }
            _ => None,
        },
    )
}

/// Runs `f` on a thread and fails the test if it does not finish within
/// [`WAIT`] (a hang becomes a failure, not a stuck suite).
pub fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(WAIT) {
        Ok(t) => t,
        Err(_) => panic!("{what} did not finish within {WAIT:?}"),
    }
}

/// Waits (bounded by [`WAIT`]) until the counter `get` picks from the
/// dispatcher's stats reaches `n`. Stats are written by the dispatcher
/// thread and announce nothing, so they are read until they show it.
pub fn wait_stat(d: &Dispatcher, what: &str, n: u64, get: impl Fn(&Stats) -> u64) {
    let deadline = Instant::now() + WAIT;
    while get(&d.stats()) < n {
        assert!(
            Instant::now() < deadline,
            "{what} stuck below {n}: {:?}",
            d.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// [`wait_stat`] for `limits_breached`.
pub fn wait_breaches(d: &Dispatcher, n: u64) {
    wait_stat(d, "limits_breached", n, |s| s.limits_breached);
}

/// Waits until a service named `name` is Available in `d` and returns its
/// binding. The watcher has audience "" so it never leaves `d`.
pub fn await_service(d: &Dispatcher, name: &str) -> ServiceBinding {
    let watcher = d
        .service(&format!("watch-{name}"))
        .audience("")
        .open()
        .expect("open a watcher");
    watcher.monitor_service_name(name);
    let a = wait_announcement(&watcher, name, None, ServiceStatus::Available);
    a.binding().clone()
}

/// Spawns a service `name` on `d` that answers every request carrying a
/// u64 with `answer` of it.
pub fn spawn_u64(d: &Dispatcher, name: &str, answer: fn(u64) -> u64) -> ServiceHandle {
    d.service(name)
        .spawn(move |_s, ev| {
            if let Event::Request(r) = ev {
                let x: u64 = r.decode().unwrap_or_default();
                let _ = r.reply(&answer(x));
            }
        })
        .expect("spawn a service")
}

/// The longest interval between consecutive marks (of reports received,
/// calls answered): what the tests of a well-behaved pair beside a hostile
/// peer bound.
#[derive(Default, Debug, Clone, Copy)]
pub struct Gaps {
    pub last: Option<Instant>,
    pub max: Duration,
    pub count: u64,
}

#[allow(dead_code)] // (each test binary uses some of it)
impl Gaps {
    /// Something happened at `now`.
    pub fn mark(&mut self, now: Instant) {
        if let Some(last) = self.last {
            self.max = self.max.max(now.saturating_duration_since(last));
        }
        self.last = Some(now);
        self.count += 1;
    }

    /// The longest gap, counting the one from the last mark to `now`
    /// (which is not counted as a mark).
    pub fn end(&mut self, now: Instant) -> Duration {
        self.mark(now);
        self.count -= 1;
        self.max
    }

    /// The longest gap, counting the one from the last mark to `end`
    /// (`Duration::MAX` if nothing was marked).
    pub fn until(&self, end: Instant) -> Duration {
        match self.last {
            Some(last) => self.max.max(end.saturating_duration_since(last)),
            None => Duration::MAX,
        }
    }
}
