//! The command line: `--name value` pairs and flags ([`Args`]), and the
//! run sizes, full or `--quick` ([`Sizes`]).

use std::time::Duration;

/// Command-line arguments: `--name value` pairs and flags.
pub(crate) struct Args(pub(crate) Vec<String>);

impl Args {
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        let i = self.0.iter().position(|a| a == name)?;
        self.0.get(i + 1).map(String::as_str)
    }

    pub(crate) fn num(&self, name: &str, default: u64) -> u64 {
        self.get(name)
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    }

    pub(crate) fn flag(&self, name: &str) -> bool {
        self.0.iter().any(|a| a == name)
    }
}

/// Run sizes: full or `--quick`.
pub(crate) struct Sizes {
    quick: bool,
    pub(crate) warmup: u64,
    pub(crate) calls: u64,
    pub(crate) stream: u64,
    pub(crate) w2: u64,
    pub(crate) w3: u64,
    pub(crate) w4_per_thread: u64,
    pub(crate) casts: u64,
}

impl Sizes {
    pub(crate) fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                quick,
                warmup: 500,
                calls: 5_000,
                stream: 1_000_000,
                w2: 100_000,
                w3: 20_000,
                w4_per_thread: 1_000,
                casts: 10_000,
            }
        } else {
            Sizes {
                quick,
                warmup: 2_000,
                calls: 20_000,
                stream: 5_000_000,
                w2: 1_000_000,
                w3: 200_000,
                w4_per_thread: 5_000,
                casts: 50_000,
            }
        }
    }

    /// Whether this is a quick run (`--quick`).
    pub(crate) fn quick(&self) -> bool {
        self.quick
    }

    /// How long a measuring child may take to report.
    pub(crate) fn budget(&self) -> Duration {
        Duration::from_secs(if self.quick { 20 } else { 90 })
    }
}
