//! Frames of any message, built from public values, for tests that play a
//! misbehaving peer over raw TCP. Not part of the API.

use crate::ids::{AgentId, ConversationId, ProcessId, ServiceBinding};
use crate::wire::{self, Message, Payload};

/// A binding of a made-up process (a fresh one per call) with that name,
/// audience, agent number and groups.
pub fn binding(name: &str, audience: &str, agent: u64, groups: Vec<String>) -> ServiceBinding {
    ServiceBinding::new(
        name.into(),
        audience.into(),
        AgentId(agent),
        ProcessId::new("raw"),
        groups,
    )
}

fn frame(message: &Message) -> Vec<u8> {
    wire::encode_frame(message).unwrap_or_default()
}

/// An `Available` frame (with its prefix) announcing the binding.
pub fn available_frame(binding: &ServiceBinding) -> Vec<u8> {
    frame(&Message::Available {
        binding: binding.clone(),
    })
}

/// A `Withdrawn` frame for the agent.
pub fn withdrawn_frame(agent: &ServiceBinding) -> Vec<u8> {
    frame(&Message::Withdrawn {
        agent: agent.key(),
        draining: false,
    })
}

/// A `Group` frame: the agent joins (or leaves) the group.
pub fn group_frame(agent: &ServiceBinding, group: &str, joined: bool) -> Vec<u8> {
    frame(&Message::Group {
        agent: agent.key(),
        group: group.into(),
        joined,
    })
}

/// A `Subscribe` frame: `subscriber` subscribes to (or unsubscribes from)
/// `publisher`'s reports matching `pattern`.
pub fn subscribe_frame(
    subscriber: &ServiceBinding,
    publisher: &ServiceBinding,
    pattern: &str,
    on: bool,
) -> Vec<u8> {
    frame(&Message::Subscribe {
        subscriber: subscriber.clone(),
        publisher: publisher.key(),
        pattern: pattern.into(),
        on,
    })
}

/// A two-way `Request` frame from `sender` to `to`, conversation `seq` of
/// the sender's process, with a u64 argument.
pub fn request_frame(
    seq: u64,
    sender: &ServiceBinding,
    to: &ServiceBinding,
    method: &str,
    arg: u64,
    timeout_ms: u64,
) -> Vec<u8> {
    let payload = wire::encode(&arg).unwrap_or_else(|_| Payload::from(Vec::new()));
    frame(&Message::Request {
        conv: ConversationId::new(sender.process_identity().uid(), seq),
        sender: sender.clone(),
        to: to.key(),
        method: method.into(),
        payload,
        timeout_ms,
        oneway: false,
        heartbeat_ms: None,
    })
}

/// A `Report` frame from `publisher` with that subject and a u64 payload.
pub fn report_frame(publisher: &ServiceBinding, subject: &str, value: u64) -> Vec<u8> {
    let payload = wire::encode(&value).unwrap_or_else(|_| Payload::from(Vec::new()));
    frame(&Message::Report {
        publisher: publisher.key(),
        to: None,
        subject: subject.into(),
        payload,
    })
}
