//! An entry point for fuzzers and property tests: the exchange's input path
//! without a socket. Not part of the API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::frame::{Fill, ReadBuffer};
use crate::rpc::Value;
use crate::wire::{self, Message};

/// What [`feed`] saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Frames taken from the input.
    pub frames: usize,
    /// Frames that decoded (the first as a hello, the rest as messages).
    pub decoded: usize,
    /// Whether the input was refused as a connection would be (oversized
    /// length, bad hello, undecodable frame).
    pub refused: bool,
}

/// Feeds bytes through the frame reader in chunks of `chunk` and decodes
/// every frame as a connection would: the first as a hello, the others as
/// messages, stopping where a connection would be closed.
pub fn feed(bytes: &[u8], max_frame: usize, chunk: usize) -> Outcome {
    struct Chunks<'a> {
        data: &'a [u8],
        step: usize,
    }
    impl std::io::Read for Chunks<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.data.is_empty() {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.step.max(1)).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }
    let mut src = Chunks {
        data: bytes,
        step: chunk,
    };
    let mut rbuf = ReadBuffer::default();
    let mut out = Outcome::default();
    let mut scratch = vec![0u8; crate::frame::READ_CHUNK];
    loop {
        let fill = match rbuf.fill(&mut src, max_frame + crate::frame::PREFIX, &mut scratch) {
            Ok((fill, _)) => fill,
            Err(_) => return out,
        };
        loop {
            match rbuf.next_frame(max_frame) {
                Ok(Some(body)) => {
                    out.frames += 1;
                    let ok = if out.frames == 1 {
                        wire::decode_hello(body).is_ok()
                    } else {
                        let ok = wire::decode_message(body).is_ok();
                        // A report read in place is accepted exactly when
                        // the full decoding would accept it.
                        assert_eq!(ok, wire::decode_body::<Message>(body).is_ok());
                        ok
                    };
                    if !ok {
                        out.refused = true;
                        return out;
                    }
                    out.decoded += 1;
                }
                Ok(None) => break,
                Err(_) => {
                    out.refused = true;
                    return out;
                }
            }
        }
        if fill == Fill::WouldBlock || fill == Fill::Closed {
            return out;
        }
    }
}

/// Encoded frames (with prefixes) of every kind a connection carries: a
/// hello, then one of each message, for fuzzers to mutate.
pub fn sample_frames() -> Vec<Vec<u8>> {
    use crate::ids::{AgentId, ConversationId, ProcessId, ServiceBinding};
    let process = ProcessId::new("fuzz");
    let binding = ServiceBinding::new(
        "svc".into(),
        "*".into(),
        AgentId(3),
        process.clone(),
        vec!["g".into()],
    );
    let key = binding.key();
    let conv = ConversationId::new(process.uid(), 9);
    let payload = wire::encode(&(1u32, "payload")).unwrap_or_else(|_| unreachable!());
    let hello = wire::Hello {
        process,
        group: String::new(),
        auth: false,
        identity: vec![7; 32],
        bind: false,
    };
    let mut frames = vec![crate::frame::with_prefix(
        &wire::encode_hello(&hello).unwrap_or_default(),
    )];
    let messages = [
        Message::Available {
            binding: binding.clone(),
        },
        Message::Withdrawn {
            agent: key,
            draining: false,
        },
        Message::Group {
            agent: key,
            group: "g".into(),
            joined: true,
        },
        Message::Request {
            conv,
            sender: binding.clone(),
            to: key,
            method: "m".into(),
            payload: payload.clone(),
            timeout_ms: 1000,
            oneway: false,
            heartbeat_ms: Some(100),
        },
        Message::Reply {
            conv,
            result: Ok(payload.clone()),
        },
        Message::Progress { conv },
        Message::Subscribe {
            subscriber: binding,
            publisher: key,
            pattern: "a.*".into(),
            on: true,
        },
        Message::Report {
            publisher: key,
            to: None,
            subject: "a.b".into(),
            payload: payload.clone(),
        },
        Message::Reports {
            publisher: key,
            to: None,
            subject: "a.b".into(),
            payloads: vec![payload.clone(), payload],
        },
        Message::Heartbeat,
        Message::Challenge { nonce: vec![1; 32] },
        Message::Response {
            nonce: vec![2; 32],
            mac: vec![3; 32],
            credential: "alice".into(),
        },
        Message::Proof { mac: vec![4; 32] },
        Message::Closing {
            reason: "limit breached: a sample".into(),
        },
        Message::SubscribeDenied {
            subscriber: key,
            publisher: key,
        },
    ];
    for m in &messages {
        if let Ok(f) = wire::encode_frame(m) {
            frames.push(f);
        }
    }
    frames
}
pub use crate::fuzzing_frames::*;

