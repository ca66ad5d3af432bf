//! What the parent knows of each child, updated from its output lines
//! (see [`super::lines`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Instant;

use super::proc::Proc;
use crate::PUBLISHERS;

pub struct ExchangeState {
    /// None while it is dead.
    pub proc: Option<Proc>,
    /// `exchange@<pid>/` of the live one.
    pub ident: Option<String>,
    pub listening: Option<SocketAddr>,
    /// The clients (their idents) whose link it announced Active.
    pub links: BTreeSet<String>,
    pub ready_at: Option<Instant>,
}

pub struct PublisherState {
    pub proc: Proc,
    pub ident: String,
    /// `publisher@N/<process>`, from its `PUBLISHING as ...` line.
    pub binding: Option<String>,
    /// Subscriptions Requested minus Withdrawn.
    pub subscriptions: i64,
    /// Since the last kill, its subscriptions all went away.
    pub lost_all: bool,
    /// The exchange process its link is up with.
    pub link: Option<String>,
    pub ready_at: Option<Instant>,
}

pub struct SubscriberState {
    pub proc: Proc,
    pub ident: String,
    pub available: [bool; PUBLISHERS],
    /// Since the last kill, it heard every publisher withdrawn.
    pub lost_all: bool,
    /// Cached startup reports since it lost all publishers.
    pub startups: Vec<String>,
    /// The startup reports of the first connection, sorted.
    pub expected_startups: Option<Vec<String>>,
    /// Time reports per second stamp, since the last change of `available`.
    pub alive_by_second: BTreeMap<String, usize>,
    /// Two time reports with one stamp since the last change: both
    /// publishers are delivering.
    pub both_delivering: bool,
    pub link: Option<String>,
    pub reports: u64,
    pub startup_reports: u64,
    pub ready_at: Option<Instant>,
}

#[derive(Default)]
pub struct Calls {
    pub ok: u64,
    pub err: u64,
    pub err_kinds: BTreeMap<String, u64>,
    pub max_ms: u64,
    pub hung: Vec<String>,
}

pub struct CallerState {
    pub proc: Proc,
    pub ident: String,
    pub started: bool,
    pub last_line: Instant,
    pub calls: Calls,
    /// The exchange process its link is up with (from its own thread).
    pub link: Option<String>,
    /// Ok calls since `link` came up.
    pub ok_on_link: u64,
    pub done: Option<String>,
    /// Its stdin was closed: it is expected to stop.
    pub closing: bool,
    pub ready_at: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
pub enum Who {
    Exchange,
    Publisher(usize),
    Subscriber(usize),
    Caller(usize),
}

impl PublisherState {
    /// A publisher just started, before its first line.
    pub fn new(proc: Proc) -> PublisherState {
        PublisherState {
            ident: proc.ident("publisher"),
            proc,
            binding: None,
            subscriptions: 0,
            lost_all: true,
            link: None,
            ready_at: None,
        }
    }
}

impl SubscriberState {
    /// A subscriber just started, before its first line.
    pub fn new(proc: Proc) -> SubscriberState {
        SubscriberState {
            ident: proc.ident("subscriber"),
            proc,
            available: [false; PUBLISHERS],
            lost_all: true,
            startups: Vec::new(),
            expected_startups: None,
            alive_by_second: BTreeMap::new(),
            both_delivering: false,
            link: None,
            reports: 0,
            startup_reports: 0,
            ready_at: None,
        }
    }
}

impl CallerState {
    /// A caller just started, before its first line.
    pub fn new(proc: Proc) -> CallerState {
        CallerState {
            ident: proc.ident("caller"),
            proc,
            started: false,
            last_line: Instant::now(),
            calls: Calls::default(),
            link: None,
            ok_on_link: 0,
            done: None,
            closing: false,
            ready_at: None,
        }
    }
}
