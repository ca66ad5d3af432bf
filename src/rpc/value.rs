//! [`Value`]: a self-describing value for RPC contexts.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::shape::LOOSE;

/// A request context: what oslo.messaging passes beside every call and cast
/// (a user, a request id, a tenant...). Sent with every call and cast.
pub type Context = BTreeMap<String, Value>;

/// A self-describing value: [`Context`] entries, and any payload read or
/// built without its Rust type.
///
/// Any payload decodes as a `Value` (`report.decode::<Value>()`,
/// `request.decode::<Value>()`, a call's result), so that tools, logs and
/// gateways can show a message without its type: structs and maps become
/// [`Map`](Value::Map)s (keys that are not strings, such as integers, in
/// their text form), sequences and tuples [`List`](Value::List)s, a unit
/// variant its name as a [`String`](Value::String), a variant with content a
/// map of one entry from its name to the content, `None` and `()`
/// [`Null`](Value::Null), `Some(x)` what `x` becomes. An integer is an
/// [`Int`](Value::Int) when it fits an `i64`, else a [`UInt`](Value::UInt);
/// a 128-bit integer beyond both fails to decode.
///
/// A `Value` encodes the same way back, with numbers of no declared width,
/// so that a payload built from one (as a JSON tool would) decodes into the
/// typed arguments of a handler: an integer into any integer type it fits,
/// a float into `f32` or `f64`, a map into a struct by field names, a string
/// into a unit variant, a map of one entry into a variant with content.
///
/// Decoding refuses a value nested more than [`Value::MAX_DEPTH`] lists
/// and maps deep with a decoding error (a request carrying one fails with
/// code 54): a crafted message of a few kilobytes cannot exhaust the
/// stack of the thread that decodes it.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// Nothing.
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer (or an unsigned one that fits).
    Int(i64),
    /// An unsigned integer above `i64::MAX`.
    UInt(u64),
    /// A floating-point number.
    Float(f64),
    /// Text.
    String(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// A list.
    List(Vec<Value>),
    /// A map with text keys.
    Map(BTreeMap<String, Value>),
}

impl Value {
    /// How deep lists and maps may nest in a decoded value: a value at
    /// depth 1 (the outermost) up to this many levels; one more is refused.
    pub const MAX_DEPTH: usize = 128;

    /// The text, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is one that fits an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The integer, if this is one that fits a `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Int(i) => u64::try_from(*i).ok(),
            Value::UInt(u) => Some(*u),
            _ => None,
        }
    }

    /// The entry `key`, if this is a map that has it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(m) => m.get(key),
            _ => None,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<u64> for Value {
    fn from(u: u64) -> Self {
        i64::try_from(u).map_or(Value::UInt(u), Value::Int)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}
impl From<Vec<Value>> for Value {
    fn from(l: Vec<Value>) -> Self {
        Value::List(l)
    }
}
impl From<BTreeMap<String, Value>> for Value {
    fn from(m: BTreeMap<String, Value>) -> Self {
        Value::Map(m)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            // Numbers of no declared width (transparent to other formats).
            Value::Int(i) => s.serialize_newtype_struct(LOOSE, i),
            Value::UInt(u) => s.serialize_newtype_struct(LOOSE, u),
            Value::Float(f) => s.serialize_newtype_struct(LOOSE, f),
            Value::String(t) => s.serialize_str(t),
            Value::Bytes(b) => s.serialize_bytes(b),
            Value::List(l) => s.collect_seq(l),
            Value::Map(m) => s.collect_map(m),
        }
    }
}

/// Decodes a [`Value`] at a given nesting depth (1: the outermost).
#[derive(Clone, Copy)]
struct ValueSeed {
    depth: usize,
}

