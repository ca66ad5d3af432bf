//! [`Value`]: a self-describing value for RPC contexts.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// A request context: what oslo.messaging passes beside every call and cast
/// (a user, a request id, a tenant...). Sent with every call and cast.
pub type Context = BTreeMap<String, Value>;

/// A self-describing value, for [`Context`] entries.
///
/// Decoding refuses a value nested more than [`Value::MAX_DEPTH`] lists
/// and maps deep with a decoding error (a request carrying one fails with
/// code 54): a crafted message of a few kilobytes cannot exhaust the
/// stack of the thread that decodes it.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub enum Value {
    /// Nothing.
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
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

    /// The integer, if this is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
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

/// The variants, in the order (and so with the indices) of the derived
/// `Serialize`, which the encoding keeps.
const VARIANTS: &[&str] = &[
    "Null", "Bool", "Int", "Float", "String", "Bytes", "List", "Map",
];

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
        deserializer.deserialize_enum("Value", VARIANTS, self)
    }
}

/// A variant's name or index, as the derived `Deserialize` takes it.
struct Variant(u32);

impl<'de> Deserialize<'de> for Variant {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Variant;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Value variant")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Variant, E> {
                match u32::try_from(v) {
                    Ok(i) if (i as usize) < VARIANTS.len() => Ok(Variant(i)),
                    _ => Err(E::invalid_value(
                        de::Unexpected::Unsigned(v),
                        &"a variant index 0 <= i < 8",
                    )),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Variant, E> {
                match VARIANTS.iter().position(|n| *n == v) {
                    Some(i) => Ok(Variant(i as u32)),
                    None => Err(E::unknown_variant(v, VARIANTS)),
                }
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Variant, E> {
                match VARIANTS.iter().position(|n| n.as_bytes() == v) {
                    Some(i) => Ok(Variant(i as u32)),
                    None => Err(E::unknown_variant(&String::from_utf8_lossy(v), VARIANTS)),
                }
            }
        }
        deserializer.deserialize_identifier(V)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("enum Value")
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (Variant(index), variant) = data.variant::<Variant>()?;
        Ok(match index {
            0 => {
                variant.unit_variant()?;
                Value::Null
            }
            1 => Value::Bool(variant.newtype_variant()?),
            2 => Value::Int(variant.newtype_variant()?),
            3 => Value::Float(variant.newtype_variant()?),
            4 => Value::String(variant.newtype_variant()?),
            5 => Value::Bytes(variant.newtype_variant::<ByteBuf>()?.0),
            6 => Value::List(variant.newtype_variant_seed(ListSeed(self.inner()?))?),
            _ => Value::Map(variant.newtype_variant_seed(MapSeed(self.inner()?))?),
        })
    }
}

/// `Vec<u8>` as the derive reads it: a sequence of bytes (what `Vec<u8>`'s
/// `Serialize` writes), bytes also accepted.
struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<u8>::deserialize(deserializer).map(ByteBuf)
    }
}

/// The elements of a list, one level deeper.
struct ListSeed(ValueSeed);

impl<'de> DeserializeSeed<'de> for ListSeed {
    type Value = Vec<Value>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<Value>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ListSeed {
    type Value = Vec<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of Values")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Value>, A::Error> {
        // The length is the peer's word: reserve no more than a little.
        let mut list = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(v) = seq.next_element_seed(self.0)? {
            list.push(v);
        }
        Ok(list)
    }
}

/// The entries of a map, one level deeper.
struct MapSeed(ValueSeed);

impl<'de> DeserializeSeed<'de> for MapSeed {
    type Value = BTreeMap<String, Value>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MapSeed {
    type Value = BTreeMap<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of Values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(self.0)?;
            out.insert(key, value);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the derived `Deserialize` read, for the compatibility check.
    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    enum Derived {
        Null,
        Bool(bool),
        Int(i64),
        Float(f64),
        String(String),
        Bytes(Vec<u8>),
        List(Vec<Derived>),
        Map(BTreeMap<String, Derived>),
    }

    fn sample() -> Value {
        let mut m = BTreeMap::new();
        m.insert("b".to_owned(), Value::Bool(true));
        m.insert("bytes".to_owned(), Value::Bytes(vec![0, 1, 255]));
        m.insert(
            "list".to_owned(),
            Value::List(vec![Value::Null, Value::Int(-7), Value::Float(1.5)]),
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
    fn round_trips_and_reads_what_the_derive_wrote() {
        let v = sample();
        let bytes = crate::wire::encode(&v).map(|p| p.as_bytes().to_vec());
        let bytes = bytes.unwrap_or_default();
        assert!(!bytes.is_empty());
        assert_eq!(crate::wire::decode::<Value>(&bytes).ok(), Some(v));
        // Byte-compatible with the derive, both ways.
        let derived: Option<Derived> = crate::wire::decode(&bytes).ok();
        let again = derived.as_ref().map(crate::wire::encode);
        let again = again.and_then(|r| r.ok()).map(|p| p.as_bytes().to_vec());
        assert_eq!(again, Some(bytes));
    }

    fn nested(depth: usize) -> Vec<u8> {
        // List (variant 6) of one element, `depth` times, around a Null.
        let mut bytes = [6u8, 1].repeat(depth - 1);
        bytes.push(0);
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
