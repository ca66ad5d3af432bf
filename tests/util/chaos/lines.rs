//! What each child's output lines mean: the world's handlers of the
//! exchange's, a publisher's, a subscriber's and a caller's lines, each
//! checking the line against what it knows, and the parsers they share.

use std::net::SocketAddr;
use std::time::Instant;

use super::state::Who;
use super::world::World;
use crate::{HUNG_AFTER, PUBLISHERS, SUBSCRIBERS};

/// `ACTIVE|INACTIVE <process> (<address>)`, an Inactive line followed by
/// `: <reason>: <detail>`: (active, process).
fn link_line(line: &str) -> Option<(bool, &str)> {
    let (active, rest) = if let Some(rest) = line.strip_prefix("ACTIVE ") {
        (true, rest)
    } else {
        (false, line.strip_prefix("INACTIVE ")?)
    };
    let (process, addr) = rest.split_once(' ')?;
    let closed = addr.ends_with(')') || (!active && addr.contains("): "));
    (addr.starts_with('(') && closed).then_some((active, process))
}

/// `HH:MM:SS UTC`, checked.
fn clock(line: &str, text: &str) -> String {
    let t = text
        .strip_suffix(" UTC")
        .unwrap_or_else(|| panic!("no HH:MM:SS UTC in {line:?}"));
    let parts: Vec<&str> = t.split(':').collect();
    assert!(
        parts.len() == 3
            && parts
                .iter()
                .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit())),
        "no HH:MM:SS UTC in {line:?}"
    );
    t.to_owned()
}

impl World {
    pub fn exchange_line(&mut self, line: &str) {
        let who = Who::Exchange;
        if let Some(addr) = line.strip_prefix("LISTENING ") {
            let addr: SocketAddr = addr
                .parse()
                .unwrap_or_else(|_| self.fail(who, &format!("bad address in {line:?}")));
            if addr.ip().to_string() != "127.0.0.1" || (self.port != 0 && addr.port() != self.port)
            {
                self.fail(
                    who,
                    &format!("expected 127.0.0.1:{}, got {line:?}", self.port),
                );
            }
            self.ex.listening = Some(addr);
        } else if let Some((active, process)) = link_line(line) {
            if !active {
                // Only a caller told to stop may go.
                let stopping = self
                    .callers
                    .iter()
                    .any(|c| c.closing && process.starts_with(&c.ident));
                if !stopping {
                    self.fail(
                        who,
                        &format!("a client's link dropped with the exchange up: {line:?}"),
                    );
                }
                return;
            }
            let Some(client) = self
                .client_idents()
                .into_iter()
                .find(|c| process.starts_with(c))
                .map(str::to_owned)
            else {
                self.fail(who, &format!("a link from an unknown process: {line:?}"));
            };
            if !self.ex.links.insert(client) {
                self.fail(who, &format!("a second link from one client: {line:?}"));
            }
        } else {
            self.fail(who, &format!("unexpected line {line:?}"));
        }
    }

    pub fn publisher_line(&mut self, i: usize, line: &str) {
        let who = Who::Publisher(i);
        let p = &mut self.pubs[i];
        if let Some((active, process)) = link_line(line) {
            if active {
                p.link = Some(process.to_owned());
            } else if process != "-" {
                if p.ready_at.is_some() {
                    self.fail(who, &format!("link lost with everything up: {line:?}"));
                }
                p.link = None;
            }
        } else if let Some(b) = line.strip_prefix("PUBLISHING as ") {
            if p.binding.is_some() || !b.starts_with("publisher@") {
                self.fail(who, &format!("unexpected {line:?}"));
            }
            p.binding = Some(b.to_owned());
        } else if let Some(rest) = line.strip_prefix("SUBSCRIPTION ") {
            let (requested, sub) = if let Some(s) = rest.strip_prefix("Requested ") {
                (true, s)
            } else if let Some(s) = rest.strip_prefix("Withdrawn ") {
                (false, s)
            } else {
                self.fail(who, &format!("unexpected {line:?}"));
            };
            let well_formed = sub
                .strip_suffix(" system.*")
                .is_some_and(|b| b.starts_with("subscriber@"));
            if !well_formed {
                self.fail(who, &format!("not a subscriber's system.* in {line:?}"));
            }
            if requested {
                p.subscriptions += 1;
                if p.subscriptions > SUBSCRIBERS as i64 {
                    self.fail(who, "more subscriptions than subscribers");
                }
            } else {
                if p.ready_at.is_some() {
                    self.fail(who, "a subscription withdrawn with everything up");
                }
                p.subscriptions -= 1;
                if p.subscriptions < 0 {
                    self.fail(who, "a subscription withdrawn twice");
                }
                if p.subscriptions == 0 {
                    p.lost_all = true;
                }
            }
        } else {
            self.fail(who, &format!("unexpected line {line:?}"));
        }
    }

    /// The publisher of process `process` (and display `binding`).
    fn publisher_of(&self, who: Who, binding: &str, process: &str, line: &str) -> usize {
        let i = self
            .pubs
            .iter()
            .position(|p| process.starts_with(&p.ident))
            .unwrap_or_else(|| self.fail(who, &format!("no such publisher in {line:?}")));
        if self.pubs[i].binding.as_deref() != Some(binding) {
            self.fail(
                who,
                &format!(
                    "{line:?}: that publisher is {:?}",
                    self.pubs[i].binding.as_deref()
                ),
            );
        }
        i
    }

