//! Complete exchange frames (length prefix included), as a hostile or
//! hand-driven peer would send them: for tests and fuzzers that speak the
//! wire protocol from a raw socket. Not part of the API; it follows the
//! protocol as it is and may change with it.
//!
//! A well-behaved peer sends [`hello`] first, with the same process uid as
//! the bindings it then announces; these functions check nothing of the
//! kind, so that a test can break any rule on purpose.

use crate::ids::{AgentId, AgentKey, ConversationId, ProcessId, ServiceBinding};
use crate::wire::{self, Hello, Message, Payload};

/// Names one agent on the wire: its process uid and its agent id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    /// The uid of the agent's process ([`ProcessId::uid`]).
    pub process: u64,
    /// The agent's id within its process.
    pub agent: u64,
}

impl From<&ServiceBinding> for Key {
    fn from(b: &ServiceBinding) -> Key {
        let k = b.key();
        Key {
            process: k.process,
            agent: k.agent.0,
        }
    }
}

impl From<Key> for AgentKey {
    fn from(k: Key) -> AgentKey {
        AgentKey {
            process: k.process,
            agent: AgentId(k.agent),
        }
    }
}

/// A process identity with this uid, labelled `peer/<uid in hex>`. (Its
/// fields are private to `ids`; it is built as a peer's would be, from its
/// encoding.)
fn process(uid: u64) -> ProcessId {
    /// The shape of a `ProcessId`: the same fields, by name.
    #[derive(serde::Serialize)]
    struct Process {
        uid: u64,
        label: String,
    }
    let label = format!("peer/{uid:016x}");
    let bytes = wire::encode(&Process { uid, label }).expect("encode a process id");
    wire::decode(bytes.as_bytes()).expect("decode a process id")
}

fn frame(message: &Message) -> Vec<u8> {
    wire::encode_frame(message).expect("encode a frame")
}

/// A binding as a peer announces it.
pub fn binding(name: &str, audience: &str, key: Key, groups: &[&str]) -> ServiceBinding {
    ServiceBinding::new(
        name.to_owned(),
        audience.to_owned(),
        AgentId(key.agent),
        process(key.process),
        groups.iter().map(|g| (*g).to_owned()).collect(),
    )
}

/// The identity token of the peer numbered `seed` (32 bytes).
pub fn token(seed: u64) -> Vec<u8> {
    seed.to_be_bytes().repeat(4)
}

/// The process uid an identity token stands for (what a server checks a
/// client's hello against).
pub fn identity_uid(token: &[u8]) -> u64 {
    crate::auth::identity_uid(token)
}

/// The process uid of the peer numbered `seed`: the one its [`hello`]
/// claims, and proves with its [`token`].
pub fn uid(seed: u64) -> u64 {
    identity_uid(&token(seed))
}

/// The handshake frame of the peer numbered `seed` (process [`uid`] of it,
/// with its identity token) for an exchange of `group`.
pub fn hello(seed: u64, group: &str) -> Vec<u8> {
    let hello = Hello {
        process: process(uid(seed)),
        group: group.to_owned(),
        auth: false,
        identity: token(seed),
        bind: false,
    };
    let body = wire::encode_hello(&hello).expect("encode a hello");
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(&body);
    v
}

/// `Available`: a service of the peer's with this name, audience, key and
/// groups.
pub fn available(name: &str, audience: &str, key: Key, groups: &[&str]) -> Vec<u8> {
    announce(&binding(name, audience, key, groups))
}

/// `Available`: announces that binding, as it is.
pub fn announce(binding: &ServiceBinding) -> Vec<u8> {
    frame(&Message::Available {
        binding: binding.clone(),
    })
}

/// `Withdrawn`: the peer's service `key` is gone.
pub fn withdrawn(key: Key, draining: bool) -> Vec<u8> {
    frame(&Message::Withdrawn {
        agent: key.into(),
        draining,
    })
}

/// `Group`: the peer's service `key` joins (or leaves) `group`.
pub fn group(key: Key, group: &str, joined: bool) -> Vec<u8> {
    frame(&Message::Group {
        agent: key.into(),
        group: group.to_owned(),
        joined,
    })
}

