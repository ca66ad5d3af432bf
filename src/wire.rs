//! Encoding: the one place where values become bytes and back.
//!
//! Payloads (request arguments, replies, report contents) are encoded in
//! netsvc's self-describing encoding of serde's data model (`shape.rs`), so
//! that a payload decoded as a type of another shape is an error, and any
//! payload reads as a `Value`. Frames (the messages between processes, which
//! carry payloads as bytes) are encoded with serde + bincode 2 in its
//! standard configuration. Either can change here without touching the rest
//! of the crate.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::bounded;
use crate::error::{Error, Result, ServiceFailure};
use crate::ids::{AgentKey, ConversationId, ProcessId, ServiceBinding};
use crate::shape;

/// An encoded value. Cheap to clone: a report fanned out to many subscribers
/// shares one encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Payload(Arc<[u8]>);

impl Payload {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The encoding of `()`: what a cast's caller is handed once the cast
    /// is on its way.
    pub(crate) fn unit() -> Payload {
        Payload(Arc::from(&[shape::tag::UNIT][..]))
    }

    /// Bytes already shared, taken as they are (no copy).
    pub(crate) fn from_shared(bytes: Arc<[u8]>) -> Payload {
        Payload(bytes)
    }

    /// The shared bytes (no copy).
    pub(crate) fn shared(&self) -> Arc<[u8]> {
        self.0.clone()
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Self {
        Payload(v.into())
    }
}

impl From<&[u8]> for Payload {
    fn from(v: &[u8]) -> Self {
        Payload(v.into())
    }
}

/// The bincode configuration for encoding.
fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes a value as a payload, into an encoder reused by the calling
/// thread, so that an encoding costs one allocation of its exact size.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Payload> {
    thread_local! {
        static ENCODER: std::cell::RefCell<shape::Encoder> =
            std::cell::RefCell::new(shape::Encoder::default());
    }
    let encoded = ENCODER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut enc) => {
            enc.clear();
            let r = value
                .serialize(&mut *enc)
                .map(|()| Payload(Arc::from(&enc.out[..])));
            enc.shrink();
            r
        }
        // Re-entered (a Serialize impl that encodes): an encoder of its own.
        Err(_) => {
            let mut enc = shape::Encoder::default();
            value.serialize(&mut enc).map(|()| Payload::from(enc.out))
        }
    });
    encoded.map_err(|e| Error::Encode(e.to_string()))
}

/// Decodes a payload, requiring that every byte is used.
///
/// The error names the type, where in the value it failed and what was
/// expected and found there, for instance `(i64, i64) at [0]: expected
/// i64, found u64 2 (...)`. What a decode allocates is linear in the bytes
/// it is given: no length or count is believed beyond the bytes left.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    shape::decode::<T>(bytes).map_err(|e| {
        let ty = short_type_name(std::any::type_name::<T>());
        let path = e.path();
        Error::Decode(if path.is_empty() {
            format!("{ty}: {}", e.message())
        } else {
            format!("{ty} at {path}: {}", e.message())
        })
    })
}

/// A type's name without its modules' paths, as a reader writes it:
/// `BTreeMap<String, Point>`, not `alloc::collections::btree::map::...`.
fn short_type_name(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut path = String::new();
    let last = |p: &str| p.rsplit("::").next().unwrap_or_default().to_owned();
    for c in full.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            path.push(c);
        } else {
            out.push_str(&last(&path));
            path.clear();
            out.push(c);
        }
    }
    out.push_str(&last(&path));
    out
}

/// Encodes into a buffer reused by the calling thread (after `prefix` zero
/// bytes), so that an encoding costs one allocation of its exact size rather
/// than a growing `Vec` (which showed in profiles of the publish path).
fn with_scratch<R>(prefix: usize, f: impl FnOnce(&mut Vec<u8>) -> Result<R>) -> Result<R> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            buf.resize(prefix, 0);
            let r = f(&mut buf);
            if buf.capacity() > 1 << 20 {
                *buf = Vec::new(); // keep no large buffer after a large value
            }
            r
        }
        // Re-entered (a Serialize impl that encodes): a fresh buffer.
        Err(_) => f(&mut vec![0; prefix]),
    })
}

