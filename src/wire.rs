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
    encode_then(value, |bytes| Payload(Arc::from(bytes)))
}

/// Encodes a value into an encoder reused by the calling thread and hands
/// the encoding to `then` (which must not keep it): no allocation of its
/// own once the thread's encoder has grown to the value's size.
pub(crate) fn encode_then<T: Serialize + ?Sized, R>(
    value: &T,
    then: impl FnOnce(&[u8]) -> R,
) -> Result<R> {
    thread_local! {
        static ENCODER: std::cell::RefCell<shape::Encoder> =
            std::cell::RefCell::new(shape::Encoder::default());
    }
    let encoded = ENCODER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut enc) => {
            enc.clear();
            let r = value.serialize(&mut *enc).map(|()| then(&enc.out));
            enc.shrink();
            r
        }
        // Re-entered (a Serialize impl that encodes): an encoder of its own.
        Err(_) => {
            let mut enc = shape::Encoder::default();
            value.serialize(&mut enc).map(|()| then(&enc.out))
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
/// self-describing encoding (`shape.rs`), not bincode; 6: reports batched
/// into frames (`Message::Reports`), and a report's credit counts
/// `REPORT_COST` besides its bytes.
pub(crate) const VERSION: u16 = 6;

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
    /// Reports of one publisher on one subject (to the same subscriber, if
    /// to one), in order: what a publisher's dispatcher sends when reports
    /// follow each other faster than they are written, so that a relay and
    /// a subscriber's dispatcher read, check, route and credit them once
    /// per frame rather than once per report. At most [`MAX_BATCH`] of
    /// them (more are accepted), in at most [`BATCH_BYTES`].
    Reports {
        publisher: AgentKey,
        to: Option<AgentKey>,
        subject: String,
        #[serde(deserialize_with = "payloads_as_they_come")]
        payloads: Vec<Payload>,
    },
}

/// Reads a sequence of payloads growing the `Vec` as they come, not
/// reserving room for the count it claims (serde's `Vec` takes up to 1 MiB
/// on a claim's word: 200 bytes of a frame claiming a huge count did).
fn payloads_as_they_come<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<Payload>, D::Error> {
    struct Seq;
    impl<'de> serde::de::Visitor<'de> for Seq {
        type Value = Vec<Payload>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a sequence of payloads")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> std::result::Result<Vec<Payload>, A::Error> {
            let mut out = Vec::new();
            while let Some(p) = seq.next_element()? {
                out.push(p);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Seq)
}

/// The variant index of [`Message::Report`] in its encoding (bincode writes
/// a struct variant as its index, a `u32`, then its fields; a test checks it).
const REPORT_TAG: u32 = 11;

/// The variant index of [`Message::Reports`].
const REPORTS_TAG: u32 = 16;

/// The most reports a publisher's dispatcher puts in one frame: their
/// count stays one byte (bincode writes a length under 251 as one byte), so
/// that a report is appended to a frame in place.
pub(crate) const MAX_BATCH: u8 = 250;

/// The most bytes (of its body) a publisher's dispatcher lets a frame of
/// batched reports grow to: a relay holds a frame's credit until all of its
/// reports are delivered, so a frame stays a small part of the window.
pub(crate) const BATCH_BYTES: usize = 16 * 1024;

/// A report frame's fields, borrowed from the frame: what a relay or a
/// subscriber needs, read without allocating. A `Report` carries one
/// payload, a `Reports` frame many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReportRef<'a> {
    pub publisher: AgentKey,
    pub to: Option<AgentKey>,
    pub subject: &'a str,
    pub payloads: Payloads<'a>,
    /// A `Reports` frame (else a `Report`).
    pub batched: bool,
}

/// The payloads of a report frame, in order; checked whole when the frame
/// was read, so iterating them cannot fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Payloads<'a> {
    count: usize,
    /// Each payload as bincode writes bytes: its length, then them.
    bytes: &'a [u8],
}