impl ValueSeed {
    fn inner<E: de::Error>(self) -> Result<ValueSeed, E> {
        if self.depth >= Value::MAX_DEPTH {
            return Err(E::custom(format_args!(
                "Value nested deeper than {} levels",
                Value::MAX_DEPTH
            )));
        }
        Ok(ValueSeed {
            depth: self.depth + 1,
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        ValueSeed { depth: 1 }.deserialize(deserializer)
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        match (i64::try_from(v), u64::try_from(v)) {
            (Ok(i), _) => Ok(Value::Int(i)),
            (_, Ok(u)) => Ok(Value::UInt(u)),
            _ => Err(E::custom(format_args!(
                "the integer {v} does not fit a Value (at most 64 bits)"
            ))),
        }
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        match u64::try_from(v) {
            Ok(u) => Ok(Value::from(u)),
            Err(_) => Err(E::custom(format_args!(
                "the integer {v} does not fit a Value (at most 64 bits)"
            ))),
        }
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_char<E: de::Error>(self, v: char) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bytes(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.inner()?;
        // The length is the peer's word: reserve no more than a little.
        let mut list = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(v) = seq.next_element_seed(inner)? {
            list.push(v);
        }
        Ok(Value::List(list))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.inner()?;
        let mut out = BTreeMap::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let value = map.next_value_seed(inner)?;
            out.insert(key, value);
        }
        Ok(Value::Map(out))
    }
}

/// A map's key as a [`Value::Map`] holds it: text, or the text form of an
/// integer, `bool` or `char` key.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map key: text, an integer, a bool or a char")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_char<E: de::Error>(self, v: char) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<String, E> {
        Ok(v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
        crate::wire::encode(v)
            .map(|p| p.as_bytes().to_vec())
            .unwrap_or_default()
    }

    fn dec<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, String> {
        crate::wire::decode(b).map_err(|e| e.to_string())
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Point {
        x: i32,
        y: i32,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Empty,
        Circle(f64),
        Rect { w: u32, h: u32 },
    }

    #[test]
    fn what_tools_write_reads_as_typed_values() {
        use Value as V;
        let map = |entries: &[(&str, V)]| {
            V::Map(
                entries
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect(),
            )
        };
        let p = map(&[("y", V::Int(2)), ("x", V::Int(-1))]);
        assert_eq!(dec::<Point>(&enc(&p)), Ok(Point { x: -1, y: 2 }));
        assert_eq!(dec::<Shape>(&enc(&V::from("Empty"))), Ok(Shape::Empty));
        let c = map(&[("Circle", V::Float(1.5))]);
        assert_eq!(dec::<Shape>(&enc(&c)), Ok(Shape::Circle(1.5)));
        let r = map(&[("Rect", map(&[("w", V::Int(3)), ("h", V::Int(4))]))]);
        assert_eq!(dec::<Shape>(&enc(&r)), Ok(Shape::Rect { w: 3, h: 4 }));
        let keys = map(&[("1", V::from("a")), ("2", V::from("b"))]);
        assert_eq!(
            dec::<BTreeMap<u32, String>>(&enc(&keys)),
            Ok(BTreeMap::from([(1, "a".into()), (2, "b".into())]))
        );
        assert_eq!(dec::<Option<u8>>(&enc(&V::Null)), Ok(None));
        assert_eq!(dec::<Option<u8>>(&enc(&V::Int(3))), Ok(Some(3)));
        assert_eq!(dec::<char>(&enc(&V::from("é"))), Ok('é'));
        assert_eq!(
            dec::<(u8, String)>(&enc(&V::List(vec![V::Int(1), V::from("x")]))),
            Ok((1, "x".into()))
        );
        assert_eq!(dec::<Vec<u8>>(&enc(&V::Bytes(vec![1, 2]))), Ok(vec![1, 2]));
        assert_eq!(
            dec::<Vec<u8>>(&enc(&V::List(vec![V::Int(1), V::Int(2)]))),
            Ok(vec![1, 2])
        );
        // And typed values read as Values.
        let v: V = dec(&enc(&Shape::Rect { w: 3, h: 4 })).unwrap();
        assert_eq!(v, r);
        let v: V = dec(&enc(&BTreeMap::from([(1u32, "a"), (2, "b")]))).unwrap();
        assert_eq!(v, keys);
        let v: V = dec(&enc(&(Some(1u8), 'c', Shape::Empty, ()))).unwrap();
        assert_eq!(
            v,
            V::List(vec![V::Int(1), V::from("c"), V::from("Empty"), V::Null])
        );
    }

    #[test]
    fn numbers_keep_their_value_through_a_value() {
        for (typed, want) in [
            (enc(&5u8), V::Int(5)),
            (enc(&-5i8), V::Int(-5)),
            (enc(&u64::MAX), V::UInt(u64::MAX)),
            (enc(&i64::MIN), V::Int(i64::MIN)),
            (enc(&1.5f32), V::Float(1.5)),
            (enc(&(u64::MAX as u128)), V::UInt(u64::MAX)),
        ] {
            let v: V = dec(&typed).unwrap();
            assert_eq!(v, want);
            // And back: the value of no width reads as the typed one's type.
            assert_eq!(dec::<V>(&enc(&v)), Ok(want));
        }
        assert_eq!(dec::<u64>(&enc(&V::UInt(u64::MAX))), Ok(u64::MAX));
        assert_eq!(dec::<i8>(&enc(&V::Int(-5))), Ok(-5));
        let e = dec::<V>(&enc(&u128::MAX)).unwrap_err();
        assert!(e.contains("does not fit a Value"), "{e}");
    }

    use Value as V;

    #[test]
    fn hostile_values_are_refused() {
        use crate::shape::tag::*;
        // Every kind of nesting, far past the limit.
        for open in [
            &[LIST, 1][..],
            &[LIST_OPEN],
            &[MAP, 1, STR, 0],
            &[STRUCT, 1, 0, 1, b'a'],
            &[VARIANT, 0, 1, b'a'],
            &[SOME],
        ] {
            let mut deep = open.repeat(100_000);
            deep.push(UNIT);
            let e = dec::<V>(&deep).unwrap_err();
            assert!(e.contains("deeper"), "{open:?}: {e}");
        }
        // A map key a Value cannot hold.
        let e = dec::<V>(&[MAP, 1, UNIT, UNIT]).unwrap_err();
        assert!(e.contains("map key"), "{e}");
        // Garbage.
        for bad in [&[][..], &[0], &[0xff], &[STR, 9, b'x'], &[LIST, 2, UNIT]] {
            assert!(dec::<V>(bad).is_err(), "{bad:?}");
        }
    }

    fn sample() -> Value {
        let mut m = BTreeMap::new();
        m.insert("b".to_owned(), Value::Bool(true));
        m.insert("bytes".to_owned(), Value::Bytes(vec![0, 1, 255]));
        m.insert(
            "list".to_owned(),
            Value::List(vec![
                Value::Null,
                Value::Int(-7),
                Value::UInt(u64::MAX),
                Value::Float(1.5),
            ]),
        );
        Value::Map(
            [
                ("m".to_owned(), Value::Map(m)),
                ("s".to_owned(), "x".into()),
            ]
            .into(),
        )
    }

    #[test]
    fn round_trips() {
        let v = sample();
        let bytes = crate::wire::encode(&v).map(|p| p.as_bytes().to_vec());
        let bytes = bytes.unwrap_or_default();
        assert!(!bytes.is_empty());
        assert_eq!(crate::wire::decode::<Value>(&bytes).ok(), Some(v));
    }

    fn nested(depth: usize) -> Vec<u8> {
        // A list of one element, `depth` times, around a unit.
        let mut bytes = [crate::shape::tag::LIST, 1].repeat(depth - 1);
        bytes.push(crate::shape::tag::UNIT);
        bytes
    }

    #[test]
    fn depth_up_to_the_limit_decodes_and_past_it_fails() {
        assert!(crate::wire::decode::<Value>(&nested(Value::MAX_DEPTH)).is_ok());
        let past = crate::wire::decode::<Value>(&nested(Value::MAX_DEPTH + 1));
        match past {
            Err(crate::Error::Decode(m)) => assert!(m.contains("deeper"), "{m}"),
            other => panic!("expected a decode error, got {other:?}"),
        }
        // Far past it, on this (2 MiB) test thread's stack.
        assert!(crate::wire::decode::<Value>(&nested(10_000)).is_err());
    }
}
