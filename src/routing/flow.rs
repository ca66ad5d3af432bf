//! Flow control of reports: nothing is dropped unless a subscription asks
//! for it, and a slow subscriber pushes back on its publishers alone.
//!
//! - **Local queues.** A report that finds its subscriber's queue full
//!   waits, in order, in that subscriber's `waiting` list here, and what it
//!   came from is held (see below) until it is on the queue. The thread
//!   that takes an event off a queue wakes the dispatcher once half of it
//!   is free (`Flow::wants_room`); the dispatcher also looks by itself
//!   every [`RETRY`] while anything waits. A subscriber that takes nothing
//!   for the stall limit is *stalled*: what waits for it is dropped, and
//!   so is what comes until half its queue is free; it is then told how
//!   many ([`Event::Dropped`]). A subscription with a drop policy
//!   ([`Overflow`]) never holds anything: its reports wait up to its bound,
//!   then the newest or the oldest is dropped, and told.
//! - **Links: credit.** Each side of a link may send [`WINDOW`] bytes of
//!   report frames that the other has not yet given back as credit
//!   (`Message::Credit`). A receiver gives a frame's bytes back once the
//!   report is on every local queue it goes to and relayed on every link
//!   it goes on; until then it holds them. A sender whose credit is used
//!   up keeps the link's reports, in order, in its `backlog` here. So a
//!   link never carries more undelivered reports than the window, reading
//!   it never stops for reports (calls on it go on), and a full queue at
//!   the end of a chain of relays reaches back to the publisher: each hop
//!   holds the credit of the hop before.
//! - **Publishers.** A local publisher's report that waits somewhere is a
//!   hold on its `Flow`; `publish_report` waits while as many as its
//!   queue's capacity are held, failing after the publish timeout.
//! - **Order.** A withdrawal for a peer waits behind the report frames in
//!   its backlog (`put_behind_reports`), and any other event for a local
//!   subscriber behind the reports that wait for room on its queue
//!   (`event_waits`): a publisher's subscribers hear of its withdrawal
//!   after its last reports, and no hop refuses those reports as in the
//!   name of a publisher it no longer knows.
//!
//! What waits is bounded: a link's backlog by the credit of the links and
//! the publishers it came from, a subscriber's by the same or its policy's
//! bound. A frame beyond the credit a peer was given is refused; a client
//! that keeps a server's reports waiting for credit past the
//! slow-consumer timeout is dropped as a slow consumer.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::peers::PeerId;
use super::{Class, Core, Refused};
use crate::connection::InactiveReason as Why;
use crate::event::{DropReason, Dropped, Event, Overflow, Report};
use crate::ids::{AgentId, AgentKey};
use crate::mailbox::inbox::Flow;
use crate::stats::Counters;
use crate::wire::Message;

/// Bytes of report frames a link may carry that its receiver has not yet
/// given back: enough to keep a stream of small reports going between two
/// turns of the receiving dispatcher, few enough that what waits stays
/// small.
pub(crate) const WINDOW: i64 = 256 * 1024;

/// What a report costs of a link's credit besides its frame's bytes: a
/// frame of `n` reports costs its body's length and `n` times this. A
/// batch carries reports in little more than their payloads, so without it
/// a window of empty reports would be a quarter million reports waiting at
/// the receiver; with it, at most `WINDOW / REPORT_COST`.
pub(crate) const REPORT_COST: i64 = 16;

/// The credit a report frame of `body` bytes carrying `reports` costs.
pub(crate) fn report_cost(body: usize, reports: usize) -> i64 {
    (body as i64).saturating_add((reports as i64).saturating_mul(REPORT_COST))
}

/// A receiver gives credit back once it owes this much (and at once when
/// nothing of the link's is held any more).
const RETURN_AT: i64 = WINDOW / 4;

/// While reports wait for a queue, the dispatcher looks at it at least
/// this often (a thread that takes events through `Service::receiver`
/// does not wake it).
pub(crate) const RETRY: Duration = Duration::from_millis(1);

/// How often a stalled subscriber's queue is looked at (its reader, if it
/// takes events through `Service::recv`, wakes the dispatcher sooner).
const STALLED_RETRY: Duration = Duration::from_millis(50);