impl<'a> Payloads<'a> {
    /// How many payloads (reports) the frame carries.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// The bytes that hold the payloads, and where each payload is in
    /// them, in order (a lone payload: its own bytes, all of them).
    pub(crate) fn parts(self) -> (&'a [u8], impl Iterator<Item = (u32, u32)> + 'a) {
        let region = match self.count {
            1 => self.iter().next().unwrap_or(&[]),
            _ => self.bytes,
        };
        let base = region.as_ptr() as usize;
        let parts = self.iter().map(move |p| {
            // Each payload lies within the region: kept as offsets (a
            // frame is under 4 GiB).
            let start = (p.as_ptr() as usize).wrapping_sub(base);
            let end = start.saturating_add(p.len());
            (
                u32::try_from(start).unwrap_or(u32::MAX),
                u32::try_from(end).unwrap_or(u32::MAX),
            )
        });
        (region, parts)
    }

    /// The payloads' bytes, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &'a [u8]> {
        let mut rest = self.bytes;
        (0..self.count).map_while(move |_| {
            let (payload, used) = read_bytes(rest).ok()?;
            rest = &rest[used..];
            Some(payload)
        })
    }
}

/// Reads bytes as bincode writes them (a length, then the bytes), borrowed.
fn read_bytes(input: &[u8]) -> std::result::Result<(&[u8], usize), bincode::error::DecodeError> {
    bincode::borrow_decode_from_slice::<&[u8], _>(input, config())
}

/// A message as received: reports borrowed from the frame, everything else
/// decoded into a [`Message`].
#[derive(Debug)]
pub(crate) enum Incoming<'a> {
    Report(ReportRef<'a>),
    Other(Message),
}

/// Decodes a message frame's body. Reports, the bulk of the traffic, are
/// only read in place (the subject and payloads are borrowed, so nothing is
/// allocated whatever the lengths claim, and a count is believed only as
/// far as payloads follow); any other message is decoded as by
/// [`decode_body`], bounded by the input's size. Accepts and refuses exactly
/// what `decode_body::<Message>` does.
pub(crate) fn decode_message(body: &[u8]) -> Result<Incoming<'_>> {
    let tag = bincode::decode_from_slice::<u32, _>(body, config());
    let Ok((tag @ (REPORT_TAG | REPORTS_TAG), used)) = tag else {
        return decode_body::<Message>(body).map(Incoming::Other);
    };
    let bad = |e: bincode::error::DecodeError| Error::Decode(format!("{e} (decoding a report)"));
    type Head<'a> = (AgentKey, Option<AgentKey>, &'a str);
    let rest = &body[used..];
    let ((publisher, to, subject), n) =
        bincode::serde::borrow_decode_from_slice::<Head<'_>, _>(rest, config()).map_err(bad)?;
    let mut rest = &rest[n..];
    let count = if tag == REPORT_TAG {
        1
    } else {
        let (count, n) = bincode::decode_from_slice::<u64, _>(rest, config()).map_err(bad)?;
        rest = &rest[n..];
        count
    };
    // Every payload is read once here (each takes at least a byte, so the
    // count is believed only as far as the bytes go), so that a frame is
    // taken whole or not at all.
    let mut at = 0;
    let mut read = 0usize;
    while (read as u64) < count {
        let (_, n) = read_bytes(&rest[at..]).map_err(bad)?;
        at += n;
        read += 1;
    }
    if at != rest.len() {
        return Err(Error::Decode(format!(
            "{} trailing bytes after a report",
            rest.len() - at
        )));
    }
    Ok(Incoming::Report(ReportRef {
        publisher,
        to,
        subject,
        payloads: Payloads {
            count: read,
            bytes: rest,
        },
        batched: tag == REPORTS_TAG,
    }))
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
/// `String`) or a buffer of its own; what [`append_report`] needs to add
/// more reports to it while it is the last thing in `out`. On error `out`
/// is left as it was.
pub(crate) fn encode_report_frame(
    out: &mut Vec<u8>,
    publisher: AgentKey,
    to: Option<AgentKey>,
    subject: &str,
    payload: &[u8],
) -> Result<OpenFrame> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    if let Err(e) = bincode::serde::encode_into_std_write(
        (REPORT_TAG, publisher, to, subject),
        &mut *out,
        config(),
    ) {
        out.truncate(start);
        return Err(Error::Encode(e.to_string()));
    }
    let payloads_at = out.len();
    put_bytes(out, payload);
    let Ok(len) = u32::try_from(out.len() - start - 4) else {
        out.truncate(start);
        return Err(Error::Encode("message larger than 4 GiB".into()));
    };
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(OpenFrame {
        start,
        payloads_at,
        count: 1,
    })
}

