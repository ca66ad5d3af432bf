//! Payloads cannot be misread (issue 15): a value decoded as a type of
//! another shape fails with a readable `Error::Decode` (code 54 from a
//! service) naming what was expected and what was found, at the caller for
//! replies and reports and at the service for requests; types of the same
//! shape from different modules work together; any payload reads as a
//! `Value`, and a payload built from one (as a JSON tool would) is served by
//! typed handlers; and each change of a struct or enum between an old and a
//! new program does what the README says.

mod util;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use netsvc::peer_frames::{self, Key};
use netsvc::{
    codes, ConnectionState, Context, Dispatcher, Endpoint, Error, Event, Exchange, Lifetime,
    Methods, RpcClient, RpcServer, Service, ServiceBinding, ServiceFailure, ServiceStatus, Target,
    Value,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use util::*;

// ----- the types of two programs -----

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i32,
    y: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Color {
    Red,
    Green,
    Rgb(u8, u8, u8),
}

/// Another program's view of the same shapes: other names, other modules.
mod theirs {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Position {
        pub x: i32,
        pub y: i32,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum Colour {
        Red,
        Green,
        Rgb(u8, u8, u8),
    }

    /// `Point` with its fields in the other order.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Swapped {
        pub y: i32,
        pub x: i32,
    }

    /// `Point` with `y` renamed.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Renamed {
        pub x: i32,
        pub height: i32,
    }

    /// `Color` with a variant the other program does not know.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum Wider {
        Red,
        Purple,
    }
}

/// A service that answers with what it is told to, in types of its own.
fn calc(d: &Dispatcher) -> netsvc::ServiceHandle {
    d.service("calc")
        .serve(
            Methods::new()
                .method("add", |_r, (a, b): (i64, i64)| {
                    Ok::<_, ServiceFailure>(a + b)
                })
                .method("sleep", |_r, ms: u64| Ok::<_, ServiceFailure>(ms))
                .method("pair", |_r, (a, b): (u32, u32)| {
                    Ok::<_, ServiceFailure>(a * b)
                })
                .method("norm", |_r, p: Point| {
                    Ok::<_, ServiceFailure>(p.x.abs() + p.y.abs())
                })
                .method("paint", |_r, c: Color| {
                    Ok::<_, ServiceFailure>(format!("{c:?}"))
                })
                .method("five", |_r, (): ()| Ok::<_, ServiceFailure>(5i64))
                .method("echo", |_r, v: Value| Ok::<_, ServiceFailure>(v))
                .method("point", |_r, (): ()| {
                    Ok::<_, ServiceFailure>(Point { x: 1, y: 2 })
                })
                .method("purple", |_r, (): ()| {
                    Ok::<_, ServiceFailure>(theirs::Wider::Purple)
                })
                .method("triple", |_r, (): ()| {
                    Ok::<_, ServiceFailure>((1u8, 2u8, 3u8))
                }),
        )
        .unwrap()
}

fn caller(d: &Dispatcher) -> (Service, ServiceBinding) {
    let me = d.service("caller").open().unwrap();
    me.monitor_service_name("calc");
    let calc = wait_announcement(&me, "calc", None, ServiceStatus::Available)
        .binding()
        .clone();
    (me, calc)
}

/// A call's failure at the service: code 54, whose details say `want`.
fn refused_by_service<A: Serialize>(
    me: &Service,
    calc: &ServiceBinding,
    method: &str,
    args: &A,
    want: &str,
) {
    match me.call_timeout::<Value, _>(calc, method, args, WAIT) {
        Err(Error::Service(f)) => {
            assert_eq!(f.code, codes::REQUEST_DECODING_ERROR, "{method}: {f}");
            assert_eq!(f.description, "request decoding error");
            assert!(
                f.details.contains(want),
                "{method}: {:?} lacks {want:?}",
                f.details
            );
        }
        other => panic!("{method}: expected code 54, got {other:?}"),
    }
}