/// A hold: one report that waits somewhere, and what to give back once it
/// is delivered everywhere.
pub(crate) type HoldId = u32;

/// What a held report came from.
pub(crate) enum Source {
    /// A frame from a peer: its bytes of credit.
    Link { peer: PeerId, cost: u32 },
    /// A local publisher.
    Publisher(Arc<Flow>),
}

struct Slot {
    remaining: u32,
    source: Option<Source>,
}

/// The holds, by id.
#[derive(Default)]
pub(crate) struct Holds {
    slots: Vec<Slot>,
    free: Vec<HoldId>,
}

impl Holds {
    fn open(&mut self, source: Source) -> HoldId {
        let slot = Slot {
            remaining: 0,
            source: Some(source),
        };
        match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                id
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as HoldId
            }
        }
    }

    /// One place where the report waits is done with; what it came from,
    /// once none is left.
    fn release(&mut self, id: HoldId) -> Option<Source> {
        let slot = self.slots.get_mut(id as usize)?;
        slot.remaining = slot.remaining.saturating_sub(1);
        if slot.remaining > 0 {
            return None;
        }
        self.free.push(id);
        slot.source.take()
    }
}

/// Where one report came from, as it is delivered: its hold is opened the
/// first time the report has to wait somewhere.
pub(crate) struct Holder<'f> {
    source: Option<Source>,
    /// A local publisher's flow, taken (its reference count) only if the
    /// report waits: a report that goes at once touches no count shared
    /// with the publishing thread.
    publisher: Option<&'f Arc<Flow>>,
    id: Option<HoldId>,
}

impl<'f> Holder<'f> {
    /// The reports of a peer's frame of `cost` credit.
    pub(crate) fn link(peer: PeerId, cost: i64) -> Holder<'f> {
        let cost = u32::try_from(cost).unwrap_or(u32::MAX);
        Holder {
            source: Some(Source::Link { peer, cost }),
            publisher: None,
            id: None,
        }
    }

    /// A report of a local publisher.
    pub(crate) fn publisher(flow: &'f Arc<Flow>) -> Holder<'f> {
        Holder {
            source: None,
            publisher: Some(flow),
            id: None,
        }
    }

    /// A report nobody waits for (a cached one, sent to a new subscriber).
    pub(crate) fn none() -> Holder<'f> {
        Holder {
            source: None,
            publisher: None,
            id: None,
        }
    }

    /// One more place where the report waits.
    fn take(&mut self, holds: &mut Holds) -> Option<HoldId> {
        if let Some(id) = self.id {
            holds.slots[id as usize].remaining += 1;
            return Some(id);
        }
        let source = match (self.source.take(), self.publisher.take()) {
            (Some(source), _) => source,
            (None, Some(flow)) => {
                flow.hold();
                Source::Publisher(flow.clone())
            }
            (None, None) => return None,
        };
        let id = holds.open(source);
        holds.slots[id as usize].remaining = 1;
        self.id = Some(id);
        Some(id)
    }

    /// Whether the report waits anywhere.
    pub(crate) fn held(&self) -> bool {
        self.id.is_some()
    }
}

/// A report waiting for room on a local queue, or an event that came
/// after reports that wait (and so waits behind them: a subscriber hears
/// of its publisher's withdrawal after its last reports).
pub(crate) struct Waiting {
    item: Waits,
    hold: Option<HoldId>,
}

/// What waits: a report, or another event (boxed: most are reports, and
/// a report is small).
enum Waits {
    Report(Report),
    Event(Box<Event>),
}

impl Waiting {
    fn report(report: Report, hold: Option<HoldId>) -> Waiting {
        Waiting {
            item: Waits::Report(report),
            hold,
        }
    }

    /// A report no publisher waits for (a drop policy's: it may be dropped).
    fn droppable(&self) -> bool {
        self.hold.is_none() && matches!(self.item, Waits::Report(_))
    }
}

