//! The dispatcher thread: a `mio::Poll` loop that joins the routing core to
//! the transports and never blocks on a service or a socket.
//!
//! Each turn: poll (sockets and the waker), hand socket events to the
//! exchange transport, take what arrived on in-memory links, take up to
//! [`COMMANDS_PER_TURN`] commands from the handles, move on the reports
//! that wait for room or credit, run the timers that are due, and after
//! each of those steps have the transports carry what the core queued;
//! at the end, flush every link's output.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::{Events, Poll, Token};

use crate::config::NO_LIMIT;
use crate::error::Result;
use crate::mailbox::command::{Command, ExchangeRole};
use crate::mailbox::{Link, ON_DISPATCHER};
use crate::routing::{Core, Flow};
use crate::transport::exchange::Exchanges;
use crate::transport::memory::Memory;

/// The waker's token; sockets use the tokens above it.
pub(crate) const WAKER: Token = Token(0);

/// At most this many commands are handled between two polls, so timers and
/// sockets are served even while senders flood the queue.
const COMMANDS_PER_TURN: usize = 4096;

pub(crate) struct EventLoop {
    link: Arc<Link>,
    poll: Poll,
    commands: Receiver<Command>,
    core: Core,
    /// The transports (see `transport`): exchange links over streams, and
    /// in-memory links.
    exchanges: Exchanges,
    memory: Memory,
    /// Whether the next idle moment spins (`spin.rs`).
    backoff: crate::spin::Backoff,
}

impl EventLoop {
    pub(crate) fn new(link: Arc<Link>, poll: Poll, commands: Receiver<Command>) -> Result<Self> {
        let registry = poll.registry().try_clone()?;
        Ok(EventLoop {
            core: Core::new(link.clone()),
            exchanges: Exchanges::new(link.clone(), registry),
            memory: Memory::new(link.clone()),
            link,
            poll,
            commands,
            backoff: Default::default(),
        })
    }

    /// Has every transport carry out what the core asked of it.
    fn carry(&mut self) {
        while !self.core.out.is_empty() {
            self.exchanges.carry(&mut self.core);
            self.memory.carry(&mut self.core);
        }
    }

    /// The end: the core fails what is pending and withdraws every
    /// service, the transports carry the withdrawals out as far as their
    /// links take them at once, and close.
    fn stop(&mut self) {
        self.core.stop();
        self.carry();
        self.memory.stop(&mut self.core);
        self.exchanges.stop(&mut self.core);
    }

    /// Waits up to `timeout` for input or commands with nothing else to
    /// do: first looking without sleeping, for the `idle_spin` window as
    /// the backoff allows (`spin.rs`), then asleep in the poll, where
    /// callers may write links themselves (`direct.rs`).
    fn idle_poll(&mut self, events: &mut Events, timeout: Option<Duration>) -> std::io::Result<()> {
        let mut timeout = timeout;
        let window = self.link.config.idle_spin;
        if !window.is_zero() && self.backoff.should_spin() {
            let start = Instant::now();
            let window = timeout.map_or(window, |t| t.min(window));
            let poll = &mut self.poll;
            let mut failed = None;
            let caught = crate::spin::poll_until(window, None, || {
                match poll.poll(events, Some(Duration::ZERO)) {
                    Ok(()) => !events.is_empty(),
                    Err(e) => {
                        failed = Some(e);
                        true
                    }
                }
            });
            if let Some(e) = failed {
                return Err(e);
            }
            self.backoff.record(caught);
            if caught {
                return Ok(());
            }
            timeout = timeout.map(|t| t.saturating_sub(start.elapsed()));
        }
        self.link.gate.set_idle(true);
        let polled = self.poll.poll(events, timeout);
        self.link.gate.set_idle(false);
        polled
    }