/// A reply's failure at the caller: `Error::Decode` saying `want`.
fn refused_at_caller<R: DeserializeOwned + std::fmt::Debug>(
    me: &Service,
    calc: &ServiceBinding,
    method: &str,
    want: &str,
) {
    match me.call_timeout::<R, _>(calc, method, &(), WAIT) {
        Err(e @ Error::Decode(_)) => {
            assert_eq!(e.code(), codes::REQUEST_DECODING_ERROR);
            let text = e.to_string();
            assert!(text.contains(want), "{method}: {text:?} lacks {want:?}");
        }
        other => panic!("{method}: expected a decode error, got {other:?}"),
    }
}

// ----- mismatches -----

#[test]
fn requests_of_another_shape_fail_at_the_service_with_code_54() {
    let d = Dispatcher::new().unwrap();
    let _calc = calc(&d);
    let (me, calc) = caller(&d);
    // The issue's cases, which used to return Ok(-1) and Ok(1).
    refused_by_service(
        &me,
        &calc,
        "add",
        &(2u64, 3u64),
        "(i64, i64) at [0]: expected i64, found u64 2 (a number written with a type decodes \
         only as a type of the same sign and at least its width)",
    );
    refused_by_service(
        &me,
        &calc,
        "sleep",
        &true,
        "u64: expected u64, found bool true",
    );
    // Narrower: refused whatever the value.
    refused_by_service(
        &me,
        &calc,
        "pair",
        &(2u64, 3u64),
        "expected u32, found u64 2",
    );
    refused_by_service(
        &me,
        &calc,
        "pair",
        &(2i32, 3i32),
        "expected u32, found i32 2",
    );
    refused_by_service(
        &me,
        &calc,
        "pair",
        &(1u32, 2u32, 3u32),
        "expected a tuple of 2, found a list of 3",
    );
    refused_by_service(
        &me,
        &calc,
        "pair",
        &(1u32,),
        "expected a tuple of 2, found a list of 1",
    );
    refused_by_service(
        &me,
        &calc,
        "norm",
        &theirs::Renamed { x: 1, height: 2 },
        "missing field `y`",
    );
    refused_by_service(
        &me,
        &calc,
        "norm",
        &(1i32, 2i32),
        "expected struct Point, found a list of 2",
    );
    refused_by_service(
        &me,
        &calc,
        "paint",
        &theirs::Wider::Purple,
        "unknown variant `Purple`, expected one of `Red`, `Green`, `Rgb`",
    );
    refused_by_service(&me, &calc, "paint", &"green", "unknown variant `green`");
    // The right shapes are served.
    assert_eq!(me.call::<i64, _>(&calc, "add", &(2i64, 3i64)).unwrap(), 5);
    assert_eq!(me.call::<i64, _>(&calc, "add", &(2i8, 3i32)).unwrap(), 5);
    assert_eq!(me.call::<u32, _>(&calc, "pair", &(2u8, 3u16)).unwrap(), 6);
    d.shutdown();
}

#[test]
fn replies_of_another_shape_fail_at_the_caller() {
    let d = Dispatcher::new().unwrap();
    let _calc = calc(&d);
    let (me, calc) = caller(&d);
    // The issue's case: an i64 5 read as u64 returned Ok(10).
    refused_at_caller::<u64>(&me, &calc, "five", "u64: expected u64, found i64 5");
    refused_at_caller::<i32>(&me, &calc, "five", "i32: expected i32, found i64 5");
    refused_at_caller::<bool>(&me, &calc, "five", "bool: expected bool, found i64 5");
    refused_at_caller::<f64>(&me, &calc, "five", "expected f64, found i64 5");
    refused_at_caller::<(u8, u8)>(
        &me,
        &calc,
        "triple",
        "expected a tuple of 2, found a sequence of 3 u8",
    );
    refused_at_caller::<theirs::Renamed>(&me, &calc, "point", "missing field `height`");
    refused_at_caller::<(i32, i32)>(
        &me,
        &calc,
        "point",
        "expected a tuple of 2, found a struct {x, y}",
    );
    refused_at_caller::<Color>(&me, &calc, "purple", "unknown variant `Purple`");
    // Wider and right: read.
    assert_eq!(me.call::<i128, _>(&calc, "five", &()).unwrap(), 5);
    assert_eq!(
        me.call::<(u8, u16, u64), _>(&calc, "triple", &()).unwrap(),
        (1, 2, 3)
    );
    d.shutdown();
}