/// What waits for one local subscriber.
#[derive(Default)]
pub(crate) struct LocalFlow {
    waiting: VecDeque<Waiting>,
    /// Since when it has taken nothing while reports waited.
    idle_since: Option<Instant>,
    /// The queue's length when last looked at.
    last_len: usize,
    /// Stalled: what comes for it is dropped until half its queue is free.
    stalled: bool,
    /// Drops not yet told to it, by reason.
    dropped_policy: u64,
    dropped_stalled: u64,
    /// How many of `waiting` are events other than reports (at most the
    /// queue's reserve, as on the queue itself).
    events: usize,
}

impl LocalFlow {
    fn untold(&self) -> bool {
        self.dropped_policy > 0 || self.dropped_stalled > 0
    }
}

/// A report frame waiting for a link's credit.
pub(crate) struct Backlogged {
    frame: Frame,
    /// What it costs of the credit (see [`report_cost`]).
    cost: i64,
    /// The holds of its reports: the first's, then the others'.
    hold: Option<HoldId>,
    more: Vec<HoldId>,
}

/// The bytes of a backlogged frame.
enum Frame {
    /// A body shared by the backlogs of every peer it waits for.
    Shared(Arc<[u8]>),
    /// A frame (prefix included) of this peer's alone, that reports of a
    /// local publisher are appended to while it is the backlog's last
    /// (`PeerFlow::batch`).
    Own(Vec<u8>),
    /// Frames (prefixes included) that are not reports, kept in order
    /// behind the reports before them (`Core::put_behind_reports`): they
    /// cost no credit and go as soon as those reports have gone.
    Control(Vec<u8>),
}

/// A peer's side of the credit.
pub(crate) struct PeerFlow {
    /// What this side may still send.
    credit: i64,
    /// What the peer may still send here.
    avail: i64,
    /// Delivered here and not yet given back.
    owed: i64,
    backlog: VecDeque<Backlogged>,
    /// The frame of the backlog's last entry, if reports may be appended
    /// to it.
    batch: Option<crate::wire::Batch>,
    /// Since when its reports have waited for credit.
    starved_since: Option<Instant>,
}

impl Default for PeerFlow {
    fn default() -> Self {
        PeerFlow {
            credit: WINDOW,
            avail: WINDOW,
            owed: 0,
            backlog: VecDeque::new(),
            batch: None,
            starved_since: None,
        }
    }
}

/// Whether a report frame may go to this peer now: it has credit, and
/// nothing of its waits before it.
fn ready_to(p: Option<&super::peers::Peer>) -> bool {
    p.is_some_and(|p| !p.closing && p.flow.backlog.is_empty() && p.flow.credit > 0)
}

impl Core {
    // ----- holds -----

    fn release(&mut self, hold: Option<HoldId>) {
        match hold.and_then(|id| self.holds.release(id)) {
            Some(Source::Link { peer, cost }) => self.give_back(peer, i64::from(cost)),
            Some(Source::Publisher(flow)) => flow.release(flow.low),
            None => {}
        }
    }

    /// Ends a report's delivery: if it waited nowhere, what it came from is
    /// given back at once.
    pub(crate) fn delivered(&mut self, holder: Holder<'_>) {
        if holder.held() {
            return; // given back as the last place it waits lets it go
        }
        if let Some(Source::Link { peer, cost }) = holder.source {
            self.give_back(peer, i64::from(cost));
        }
    }

    // ----- local queues -----

    /// Puts a report on a local subscriber's queue, or has it wait there.
    pub(crate) fn report_to_local(&mut self, agent: AgentId, report: Report, holder: &mut Holder) {
        let Some(local) = self.locals.get(&agent) else {
            return;
        };
        let report = if local.flow.waiting.is_empty() && !local.flow.untold() {
            match self.try_deliver(agent, Event::Report(report), Class::Data) {
                Ok(()) => {
                    Counters::bump(&self.link.counters.reports_delivered);
                    return;
                }
                Err(Refused::Gone(_)) => return,
                Err(Refused::Full(Event::Report(r))) => r,
                Err(Refused::Full(_)) => return,
            }
        } else {
            report
        };
        self.report_waits(agent, report, holder);
    }