/// A struct, an enum and their nesting, for the payload samples and the
/// typed decodings of [`decode_payload`].
#[derive(Debug, Serialize, Deserialize)]
enum Shape {
    Empty,
    Circle(f64),
    Line(Point, Point),
    Rect { w: u32, h: u32 },
    Group(Vec<Shape>),
}

#[derive(Debug, Serialize, Deserialize)]
struct Point {
    x: i32,
    y: i32,
    label: Option<String>,
}

/// A payload's decoding by a receiver, as many ways as a receiver may try:
/// as a [`Value`], ignored, and as a few typed shapes. Returns how many of
/// them succeeded; never panics, whatever the bytes.
pub fn decode_payload(bytes: &[u8]) -> usize {
    type Typed = (Vec<Shape>, BTreeMap<String, (Option<f32>, char, Vec<u8>)>);
    [
        wire::decode::<Value>(bytes).is_ok(),
        wire::decode::<serde::de::IgnoredAny>(bytes).is_ok(),
        wire::decode::<Shape>(bytes).is_ok(),
        wire::decode::<Typed>(bytes).is_ok(),
        wire::decode::<Vec<u8>>(bytes).is_ok(),
        wire::decode::<(u64, String)>(bytes).is_ok(),
        wire::decode::<BTreeMap<u32, Vec<Point>>>(bytes).is_ok(),
    ]
    .iter()
    .filter(|ok| **ok)
    .count()
}

/// Encodes a value as the library encodes a payload, and returns its
/// length (for benches: the payload is built, one allocation, and dropped).
pub fn encode_payload_len<T: Serialize + ?Sized>(value: &T) -> crate::Result<usize> {
    wire::encode(value).map(|p| p.as_bytes().len())
}

/// A value's payload bytes, as the library encodes them.
pub fn sample_payload_of<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    wire::encode(value)
        .map(|p| p.as_bytes().to_vec())
        .unwrap_or_default()
}

/// Decodes a payload as the library does (for benches).
pub fn decode_payload_as<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> crate::Result<T> {
    wire::decode(bytes)
}

/// Decodes bincode bytes as the previous build decoded payloads (and as
/// frames are still decoded: bounded by the input's size), for benches.
pub fn decode_bincode_as<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> crate::Result<T> {
    wire::decode_body(bytes)
}

/// Encoded payloads of every kind of value, for fuzzers to mutate.
pub fn sample_payloads() -> Vec<Vec<u8>> {
    let point = |x| Point {
        x,
        y: -x,
        label: Some(format!("p{x}")),
    };
    let shapes = vec![
        Shape::Empty,
        Shape::Circle(1.5),
        Shape::Line(point(1), point(2)),
        Shape::Rect { w: 3, h: 4 },
        Shape::Group(vec![Shape::Group(vec![Shape::Empty]), Shape::Circle(0.0)]),
    ];
    let mut map = BTreeMap::new();
    map.insert("k".to_owned(), (Some(1.5f32), 'c', vec![1u8, 2, 3]));
    let value = Value::Map(
        [
            (
                "list".to_owned(),
                Value::List(vec![Value::Int(-1), Value::UInt(u64::MAX)]),
            ),
            ("bytes".to_owned(), Value::Bytes(vec![0, 255])),
            ("f".to_owned(), Value::Float(2.5)),
            ("null".to_owned(), Value::Null),
        ]
        .into(),
    );
    let by_id: BTreeMap<u32, Vec<Point>> = [(1, vec![point(5)]), (2, vec![])].into();
    [
        wire::encode(&shapes),
        wire::encode(&(shapes, map)),
        wire::encode(&value),
        wire::encode(&vec![7u8; 64]),
        wire::encode(&(7u64, "text")),
        wire::encode(&by_id),
        wire::encode(&[Some(1u128), None]),
    ]
    .into_iter()
    .filter_map(|p| p.ok())
    .map(|p| p.as_bytes().to_vec())
    .collect()
}
