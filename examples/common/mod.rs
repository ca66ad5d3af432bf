//! What the examples share: arguments and `--help`, the `RUST_LOG`
//! logger, output, signals.
#![allow(dead_code)]

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{LevelFilter, Log, Metadata, Record};
use netsvc::{
    ClientBuilder, Dispatcher, Exchange, ServerBuilder, TlsClientConfig, TlsServerConfig,
};

/// An option an example accepts; each example names its own in
/// [`args`], and `--help` lists exactly those.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Opt {
    /// `--host H`: the exchange's host (default 127.0.0.1).
    Host,
    /// `--port N`: the exchange's port (default 11111; 0 lets the OS choose
    /// for a server).
    Port,
    /// `--server NAME`: the RPC server's name (default `server1`).
    Server,
    /// `--secret KEY`: the exchange's shared secret (default none).
    Secret,
    /// `--group NAME`: the exchange group (default none).
    Group,
    /// `--tls-cert FILE`: this side's certificate chain (PEM), with
    /// `--tls-key`: a server's (TLS), or a client's (mutual TLS).
    TlsCert,
    /// `--tls-key FILE`: the private key of `--tls-cert` (PEM).
    TlsKey,
    /// `--tls-client-ca FILE`: a server's CA of client certificates
    /// (mutual TLS).
    TlsClientCa,
    /// `--tls-ca FILE`: a client's CA of the server's certificate (TLS).
    TlsCa,
    /// `--tls-server-name NAME`: the name the server's certificate must
    /// be valid for (default: `--host`).
    TlsServerName,
    /// `--count N`: how many (default 200000).
    Count,
}

/// The options of every exchange client and server.
pub const EXCHANGE: &[Opt] = &[Opt::Host, Opt::Port, Opt::Secret, Opt::Group];

/// The options of an exchange server: [`EXCHANGE`] and its TLS.
pub const EXCHANGE_SERVER: &[Opt] = &[
    Opt::Host,
    Opt::Port,
    Opt::Secret,
    Opt::Group,
    Opt::TlsCert,
    Opt::TlsKey,
    Opt::TlsClientCa,
];

/// The options of an exchange client: [`EXCHANGE`] and its TLS.
pub const EXCHANGE_CLIENT: &[Opt] = &[
    Opt::Host,
    Opt::Port,
    Opt::Secret,
    Opt::Group,
    Opt::TlsCa,
    Opt::TlsServerName,
    Opt::TlsCert,
    Opt::TlsKey,
];

impl Opt {
    fn flag(self) -> &'static str {
        match self {
            Opt::Host => "--host",
            Opt::Port => "--port",
            Opt::Server => "--server",
            Opt::Secret => "--secret",
            Opt::Group => "--group",
            Opt::TlsCert => "--tls-cert",
            Opt::TlsKey => "--tls-key",
            Opt::TlsClientCa => "--tls-client-ca",
            Opt::TlsCa => "--tls-ca",
            Opt::TlsServerName => "--tls-server-name",
            Opt::Count => "--count",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Opt::Host => "--host H       the exchange's host or address (default 127.0.0.1)",
            Opt::Port => "--port N       the exchange's TCP port (default 11111)",
            Opt::Server => "--server NAME  this RPC server's name (default server1)",
            Opt::Count => "--count N      how many reports to publish (default 200000)",
            Opt::Secret => {
                "--secret KEY   the exchange's shared secret: both ends must hold \
                 the same one (default none)"
            }
            Opt::Group => {
                "--group NAME   the exchange group: both ends must name the same one \
                 (default none)"
            }
            Opt::TlsCert => {
                "--tls-cert FILE  this side's certificate chain (PEM), with --tls-key: \
                 a server's for TLS, a client's for mutual TLS (default none)"
            }
            Opt::TlsKey => "--tls-key FILE   the private key of --tls-cert (PEM)",
            Opt::TlsClientCa => {
                "--tls-client-ca FILE  mutual TLS: clients must present a certificate \
                 of this CA (PEM); its common name is their identity"
            }
            Opt::TlsCa => {
                "--tls-ca FILE    connect with TLS, trusting this CA (PEM) for the \
                 server's certificate (default: no TLS)"
            }
            Opt::TlsServerName => {
                "--tls-server-name NAME  the name the server's certificate must be \
                 valid for (default: --host)"
            }
        }
    }
}

