//! All the children of the chaos test together: the exchange (killed and
//! restarted), the publishers, subscribers and callers. The world pumps
//! their output lines one at a time (see [`super::lines`] for what each
//! line means), tells when everything recovered, and fails the test with
//! the offending child's recent output.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select};

use super::proc::Proc;
use super::state::{CallerState, ExchangeState, PublisherState, SubscriberState, Who};
use crate::util::child::Out;
use crate::util::WAIT;
use crate::{CALL_TIMEOUT, PUBLISHERS, SILENT_AFTER, SUBSCRIBERS};

/// The parent's model of every child, and the exchange's port.
pub struct World {
    pub port: u16,
    pub ex: ExchangeState,
    pub dead: Vec<Proc>,
    pub pubs: Vec<PublisherState>,
    pub subs: Vec<SubscriberState>,
    pub callers: Vec<CallerState>,
    /// Everything recovered since the last restart, and not killed since.
    pub all_up: bool,
}

impl World {
    /// No child yet; the exchange's port is chosen by the OS when it
    /// first starts.
    pub fn new() -> World {
        World {
            port: 0,
            ex: ExchangeState {
                proc: None,
                ident: None,
                listening: None,
                links: BTreeSet::new(),
                ready_at: None,
            },
            dead: Vec::new(),
            pubs: Vec::new(),
            subs: Vec::new(),
            callers: Vec::new(),
            all_up: false,
        }
    }

    fn proc(&self, who: Who) -> Option<&Proc> {
        match who {
            Who::Exchange => self.ex.proc.as_ref(),
            Who::Publisher(i) => Some(&self.pubs[i].proc),
            Who::Subscriber(i) => Some(&self.subs[i].proc),
            Who::Caller(i) => Some(&self.callers[i].proc),
        }
    }

    pub fn proc_mut(&mut self, who: Who) -> Option<&mut Proc> {
        match who {
            Who::Exchange => self.ex.proc.as_mut(),
            Who::Publisher(i) => Some(&mut self.pubs[i].proc),
            Who::Subscriber(i) => Some(&mut self.subs[i].proc),
            Who::Caller(i) => Some(&mut self.callers[i].proc),
        }
    }

    pub fn everyone(&self) -> Vec<Who> {
        let mut all = vec![Who::Exchange];
        all.extend((0..self.pubs.len()).map(Who::Publisher));
        all.extend((0..self.subs.len()).map(Who::Subscriber));
        all.extend((0..self.callers.len()).map(Who::Caller));
        all
    }

    /// Every client's process identity prefix.
    pub fn client_idents(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.pubs.iter().map(|p| p.ident.as_str()).collect();
        v.extend(self.subs.iter().map(|s| s.ident.as_str()));
        v.extend(self.callers.iter().map(|c| c.ident.as_str()));
        v
    }

    /// Fails the test, with `who`'s recent output.
    pub fn fail(&self, who: Who, what: &str) -> ! {
        let tail = self
            .proc(who)
            .map(|p| p.tail(40))
            .unwrap_or_else(|| "(dead)".to_owned());
        panic!("{what}\n{tail}\n{}", self.state());
    }

    /// One line per child: what it is waiting for.
    fn state(&self) -> String {
        let e = &self.ex;
        let mut s = format!(
            "state: exchange {:?} listening {:?}, links {}/{} ready {}\n",
            e.ident,
            e.listening,
            e.links.len(),
            self.client_idents().len(),
            e.ready_at.is_some()
        );
        for p in &self.pubs {
            s += &format!(
                "  {}: binding {:?} subscriptions {} lost_all {} link {:?} ready {}\n",
                p.proc.name,
                p.binding,
                p.subscriptions,
                p.lost_all,
                p.link,
                p.ready_at.is_some()
            );
        }
        for b in &self.subs {
            s += &format!(
                "  {}: available {:?} lost_all {} startups {:?} (expected {:?}) \
                 both delivering {} link {:?} ready {}\n",
                b.proc.name,
                b.available,
                b.lost_all,
                b.startups,
                b.expected_startups,
                b.both_delivering,
                b.link,
                b.ready_at.is_some()
            );
        }
        for c in &self.callers {
            s += &format!(
                "  {}: started {} link {:?} ok on link {} ok {} err {} ready {}\n",
                c.proc.name,
                c.started,
                c.link,
                c.ok_on_link,
                c.calls.ok,
                c.calls.err,
                c.ready_at.is_some()
            );
        }
        s
    }