    /// An event other than a report for a local agent with reports waiting:
    /// it waits behind them (`Ok`), as on its queue, as many such events
    /// as the queue's reserve holds; given back if nothing waits (or the
    /// agent is gone, or that many wait already), to go on the queue at
    /// once.
    pub(crate) fn event_waits(&mut self, agent: AgentId, event: Event) -> Result<(), Event> {
        let Some(local) = self.locals.get_mut(&agent) else {
            return Err(event);
        };
        let flow = &mut local.flow;
        if flow.waiting.is_empty() || flow.events >= local.inbox.capacity {
            return Err(event);
        }
        flow.events += 1;
        flow.waiting.push_back(Waiting {
            item: Waits::Event(Box::new(event)),
            hold: None,
        });
        Ok(())
    }

    /// A report that found its subscriber's queue full (or others waiting).
    fn report_waits(&mut self, agent: AgentId, report: Report, holder: &mut Holder) {
        let Some(local) = self.locals.get(&agent) else {
            return;
        };
        let policy = self.reports.overflow_of(
            local.binding.key(),
            report.publisher().key(),
            report.publisher().service_name(),
            report.subject(),
        );
        let Some(local) = self.locals.get_mut(&agent) else {
            return;
        };
        let flow = &mut local.flow;
        let counters = &self.link.counters;
        match policy {
            Overflow::Wait if flow.stalled => {
                flow.dropped_stalled += 1;
                Counters::bump(&counters.reports_dropped);
            }
            Overflow::Wait => {
                let hold = holder.take(&mut self.holds);
                local.flow.waiting.push_back(Waiting::report(report, hold));
            }
            Overflow::DropNewest(bound) => {
                if flow.waiting.len() < bound {
                    flow.waiting.push_back(Waiting::report(report, None));
                } else {
                    flow.dropped_policy += 1;
                    Counters::bump(&counters.reports_dropped);
                }
            }
            Overflow::DropOldest(bound) => {
                flow.waiting.push_back(Waiting::report(report, None));
                if flow.waiting.len() > bound {
                    // The oldest that no publisher waits for goes.
                    if let Some(i) = flow.waiting.iter().position(Waiting::droppable) {
                        flow.waiting.remove(i);
                        flow.dropped_policy += 1;
                        Counters::bump(&counters.reports_dropped);
                    }
                }
            }
        }
        self.watch(agent);
    }

    /// Looks after a subscriber that has reports waiting or drops to tell.
    fn watch(&mut self, agent: AgentId) {
        let Some(local) = self.locals.get_mut(&agent) else {
            return;
        };
        if local.flow.idle_since.is_none() {
            local.flow.idle_since = Some(Instant::now());
            local.flow.last_len = local.inbox.events.len();
        }
        local
            .inbox
            .flow
            .wants_room
            .store(true, std::sync::atomic::Ordering::Release);
        if !self.watched.contains(&agent) {
            self.watched.push(agent);
        }
    }

    /// Moves what waits for local subscribers onto their queues as far as
    /// room allows, tells drops, and finds the stalled.
    fn pump_locals(&mut self, now: Instant) {
        let stall = self.link.config.stall_limit;
        let mut i = 0;
        while i < self.watched.len() {
            let agent = self.watched[i];
            if self.pump_local(agent, now, stall) {
                i += 1;
            } else {
                self.watched.swap_remove(i);
            }
        }
    }