#[test]
fn reports_of_another_shape_fail_at_the_subscriber() {
    let d = Dispatcher::new().unwrap();
    let publisher = d.service("pub").open().unwrap();
    let sub = d.service("sub").open().unwrap();
    sub.subscribe_reports("pub", "*");
    let _ = publisher_announcement(&sub);
    let _ = subscription(&publisher);
    // The issue's case: a u64 report read as i32 returned Ok(898076715).
    publisher
        .publish_report("n", &0x1_3587_A62Bu64, Lifetime::None)
        .unwrap();
    let r = report(&sub);
    match r.decode::<i32>() {
        Err(Error::Decode(m)) => {
            assert_eq!(
                m,
                "i32: expected i32, found u64 5193049643 (a number written with a type decodes \
                 only as a type of the same sign and at least its width)"
            );
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert!(r.decode::<u32>().is_err());
    assert_eq!(r.decode::<u64>().unwrap(), 5_193_049_643);
    assert_eq!(r.decode::<Value>().unwrap(), Value::Int(5_193_049_643));
    // Trailing bytes: a (u64, u64) read as u64 is refused too.
    publisher
        .publish_report("n", &(1u64, 2u64), Lifetime::None)
        .unwrap();
    let r = report(&sub);
    assert!(matches!(r.decode::<u64>(), Err(Error::Decode(_))));
    assert_eq!(r.decode::<[u64; 2]>().unwrap(), [1, 2]);
    d.shutdown();
}

fn publisher_announcement(svc: &Service) -> netsvc::PublisherAnnouncement {
    util::publisher(svc)
}

// ----- matching by shape and by name -----

#[test]
fn types_of_the_same_shape_from_two_modules_work_together() {
    let d = Dispatcher::new().unwrap();
    let _calc = calc(&d);
    let (me, calc) = caller(&d);
    let n: i32 = me
        .call(&calc, "norm", &theirs::Position { x: -3, y: 4 })
        .unwrap();
    assert_eq!(n, 7);
    let p: theirs::Position = me.call(&calc, "point", &()).unwrap();
    assert_eq!(p, theirs::Position { x: 1, y: 2 });
    let c: String = me
        .call(&calc, "paint", &theirs::Colour::Rgb(1, 2, 3))
        .unwrap();
    assert_eq!(c, "Rgb(1, 2, 3)");
    // Fields are matched by name, not by position: a struct with its fields
    // in the other order reads right, where a positional encoding would
    // have swapped x and y without a word.
    let s: theirs::Swapped = me.call(&calc, "point", &()).unwrap();
    assert_eq!(s, theirs::Swapped { x: 1, y: 2 });
    let n: i32 = me
        .call(&calc, "norm", &theirs::Swapped { x: -10, y: 1 })
        .unwrap();
    assert_eq!(n, 11);
    d.shutdown();
}

// ----- Value -----

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Reading {
    sensor: String,
    at: Point,
    values: Vec<f32>,
    flags: (bool, char),
    state: Color,
    raw: Vec<u8>,
    note: Option<String>,
    counts: BTreeMap<u16, u64>,
}

fn reading() -> Reading {
    Reading {
        sensor: "t1".into(),
        at: Point { x: 3, y: -4 },
        values: vec![0.5, 1.25],
        flags: (true, 'k'),
        state: Color::Rgb(1, 2, 255),
        raw: vec![0, 255],
        note: None,
        counts: [(7, u64::MAX)].into(),
    }
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

fn ints(v: &[i64]) -> Value {
    Value::List(v.iter().map(|&i| Value::Int(i)).collect())
}

/// `reading()` as a `Value`.
fn reading_value() -> Value {
    map(vec![
        ("sensor", "t1".into()),
        ("at", map(vec![("x", Value::Int(3)), ("y", Value::Int(-4))])),
        (
            "values",
            Value::List(vec![Value::Float(0.5), Value::Float(1.25)]),
        ),
        ("flags", Value::List(vec![Value::Bool(true), "k".into()])),
        ("state", map(vec![("Rgb", ints(&[1, 2, 255]))])),
        ("raw", ints(&[0, 255])),
        ("note", Value::Null),
        ("counts", map(vec![("7", Value::UInt(u64::MAX))])),
    ])
}

#[test]
fn any_report_and_request_reads_as_a_value() {
    let d = Dispatcher::new().unwrap();
    let publisher = d.service("pub").open().unwrap();
    let sub = d.service("sub").open().unwrap();
    sub.subscribe_reports("pub", "*");
    let _ = publisher_announcement(&sub);
    let _ = subscription(&publisher);
    publisher
        .publish_report("r", &reading(), Lifetime::None)
        .unwrap();
    publisher
        .publish_report("e", &Color::Green, Lifetime::None)
        .unwrap();
    publisher
        .publish_report("b", &vec![1u8; 3], Lifetime::None)
        .unwrap();
    let r = report(&sub);
    assert_eq!(r.decode::<Value>().unwrap(), reading_value());
    assert_eq!(r.decode::<Reading>().unwrap(), reading());
    assert_eq!(
        report(&sub).decode::<Value>().unwrap(),
        Value::from("Green")
    );
    assert_eq!(report(&sub).decode::<Value>().unwrap(), ints(&[1, 1, 1]));

    // A request, read by a service that does not know its type, and
    // answered with a Value the caller reads as its own type.
    let generic = d
        .service("generic")
        .spawn(|_s, ev| {
            if let Event::Request(r) = ev {
                let v: Value = r.decode().unwrap_or_default();
                let x = v.get("at").and_then(|p| p.get("x")).and_then(Value::as_i64);
                let _ = r.reply(&map(vec![
                    ("x", Value::Int(x.unwrap_or(0) * 10)),
                    ("y", Value::Int(0)),
                ]));
            }
        })
        .unwrap();
    let me = d.service("me").open().unwrap();
    let p: Point = me.call(generic.binding(), "m", &reading()).unwrap();
    assert_eq!(p, Point { x: 30, y: 0 });
    d.shutdown();
}

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    item: String,
    qty: u32,
    price: f64,
    color: Color,
    gift: Option<bool>,
    tags: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Receipt {
    total: f64,
    items: u64,
    color: Color,
    said: String,
}

fn receipt(o: Order) -> Receipt {
    Receipt {
        total: o.price * f64::from(o.qty),
        items: u64::from(o.qty),
        color: o.color,
        said: format!("{} {}", o.item, o.tags.join(",")),
    }
}

/// An order as a JSON tool would build it: numbers of no width, a map for
/// the struct, a string for a unit variant, an absent optional field.
fn order_value(color: Value) -> Value {
    map(vec![
        ("item", "pen".into()),
        ("qty", Value::Int(3)),
        ("price", Value::Float(1.5)),
        ("color", color),
        ("tags", Value::List(vec!["a".into(), "b".into()])),
    ])
}

#[test]
fn a_request_built_as_a_value_is_served_by_typed_handlers_and_read_back_as_one() {
    let d = Dispatcher::new().unwrap();
    let shop = d
        .service("shop")
        .serve(Methods::new().method("buy", |_r, o: Order| Ok::<_, ServiceFailure>(receipt(o))))
        .unwrap();
    let me = d.service("me").open().unwrap();
    let r: Value = me
        .call(shop.binding(), "buy", &order_value("Red".into()))
        .unwrap();
    assert_eq!(
        r,
        map(vec![
            ("total", Value::Float(4.5)),
            ("items", Value::Int(3)),
            ("color", "Red".into()),
            ("said", "pen a,b".into()),
        ])
    );
    let rgb = map(vec![("Rgb", ints(&[9, 8, 7]))]);
    let r: Receipt = me.call(shop.binding(), "buy", &order_value(rgb)).unwrap();
    assert_eq!(r.color, Color::Rgb(9, 8, 7));
    // What a tool gets wrong is refused as a typed caller's mistake is.
    let mut bad = order_value("Red".into());
    if let Value::Map(m) = &mut bad {
        m.insert("qty".into(), Value::Int(-3));
    }
    match me.call::<Value, _>(shop.binding(), "buy", &bad) {
        Err(Error::Service(f)) => {
            assert_eq!(f.code, 54);
            assert!(
                f.details
                    .contains("at .qty: expected u32, found the integer -3, out of its range"),
                "{}",
                f.details
            );
        }
        other => panic!("{other:?}"),
    }

    // The same through RPC: a typed endpoint, a caller with Values only.
    let _server = RpcServer::new(&d, Target::new("shop").server("s1"))
        .endpoint(Endpoint::new().method("buy", |_ctx: &Context, o: Order| Ok(receipt(o))))
        .start()
        .unwrap();
    let client = RpcClient::new(&d, Target::new("shop"))
        .prepare()
        .timeout(WAIT)
        .build();
    let r: Value = client
        .call(&Context::new(), "buy", &order_value("Green".into()))
        .unwrap();
    assert_eq!(r.get("color"), Some(&Value::from("Green")));
    assert_eq!(r.get("items"), Some(&Value::Int(3)));
    match client.call::<Value, _>(&Context::new(), "buy", &Value::Int(1)) {
        Err(Error::Remote(e)) => {
            assert_eq!(e.exc_type, "TypeError");
            assert!(
                e.value
                    .contains("expected struct Order, found the integer 1"),
                "{}",
                e.value
            );
        }
        other => panic!("{other:?}"),
    }
    d.shutdown();
}

// ----- schema evolution -----

/// An old and a new program's versions of one struct, field by field.
mod v1 {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    pub struct User {
        pub name: String,
        pub age: u32,
        pub email: String,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    pub enum Role {
        Reader,
        Writer,
    }
}

mod v2 {
    use serde::{Deserialize, Serialize};

    /// v1's `User`: `email` removed, `admin` added with a default,
    /// `nick` added as an option, `age` widened to u64, `name` renamed to
    /// `full_name` (with an alias, so that v1's name still reads).
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    pub struct User {
        #[serde(alias = "name")]
        pub full_name: String,
        pub age: u64,
        #[serde(default)]
        pub admin: bool,
        pub nick: Option<String>,
    }

    /// `name` renamed without an alias.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    pub struct Renamed {
        pub full_name: String,
        pub age: u32,
        pub email: String,
    }

    /// `admin` added without a default.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    pub struct Required {
        pub name: String,
        pub age: u32,
        pub email: String,
        pub admin: bool,
    }

    /// A reader that refuses fields it does not know.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Strict {
        pub name: String,
        pub age: u32,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    pub enum Role {
        Reader,
        Writer,
        Admin,
    }
}

/// Publishes `value` and decodes the report as `T`: what a subscriber of
/// another version reads.
struct Wire {
    d: Dispatcher,
    publisher: Service,
    sub: Service,
}

impl Wire {
    fn new() -> Wire {
        let d = Dispatcher::new().unwrap();
        let publisher = d.service("pub").open().unwrap();
        let sub = d.service("sub").open().unwrap();
        sub.subscribe_reports("pub", "*");
        let _ = publisher_announcement(&sub);
        let _ = subscription(&publisher);
        Wire { d, publisher, sub }
    }

    fn read<T: DeserializeOwned>(&self, value: &impl Serialize) -> Result<T, String> {
        self.publisher
            .publish_report("v", value, Lifetime::None)
            .unwrap();
        report(&self.sub).decode::<T>().map_err(|e| e.to_string())
    }
}

fn old_user() -> v1::User {
    v1::User {
        name: "Ann".into(),
        age: 40,
        email: "ann@example.org".into(),
    }
}

#[test]
fn schema_changes_between_an_old_and_a_new_program() {
    let w = Wire::new();
    // New reads old: the removed field is ignored, the added ones take their
    // default (or None), the renamed one is found by its alias, the
    // widened one reads.
    assert_eq!(
        w.read::<v2::User>(&old_user()),
        Ok(v2::User {
            full_name: "Ann".into(),
            age: 40,
            admin: false,
            nick: None,
        })
    );
    // Old reads new: the field new removed is missing, and the widened one
    // is refused (a u64 does not read as a u32, whatever its value).
    let new = v2::User {
        full_name: "Bob".into(),
        age: 30,
        admin: true,
        nick: Some("b".into()),
    };
    let e = w.read::<v1::User>(&new).unwrap_err();
    assert!(e.contains("at .age: expected u32, found u64 30"), "{e}");
    // (and with `age` as it was, `name` is missing: v2's alias reads
    // the old name, but writes the new one)
    #[derive(Serialize)]
    struct NewSameAge {
        full_name: String,
        age: u32,
        email: String,
    }
    let same_age = NewSameAge {
        full_name: "Bob".into(),
        age: 30,
        email: "bob@example.org".into(),
    };
    let e = w.read::<v1::User>(&same_age).unwrap_err();
    assert!(e.ends_with("missing field `name`"), "{e}");
    // Field by field.
    // - added with a default: the old value reads; the new field is ignored by the old.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct WithDefault {
        name: String,
        age: u32,
        email: String,
        #[serde(default)]
        admin: bool,
    }
    assert_eq!(
        w.read::<WithDefault>(&old_user()),
        Ok(WithDefault {
            name: "Ann".into(),
            age: 40,
            email: "ann@example.org".into(),
            admin: false
        })
    );
    let with = WithDefault {
        name: "Ann".into(),
        age: 40,
        email: "ann@example.org".into(),
        admin: true,
    };
    assert_eq!(w.read::<v1::User>(&with), Ok(old_user()));
    // - added without a default: the old value is refused, naming the field.
    let e = w.read::<v2::Required>(&old_user()).unwrap_err();
    assert!(e.ends_with("missing field `admin`"), "{e}");
    // - removed: the new reader ignores it; the old reader misses it.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Removed {
        name: String,
        age: u32,
    }
    assert_eq!(
        w.read::<Removed>(&old_user()),
        Ok(Removed {
            name: "Ann".into(),
            age: 40
        })
    );
    let e = w
        .read::<v1::User>(&Removed {
            name: "Ann".into(),
            age: 40,
        })
        .unwrap_err();
    assert!(e.ends_with("missing field `email`"), "{e}");
    // - renamed: refused both ways (unless an alias reads the old name).
    let e = w.read::<v2::Renamed>(&old_user()).unwrap_err();
    assert!(e.ends_with("missing field `full_name`"), "{e}");
    let renamed = v2::Renamed {
        full_name: "Ann".into(),
        age: 40,
        email: "x".into(),
    };
    let e = w.read::<v1::User>(&renamed).unwrap_err();
    assert!(e.ends_with("missing field `name`"), "{e}");
    // - unknown fields refused by a reader that says so.
    let e = w.read::<v2::Strict>(&old_user()).unwrap_err();
    assert!(e.contains("unknown field `email`"), "{e}");
    // - widened: u32 to u64 reads; back is refused.
    assert_eq!(w.read::<u64>(&40u32), Ok(40));
    assert!(w
        .read::<u32>(&40u64)
        .unwrap_err()
        .contains("expected u32, found u64 40"));
    // - an enum variant added: the new reads every old variant; the old
    //   reads the new's old variants, and refuses the added one by name.
    assert_eq!(w.read::<v2::Role>(&v1::Role::Writer), Ok(v2::Role::Writer));
    assert_eq!(w.read::<v1::Role>(&v2::Role::Reader), Ok(v1::Role::Reader));
    let e = w.read::<v1::Role>(&v2::Role::Admin).unwrap_err();
    assert!(
        e.contains("unknown variant `Admin`, expected `Reader` or `Writer`"),
        "{e}"
    );
    // - a field made optional: the old plain value reads as Some.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Optional {
        name: Option<String>,
    }
    assert_eq!(
        w.read::<Optional>(&old_user()),
        Ok(Optional {
            name: Some("Ann".into())
        })
    );
    w.d.shutdown();
}

