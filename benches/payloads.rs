//! The payload encoding's own cost (issue 15): `cargo bench --bench
//! payloads`. For a few payloads, nanoseconds per encode (the payload
//! built, one allocation) and per decode, in netsvc's self-describing
//! encoding and in bincode 2 as payloads were before (standard
//! configuration; decoded with a limit of allocation by the input's size),
//! and the encoded sizes. One thread, no I/O; nothing is asserted.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use netsvc::fuzzing::{decode_bincode_as, decode_payload_as, encode_payload_len};
use netsvc::Value;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Point {
    x: i32,
    y: i32,
    label: String,
}

#[derive(Serialize, Deserialize)]
enum Event {
    Moved(Point),
    Stopped { at: u64, why: Option<String> },
}

/// Nanoseconds per call of `f`, the fastest of 5 rounds of `n`.
fn per_op(n: u32, mut f: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            t.elapsed().as_nanos() as f64 / f64::from(n)
        })
        .fold(f64::INFINITY, f64::min)
}

fn row<T: Serialize + DeserializeOwned>(name: &str, value: &T, n: u32) {
    let cfg = bincode::config::standard();
    let ours = netsvc::fuzzing::sample_payload_of(value);
    let theirs = bincode::serde::encode_to_vec(value, cfg).expect("bincode encodes");
    let enc = per_op(n, || {
        black_box(encode_payload_len(black_box(value)).ok());
    });
    let dec = per_op(n, || {
        black_box(decode_payload_as::<T>(black_box(&ours)).ok());
    });
    let mut buf = Vec::new();
    let benc = per_op(n, || {
        buf.clear();
        let _ = bincode::serde::encode_into_std_write(black_box(value), &mut buf, cfg);
        black_box(Arc::<[u8]>::from(&buf[..]));
    });
    let bdec = per_op(n, || {
        black_box(decode_bincode_as::<T>(black_box(&theirs)).ok());
    });
    println!(
        "| {name:<28} | {:>5} | {enc:>9.0} | {dec:>9.0} | {:>7} | {benc:>11.0} | {bdec:>11.0} |",
        ours.len(),
        theirs.len()
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 20_000 } else { 200_000 };
    println!("| payload                      | bytes | encode ns | decode ns | bincode | bincode enc | bincode dec |");
    println!("|------------------------------|-------|-----------|-----------|---------|-------------|-------------|");
    row("Vec<u8> of 64 (W1, W2)", &vec![7u8; 64], n);
    row("u64", &123_456_789u64, n);
    row("(i64, i64)", &(2i64, 3i64), n);
    row("String of 32", &"x".repeat(32), n);
    row(
        "struct Point",
        &Point {
            x: 1,
            y: -2,
            label: "p".into(),
        },
        n,
    );
    let points: Vec<Point> = (0..100)
        .map(|i| Point {
            x: i,
            y: -i,
            label: format!("p{i}"),
        })
        .collect();
    row("Vec<Point> of 100", &points, n / 50);
    let events = vec![
        Event::Moved(Point {
            x: 1,
            y: 2,
            label: "a".into(),
        }),
        Event::Stopped {
            at: 99,
            why: Some("done".into()),
        },
    ];
    row("Vec<enum> of 2", &events, n);
    let map: BTreeMap<String, u32> = (0..10).map(|i| (format!("key{i}"), i)).collect();
    row("BTreeMap<String, u32> of 10", &map, n / 5);
    // A Value: bincode cannot read one (it is not self-describing).
    let value = Value::List(vec![Value::Int(1), Value::from("two"), Value::Float(3.0)]);
    let ours = netsvc::fuzzing::sample_payload_of(&value);
    let enc = per_op(n, || {
        black_box(encode_payload_len(black_box(&value)).ok());
    });
    let dec = per_op(n, || {
        black_box(decode_payload_as::<Value>(black_box(&ours)).ok());
    });
    println!(
        "| {:<28} | {:>5} | {enc:>9.0} | {dec:>9.0} | {:>7} | {:>11} | {:>11} |",
        "Value [1, \"two\", 3.0]",
        ours.len(),
        "-",
        "-",
        "-"
    );
}
