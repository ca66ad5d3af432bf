//! The examples' command lines: every example answers `--help` with a
//! usage naming each of its options and exits 0, refuses an unknown
//! argument with exit code 2, and the exchange-based ones link through an
//! exchange that requires a secret when given the same `--secret`, and not
//! with another one.
//!
//! `cargo test` builds the examples first; to run this file alone, run
//! `cargo build --examples` before `cargo test --test examples_cli`.

mod util;

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use util::child::{example, spawn_example, Out};
use util::WAIT;

/// Every example and the options its `--help` must name.
const EXAMPLES: &[(&str, &[&str])] = &[
    (
        "exchange",
        &[
            "--host",
            "--port",
            "--secret",
            "--group",
            "--tls-cert",
            "--tls-key",
            "--tls-client-ca",
        ],
    ),
    ("publisher", CLIENT),
    ("subscriber", CLIENT),
    (
        "rpc_server",
        &[
            "--host",
            "--port",
            "--secret",
            "--group",
            "--server",
            "--tls-ca",
            "--tls-server-name",
            "--tls-cert",
            "--tls-key",
        ],
    ),
    ("rpc_client", CLIENT),
    ("notifications", &[]),
    ("quickstart", &[]),
    ("soak", &["--minutes", "--secret", "--group"]),
];

/// The options of an exchange client example.
const CLIENT: &[&str] = &[
    "--host",
    "--port",
    "--secret",
    "--group",
    "--tls-ca",
    "--tls-server-name",
    "--tls-cert",
    "--tls-key",
];

/// Runs example `name` with `args` to its end (killed and a panic after
/// [`WAIT`]); its exit status and stdout.
fn run(name: &str, args: &[&str]) -> (ExitStatus, String) {
    let mut child = Command::new(example(name))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start example {name}: {e}"));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the example") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} {args:?} did not exit within {WAIT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    (status, reader.join().expect("reader thread"))
}

#[test]
fn every_example_prints_its_usage_on_help() {
    for (name, options) in EXAMPLES {
        for help in ["--help", "-h"] {
            let (status, usage) = run(name, &[help]);
            assert!(status.success(), "{name} {help}: {status}\n{usage}");
            for option in options.iter().chain(&["--help", "RUST_LOG"]) {
                assert!(
                    usage.contains(option),
                    "{name} {help} does not name {option}:\n{usage}"
                );
            }
        }
    }
}

#[test]
fn every_example_refuses_an_unknown_argument() {
    for (name, _) in EXAMPLES {
        let (status, _) = run(name, &["--no-such-option"]);
        assert_eq!(status.code(), Some(2), "{name}: {status}");
    }
}

// ----- a secured exchange -----

/// A running example with its stdout read line by line; killed on drop.
struct Proc {
    name: String,
    child: Child,
    out: Receiver<Out>,
    seen: Vec<String>,
}

impl Proc {
    fn spawn(name: &str, args: &[&str]) -> Proc {
        let (child, out) = spawn_example(name, args);
        Proc {
            name: format!("{name}[{}]", child.id()),
            child,
            out,
            seen: Vec::new(),
        }
    }

    /// A client example of the exchange at `port` with secret `key`.
    fn client(name: &str, port: u16, key: &str) -> Proc {
        let port = port.to_string();
        Proc::spawn(name, &["--port", &port, "--secret", key])
    }

    /// A line already seen matching `pred`, or else the first to come (as
    /// [`expect`](Self::expect)): for a line printed by another thread of
    /// the example than the lines expected around it (`ACTIVE ...` comes
    /// from its link-logging thread), whose order with them is not fixed.
    fn saw_or_expect(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        match self.seen.iter().find(|l| pred(l)) {
            Some(line) => line.clone(),
            None => self.expect(what, pred),
        }
    }

    /// The first line (from now) matching `pred`; panics with the lines
    /// seen so far if none comes within [`WAIT`] or the output ends.
    fn expect(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let problem = match self.out.recv_timeout(left) {
                Ok(Out::Line(_, line)) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                    continue;
                }
                Ok(Out::Eof) | Err(RecvTimeoutError::Disconnected) => "output ended",
                Err(RecvTimeoutError::Timeout) => "timed out",
            };
            panic!(
                "{}: {problem} waiting for {what}; lines seen:\n    {}",
                self.name,
                self.seen.join("\n    ")
            );
        }
    }

    /// SIGTERM (through kill(1)); then every line up to the end of its
    /// output, which comes when it has stopped.
    fn stop(&mut self) -> &[String] {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -TERM {}", self.name);
        self.expect("STOPPED", |l| l == "STOPPED");
        &self.seen
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn clients_with_the_exchange_secret_talk_and_another_secret_is_refused() {
    let mut ex = Proc::spawn("exchange", &["--port", "0", "--secret", "K"]);
    let line = ex.expect("LISTENING", |l| l.starts_with("LISTENING "));
    let port: u16 = line
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("not LISTENING <address>: {line:?}"));

    // Same secret: the subscriber hears the publisher's cached report.
    let mut sub = Proc::client("subscriber", port, "K");
    let mut publ = Proc::client("publisher", port, "K");
    let line = publ.expect("PUBLISHING", |l| l.starts_with("PUBLISHING as "));
    let good = line["PUBLISHING as ".len()..].to_owned();
    sub.expect("the publisher AVAILABLE", |l| {
        l.starts_with(&format!("AVAILABLE {good} "))
    });
    sub.expect("its startup report", |l| {
        l.starts_with(&format!("{good} originally started at "))
    });

    // Another secret: its attempt is refused (the link never comes up),
    // so it never hears of the subscriber, nor the subscriber of it.
    let mut wrong = Proc::client("publisher", port, "not-K");
    let line = wrong.expect("PUBLISHING", |l| l.starts_with("PUBLISHING as "));
    let bad = line["PUBLISHING as ".len()..].to_owned();
    wrong.expect("a refused link", |l| l.starts_with("INACTIVE - "));
    for line in wrong.stop() {
        assert!(
            !line.starts_with("ACTIVE ") && !line.starts_with("SUBSCRIPTION "),
            "a publisher with another secret got through: {line:?}"
        );
    }
    // Everything the subscriber printed, up to its stop.
    let seen = sub.stop().to_vec();
    assert!(
        !seen.iter().any(|l| l.contains(&bad)),
        "the subscriber saw the publisher with another secret: {seen:?}"
    );
    assert_ne!(good, bad);
}