/// What the command line said; an option the example does not take keeps
/// its default.
pub struct Args {
    /// `--host`.
    pub host: String,
    /// `--port`.
    pub port: u16,
    /// `--server`.
    pub server: String,
    /// `--secret`.
    pub secret: Option<String>,
    /// `--group` (`""`: none).
    pub group: String,
    /// `--tls-cert`.
    pub tls_cert: Option<String>,
    /// `--tls-key`.
    pub tls_key: Option<String>,
    /// `--tls-client-ca`.
    pub tls_client_ca: Option<String>,
    /// `--tls-ca`.
    pub tls_ca: Option<String>,
    /// `--tls-server-name`.
    pub tls_server_name: Option<String>,
    /// `--count`.
    pub count: u64,
}

/// Installs the `RUST_LOG` logger, then reads the command line of example
/// `name` (described by `about`), which takes the options `opts` and
/// `-h`/`--help`. `--help` prints the usage and exits 0; anything else
/// unknown prints it to stderr and exits 2.
pub fn args(name: &str, about: &str, opts: &[Opt]) -> Args {
    init_logger();
    let mut args = Args {
        host: "127.0.0.1".to_owned(),
        port: 11111,
        server: "server1".to_owned(),
        secret: None,
        group: String::new(),
        tls_cert: None,
        tls_key: None,
        tls_client_ca: None,
        tls_ca: None,
        tls_server_name: None,
        count: 200_000,
    };
    let usage = usage_text(name, about, opts);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "-h" || a == "--help" {
            print!("{usage}");
            std::process::exit(0);
        }
        let Some(opt) = opts.iter().copied().find(|o| o.flag() == a) else {
            bad_usage(&usage, &format!("unknown argument {a}"));
        };
        let Some(value) = it.next() else {
            bad_usage(&usage, &format!("{a} takes a value"));
        };
        match opt {
            Opt::Host => args.host = value,
            Opt::Port => match value.parse() {
                Ok(p) => args.port = p,
                Err(_) => bad_usage(&usage, "--port takes a number (0 to 65535)"),
            },
            Opt::Server => args.server = value,
            Opt::Secret => args.secret = Some(value),
            Opt::Group => args.group = value,
            Opt::TlsCert => args.tls_cert = Some(value),
            Opt::TlsKey => args.tls_key = Some(value),
            Opt::TlsClientCa => args.tls_client_ca = Some(value),
            Opt::TlsCa => args.tls_ca = Some(value),
            Opt::TlsServerName => args.tls_server_name = Some(value),
            Opt::Count => match value.parse() {
                Ok(n) => args.count = n,
                Err(_) => bad_usage(&usage, "--count takes a number"),
            },
        }
    }
    if args.tls_cert.is_some() != args.tls_key.is_some() {
        bad_usage(&usage, "--tls-cert and --tls-key go together");
    }
    let server = opts.contains(&Opt::TlsClientCa);
    if server && args.tls_client_ca.is_some() && args.tls_cert.is_none() {
        bad_usage(&usage, "--tls-client-ca needs --tls-cert and --tls-key");
    }
    if !server
        && args.tls_ca.is_none()
        && (args.tls_cert.is_some() || args.tls_server_name.is_some())
    {
        bad_usage(&usage, "--tls-cert and --tls-server-name need --tls-ca");
    }
    args
}

/// The `--help` text: what the example does, every option it takes, and
/// the `RUST_LOG` variable.
pub fn usage_text(name: &str, about: &str, opts: &[Opt]) -> String {
    let mut text = format!("{about}\n\nusage: {name} [OPTIONS]\n\noptions:\n");
    for o in opts {
        text.push_str(&format!("  {}\n", o.help()));
    }
    text.push_str("  -h, --help     print this help and exit\n");
    text.push_str(LOG_HELP);
    text
}

/// The part of every example's `--help` about `RUST_LOG`.
pub const LOG_HELP: &str = "\nenvironment:\n  \
    RUST_LOG       what to log on stderr: a level (error, warn, info, debug, \
    trace, off) and/or target=level pairs, comma-separated, e.g. debug or \
    netsvc=info (default warn)\n";

fn bad_usage(usage: &str, problem: &str) -> ! {
    eprint!("{problem}\n\n{usage}");
    std::process::exit(2)
}