    /// One subscriber's turn; false once nothing waits for it.
    fn pump_local(&mut self, agent: AgentId, now: Instant, stall: Duration) -> bool {
        let Some(local) = self.locals.get_mut(&agent) else {
            return false;
        };
        let len = local.inbox.events.len();
        let half = local.inbox.capacity / 2;
        if len < local.flow.last_len || local.flow.waiting.is_empty() {
            local.flow.idle_since = Some(now); // it took something
        }
        if local.flow.stalled && len <= half {
            local.flow.stalled = false;
        }
        // Drops are told first, before the reports that come after them.
        if local.flow.untold() && !local.flow.stalled {
            for (count, reason) in [
                (local.flow.dropped_stalled, DropReason::Stalled),
                (local.flow.dropped_policy, DropReason::Policy),
            ] {
                if count == 0 {
                    continue;
                }
                let event = Event::Dropped(Dropped { count, reason });
                if self.try_deliver(agent, event, Class::Control).is_err() {
                    break;
                }
                let Some(local) = self.locals.get_mut(&agent) else {
                    return false;
                };
                match reason {
                    DropReason::Stalled => local.flow.dropped_stalled = 0,
                    DropReason::Policy => local.flow.dropped_policy = 0,
                }
            }
        }
        loop {
            let Some(local) = self.locals.get_mut(&agent) else {
                return false;
            };
            if local.flow.untold() {
                break;
            }
            let Some(w) = local.flow.waiting.pop_front() else {
                break;
            };
            let (event, class) = match w.item {
                Waits::Report(report) => (Event::Report(report), Class::Data),
                Waits::Event(event) => (*event, Class::Control),
            };
            match self.try_deliver(agent, event, class) {
                Ok(()) if class == Class::Data => {
                    Counters::bump(&self.link.counters.reports_delivered);
                    self.release(w.hold);
                }
                Ok(()) => {
                    if let Some(local) = self.locals.get_mut(&agent) {
                        local.flow.events = local.flow.events.saturating_sub(1);
                    }
                }
                Err(Refused::Full(event)) => {
                    if let Some(local) = self.locals.get_mut(&agent) {
                        let item = match event {
                            Event::Report(report) => Waits::Report(report),
                            other => Waits::Event(Box::new(other)),
                        };
                        local
                            .flow
                            .waiting
                            .push_front(Waiting { item, hold: w.hold });
                    }
                    break;
                }
                Err(Refused::Gone(_)) => {
                    self.release(w.hold);
                    return false;
                }
            }
        }
        let Some(local) = self.locals.get_mut(&agent) else {
            return false;
        };
        local.flow.last_len = local.inbox.events.len();
        let idle = local
            .flow
            .idle_since
            .is_some_and(|t| now.saturating_duration_since(t) >= stall);
        let holding = local.flow.waiting.iter().any(|w| w.hold.is_some());
        if idle && holding && !local.flow.stalled {
            // Stalled: what waits for it is dropped, publishers go on.
            local.flow.stalled = true;
            Counters::bump(&self.link.counters.subscribers_stalled);
            let waiting = std::mem::take(&mut local.flow.waiting);
            let (kept, dropped): (Vec<Waiting>, Vec<Waiting>) =
                waiting.into_iter().partition(|w| w.hold.is_none());
            local.flow.waiting = kept.into();
            local.flow.dropped_stalled += dropped.len() as u64;
            let binding = local.binding.clone();
            for w in &dropped {
                Counters::bump(&self.link.counters.reports_dropped);
                self.release(w.hold);
            }
            self.warnings.warn(
                "stalled",
                format_args!(
                    "{binding} took nothing from its full queue for {stall:?}: \
                     {} reports waiting for it dropped (it is told)",
                    dropped.len()
                ),
            );
        }
        let Some(local) = self.locals.get_mut(&agent) else {
            return false;
        };
        let more = !local.flow.waiting.is_empty() || local.flow.untold() || local.flow.stalled;
        if !more {
            local.flow.idle_since = None;
        }
        let wants_room = &local.inbox.flow.wants_room;
        wants_room.store(more, std::sync::atomic::Ordering::Release);
        more
    }

    /// A local subscriber goes: what waited for it is let go.
    pub(crate) fn forget_local_flow(&mut self, flow: LocalFlow) {
        for w in flow.waiting {
            self.release(w.hold);
        }
    }

    // ----- links -----