/// `Subscribe`: `subscriber` (a binding of the peer's) subscribes to (or,
/// `on` false, unsubscribes from) `publisher`'s reports matching `pattern`.
pub fn subscribe(subscriber: &ServiceBinding, publisher: Key, pattern: &str, on: bool) -> Vec<u8> {
    frame(&Message::Subscribe {
        subscriber: subscriber.clone(),
        publisher: publisher.into(),
        pattern: pattern.to_owned(),
        on,
    })
}

/// `SubscribeDenied`: a server refused the subscription of `subscriber`
/// (the receiver's) to `publisher` (only a server may send it).
pub fn subscribe_denied(subscriber: Key, publisher: Key) -> Vec<u8> {
    frame(&Message::SubscribeDenied {
        subscriber: subscriber.into(),
        publisher: publisher.into(),
    })
}

/// `Subscribed`: `subscriber`'s subscription to `publisher` with
/// `pattern` is in force at the publisher's process.
pub fn subscribed(subscriber: Key, publisher: Key, pattern: &str) -> Vec<u8> {
    frame(&Message::Subscribed {
        subscriber: subscriber.into(),
        publisher: publisher.into(),
        pattern: pattern.to_owned(),
    })
}

/// `Request`: a call (conversation `conv_seq` of `sender`'s process) from
/// `sender` to `to`; `payload` is the already encoded argument.
#[allow(clippy::too_many_arguments)]
pub fn request(
    conv_seq: u64,
    sender: &ServiceBinding,
    to: Key,
    method: &str,
    payload: &[u8],
    timeout_ms: u64,
    heartbeat_ms: Option<u64>,
) -> Vec<u8> {
    let conv = (sender.key().process, conv_seq);
    request_in(conv, sender, to, method, payload, timeout_ms, heartbeat_ms)
}

/// [`request`] in any conversation `(process uid, sequence)`, someone
/// else's included (as a peer that tries to take over a call would send).
#[allow(clippy::too_many_arguments)]
pub fn request_in(
    conv: (u64, u64),
    sender: &ServiceBinding,
    to: Key,
    method: &str,
    payload: &[u8],
    timeout_ms: u64,
    heartbeat_ms: Option<u64>,
) -> Vec<u8> {
    frame(&Message::Request {
        conv: ConversationId::new(conv.0, conv.1),
        sender: sender.clone(),
        to: to.into(),
        method: method.to_owned(),
        payload: Payload::from(payload),
        timeout_ms,
        oneway: false,
        heartbeat_ms,
    })
}

/// `Reply`: a successful answer, `payload` already encoded, to the call
/// `conv_seq` of process `caller`.
pub fn reply(caller: u64, conv_seq: u64, payload: &[u8]) -> Vec<u8> {
    frame(&Message::Reply {
        conv: ConversationId::new(caller, conv_seq),
        result: Ok(Payload::from(payload)),
    })
}

/// `Report`: `publisher` publishes on `subject` (to every subscriber, or
/// only to `to`); `payload` is the already encoded value.
pub fn report(publisher: Key, to: Option<Key>, subject: &str, payload: &[u8]) -> Vec<u8> {
    frame(&Message::Report {
        publisher: publisher.into(),
        to: to.map(Into::into),
        subject: subject.to_owned(),
        payload: Payload::from(payload),
    })
}

/// `Reports`: `publisher` publishes `payloads` (each already encoded) on
/// `subject`, in order, in one frame (as a publisher's dispatcher batches
/// reports that come faster than its link takes them).
pub fn reports(publisher: Key, to: Option<Key>, subject: &str, payloads: &[&[u8]]) -> Vec<u8> {
    frame(&Message::Reports {
        publisher: publisher.into(),
        to: to.map(Into::into),
        subject: subject.to_owned(),
        payloads: payloads.iter().map(|p| Payload::from(*p)).collect(),
    })
}

/// `Progress`: the call `conv_seq` of process `caller` is still being
/// handled (a heartbeat toward its caller).
pub fn progress(caller: u64, conv_seq: u64) -> Vec<u8> {
    frame(&Message::Progress {
        conv: ConversationId::new(caller, conv_seq),
    })
}