/// Decodes a frame's body (bincode), requiring that every byte is used.
///
/// What a decode may allocate is bounded by the bytes it is given: bincode
/// allocates a string or byte buffer at its claimed length before reading
/// it, so a corrupt or hostile length could otherwise ask for gigabytes. The
/// limit is 16 times the input (the most any genuine value claims per byte:
/// a `u128` in one varint byte), rounded up to a power of four, so a decode
/// never allocates more than 64 times what was received.
pub(crate) fn decode_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let need = bytes.len().saturating_mul(16).max(1 << 12);
    macro_rules! classes {
        ($($n:literal)*) => {$(
            if need <= 1usize << $n {
                let config = bincode::config::standard().with_limit::<{ 1usize << $n }>();
                return decode_with(bytes, config);
            }
        )*};
    }
    classes!(12 14 16 18 20 22 24 26 28 30);
    #[cfg(target_pointer_width = "64")]
    classes!(32 34 36 38);
    Err(Error::Decode(format!(
        "{} bytes is too large to decode",
        bytes.len()
    )))
}

fn decode_with<T: DeserializeOwned, C: bincode::config::Config>(
    bytes: &[u8],
    config: C,
) -> Result<T> {
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(bytes, config)
        .map_err(|e| Error::Decode(format!("{e} (decoding {})", std::any::type_name::<T>())))?;
    if used != bytes.len() {
        return Err(Error::Decode(format!(
            "{} trailing bytes after {}",
            bytes.len() - used,
            std::any::type_name::<T>()
        )));
    }
    Ok(value)
}

// ----- the exchange protocol -----

/// The first bytes of every connection's first frame.
pub(crate) const MAGIC: [u8; 6] = *b"NETSVC";

/// The protocol version this build speaks; a peer with another is refused.
/// 4: report credit and confirmed subscriptions; 5: payloads in the
/// self-describing encoding (`shape.rs`), not bincode.
pub(crate) const VERSION: u16 = 5;

/// The handshake: who is speaking, and for which exchange group.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub process: ProcessId,
    pub group: String,
    /// Whether this side requires the shared-secret handshake: a peer that
    /// cannot do it knows at once, and neither side announces the link.
    pub auth: bool,
    /// A client's identity token, whose `auth::identity_uid` must be its
    /// process uid: the server takes the link as that process only then.
    /// Empty from a server (its clients chose to connect to it).
    #[serde(with = "bounded::bytes")]
    pub identity: Vec<u8>,
    /// From a server: whether the proofs of the shared-secret handshake
    /// cover the addresses each side sees of the connection (see
    /// `auth::transcript`). Covered by the proofs itself, so a party in the
    /// middle cannot turn it off.
    pub bind: bool,
}

/// Why a handshake was refused.
#[derive(Debug)]
pub(crate) enum HelloError {
    /// The peer does not speak netsvc at all.
    NotNetsvc,
    /// The peer speaks another version of the protocol.
    Version(u16),
    /// The handshake did not decode.
    Decode(String),
}

impl HelloError {
    /// The cause, as a connection announcement names it.
    pub(crate) fn why(&self) -> crate::connection::InactiveReason {
        use crate::connection::InactiveReason as Why;
        match self {
            HelloError::NotNetsvc => Why::NotNetsvc,
            HelloError::Version(_) => Why::ProtocolVersion,
            HelloError::Decode(_) => Why::BadInput,
        }
    }
}

impl std::fmt::Display for HelloError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HelloError::NotNetsvc => f.write_str("not a netsvc peer (bad magic)"),
            HelloError::Version(v) => {
                write!(
                    f,
                    "peer speaks protocol version {v}, this build speaks {VERSION}"
                )
            }
            HelloError::Decode(e) => write!(f, "handshake does not decode: {e}"),
        }
    }
}

/// The handshake frame's body: magic, version, then the encoded [`Hello`],
/// so that magic and version are checked before anything else is decoded.
pub(crate) fn encode_hello(hello: &Hello) -> Result<Vec<u8>> {
    let mut body = Vec::with_capacity(64);
    body.extend_from_slice(&MAGIC);
    body.extend_from_slice(&VERSION.to_be_bytes());
    let rest =
        bincode::serde::encode_to_vec(hello, config()).map_err(|e| Error::Encode(e.to_string()))?;
    body.extend_from_slice(&rest);
    Ok(body)
}