    /// Queues a report frame carrying `reports` reports for every peer in
    /// `peers`, as far as their credit allows; the rest waits in their
    /// backlogs. `write` encodes the frame (prefix included).
    pub(crate) fn report_to_peers(
        &mut self,
        peers: &[PeerId],
        mut write: impl FnMut(&mut Vec<u8>) -> crate::error::Result<()>,
        reports: usize,
        holder: &mut Holder,
    ) {
        // Nearly always every link has credit: one frame for them all.
        let all = peers
            .iter()
            .all(|peer| ready_to(self.peers.map.get(peer).map(|b| &**b)));
        if all {
            self.send_reports(peers, &mut write, reports);
            return;
        }
        // Some wait (the publisher is ahead of the credit: in a stream, the
        // common case at the source). Buffers reused, one allocation per
        // frame for what waits.
        let (mut ready, mut blocked) = std::mem::take(&mut self.flow_scratch);
        ready.clear();
        blocked.clear();
        for &peer in peers {
            match self.peers.map.get(&peer) {
                Some(p) if p.closing => {}
                Some(p) if ready_to(Some(p)) => ready.push(peer),
                Some(_) => blocked.push(peer),
                None => {}
            }
        }
        let sent = ready.is_empty() || self.send_reports(&ready, &mut write, reports);
        if sent && !blocked.is_empty() {
            self.report_waits_for_credit(&blocked, &mut write, reports, holder);
        }
        self.flow_scratch = (ready, blocked);
    }

    /// A local publisher's report for one peer: appended to the report
    /// frame queued last for it when that is of the same publisher, subject
    /// and destination (see `Message::Reports`), in the outbox if the peer
    /// has credit, else in its backlog. A stream of reports that comes
    /// faster than the link takes it so travels some hundred to a frame,
    /// which the relays and the subscriber's dispatcher read, route and
    /// credit once.
    pub(crate) fn report_to_peer(
        &mut self,
        peer: PeerId,
        publisher: AgentKey,
        to: Option<AgentKey>,
        subject: &str,
        payload: &[u8],
        holder: &mut Holder,
    ) {
        let Some(p) = self.peers.map.get(&peer) else {
            return;
        };
        if p.closing {
            return;
        }
        if ready_to(Some(p)) {
            match self.out.put_report(peer, publisher, to, subject, payload) {
                Ok(grew) => {
                    if let Some(p) = self.peers.map.get_mut(&peer) {
                        p.flow.credit -= report_cost(grew, 1);
                    }
                }
                Err(e) => log::error!("netsvc: cannot encode a report: {e}"),
            }
            return;
        }
        let hold = holder.take(&mut self.holds);
        let Some(p) = self.peers.map.get_mut(&peer) else {
            return;
        };
        let flow = &mut p.flow;
        if let (Some(batch), Some(last)) = (&mut flow.batch, flow.backlog.back_mut()) {
            if let Frame::Own(frame) = &mut last.frame {
                if let Some(grew) = batch.append(frame, publisher, to, subject, payload) {
                    last.cost += report_cost(grew, 1);
                    last.more.extend(hold);
                    return;
                }
            }
        }
        let mut frame = Vec::new();
        match crate::wire::Batch::start(&mut frame, publisher, to, subject, payload) {
            Ok(batch) => {
                if flow.backlog.is_empty() {
                    flow.starved_since = Some(Instant::now());
                }
                flow.backlog.push_back(Backlogged {
                    cost: report_cost(frame.len() - crate::frame::PREFIX, 1),
                    frame: Frame::Own(frame),
                    hold,
                    more: Vec::new(),
                });
                flow.batch = Some(batch);
                if !self.starved.contains(&peer) {
                    self.starved.push(peer);
                }
            }
            Err(e) => {
                log::error!("netsvc: cannot encode a report: {e}");
                self.release(hold);
            }
        }
    }

    /// Queues a report frame for peers that all have credit; false if it
    /// did not encode.
    fn send_reports(
        &mut self,
        peers: &[PeerId],
        write: &mut impl FnMut(&mut Vec<u8>) -> crate::error::Result<()>,
        reports: usize,
    ) -> bool {
        match self.out.put(peers.iter().copied(), write) {
            Ok(body) => {
                let cost = report_cost(body, reports);
                for peer in peers {
                    if let Some(p) = self.peers.map.get_mut(peer) {
                        p.flow.credit -= cost;
                    }
                }
                true
            }
            Err(e) => {
                log::error!("netsvc: cannot encode a report: {e}");
                false
            }
        }
    }