    /// Handles at most one line (or end of output) from any child, waiting
    /// until `until` at most; then checks that no caller is silent.
    fn pump(&mut self, until: Instant) {
        let mut rxs: Vec<(Who, Receiver<Out>)> = Vec::new();
        for who in self.everyone() {
            if let Some(p) = self.proc(who) {
                if !p.eof {
                    rxs.push((who, p.out.clone()));
                }
            }
        }
        let wake = until.min(Instant::now() + Duration::from_millis(200));
        let mut sel = Select::new();
        for (_, rx) in &rxs {
            sel.recv(rx);
        }
        if let Ok(op) = sel.select_deadline(wake) {
            let (who, rx) = &rxs[op.index()];
            let out = op.recv(rx).unwrap_or(Out::Eof);
            self.handle(*who, out);
        }
        self.check_silence();
    }

    /// Handles lines for `d` (the chaos itself: events go on meanwhile).
    pub fn pump_for(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.pump(until);
        }
    }

    /// Handles lines until `cond` holds; fails after `timeout`.
    pub fn wait_until(&mut self, what: &str, timeout: Duration, cond: impl Fn(&World) -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond(self) {
            if Instant::now() >= deadline {
                let tails: Vec<String> = self
                    .everyone()
                    .into_iter()
                    .filter_map(|w| self.proc(w).map(|p| p.tail(12)))
                    .collect();
                panic!(
                    "no {what} within {timeout:?}\n{}\n{}",
                    self.state(),
                    tails.join("\n")
                );
            }
            self.pump(deadline);
        }
    }

    fn check_silence(&self) {
        for (i, c) in self.callers.iter().enumerate() {
            if c.started && c.done.is_none() && c.last_line.elapsed() > SILENT_AFTER {
                self.fail(
                    Who::Caller(i),
                    &format!(
                        "HUNG: {} printed nothing for {:?} (a call takes {CALL_TIMEOUT:?} at most)",
                        c.proc.name,
                        c.last_line.elapsed()
                    ),
                );
            }
        }
    }

    fn handle(&mut self, who: Who, out: Out) {
        let (at, line) = match out {
            Out::Line(at, line) => (at, line),
            Out::Eof => {
                let p = self.proc_mut(who).expect("a live child");
                p.eof = true;
                let status = p.child.try_wait();
                if let Who::Caller(i) = who {
                    if self.callers[i].closing {
                        return;
                    }
                }
                self.fail(
                    who,
                    &format!(
                        "a child exited on its own (only the killed exchange may): {status:?}"
                    ),
                );
            }
        };
        self.proc_mut(who)
            .expect("a live child")
            .seen
            .push(line.clone());
        match who {
            Who::Exchange => self.exchange_line(&line),
            Who::Publisher(i) => self.publisher_line(i, &line),
            Who::Subscriber(i) => self.subscriber_line(i, &line),
            Who::Caller(i) => self.caller_line(i, at, &line),
        }
        self.check_ready(who, at);
    }

    fn on_current_exchange(&self, link: &Option<String>) -> bool {
        match (&self.ex.ident, link) {
            (Some(e), Some(l)) => l.starts_with(e.as_str()),
            _ => false,
        }
    }

    /// Marks `who` recovered when everything it should see since the last
    /// restart is there.
    fn check_ready(&mut self, who: Who, at: Instant) {
        let ready = match who {
            Who::Exchange => {
                self.ex.listening.is_some() && self.ex.links.len() == self.client_idents().len()
            }
            Who::Publisher(i) => {
                let p = &self.pubs[i];
                p.binding.is_some()
                    && p.lost_all
                    && p.subscriptions == SUBSCRIBERS as i64
                    && self.on_current_exchange(&p.link)
            }
            Who::Subscriber(i) => {
                let s = &self.subs[i];
                let mut got = s.startups.clone();
                got.sort();
                let startups_back = match &s.expected_startups {
                    Some(expected) => &got == expected,
                    None => got.len() == PUBLISHERS,
                };
                s.lost_all
                    && s.available.iter().all(|a| *a)
                    && startups_back
                    && s.both_delivering
                    && self.on_current_exchange(&s.link)
            }
            Who::Caller(i) => {
                let c = &self.callers[i];
                c.ok_on_link > 0 && self.on_current_exchange(&c.link)
            }
        };
        if !ready {
            return;
        }
        match who {
            Who::Exchange => {
                self.ex.ready_at.get_or_insert(at);
            }
            Who::Publisher(i) => {
                self.pubs[i].ready_at.get_or_insert(at);
            }
            Who::Subscriber(i) => {
                let s = &mut self.subs[i];
                if s.expected_startups.is_none() {
                    let mut got = s.startups.clone();
                    got.sort();
                    s.expected_startups = Some(got);
                }
                s.ready_at.get_or_insert(at);
            }
            Who::Caller(i) => {
                self.callers[i].ready_at.get_or_insert(at);
            }
        }
    }

    fn recovered(&self) -> bool {
        self.ex.ready_at.is_some()
            && self.pubs.iter().all(|p| p.ready_at.is_some())
            && self.subs.iter().all(|s| s.ready_at.is_some())
            && self.callers.iter().all(|c| c.ready_at.is_some())
    }

    /// Starts an exchange on `self.port` (0: the OS chooses) and waits for
    /// its `LISTENING` line.
    pub fn start_exchange(&mut self) {
        assert!(self.ex.proc.is_none());
        let p = Proc::example("exchange", self.port);
        self.ex.ident = Some(p.ident("exchange"));
        self.ex.proc = Some(p);
        self.ex.listening = None;
        self.ex.links.clear();
        self.ex.ready_at = None;
        self.wait_until("LISTENING from the exchange", WAIT, |w| {
            w.ex.listening.is_some()
        });
        self.port = self.ex.listening.expect("listening").port();
    }

    /// SIGKILL the exchange; from now on everything must recover again.
    pub fn kill_exchange(&mut self) {
        let mut p = self.ex.proc.take().expect("a live exchange");
        p.sigkill();
        self.dead.push(p);
        self.all_up = false;
        self.ex.ident = None;
        self.ex.listening = None;
        self.ex.links.clear();
        self.ex.ready_at = None;
        for p in &mut self.pubs {
            p.lost_all = false;
            p.ready_at = None;
        }
        for s in &mut self.subs {
            s.lost_all = false;
            s.startups.clear();
            s.ready_at = None;
        }
        for c in &mut self.callers {
            c.ready_at = None;
        }
    }

    /// Waits until everything recovered; the times since `since`.
    pub fn wait_recovered(&mut self, what: &str, since: Instant) -> [Duration; 5] {
        self.wait_until(what, WAIT, World::recovered);
        self.all_up = true;
        let after = |t: Option<Instant>| t.expect("ready").saturating_duration_since(since);
        let links = after(self.ex.ready_at);
        let pubs = self.pubs.iter().map(|p| after(p.ready_at)).max().unwrap();
        let subs = self.subs.iter().map(|s| after(s.ready_at)).max().unwrap();
        let callers = self
            .callers
            .iter()
            .map(|c| after(c.ready_at))
            .max()
            .unwrap();
        let all = links.max(pubs).max(subs).max(callers);
        [links, pubs, subs, callers, all]
    }
}