    /// The stamp of `<publisher binding> <phrase> <HH:MM:SS UTC>`.
    fn stamp(&self, who: Who, line: &str, phrase: &str) -> Option<String> {
        let (binding, t) = line.split_once(phrase)?;
        if !self
            .pubs
            .iter()
            .any(|p| p.binding.as_deref() == Some(binding))
        {
            self.fail(
                who,
                &format!("a report from an unknown publisher: {line:?}"),
            );
        }
        Some(clock(line, t))
    }

    pub fn subscriber_line(&mut self, i: usize, line: &str) {
        let who = Who::Subscriber(i);
        if let Some((active, process)) = link_line(line) {
            let s = &mut self.subs[i];
            if active {
                s.link = Some(process.to_owned());
            } else if process != "-" {
                if s.ready_at.is_some() {
                    self.fail(who, &format!("link lost with everything up: {line:?}"));
                }
                s.link = None;
            }
        } else if let Some(rest) = line
            .strip_prefix("AVAILABLE ")
            .or_else(|| line.strip_prefix("WITHDRAWN "))
        {
            let available = line.starts_with("AVAILABLE ");
            let (binding, process) = rest
                .split_once(' ')
                .unwrap_or_else(|| self.fail(who, &format!("unexpected {line:?}")));
            let k = self.publisher_of(who, binding, process, line);
            let s = &mut self.subs[i];
            if s.available[k] == available {
                self.fail(who, &format!("{line:?} twice in a row"));
            }
            if !available && s.ready_at.is_some() {
                self.fail(who, "a publisher withdrawn with everything up");
            }
            s.available[k] = available;
            s.alive_by_second.clear();
            s.both_delivering = false;
            if s.available.iter().all(|a| !a) {
                s.lost_all = true;
            }
        } else if let Some(t) = self.stamp(who, line, " originally started at ") {
            let s = &mut self.subs[i];
            s.startup_reports += 1;
            if !s.lost_all {
                self.fail(who, "a cached report again without a reconnection");
            }
            s.startups.push(t);
            if s.startups.len() > PUBLISHERS {
                self.fail(who, "more cached startup reports than publishers");
            }
        } else if let Some(t) = self.stamp(who, line, " was still alive at ") {
            let s = &mut self.subs[i];
            s.reports += 1;
            if s.available.iter().all(|a| !a) {
                self.fail(who, "a time report with no publisher available");
            }
            if s.available.iter().all(|a| *a) {
                let n = s.alive_by_second.entry(t).or_default();
                *n += 1;
                if *n > PUBLISHERS {
                    self.fail(
                        who,
                        "more time reports with one stamp than publishers: a duplicate",
                    );
                }
                if *n == PUBLISHERS {
                    s.both_delivering = true;
                }
            }
        } else {
            self.fail(who, &format!("unexpected line {line:?}"));
        }
    }

    pub fn caller_line(&mut self, i: usize, at: Instant, line: &str) {
        let who = Who::Caller(i);
        let all_up = self.all_up;
        let c = &mut self.callers[i];
        c.last_line = at;
        // The harness may print `test caller_role ... ` before the test.
        let line = line.strip_prefix("test caller_role ... ").unwrap_or(line);
        if line == "CALLER START" {
            c.started = true;
        } else if line == "IDLE" {
        } else if let Some(p) = line.strip_prefix("LINK ACTIVE ") {
            c.link = Some(p.to_owned());
            c.ok_on_link = 0;
        } else if line.starts_with("LINK INACTIVE ") {
            if c.ready_at.is_some() {
                self.fail(who, &format!("link lost with everything up: {line:?}"));
            }
            c.link = None;
            c.ok_on_link = 0;
        } else if let Some(rest) = line.strip_prefix("CALL ") {
            let (ok, rest) = if let Some(r) = rest.strip_prefix("OK ") {
                (true, r)
            } else if let Some(r) = rest.strip_prefix("ERR ") {
                (false, r)
            } else {
                self.fail(who, &format!("unexpected {line:?}"));
            };
            let (ms, error) = rest.split_once(' ').unwrap_or((rest, ""));
            let Ok(ms) = ms.parse::<u64>() else {
                self.fail(who, &format!("no duration in {line:?}"));
            };
            let c = &mut self.callers[i];
            c.calls.max_ms = c.calls.max_ms.max(ms);
            if ms > HUNG_AFTER.as_millis() as u64 {
                c.calls.hung.push(line.to_owned());
            }
            if ok {
                if !error.is_empty() {
                    self.fail(who, &format!("unexpected {line:?}"));
                }
                c.calls.ok += 1;
                if c.link.is_some() {
                    c.ok_on_link += 1;
                }
            } else {
                c.calls.err += 1;
                let kind = error.split(':').next().unwrap_or("").to_owned();
                *c.calls.err_kinds.entry(kind.clone()).or_default() += 1;
                if kind != "service unavailable" && kind != "request timed out" {
                    self.fail(who, &format!("not a clear error: {line:?}"));
                }
                if all_up {
                    self.fail(who, &format!("a call failed with everything up: {line:?}"));
                }
            }
        } else if line.starts_with("CALLER DONE ") {
            if !c.closing {
                self.fail(who, "the caller stopped before its stdin closed");
            }
            c.done = Some(line.to_owned());
        }
        // Anything else is the test harness's own output.
    }
}