/// Decodes a handshake frame's body.
pub(crate) fn decode_hello(body: &[u8]) -> std::result::Result<Hello, HelloError> {
    if body.len() < MAGIC.len() + 2 || body[..MAGIC.len()] != MAGIC {
        return Err(HelloError::NotNetsvc);
    }
    let version = u16::from_be_bytes([body[MAGIC.len()], body[MAGIC.len() + 1]]);
    if version != VERSION {
        return Err(HelloError::Version(version));
    }
    decode_body(&body[MAGIC.len() + 2..]).map_err(|e| HelloError::Decode(e.to_string()))
}

/// Why a call failed, as it crosses a connection.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Failure {
    Service(ServiceFailure),
    Unavailable(String),
    Timeout,
    Closed,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e {
            Error::Service(f) => Failure::Service(f),
            Error::Timeout => Failure::Timeout,
            Error::Closed => Failure::Closed,
            other => Failure::Unavailable(other.to_string()),
        }
    }
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Service(f) => Error::Service(f),
            Failure::Unavailable(s) => Error::ServiceUnavailable(s),
            Failure::Timeout => Error::Timeout,
            Failure::Closed => Error::ServiceUnavailable(
                "the remote dispatcher shut down before it answered".into(),
            ),
        }
    }
}

/// Everything exchanged after the handshake.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Message {
    /// A service became visible (with its groups).
    Available { binding: ServiceBinding },
    /// A service was withdrawn; `draining`: the calls it holds still get
    /// their answers.
    Withdrawn { agent: AgentKey, draining: bool },
    /// A service joined or left a group.
    Group {
        agent: AgentKey,
        group: String,
        joined: bool,
    },
    /// A call, on its way to `to`.
    Request {
        conv: ConversationId,
        sender: ServiceBinding,
        to: AgentKey,
        method: String,
        payload: Payload,
        timeout_ms: u64,
        /// A cast: no reply is expected.
        oneway: bool,
        /// While the request is handled, send [`Message::Progress`] this often.
        heartbeat_ms: Option<u64>,
    },
    /// The call is still being handled (a heartbeat toward the caller).
    Progress { conv: ConversationId },
    /// The link is alive (sent when a link has been quiet for a while).
    Heartbeat,
    /// Authentication, server to client: prove you hold the key.
    Challenge {
        #[serde(with = "bounded::bytes")]
        nonce: Vec<u8>,
    },
    /// Authentication, client to server: the client's nonce and proof, and
    /// the name of the credential it proves (empty for the shared secret;
    /// covered by the proof, and bounded as every pre-authentication frame
    /// is, to 4 KiB).
    Response {
        #[serde(with = "bounded::bytes")]
        nonce: Vec<u8>,
        #[serde(with = "bounded::bytes")]
        mac: Vec<u8>,
        credential: String,
    },
    /// Authentication, server to client: the server's proof.
    Proof {
        #[serde(with = "bounded::bytes")]
        mac: Vec<u8>,
    },
    /// The outcome of a call, on its way back to the caller.
    Reply {
        conv: ConversationId,
        result: std::result::Result<Payload, Failure>,
    },
    /// A subscription of `subscriber` to `publisher`'s reports starts or ends.
    Subscribe {
        subscriber: ServiceBinding,
        publisher: AgentKey,
        pattern: String,
        on: bool,
    },
    /// A report: to every matching subscriber on the far side, or to one.
    Report {
        publisher: AgentKey,
        to: Option<AgentKey>,
        subject: String,
        payload: Payload,
    },
    /// The sender is closing the link, and says why (so that the far side's
    /// `Inactive` names the cause, not only "closed by peer").
    Closing { reason: String },
    /// Server to client: a subscription of the client's `subscriber` to
    /// `publisher` was refused (its credential may not subscribe to it);
    /// the subscriber is told the publisher is withdrawn for it.
    SubscribeDenied {
        subscriber: AgentKey,
        publisher: AgentKey,
    },
    /// Report credit given back: the sender may send this many more bytes
    /// of report frames (see `routing::flow`).
    Credit { bytes: u64 },
    /// A subscription reached the process of the publisher it is against
    /// and is in force there: told back to the subscriber's process.
    Subscribed {
        subscriber: AgentKey,
        publisher: AgentKey,
        pattern: String,
    },
}

/// The variant index of [`Message::Report`] in its encoding (bincode writes
/// a struct variant as its index, a `u32`, then its fields; a test checks it).
const REPORT_TAG: u32 = 11;