/// Appends bytes as bincode's standard configuration writes them: the
/// length (one byte under 251, else a marker and 2, 4 or 8 bytes, little
/// endian), then the bytes.
fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let n = bytes.len();
    if n < 251 {
        out.push(n as u8);
    } else if let Ok(n) = u16::try_from(n) {
        out.push(251);
        out.extend_from_slice(&n.to_le_bytes());
    } else if let Ok(n) = u32::try_from(n) {
        out.push(252);
        out.extend_from_slice(&n.to_le_bytes());
    } else {
        out.push(253);
        out.extend_from_slice(&(n as u64).to_le_bytes());
    }
    out.extend_from_slice(bytes);
}

/// Where a report frame is in a buffer, for [`append_report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenFrame {
    /// Its length prefix.
    start: usize,
    /// Its first payload (or, once it is a `Reports`, its count).
    payloads_at: usize,
    count: u8,
}

/// Appends `payload` to the report frame `open` at the end of `out` (a
/// `Report` becomes a `Reports` of two): the bytes its body grew by, or
/// `None`, with `out` unchanged, if the frame holds [`MAX_BATCH`] reports
/// or would pass [`BATCH_BYTES`].
pub(crate) fn append_report(
    out: &mut Vec<u8>,
    open: &mut OpenFrame,
    payload: &[u8],
) -> Option<usize> {
    let n = payload.len();
    let grow = 9 + n + usize::from(open.count == 1); // (at most)
    let body = out.len().checked_sub(open.start + 4)?;
    if open.count >= MAX_BATCH || body + grow > BATCH_BYTES {
        return None;
    }
    let before = out.len();
    if open.count == 1 {
        // The tag (one byte, as any under 251) and a count before the
        // first payload, which is all that moves.
        out[open.start + 4] = REPORTS_TAG as u8;
        out.insert(open.payloads_at, 1);
    }
    put_bytes(out, payload);
    open.count += 1;
    out[open.payloads_at] = open.count;
    let len = (out.len() - open.start - 4) as u32; // (at most BATCH_BYTES)
    out[open.start..open.start + 4].copy_from_slice(&len.to_be_bytes());
    Some(out.len() - before)
}

/// A report frame in a buffer that later reports of the same publisher,
/// subject and destination are appended to while it is the last thing in
/// the buffer (see [`Message::Reports`]).
#[derive(Debug)]
pub(crate) struct Batch {
    publisher: AgentKey,
    to: Option<AgentKey>,
    subject: String,
    frame: OpenFrame,
}

impl Batch {
    /// Appends a report's frame to `out`, open to more.
    pub(crate) fn start(
        out: &mut Vec<u8>,
        publisher: AgentKey,
        to: Option<AgentKey>,
        subject: &str,
        payload: &[u8],
    ) -> Result<Batch> {
        let frame = encode_report_frame(out, publisher, to, subject, payload)?;
        Ok(Batch {
            publisher,
            to,
            subject: subject.to_owned(),
            frame,
        })
    }

    /// Appends a report to the frame, which must still end `out`, if it is
    /// of the same publisher, subject and destination and has room: the
    /// bytes its body grew by.
    pub(crate) fn append(
        &mut self,
        out: &mut Vec<u8>,
        publisher: AgentKey,
        to: Option<AgentKey>,
        subject: &str,
        payload: &[u8],
    ) -> Option<usize> {
        if self.publisher != publisher || self.to != to || self.subject != subject {
            return None;
        }
        append_report(out, &mut self.frame, payload)
    }

