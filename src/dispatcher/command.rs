//! Commands from handles to the dispatcher thread. A command that needs an
//! answer carries its own reply `Sender`.

use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::error::{Result, ServiceFailure};
use crate::event::{Event, Lifetime};
use crate::ids::{AgentId, ConversationId, ServiceBinding};
use crate::wire::Payload;

/// Whose reports a subscription asks for.
#[derive(Debug, Clone)]
pub(crate) enum PublisherSpec {
    /// Every agent of that service name, now and later.
    Name(String),
    /// That one agent, until it is withdrawn.
    Binding(ServiceBinding),
}

/// What a monitor watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MonitorKind {
    Name,
    Group,
}

/// A call on its way to the dispatcher.
#[derive(Debug)]
pub(crate) struct OutgoingCall {
    pub conv: ConversationId,
    pub from: AgentId,
    pub to: ServiceBinding,
    pub method: String,
    pub payload: Payload,
    pub reply: Sender<Result<Payload>>,
    pub timeout: Duration,
}

#[derive(Debug)]
pub(crate) enum Command {
    Open {
        binding: ServiceBinding,
        events: Sender<Event>,
        capacity: usize,
        ack: Sender<()>,
    },
    Close {
        agent: AgentId,
    },
    Group {
        agent: AgentId,
        group: String,
        join: bool,
    },
    Monitor {
        agent: AgentId,
        kind: MonitorKind,
        key: String,
        on: bool,
    },
    Subscribe {
        agent: AgentId,
        publisher: PublisherSpec,
        pattern: String,
        on: bool,
    },
    Publish {
        agent: AgentId,
        subject: String,
        payload: Payload,
        lifetime: Lifetime,
    },
    SendReport {
        agent: AgentId,
        to: ServiceBinding,
        subject: String,
        payload: Payload,
    },
    /// Expires cached reports matching the pattern; `None` purges them all.
    Expire {
        agent: AgentId,
        pattern: Option<String>,
    },
    Call(OutgoingCall),
    Reply {
        conv: ConversationId,
        result: std::result::Result<Payload, ServiceFailure>,
    },
    Forward {
        conv: ConversationId,
        to: ServiceBinding,
        method: String,
        payload: Payload,
        sender: ServiceBinding,
    },
    Cancel {
        conv: ConversationId,
    },
    StartTimer {
        agent: AgentId,
        /// The deadline, computed by the caller when it asked.
        at: Instant,
        tag: u64,
    },
    CancelTimer {
        agent: AgentId,
        tag: u64,
    },
    LookupName {
        name: String,
        reply: Sender<Vec<ServiceBinding>>,
    },
    LookupGroup {
        group: String,
        reply: Sender<Vec<ServiceBinding>>,
    },
    ShutdownAfter {
        delay: Duration,
    },
    Shutdown,
}