/// A report's fields, borrowed from the frame that carries it: what a
/// relay or a subscriber needs, read without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReportRef<'a> {
    pub publisher: AgentKey,
    pub to: Option<AgentKey>,
    pub subject: &'a str,
    pub payload: &'a [u8],
}

/// A message as received: reports borrowed from the frame, everything else
/// decoded into a [`Message`].
#[derive(Debug)]
pub(crate) enum Incoming<'a> {
    Report(ReportRef<'a>),
    Other(Message),
}

/// Decodes a message frame's body. Reports, the bulk of the traffic, are
/// only read in place (the subject and payload are borrowed, so nothing is
/// allocated whatever the lengths claim); any other message is decoded as by
/// [`decode_body`], bounded by the input's size. Accepts and refuses exactly
/// what `decode_body::<Message>` does.
pub(crate) fn decode_message(body: &[u8]) -> Result<Incoming<'_>> {
    let tag = bincode::decode_from_slice::<u32, _>(body, config());
    if let Ok((REPORT_TAG, used)) = tag {
        type Fields<'a> = (AgentKey, Option<AgentKey>, &'a str, &'a [u8]);
        let rest = &body[used..];
        let ((publisher, to, subject, payload), n) =
            bincode::serde::borrow_decode_from_slice::<Fields<'_>, _>(rest, config())
                .map_err(|e| Error::Decode(format!("{e} (decoding a report)")))?;
        if n != rest.len() {
            return Err(Error::Decode(format!(
                "{} trailing bytes after a report",
                rest.len() - n
            )));
        }
        return Ok(Incoming::Report(ReportRef {
            publisher,
            to,
            subject,
            payload,
        }));
    }
    decode_body::<Message>(body).map(Incoming::Other)
}

/// Encodes a message as a frame with its length prefix, ready to be queued
/// on one or many connections.
pub(crate) fn encode_frame(message: &Message) -> Result<Vec<u8>> {
    with_scratch(4, |frame| {
        bincode::serde::encode_into_std_write(message, &mut *frame, config())
            .map_err(|e| Error::Encode(e.to_string()))?;
        let len = u32::try_from(frame.len() - 4)
            .map_err(|_| Error::Encode("message larger than 4 GiB".into()))?;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        Ok(frame.to_vec())
    })
}