// ----- across an exchange -----

#[test]
fn mismatches_across_an_exchange_fail_on_both_sides() {
    let ds = Dispatcher::builder().name("server").build().unwrap();
    let ex = Exchange::server(&ds).listen("127.0.0.1:0").unwrap();
    let _calc = calc(&ds);
    let publisher = ds.service("pub").open().unwrap();

    let dc = Dispatcher::builder().name("client").build().unwrap();
    let cx = Exchange::client(&dc)
        .connect(ex.local_addr(), Duration::from_millis(100))
        .unwrap();
    let a = cx.connections().recv_timeout(WAIT).unwrap();
    assert_eq!(a.state(), ConnectionState::Active);
    let (me, calc) = caller(&dc);
    assert_ne!(calc.process_identity(), &dc.process_id());

    refused_by_service(
        &me,
        &calc,
        "add",
        &(2u64, 3u64),
        "expected i64, found u64 2",
    );
    refused_by_service(
        &me,
        &calc,
        "paint",
        &theirs::Wider::Purple,
        "unknown variant `Purple`",
    );
    refused_at_caller::<u64>(&me, &calc, "five", "u64: expected u64, found i64 5");
    assert_eq!(me.call::<i64, _>(&calc, "add", &(2i64, 3i64)).unwrap(), 5);
    let p: theirs::Position = me.call(&calc, "point", &()).unwrap();
    assert_eq!(p, theirs::Position { x: 1, y: 2 });

    let sub = dc.service("sub").open().unwrap();
    sub.subscribe_reports("pub", "*");
    let _ = publisher_announcement(&sub);
    let _ = subscription(&publisher);
    publisher
        .publish_report("r", &reading(), Lifetime::None)
        .unwrap();
    let r = report(&sub);
    assert_eq!(r.decode::<Value>().unwrap(), reading_value());
    let e = r.decode::<Point>().unwrap_err().to_string();
    assert!(e.contains("missing field `x`"), "{e}");
    dc.shutdown();
    ds.shutdown();
}