impl Args {
    /// An exchange server with the `--group`, `--secret` and TLS options
    /// given (an error for TLS files that cannot be read or used).
    pub fn server_builder(&self, d: &Dispatcher) -> netsvc::Result<ServerBuilder> {
        let mut b = Exchange::server(d).group(&self.group);
        if let Some(key) = &self.secret {
            b = b.secret(key);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            let mut tls = TlsServerConfig::from_pem_files(cert, key)?;
            if let Some(ca) = &self.tls_client_ca {
                tls = tls.client_ca_pem_file(ca)?;
            }
            b = b.tls(tls);
        }
        Ok(b)
    }

    /// An exchange client with the `--group`, `--secret` and TLS options
    /// given (an error for TLS files that cannot be read or used).
    pub fn client_builder(&self, d: &Dispatcher) -> netsvc::Result<ClientBuilder> {
        let mut b = Exchange::client(d).group(&self.group);
        if let Some(key) = &self.secret {
            b = b.secret(key);
        }
        if let Some(ca) = &self.tls_ca {
            let name = self.tls_server_name.as_deref().unwrap_or(&self.host);
            let mut tls = TlsClientConfig::from_ca_pem_file(ca)?.server_name(name)?;
            if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
                tls = tls.client_certificate_pem_files(cert, key)?;
            }
            b = b.tls(tls);
        }
        Ok(b)
    }

    /// Connects an exchange client to `--host`:`--port`, retrying every
    /// `retry` while the server is unreachable.
    pub fn connect(&self, d: &Dispatcher, retry: Duration) -> netsvc::Result<Exchange> {
        self.client_builder(d)?
            .connect((self.host.as_str(), self.port), retry)
    }
}

// ----- logging -----

/// A `log` logger for the examples: one line per record on stderr,
/// `<seconds since start> <LEVEL> <target>: <message>`, filtered by
/// `RUST_LOG`.
struct StderrLogger {
    /// The level of records whose target matches no directive.
    default: LevelFilter,
    /// `target=level` directives, longest target first.
    targets: Vec<(String, LevelFilter)>,
    started: Instant,
}

impl StderrLogger {
    /// Parses `RUST_LOG`-style directives: `level`, `target=level` or a
    /// bare `target` (everything from it), comma-separated. Unreadable ones
    /// are reported on stderr and ignored.
    fn parse(spec: &str) -> StderrLogger {
        let mut logger = StderrLogger {
            default: LevelFilter::Warn,
            targets: Vec::new(),
            started: Instant::now(),
        };
        for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            match directive.split_once('=') {
                Some((target, level)) => match level.trim().parse() {
                    Ok(l) => logger.targets.push((target.trim().to_owned(), l)),
                    Err(_) => eprintln!("RUST_LOG: no level {level:?} in {directive:?}"),
                },
                None => match directive.parse() {
                    Ok(l) => logger.default = l,
                    Err(_) => logger
                        .targets
                        .push((directive.to_owned(), LevelFilter::Trace)),
                },
            }
        }
        logger
            .targets
            .sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        logger
    }

    /// The level that applies to `target`: the longest directive naming it
    /// or a module path above it, else the default.
    fn level_for(&self, target: &str) -> LevelFilter {
        self.targets
            .iter()
            .find(|(t, _)| {
                target == t
                    || target
                        .strip_prefix(t.as_str())
                        .is_some_and(|rest| rest.starts_with("::"))
            })
            .map_or(self.default, |(_, l)| *l)
    }

    fn max_level(&self) -> LevelFilter {
        self.targets
            .iter()
            .map(|(_, l)| *l)
            .fold(self.default, |a, b| a.max(b))
    }
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level_for(metadata.target())
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let t = self.started.elapsed();
        let line = format!(
            "{}.{:03} {:<5} {}: {}\n",
            t.as_secs(),
            t.subsec_millis(),
            record.level(),
            record.target(),
            record.args()
        );
        // One write per record, so that lines of two threads do not mix.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Installs the stderr logger, configured by `RUST_LOG` (default `warn`).
/// A second call does nothing.
pub fn init_logger() {
    let logger = StderrLogger::parse(&std::env::var("RUST_LOG").unwrap_or_default());
    let max = logger.max_level();
    if log::set_logger(Box::leak(Box::new(logger))).is_ok() {
        log::set_max_level(max);
    }
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

/// Prints every connection announcement of the exchange, on a thread of
/// its own, as the announcement displays itself.
pub fn log_connections(ex: &Exchange) {
    let rx = ex.connections();
    thread::spawn(move || {
        for ann in rx.iter() {
            // `ACTIVE <process> (<address>)`, or for a link down or a failed
            // attempt `INACTIVE <process or -> (<address>): <reason>: <detail>`.
            say(ann.to_string());
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
