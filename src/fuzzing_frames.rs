//! Frames of any message, named by the bindings they concern, for tests
//! that play a misbehaving peer over raw TCP: adapters over
//! [`peer_frames`](crate::peer_frames), which builds them. Not part of the API.

use crate::ids::{AgentId, ProcessId, ServiceBinding};
use crate::peer_frames::{self, payload};

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

/// A binding of the raw peer numbered `seed` (whose hello is
/// [`peer_frames::hello`]`(seed, ..)`): a server takes announcements and
/// subscriptions from a client only for the client's own process.
pub fn binding_of(
    seed: u64,
    name: &str,
    audience: &str,
    agent: u64,
    groups: Vec<String>,
) -> ServiceBinding {
    let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
    let key = peer_frames::Key {
        process: peer_frames::uid(seed),
        agent,
    };
    peer_frames::binding(name, audience, key, &groups)
}

/// An `Available` frame (with its prefix) announcing the binding.
pub fn available_frame(binding: &ServiceBinding) -> Vec<u8> {
    peer_frames::announce(binding)
}

/// A `Withdrawn` frame for the agent.
pub fn withdrawn_frame(agent: &ServiceBinding) -> Vec<u8> {
    peer_frames::withdrawn(agent.into(), false)
}

/// A `Group` frame: the agent joins (or leaves) the group.
pub fn group_frame(agent: &ServiceBinding, group: &str, joined: bool) -> Vec<u8> {
    peer_frames::group(agent.into(), group, joined)
}

/// A `Subscribe` frame: `subscriber` subscribes to (or unsubscribes from)
/// `publisher`'s reports matching `pattern`.
pub fn subscribe_frame(
    subscriber: &ServiceBinding,
    publisher: &ServiceBinding,
    pattern: &str,
    on: bool,
) -> Vec<u8> {
    peer_frames::subscribe(subscriber, publisher.into(), pattern, on)
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
    let arg = payload(&arg);
    peer_frames::request(seq, sender, to.into(), method, &arg, timeout_ms, None)
}

/// A `Report` frame from `publisher` with that subject and a u64 payload.
pub fn report_frame(publisher: &ServiceBinding, subject: &str, value: u64) -> Vec<u8> {
    peer_frames::report(publisher.into(), None, subject, &payload(&value))
}
