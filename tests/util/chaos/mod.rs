//! The machinery of `tests/chaos.rs`:
//! - [`caller`]: the caller role, run in a child process;
//! - [`proc`]: a spawned child with its output lines;
//! - [`state`]: what the parent knows of each child;
//! - [`world`]: all the children together: pumping their output, the
//!   kills and restarts, recovery;
//! - [`lines`]: what each child's output lines mean to the world;
//! - [`rng`]: the seeded PRNG of the kill and restart moments;
//! - [`summary`]: the summary printed at the end.
//!
//! Included only by `tests/chaos.rs`, as
//! `#[path = "util/chaos/mod.rs"] mod chaos_util;`, not declared in
//! `tests/util/mod.rs`: that file is compiled into every test binary, and
//! this is of use to one. The test's parameters (counts, timeouts, bounds,
//! environment variables) stay in `tests/chaos.rs`; these modules read
//! them as `crate::NAME`.

pub mod caller;
pub mod lines;
pub mod proc;
pub mod rng;
pub mod state;
pub mod summary;
pub mod world;