    /// A report frame waits in the backlogs of peers out of credit.
    fn report_waits_for_credit(
        &mut self,
        blocked: &[PeerId],
        write: &mut impl FnMut(&mut Vec<u8>) -> crate::error::Result<()>,
        reports: usize,
        holder: &mut Holder,
    ) {
        let mut frame = std::mem::take(&mut self.frame_scratch);
        frame.clear();
        if let Err(e) = write(&mut frame) {
            log::error!("netsvc: cannot encode a report: {e}");
            return;
        }
        let body: Arc<[u8]> = frame.get(crate::frame::PREFIX..).unwrap_or(&[]).into();
        if frame.capacity() <= 1 << 16 {
            self.frame_scratch = frame;
        }
        let cost = report_cost(body.len(), reports);
        for &peer in blocked {
            let hold = holder.take(&mut self.holds);
            if let Some(p) = self.peers.map.get_mut(&peer) {
                if p.flow.backlog.is_empty() {
                    p.flow.starved_since = Some(Instant::now());
                }
                p.flow.backlog.push_back(Backlogged {
                    frame: Frame::Shared(body.clone()),
                    cost,
                    hold,
                    more: Vec::new(),
                });
                p.flow.batch = None; // (the last entry is not its own)
                if !self.starved.contains(&peer) {
                    self.starved.push(peer);
                }
            }
        }
    }

    /// A report frame of `cost` bytes came from `peer`: false if it had no
    /// credit for it (refused).
    pub(crate) fn take_credit(&mut self, peer: PeerId, cost: i64) -> bool {
        let Some(p) = self.peers.map.get_mut(&peer) else {
            return false;
        };
        if p.flow.avail <= 0 {
            self.refuse_frame(peer, "a report beyond the credit it was given");
            return false;
        }
        p.flow.avail -= cost;
        true
    }

    /// Gives a peer back the credit of frames of its that are delivered.
    fn give_back(&mut self, peer: PeerId, cost: i64) {
        let Some(p) = self.peers.map.get_mut(&peer) else {
            return;
        };
        p.flow.owed += cost;
        if p.flow.owed >= RETURN_AT || (p.flow.avail <= 0 && p.flow.owed > 0) {
            let bytes = std::mem::take(&mut p.flow.owed);
            p.flow.avail += bytes;
            self.send(
                peer,
                &Message::Credit {
                    bytes: bytes as u64,
                },
            );
        }
    }

    /// Credit came from a peer: what waited for it goes.
    pub(crate) fn credit(&mut self, peer: PeerId, bytes: u64) {
        let Some(p) = self.peers.map.get_mut(&peer) else {
            return;
        };
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        if p.flow.credit.saturating_add(bytes) > 2 * WINDOW {
            // More than was ever owed: a peer that lies about credit.
            return self.refuse_frame(peer, "more credit than it was owed");
        }
        p.flow.credit += bytes;
        self.drain_backlog(peer);
    }

    fn drain_backlog(&mut self, peer: PeerId) {
        loop {
            let Some(p) = self.peers.map.get_mut(&peer) else {
                return;
            };
            let control = matches!(
                p.flow.backlog.front().map(|b| &b.frame),
                Some(Frame::Control(_))
            );
            if p.flow.credit <= 0 && !control {
                p.flow.starved_since = Some(Instant::now());
                return;
            }
            let Some(b) = p.flow.backlog.pop_front() else {
                p.flow.starved_since = None;
                return;
            };
            if p.flow.backlog.is_empty() {
                p.flow.batch = None; // (its frame goes now)
            }
            p.flow.credit -= b.cost;
            match &b.frame {
                Frame::Shared(body) => self.out.relay([peer], body),
                Frame::Own(frame) | Frame::Control(frame) => {
                    let _ = self.out.put([peer], |buf| {
                        buf.extend_from_slice(frame);
                        Ok(())
                    });
                }
            }
            self.release_backlogged(b);
        }
    }

    /// A backlogged frame is sent or let go: so are its reports' holds.
    fn release_backlogged(&mut self, b: Backlogged) {
        self.release(b.hold);
        for hold in b.more {
            self.release(Some(hold));
        }
    }