    /// Where the frame starts in its buffer (its length prefix).
    pub(crate) fn start_at(&self) -> usize {
        self.frame.start
    }
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(self.as_bytes())
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
                Ok(Payload::from(v))
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
            assert_eq!(r.payloads.len(), 1);
            assert_eq!(r.payloads.iter().collect::<Vec<_>>(), [payload.as_bytes()]);
            // A lone report's region is its payload.
            let (region, parts) = r.payloads.parts();
            assert_eq!(region, payload.as_bytes());
            assert_eq!(parts.collect::<Vec<_>>(), [(0, region.len() as u32)]);
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
            encode_report_frame(&mut out, key, to, "a.b.c", payload.as_bytes()).unwrap();
            assert_eq!(out[1..], encode_frame(&message).unwrap()[..]);
        }
        let other = encode_frame(&Message::Heartbeat).unwrap();
        assert!(matches!(
            decode_message(&other[4..]),
            Ok(Incoming::Other(Message::Heartbeat))
        ));
    }

    #[test]
    fn reports_appended_to_a_frame_are_a_reports_message() {
        let key = AgentKey {
            process: 7,
            agent: crate::ids::AgentId(9),
        };
        // Payloads of every length class of bincode's varint but the
        // largest: 0, 1, 250, 251, 300 bytes.
        let payloads: Vec<Payload> = [0usize, 1, 250, 251, 300]
            .iter()
            .map(|&n| Payload::from(vec![n as u8; n]))
            .collect();
        for to in [None, Some(key)] {
            let mut out = vec![1u8, 2, 3];
            let mut open =
                encode_report_frame(&mut out, key, to, "s.t", payloads[0].as_bytes()).unwrap();
            for p in &payloads[1..] {
                let before = out.len();
                assert_eq!(
                    append_report(&mut out, &mut open, p.as_bytes()),
                    Some(out.len() - before)
                );
            }
            let message = Message::Reports {
                publisher: key,
                to,
                subject: "s.t".into(),
                payloads: payloads.clone(),
            };
            assert_eq!(out[..3], [1, 2, 3]);
            assert_eq!(out[3..], encode_frame(&message).unwrap()[..]);
            let body = &out[7..];
            let Ok(Incoming::Report(r)) = decode_message(body) else {
                panic!("not read as reports");
            };
            assert_eq!((r.publisher, r.to, r.subject), (key, to, "s.t"));
            let read: Vec<&[u8]> = r.payloads.iter().collect();
            let want: Vec<&[u8]> = payloads.iter().map(Payload::as_bytes).collect();
            assert_eq!(read, want);
            assert_eq!(r.payloads.len(), 5);
            // Kept, they are parts of one region of the frame.
            let (region, parts) = r.payloads.parts();
            let kept: Vec<&[u8]> = parts
                .map(|(s, e)| &region[s as usize..e as usize])
                .collect();
            assert_eq!(kept, want);
            for bad in [&body[..body.len() - 1], &[body, &[0u8][..]].concat()[..]] {
                assert!(decode_body::<Message>(bad).is_err());
                assert!(decode_message(bad).is_err());
            }
        }
        // A count beyond the payloads that follow is refused, not believed.
        let message = Message::Reports {
            publisher: key,
            to: None,
            subject: "s".into(),
            payloads: vec![Payload::from(vec![1u8])],
        };
        let mut frame = encode_frame(&message).unwrap();
        let count_at = frame.len() - 3; // (count, length, byte)
        assert_eq!(frame[count_at], 1);
        frame[count_at] = 200;
        assert!(decode_body::<Message>(&frame[4..]).is_err());
        assert!(decode_message(&frame[4..]).is_err());
        // An empty batch is read as one (nothing to deliver).
        let empty = Message::Reports {
            publisher: key,
            to: None,
            subject: "s".into(),
            payloads: vec![],
        };
        let frame = encode_frame(&empty).unwrap();
        let Ok(Incoming::Report(r)) = decode_message(&frame[4..]) else {
            panic!("not read as reports");
        };
        assert_eq!(r.payloads.len(), 0);
    }

    #[test]
    fn a_batch_stops_at_its_count_and_its_bytes() {
        let key = AgentKey {
            process: 1,
            agent: crate::ids::AgentId(2),
        };
        let small = vec![0u8; 1];
        let mut out = Vec::new();
        let mut open = encode_report_frame(&mut out, key, None, "s", &small).unwrap();
        let mut count = 1;
        while append_report(&mut out, &mut open, &small).is_some() {
            count += 1;
        }
        assert_eq!(count, usize::from(MAX_BATCH));
        let big = vec![0u8; 6000];
        let mut out = Vec::new();
        let mut open = encode_report_frame(&mut out, key, None, "s", &big).unwrap();
        assert!(append_report(&mut out, &mut open, &big).is_some());
        let full = out.clone();
        assert_eq!(append_report(&mut out, &mut open, &big), None);
        assert_eq!(out, full, "a refused append leaves the frame as it was");
        assert!(out.len() - 4 <= BATCH_BYTES);
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