/// Appends to `out` a frame of `value` encoded as bincode: its length
/// prefix, then its bytes, straight into `out`. On error `out` is left as
/// it was.
fn encode_prefixed(out: &mut Vec<u8>, value: impl Serialize) -> Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    let encoded = bincode::serde::encode_into_std_write(value, &mut *out, config())
        .map_err(|e| Error::Encode(e.to_string()))
        .and_then(|n| {
            u32::try_from(n).map_err(|_| Error::Encode("message larger than 4 GiB".into()))
        });
    match encoded {
        Ok(len) => {
            out[start..start + 4].copy_from_slice(&len.to_be_bytes());
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// Appends a message's frame (prefix and body) to `out`, straight into it;
/// on error `out` is left as it was.
pub(crate) fn encode_frame_into(out: &mut Vec<u8>, message: &Message) -> Result<()> {
    encode_prefixed(out, message)
}

/// Appends to `out` the frame (prefix and body) of a
/// [`Message::Report`] with these fields, byte for byte what
/// [`encode_frame`] makes of one, without building the message (its subject
/// `String`) or a buffer of its own. On error `out` is left as it was.
pub(crate) fn encode_report_frame(
    out: &mut Vec<u8>,
    publisher: AgentKey,
    to: Option<AgentKey>,
    subject: &str,
    payload: &Payload,
) -> Result<()> {
    encode_prefixed(out, (REPORT_TAG, publisher, to, subject, payload))
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Bytes;
        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = Payload;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> std::result::Result<Payload, E> {
                Ok(Payload(v.into()))
            }
            fn visit_byte_buf<E: serde::de::Error>(
                self,
                v: Vec<u8>,
            ) -> std::result::Result<Payload, E> {
                Ok(Payload::from(v))
            }
        }
        d.deserialize_byte_buf(Bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_lose_their_paths() {
        assert_eq!(short_type_name("(i64, i64)"), "(i64, i64)");
        assert_eq!(short_type_name("alloc::vec::Vec<u8>"), "Vec<u8>");
        assert_eq!(
            short_type_name(
                "alloc::collections::btree::map::BTreeMap<alloc::string::String, my::Point>"
            ),
            "BTreeMap<String, Point>"
        );
        assert_eq!(short_type_name("[u8; 32]"), "[u8; 32]");
        let e = decode::<Vec<String>>(encode(&5u8).unwrap().as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "decode error: Vec<String>: expected a sequence, found u8 5"
        );
    }

    #[test]
    fn round_trip() {
        let p = encode(&(1u32, "two".to_string())).unwrap();
        let (a, b): (u32, String) = decode(p.as_bytes()).unwrap();
        assert_eq!((a, b.as_str()), (1, "two"));
    }

    #[test]
    fn wrong_type_is_a_decode_error() {
        let p = encode(&"text").unwrap();
        assert!(matches!(
            decode::<(u64, u64, u64)>(p.as_bytes()),
            Err(Error::Decode(_))
        ));
        let p = encode(&(1u8, 2u8)).unwrap();
        assert!(matches!(decode::<u8>(p.as_bytes()), Err(Error::Decode(_))));
    }

    #[test]
    fn large_values_decode() {
        let big = vec![7u64; 1 << 20];
        let p = encode(&big).unwrap();
        assert_eq!(decode::<Vec<u64>>(p.as_bytes()).unwrap(), big);
        let text = "x".repeat(3 << 20);
        let p = encode(&text).unwrap();
        assert_eq!(decode::<String>(p.as_bytes()).unwrap(), text);
    }

    #[test]
    fn claimed_length_beyond_the_input_is_refused() {
        // A 9-byte payload claiming a 1 MiB string; a 9-byte frame body
        // claiming one too.
        let mut bytes = vec![shape::tag::STR, 0x80, 0x80, 0x40];
        bytes.extend_from_slice(b"abcde");
        match decode::<String>(&bytes) {
            Err(Error::Decode(m)) => assert!(m.contains("length of 1048576"), "{m}"),
            other => panic!("{other:?}"),
        }
        let mut body = vec![252u8];
        body.extend_from_slice(&(1u32 << 20).to_le_bytes());
        body.extend_from_slice(b"abcde");
        assert!(matches!(
            decode_body::<String>(&body),
            Err(Error::Decode(_))
        ));
    }

    #[test]
    fn reports_read_in_place_match_the_full_decoding() {
        let key = AgentKey {
            process: 0xdead_beef_0123_4567,
            agent: crate::ids::AgentId(300),
        };
        let payload = encode(&vec![7u8; 64]).unwrap();
        for to in [None, Some(key)] {
            let message = Message::Report {
                publisher: key,
                to,
                subject: "a.b.c".into(),
                payload: payload.clone(),
            };
            let frame = encode_frame(&message).unwrap();
            let body = &frame[4..];
            let Ok(Incoming::Report(r)) = decode_message(body) else {
                panic!("not read as a report");
            };
            assert_eq!(r.publisher, key);
            assert_eq!(r.to, to);
            assert_eq!(r.subject, "a.b.c");
            assert_eq!(r.payload, payload.as_bytes());
            // Truncated or extended, it is refused like the full decoding.
            for bad in [&body[..body.len() - 1], &[body, &[0u8][..]].concat()[..]] {
                assert!(decode_body::<Message>(bad).is_err());
                assert!(decode_message(bad).is_err());
            }
        }
        for to in [None, Some(key)] {
            let message = Message::Report {
                publisher: key,
                to,
                subject: "a.b.c".into(),
                payload: payload.clone(),
            };
            let mut out = vec![9u8];
            encode_report_frame(&mut out, key, to, "a.b.c", &payload).unwrap();
            assert_eq!(out[1..], encode_frame(&message).unwrap()[..]);
        }
        let other = encode_frame(&Message::Heartbeat).unwrap();
        assert!(matches!(
            decode_message(&other[4..]),
            Ok(Incoming::Other(Message::Heartbeat))
        ));
    }

    #[test]
    fn huge_claimed_length_is_refused_without_allocating() {
        // A varint length prefix claiming u64::MAX bytes for a String, in a
        // frame body and in a payload.
        let bytes = [253u8, 255, 255, 255, 255, 255, 255, 255, 255];
        assert!(matches!(
            decode_body::<String>(&bytes),
            Err(Error::Decode(_))
        ));
        let mut payload = vec![shape::tag::STR];
        payload.extend_from_slice(&[255; 9]);
        payload.push(1);
        assert!(matches!(decode::<String>(&payload), Err(Error::Decode(_))));
    }
}
