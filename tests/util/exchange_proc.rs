//! A real exchange process for attack tests: the `exchange` example as a
//! child (port 0, 127.0.0.1), killed and reaped on drop. Its memory is read
//! from `/proc/<pid>/status`, its stderr is kept line by line, and its
//! dispatcher's [`Stats`](netsvc::Stats) are fetched by calling the
//! `exchange.stats` service it offers, from a small client dispatcher of
//! the test's own that is linked to it before any attack starts.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netsvc::{Dispatcher, Exchange, Service, ServiceBinding, ServiceStatus};

use super::child::{example, read_lines, Out};
use super::{wait_announcement, WAIT};

/// The counters of the exchange's dispatcher, by field name.
pub type StatsMap = HashMap<String, u64>;

/// How long a stats call may take: the exchange is under attack, and a
/// stuck exchange must be reported, not wait the test out.
pub const STATS_TIMEOUT: Duration = Duration::from_secs(3);

/// A running `exchange` example.
pub struct ExchangeProc {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
    /// The test's client of the exchange, for `exchange.stats`.
    client: Dispatcher,
    _link: Exchange,
    me: Service,
    stats: ServiceBinding,
}

impl ExchangeProc {
    /// Starts the exchange (extra `args` after `--host 127.0.0.1 --port 0`),
    /// waits for its `LISTENING` line, links a client to it and waits until
    /// that client sees `exchange.stats`. Every wait is bounded by [`WAIT`].
    pub fn start(args: &[&str]) -> ExchangeProc {
        let mut child = Command::new(example("exchange"))
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the exchange example: {e}"));
        let out = read_lines("exchange", &mut child);
        let stderr = Arc::new(Mutex::new(Vec::new()));
        {
            let pipe = child.stderr.take().expect("piped stderr");
            let lines = stderr.clone();
            std::thread::Builder::new()
                .name("read-exchange-stderr".into())
                .spawn(move || {
                    for line in BufReader::new(pipe).lines() {
                        match line {
                            Ok(l) => lines.lock().unwrap_or_else(|e| e.into_inner()).push(l),
                            Err(_) => break,
                        }
                    }
                })
                .expect("spawn a stderr reader");
        }
        let deadline = Instant::now() + WAIT;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match out.recv_timeout(left) {
                Ok(Out::Line(_, line)) => {
                    if let Some(a) = line.strip_prefix("LISTENING ") {
                        break a.parse::<SocketAddr>().unwrap_or_else(|e| {
                            panic!("exchange: bad LISTENING line {line:?}: {e}")
                        });
                    }
                }
                Ok(Out::Eof) | Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the exchange printed no LISTENING line within {WAIT:?}");
                }
            }
        };
        // Its stdout goes on being read (and dropped), so that it never
        // blocks on a full pipe.
        std::thread::spawn(move || for _ in out.iter() {});
        let client = Dispatcher::builder()
            .name("stats-client")
            .build()
            .expect("a dispatcher");
        let me = client.service("stats.reader").open().expect("a service");
        me.monitor_service_name("exchange.stats");
        let link = Exchange::client(&client)
            .connect(addr, Duration::from_millis(100))
            .expect("link to the exchange");
        let stats = wait_announcement(&me, "exchange.stats", None, ServiceStatus::Available)
            .binding()
            .clone();
        ExchangeProc {
            child,
            addr,
            stderr,
            client,
            _link: link,
            me,
            stats,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The binding of its `exchange.stats` service, as a client sees it: a
    /// service that lives in the exchange process.
    pub fn stats_binding(&self) -> &ServiceBinding {
        &self.stats
    }

    /// Its OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
    fn status_kib(&self, field: &str) -> u64 {
        let path = format!("/proc/{}/status", self.pid());
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        text.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{path} has no {field}"))
    }

    /// Its resident memory now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS")
    }

    /// The most resident memory it has had, in KiB: taken before and after
    /// an attack, the difference is the most the attack made it grow
    /// (whenever that was, and even if it has been freed since).
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM")
    }

    /// Its dispatcher's counters, or why they could not be read (a stuck
    /// exchange does not answer within [`STATS_TIMEOUT`]).
    pub fn stats(&self) -> Result<StatsMap, String> {
        self.me
            .call_timeout::<Vec<(String, u64)>, _>(&self.stats, "stats", &(), STATS_TIMEOUT)
            .map(|v| v.into_iter().collect())
            .map_err(|e| format!("exchange.stats: {e}"))
    }

    /// One counter; panics if the exchange does not report it (a check of
    /// a counter it does not have could never fail).
    pub fn stat(stats: &StatsMap, name: &str) -> u64 {
        match stats.get(name) {
            Some(&n) => n,
            None => panic!("the exchange reports no counter {name:?}: {stats:?}"),
        }
    }

    /// Every line it has written to stderr so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for ExchangeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.client.shutdown();
    }
}