    pub(crate) fn run(mut self) -> Result<()> {
        ON_DISPATCHER.with(|f| f.set(true));
        let mut events = Events::with_capacity(256);
        let mut more_commands = false;
        loop {
            let busy = more_commands || self.exchanges.has_work() || self.memory.has_work();
            let timeout = if busy {
                Some(Duration::ZERO)
            } else {
                let next = match (
                    self.core.timers.next_deadline(),
                    self.exchanges.next_deadline(),
                ) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let wait = next.map(|at| at.saturating_duration_since(Instant::now()));
                match self.core.flow_retry() {
                    // Reports wait for room: look again soon.
                    Some(retry) => Some(wait.map_or(retry, |w| w.min(retry))),
                    None => wait,
                }
            };
            let polled = if timeout == Some(Duration::ZERO) {
                self.poll.poll(&mut events, timeout)
            } else {
                self.idle_poll(&mut events, timeout)
            };
            if let Err(e) = polled {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("netsvc: poll failed, shutting down: {e}");
                self.stop();
                return Err(e.into());
            }
            if self.link.stop_now() {
                self.stop();
                return Ok(());
            }
            for event in events.iter() {
                if event.token() != WAKER {
                    self.exchanges.on_event(event, &mut self.core);
                    self.carry();
                }
            }
            self.exchanges.read_stalled(&mut self.core);
            self.memory.receive(&mut self.core);
            self.carry();
            // Reports that waited for room or credit move on.
            if self.core.flow_waits() {
                self.core.pump(Instant::now());
                self.carry();
            }
            // Wake events carry no data: the commands are in the channel.
            // Clear the flag before draining, so a command sent after the
            // drain wakes the next poll.
            self.link
                .wake_pending()
                .store(false, std::sync::atomic::Ordering::SeqCst);
            more_commands = false;
            self.refresh_links();
            // Commands are taken whatever a peer's congestion: each link
            // pushes back on its own (report credit, its own input), and a
            // publisher is held by its own reports (see `routing::flow`).
            let mut carried = 0;
            for _ in 0..COMMANDS_PER_TURN {
                match self.commands.try_recv() {
                    Ok(cmd) => {
                        let gated = !matches!(cmd, Command::Done { .. });
                        if self.handle(cmd) == Flow::Stop {
                            self.stop();
                            return Ok(());
                        }
                        if !self.core.out.is_empty() {
                            self.carry();
                        }
                        carried += usize::from(gated);
                    }
                    Err(_) => break,
                }
                more_commands = true;
            }
            // What they queued is in the links' buffers: threads may write
            // behind it (see `direct::Outlet`).
            self.link.gate.leave(carried);
            if more_commands {
                more_commands = !self.commands.is_empty();
            }
            let now = Instant::now();
            while let Some((id, kind)) = self.core.timers.pop_due(now) {
                if self.core.fire(id, kind) == Flow::Stop {
                    self.stop();
                    return Ok(());
                }
                self.carry();
            }
            self.exchanges.fire_due(now, &mut self.core);
            self.carry();
            // Everything queued for peers this turn goes out now, batched.
            self.exchanges.flush_dirty(&mut self.core);
            self.carry();
            self.memory.flush();
            if !self.commands.is_empty() {
                more_commands = true;
            }
        }
    }

    /// Tells the core how the links stand (for the errors of calls that
    /// find no destination).
    fn refresh_links(&mut self) {
        self.core.links = self.exchanges.counts() + self.memory.counts();
    }

    /// A command: the transports' own go to them, the rest to the core.
    fn handle(&mut self, cmd: Command) -> Flow {
        let core = &mut self.core;
        match cmd {
            Command::ExchangeOpen {
                id,
                group,
                mut role,
                secret,
                announce,
                ack,
            } => {
                if let ExchangeRole::Client {
                    retry: Some(delay), ..
                } = &mut *role
                {
                    // A delay past any lifetime means: never again (and its
                    // jitter must not overflow).
                    *delay = (*delay).min(NO_LIMIT);
                }
                let opened = self
                    .exchanges
                    .exchange_open(id, group, *role, secret, announce);
                let _ = ack.send(opened);
            }
            Command::ExchangeClose { id, ack } => {
                self.exchanges.exchange_close(id, core);
                let _ = ack.send(());
            }
            Command::ExchangeLocalAddr { id, reply } => {
                let _ = reply.send(self.exchanges.exchange_local_addr(id));
            }
            Command::Authorised { token, allowed } => {
                self.exchanges.authorised(token, allowed, core)
            }
            Command::MemoryOpen { end, ack } => {
                self.memory.open(*end, core);
                let _ = ack.send(());
            }
            Command::MemoryClose { link } => self.memory.close_link(link, core),
            other => return core.handle(other),
        }
        Flow::Continue
    }
}