    /// Queues a frame that is not a report for `peers`: behind the report
    /// frames that wait in a peer's backlog for credit, at once for a peer
    /// with none waiting. For a withdrawal: a peer told of a publisher's
    /// withdrawal before its last reports would refuse them, as reports in
    /// the name of a publisher it does not know (and a relay would not
    /// pass them on). Such frames cost no credit; those queued one after
    /// another share one entry, so what waits is the frames' own bytes, as
    /// it would be in the outbox.
    pub(crate) fn put_behind_reports(&mut self, peers: &[PeerId], message: &Message) {
        let mut now = Vec::new();
        for &peer in peers {
            let Some(p) = self.peers.map.get_mut(&peer) else {
                continue;
            };
            if p.closing {
                continue;
            }
            if p.flow.backlog.is_empty() {
                now.push(peer);
                continue;
            }
            let flow = &mut p.flow;
            if !matches!(
                flow.backlog.back().map(|b| &b.frame),
                Some(Frame::Control(_))
            ) {
                flow.backlog.push_back(Backlogged {
                    frame: Frame::Control(Vec::new()),
                    cost: 0,
                    hold: None,
                    more: Vec::new(),
                });
            }
            if let Some(Backlogged {
                frame: Frame::Control(bytes),
                ..
            }) = flow.backlog.back_mut()
            {
                let start = bytes.len();
                if let Err(e) = crate::wire::encode_frame_into(bytes, message) {
                    log::error!("netsvc: cannot encode a frame: {e}");
                    bytes.truncate(start);
                }
            }
            flow.batch = None; // (no report is appended to it)
        }
        if !now.is_empty() {
            if let Err(e) = self
                .out
                .put(now, |buf| crate::wire::encode_frame_into(buf, message))
            {
                log::error!("netsvc: cannot encode a frame: {e}");
            }
        }
    }

    /// A peer's link is gone: what waited for it is let go.
    pub(crate) fn forget_peer_flow(&mut self, flow: PeerFlow) {
        for b in flow.backlog {
            self.release_backlogged(b);
        }
    }

    /// Clients of a server that have kept its reports waiting for credit
    /// past the slow-consumer timeout are dropped.
    fn check_starved(&mut self, now: Instant) {
        let limit = self.link.config.slow_consumer_timeout;
        let mut i = 0;
        while i < self.starved.len() {
            let peer = self.starved[i];
            let Some(p) = self.peers.map.get(&peer) else {
                self.starved.swap_remove(i);
                continue;
            };
            if p.flow.backlog.is_empty() {
                self.starved.swap_remove(i);
                continue;
            }
            let server = self
                .peers
                .scopes
                .get(&p.exchange)
                .is_some_and(|s| s.limits.is_some());
            let late = p
                .flow
                .starved_since
                .is_some_and(|t| now.saturating_duration_since(t) >= limit);
            if server && late && !p.closing {
                Counters::bump(&self.link.counters.slow_consumers);
                let waiting: usize = p.flow.backlog.iter().map(|b| 1 + b.more.len()).sum();
                let reason =
                    format!("{waiting} reports waited {limit:?} for credit it did not give");
                self.close_peer(peer, Why::SlowConsumer, reason);
            }
            i += 1;
        }
    }

    // ----- the turn -----

    /// Whether reports wait anywhere here (the event loop then comes back
    /// within [`flow_retry`](Self::flow_retry)).
    pub(crate) fn flow_waits(&self) -> bool {
        !self.watched.is_empty() || !self.starved.is_empty()
    }

    /// How soon the event loop should look again at what waits: within
    /// [`RETRY`] while reports can move on, within [`STALLED_RETRY`] while
    /// the only subscribers waited for are stalled (one that never reads
    /// again costs no more than that).
    pub(crate) fn flow_retry(&self) -> Option<Duration> {
        if !self.flow_waits() {
            return None;
        }
        let moving = !self.starved.is_empty()
            || self
                .watched
                .iter()
                .any(|a| self.locals.get(a).is_some_and(|l| !l.flow.stalled));
        Some(if moving { RETRY } else { STALLED_RETRY })
    }

    /// Once a turn: what waits moves on as far as it can.
    pub(crate) fn pump(&mut self, now: Instant) {
        if !self.watched.is_empty() {
            self.pump_locals(now);
        }
        if !self.starved.is_empty() {
            self.check_starved(now);
        }
    }
}