// ----- the three-process demo over TLS -----

#[test]
fn the_three_process_demo_runs_over_mutual_tls() {
    use util::certs::{Ca, TempDir};
    let ca = Ca::new("demo CA");
    let dir = TempDir::new("tls-demo");
    let ca_file = dir.write("ca.crt", &ca.pem);
    let server = ca.server();
    let server_cert = dir.write("server.crt", &server.cert);
    let server_key = dir.write("server.key", &server.key);
    let files = |name: &str| {
        let pem = ca.client(name);
        (
            dir.write(&format!("{name}.crt"), &pem.cert),
            dir.write(&format!("{name}.key"), &pem.key),
        )
    };
    let (pub_cert, pub_key) = files("publisher-host");
    let (sub_cert, sub_key) = files("subscriber-host");

    let mut ex = Proc::spawn(
        "exchange",
        &[
            "--port",
            "0",
            "--tls-cert",
            &server_cert,
            "--tls-key",
            &server_key,
            "--tls-client-ca",
            &ca_file,
        ],
    );
    let line = ex.expect("LISTENING", |l| l.starts_with("LISTENING "));
    let port = line
        .rsplit_once(':')
        .map(|(_, p)| p.to_owned())
        .unwrap_or_else(|| panic!("not LISTENING <address>: {line:?}"));
    let client = |name: &str, cert: &str, key: &str| {
        Proc::spawn(
            name,
            &[
                "--port",
                &port,
                "--tls-ca",
                &ca_file,
                "--tls-cert",
                cert,
                "--tls-key",
                key,
            ],
        )
    };
    let mut sub = client("subscriber", &sub_cert, &sub_key);
    let mut publ = client("publisher", &pub_cert, &pub_key);
    let line = publ.expect("PUBLISHING", |l| l.starts_with("PUBLISHING as "));
    let binding = line["PUBLISHING as ".len()..].to_owned();
    sub.expect("the publisher AVAILABLE", |l| {
        l.starts_with(&format!("AVAILABLE {binding} "))
    });
    sub.expect("its cached startup report", |l| {
        l.starts_with(&format!("{binding} originally started at "))
    });
    sub.expect("a time report", |l| {
        l.starts_with(&format!("{binding} was still alive at "))
    });
    // (From another thread of the subscriber: before or after those.)
    sub.saw_or_expect("the link", |l| l.starts_with("ACTIVE "));
    // The exchange shows each client by its certificate's name (in the
    // order they came up).
    let up = |l: &str| l.starts_with("ACTIVE ") && l.contains(" as \"");
    let first = ex.expect("a client's identity", up);
    let second = ex.expect("the other client's identity", up);
    let (p, s) = if first.contains("publisher@") {
        (first, second)
    } else {
        (second, first)
    };
    assert!(p.contains("as \"publisher-host\""), "{p}");
    assert!(
        s.contains("subscriber@") && s.contains("as \"subscriber-host\""),
        "{s}"
    );

    // A publisher without TLS is refused, and says why.
    let mut plain = Proc::spawn("publisher", &["--port", &port]);
    plain.expect("a refused link", |l| {
        l.starts_with("INACTIVE - ") && l.contains("TLS required by the peer")
    });
    // One with TLS but no client certificate is refused, and says why.
    let mut anonymous = Proc::spawn("publisher", &["--port", &port, "--tls-ca", &ca_file]);
    anonymous.expect("a refused link", |l| {
        l.starts_with("INACTIVE - ") && l.contains("client certificate required")
    });
    for p in [&mut plain, &mut anonymous] {
        for line in p.stop() {
            assert!(!line.starts_with("ACTIVE "), "refused, yet up: {line:?}");
        }
    }
    publ.stop();
    sub.stop();
    ex.stop();
}

#[test]
fn tls_options_that_cannot_work_are_refused() {
    // A key without a certificate: a usage error.
    let (status, _) = run("exchange", &["--port", "0", "--tls-key", "k.pem"]);
    assert_eq!(status.code(), Some(2), "{status}");
    let (status, _) = run("publisher", &["--tls-cert", "c.pem", "--tls-key", "k.pem"]);
    assert_eq!(status.code(), Some(2), "{status}");
    // Files that are not there: an error, not a server without TLS.
    let (status, out) = run(
        "exchange",
        &[
            "--port",
            "0",
            "--tls-cert",
            "/nonexistent/c.pem",
            "--tls-key",
            "/nonexistent/k.pem",
        ],
    );
    assert!(!status.success(), "{status}");
    assert!(!out.contains("LISTENING"), "{out}");
}