/// `Heartbeat`: the link is alive.
pub fn heartbeat() -> Vec<u8> {
    frame(&Message::Heartbeat)
}

/// Encodes a value as a payload (request argument, reply or report), as
/// the library does.
pub fn payload<T: serde::Serialize + ?Sized>(value: &T) -> Vec<u8> {
    wire::encode(value)
        .expect("encode a payload")
        .as_bytes()
        .to_vec()
}

/// What a received `Reply` frame's body (prefix removed) answers: its
/// conversation, and the encoded value or the failure (as the caller's
/// [`Error`](crate::Error)); `None` for any other frame.
pub fn reply_outcome(body: &[u8]) -> Option<(ConversationId, Result<Vec<u8>, crate::Error>)> {
    match wire::decode_message(body).ok()? {
        wire::Incoming::Other(Message::Reply { conv, result }) => Some((
            conv,
            result
                .map(|p| p.as_bytes().to_vec())
                .map_err(crate::Error::from),
        )),
        _ => None,
    }
}

/// The kind of message a received frame body (prefix removed) holds, by
/// its variant's name (`"Progress"`, `"Reply"`, `"Report"`, ...), or `None`
/// if it does not decode. (A hello does not decode as a message.)
pub fn kind(body: &[u8]) -> Option<&'static str> {
    let name = match wire::decode_message(body).ok()? {
        wire::Incoming::Report(r) if r.batched => "Reports",
        wire::Incoming::Report(_) => "Report",
        wire::Incoming::Other(m) => match m {
            Message::Available { .. } => "Available",
            Message::Credit { .. } => "Credit",
            Message::Subscribed { .. } => "Subscribed",
            Message::Withdrawn { .. } => "Withdrawn",
            Message::Group { .. } => "Group",
            Message::Request { .. } => "Request",
            Message::Progress { .. } => "Progress",
            Message::Heartbeat => "Heartbeat",
            Message::Challenge { .. } => "Challenge",
            Message::Response { .. } => "Response",
            Message::Proof { .. } => "Proof",
            Message::Reply { .. } => "Reply",
            Message::Subscribe { .. } => "Subscribe",
            Message::Report { .. } => "Report",
            Message::Reports { .. } => "Reports",
            Message::Closing { .. } => "Closing",
            Message::SubscribeDenied { .. } => "SubscribeDenied",
        },
    };
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_decode_as_the_messages_they_name() {
        let me = Key {
            process: 0x1234_5678_9abc_def0,
            agent: 7,
        };
        let them = Key {
            process: 42,
            agent: 3,
        };
        let b = binding("peer.svc", "*", me, &["g1", "g2"]);
        assert_eq!(Key::from(&b), me);
        assert_eq!(b.groups(), ["g1", "g2"]);
        assert_eq!(b.process_identity().uid(), me.process);
        let frames = [
            (available("peer.svc", "*", me, &["g"]), "Available"),
            (withdrawn(me, false), "Withdrawn"),
            (group(me, "g", true), "Group"),
            (subscribe(&b, them, "a.*", true), "Subscribe"),
            (subscribe_denied(them, me), "SubscribeDenied"),
            (
                request(1, &b, them, "m", &payload(&5u32), 1000, Some(0)),
                "Request",
            ),
            (reply(them.process, 1, &payload(&"ok")), "Reply"),
            (report(me, None, "tick", &payload(&1u64)), "Report"),
            (report(me, Some(them), "tick", &payload(&1u64)), "Report"),
            (reports(me, None, "tick", &[&payload(&1u64)]), "Reports"),
            (heartbeat(), "Heartbeat"),
        ];
        for (f, name) in frames {
            let len = u32::from_be_bytes([f[0], f[1], f[2], f[3]]) as usize;
            assert_eq!(len, f.len() - 4, "{name}: prefix");
            assert_eq!(kind(&f[4..]), Some(name));
        }
        let h = hello(5, "grp");
        let hello = wire::decode_hello(&h[4..]).unwrap();
        assert_eq!(hello.process.uid(), uid(5));
        assert_eq!(identity_uid(&hello.identity), uid(5));
        assert_eq!(hello.group, "grp");
        assert_eq!(kind(&h[4..]), None);
    }
}