// ----- hostile payloads from a peer -----

#[test]
fn hostile_payloads_from_a_peer_are_answered_with_code_54_and_the_service_goes_on() {
    let ds = Dispatcher::builder().name("server").build().unwrap();
    let ex = Exchange::server(&ds).listen("127.0.0.1:0").unwrap();
    let calc_handle = calc(&ds);
    let mut raw = raw::handshake(ex.local_addr(), 15);
    let sender = peer_frames::binding(
        "raw",
        "*",
        Key {
            process: raw::uid(15),
            agent: 1,
        },
        &[],
    );
    raw.write_all(&peer_frames::announce(&sender)).unwrap();

    let mut deep = [0x16u8, 1].repeat(50_000); // a list in a list..., 50,000 deep
    deep.push(0x01);
    let mut options = [0x03u8].repeat(50_000); // Some(Some(...)), 50,000 deep
    options.push(0x01);
    let mut huge = vec![0x13u8]; // a string claiming 2^63 bytes
    huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
    huge.extend_from_slice(b"abc");
    let garbage: Vec<u8> = (0..2000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let mut trailing = peer_frames::payload(&(1i64, 2i64));
    trailing.push(0x01);
    let cases: [(&str, &[u8], &str); 7] = [
        ("echo", &deep, "Value nested deeper than 128 levels"),
        ("echo", &options, "values nested deeper than 256 levels"),
        (
            "echo",
            &huge,
            "a length of 9223372036854775807 with only 3 bytes left",
        ),
        (
            "add",
            &huge,
            "expected a tuple of 2, found a malformed value",
        ),
        ("add", &garbage, "(i64, i64)"),
        ("add", &[], "the payload is empty"),
        ("add", &trailing, "1 trailing bytes after the value"),
    ];
    for (seq, (method, payload, want)) in cases.iter().enumerate() {
        let f = peer_frames::request(
            seq as u64 + 1,
            &sender,
            calc_handle.binding().into(),
            method,
            payload,
            5_000,
            None,
        );
        raw.write_all(&f).unwrap();
        // The answer: a failure with code 54 saying why.
        let outcome = loop {
            let body = raw::read_frame(&mut raw).expect("a reply");
            if let Some((_, outcome)) = peer_frames::reply_outcome(&body) {
                break outcome;
            }
        };
        match outcome {
            Err(Error::Service(f)) => {
                assert_eq!(f.code, codes::REQUEST_DECODING_ERROR);
                assert!(f.details.contains(want), "{:?} lacks {want:?}", f.details);
            }
            other => panic!("case {seq}: expected code 54, got {other:?}"),
        }
    }
    // A well-formed call over the same link is served.
    let f = peer_frames::request(
        99,
        &sender,
        calc_handle.binding().into(),
        "add",
        &peer_frames::payload(&(2i64, 3i64)),
        5_000,
        None,
    );
    raw.write_all(&f).unwrap();
    let got = loop {
        let body = raw::read_frame(&mut raw).expect("a reply");
        if let Some((_, outcome)) = peer_frames::reply_outcome(&body) {
            break outcome;
        }
    };
    let bytes = got.expect("served");
    assert_eq!(bytes, peer_frames::payload(&5i64));
    ds.shutdown();
}
