//! The payload encoding: serde's data model, self-describing and compact.
//!
//! Every value starts with a tag byte that says what it is, so that a
//! payload decoded as a type of another shape is an error naming what was
//! expected and what was found, never a wrong value, and so that any payload
//! can be read without its Rust type (as [`Value`](crate::Value)). Frames
//! stay bincode; payloads travel inside them as bytes.
//!
//! ```text
//! value    = tag body
//! 0x01 unit                 (), unit structs, Value::Null
//! 0x02 none   0x03 some value
//! 0x04 false  0x05 true
//! 0x06 u8 byte  0x07 u16  0x08 u32  0x09 u64  0x0a u128      + varint
//! 0x0b i8 byte  0x0c i16  0x0d i32  0x0e i64  0x0f i128      + zigzag varint
//! 0x10 f32 (4 bytes LE)  0x11 f64 (8 bytes LE)
//! 0x12 char  + varint (its scalar value)
//! 0x13 str   + varint length + UTF-8
//! 0x14 bytes + varint length + the bytes        (serialize_bytes)
//! 0x15 u8s   + varint length + the bytes        (a sequence or tuple of u8)
//! 0x16 list  + varint count + values            (sequences, tuples, tuple structs)
//! 0x17 list of unknown length: values, then 0x1d
//! 0x18 map   + varint count + (key value)...
//! 0x19 map of unknown length: (key value)..., then 0x1d
//! 0x1a struct + varint count + (name value)...
//! 0x1b variant + name + value                   (newtype, tuple and struct variants)
//! 0x1c unit variant + name
//! 0x1d end (of a list or map of unknown length)
//! 0x1e integer of no width  + varint m: m      (written by Value and tools)
//! 0x1f integer of no width  + varint m: -1 - m
//! 0x20 number of no width   + f64 (8 bytes LE)
//! name     = varint 0, varint length, UTF-8: a new name, numbered from 1 in order
//!          | varint k (k >= 1): the k-th new name of this payload
//! varint   = LEB128: 7 bits a byte, least significant first
//! ```
//!
//! Names of fields and variants are written once per payload and referred
//! back to afterwards (the first [`MAX_NAMES`]; later ones are written out
//! each time). Type names are not written: two programs' types match when
//! their shapes do, whatever they are called and wherever they are defined.
//!
//! Decoding follows these rules (the README's "Types" section says why):
//! - An integer written with a width (any Rust integer) decodes only as an
//!   integer type of the same sign and at least that width; so a `u32`
//!   field may grow to `u64`, and no decoding depends on the value sent.
//!   An integer of no width decodes as any integer type it fits, and as a
//!   float if exactly representable. `f32` decodes as `f32` or `f64`,
//!   `f64` only as `f64`, a number of no width as either.
//! - `bool`, strings, bytes, units are read only as themselves; a `char` as
//!   a `char` or a string, a one-character string as a `char`; bytes and
//!   sequences of `u8` as either.
//! - A tuple decodes only from a list of exactly its length.
//! - A struct decodes from a struct or a map with string keys, its fields
//!   matched by name (what serde's derive does with an unknown or missing
//!   field is the reader's type's choice: unknown ones are ignored unless
//!   `#[serde(deny_unknown_fields)]`; a missing one is an error unless
//!   `#[serde(default)]` or an `Option`).
//! - An enum decodes from a variant matched by name, or (as JSON tools
//!   write them) from a string naming a unit variant or a map of one entry.
//! - `Option<T>` decodes `None` from none or unit, and `Some` from some or
//!   from a plain `T`; unit decodes from unit or none.
//! - A map's string keys decode as integer or `bool` keys when they parse.
//! - A payload nested more than [`MAX_DEPTH`] deep, a count or length
//!   larger than the bytes left, a malformed varint, an unknown tag and
//!   trailing bytes are errors; nothing is allocated ahead of the bytes
//!   that back it.

use std::fmt;

use serde::de::{self, DeserializeSeed, Visitor};
use serde::ser::{self, Serialize};

/// The tags: the first byte of every value.
pub(crate) mod tag {
    pub const UNIT: u8 = 0x01;
    pub const NONE: u8 = 0x02;
    pub const SOME: u8 = 0x03;
    pub const FALSE: u8 = 0x04;
    pub const TRUE: u8 = 0x05;
    pub const U8: u8 = 0x06;
    pub const U16: u8 = 0x07;
    pub const U32: u8 = 0x08;
    pub const U64: u8 = 0x09;
    pub const U128: u8 = 0x0a;
    pub const I8: u8 = 0x0b;
    pub const I16: u8 = 0x0c;
    pub const I32: u8 = 0x0d;
    pub const I64: u8 = 0x0e;
    pub const I128: u8 = 0x0f;
    pub const F32: u8 = 0x10;
    pub const F64: u8 = 0x11;
    pub const CHAR: u8 = 0x12;
    pub const STR: u8 = 0x13;
    pub const BYTES: u8 = 0x14;
    pub const U8S: u8 = 0x15;
    pub const LIST: u8 = 0x16;
    pub const LIST_OPEN: u8 = 0x17;
    pub const MAP: u8 = 0x18;
    pub const MAP_OPEN: u8 = 0x19;
    pub const STRUCT: u8 = 0x1a;
    pub const VARIANT: u8 = 0x1b;
    pub const UNIT_VARIANT: u8 = 0x1c;
    pub const END: u8 = 0x1d;
    pub const LOOSE_POS: u8 = 0x1e;
    pub const LOOSE_NEG: u8 = 0x1f;
    pub const LOOSE_FLOAT: u8 = 0x20;
}
use tag::*;

/// How deep values may nest (lists, maps, structs, variants, options):
/// deeper input is refused before it can exhaust the decoding thread's stack.
pub(crate) const MAX_DEPTH: usize = 256;

/// How many distinct names one payload numbers for reference.
pub(crate) const MAX_NAMES: usize = 256;

/// The newtype name through which a value of no declared width is written
/// (`Value`'s numbers): an integer or float serialized inside it is
/// written as an integer or number of no width. Other serializers see a
/// transparent newtype.
pub(crate) const LOOSE: &str = "$netsvc::loose";

// ----------------------------------------------------------------- varints

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint128(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn zigzag(v: i128) -> u128 {
    ((v << 1) ^ (v >> 127)) as u128
}

fn unzigzag(u: u128) -> i128 {
    (u >> 1) as i128 ^ -((u & 1) as i128)
}

// ------------------------------------------------------------------ errors

/// Why a value could not be encoded. (Boxed: a `Result<(), EncodeError>`
/// is one word, returned in a register by every serialize method.)
#[derive(Debug)]
pub(crate) struct EncodeError(Box<str>);

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EncodeError {}

impl ser::Error for EncodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        EncodeError(msg.to_string().into())
    }
}

/// One step of the way from a payload's top to where decoding failed.
#[derive(Debug, Clone)]
enum Step {
    Index(usize),
    Field(String),
    Key(String),
    Variant(String),
}

/// Why a payload did not decode: what was expected and found, and where.
/// (Boxed: the decoder's results stay small on the path that succeeds.)
#[derive(Debug)]
pub(crate) struct DecodeError(Box<Failure>);

#[derive(Debug)]
pub(crate) struct Failure {
    message: String,
    /// Innermost first (steps are added as the error travels up).
    path: Vec<Step>,
}

impl std::ops::Deref for DecodeError {
    type Target = Failure;
    fn deref(&self) -> &Failure {
        &self.0
    }
}

impl DecodeError {
    #[cold]
    fn new(message: impl Into<String>) -> Self {
        DecodeError(Box::new(Failure {
            message: message.into(),
            path: Vec::new(),
        }))
    }

    #[cold]
    fn at(mut self, step: Step) -> Self {
        self.0.path.push(step);
        self
    }

    /// Where in the value it failed (`.field[2]::Variant`), empty at the top.
    pub(crate) fn path(&self) -> String {
        let mut s = String::new();
        let n = self.path.len();
        for (i, step) in self.path.iter().rev().enumerate() {
            // A path through deep nesting: its first and last steps.
            if n > 24 && (12..n - 12).contains(&i) {
                if i == 12 {
                    s.push_str(&format!("...({} more)...", n - 24));
                }
                continue;
            }
            match step {
                Step::Index(i) => s.push_str(&format!("[{i}]")),
                Step::Field(f) => s.push_str(&format!(".{f}")),
                Step::Key(k) => s.push_str(&format!("[{k}]")),
                Step::Variant(v) => s.push_str(&format!("::{v}")),
            }
        }
        s
    }

    /// What went wrong there.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "at {}: {}", self.path(), self.message)
        }
    }
}

impl std::error::Error for DecodeError {}

impl de::Error for DecodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DecodeError::new(msg.to_string())
    }
}

type DResult<T> = Result<T, DecodeError>;

// ----------------------------------------------------------------- encoder

/// Writes values into `out`. One per thread is kept by `wire` and reused.
#[derive(Debug, Default)]
pub(crate) struct Encoder {
    /// The encoding so far.
    pub(crate) out: Vec<u8>,
    /// The names numbered so far, by address and length (field and
    /// variant names are `&'static str`: one address per name in practice;
    /// a name seen at two addresses is numbered twice, which costs bytes,
    /// not correctness).
    names: Vec<(usize, usize)>,
}

impl Encoder {
    /// Forgets the previous value.
    pub(crate) fn clear(&mut self) {
        self.out.clear();
        self.names.clear();
    }

    /// Keeps no large buffer after a large value.
    pub(crate) fn shrink(&mut self) {
        if self.out.capacity() > 1 << 20 {
            self.out = Vec::new();
        }
        if self.names.capacity() > MAX_NAMES {
            self.names = Vec::new();
        }
    }

    fn name(&mut self, name: &'static str) {
        let key = (name.as_ptr() as usize, name.len());
        if let Some(i) = self.names.iter().position(|k| *k == key) {
            put_varint(&mut self.out, i as u64 + 1);
            return;
        }
        if self.names.len() < MAX_NAMES {
            self.names.push(key);
        }
        self.out.push(0);
        put_varint(&mut self.out, name.len() as u64);
        self.out.extend_from_slice(name.as_bytes());
    }

    fn bytes(&mut self, tag: u8, v: &[u8]) {
        self.out.push(tag);
        put_varint(&mut self.out, v.len() as u64);
        self.out.extend_from_slice(v);
    }

    /// Writes `tag` and a count, returning where the count is.
    fn counted(&mut self, tag: u8, n: usize) -> usize {
        self.out.push(tag);
        let at = self.out.len();
        put_varint(&mut self.out, n as u64);
        at
    }

    /// Rewrites the count at `at` if the elements written were not as many
    /// as declared (a `Serialize` whose length hint was wrong).
    fn fix_count(&mut self, at: usize, declared: usize, actual: usize) {
        if declared != actual {
            let mut v = Vec::with_capacity(10);
            put_varint(&mut v, actual as u64);
            let w = varint_len(declared as u64);
            self.out.splice(at..at + w, v);
        }
    }

    /// Rewrites the number written from `at` as one of no width.
    fn loosen(&mut self, at: usize) -> Result<(), EncodeError> {
        let mut d = Decoder::new(&self.out[at..]);
        let t = d.byte().map_err(|e| EncodeError(e.to_string().into()))?;
        enum N {
            Int(i128),
            Big(u128),
            Float(f64),
        }
        let n = match t {
            U8 | U16 | U32 | U64 | U128 => {
                let v = if t == U8 {
                    u128::from(d.byte().map_err(|e| EncodeError(e.to_string().into()))?)
                } else {
                    d.varint128()
                        .map_err(|e| EncodeError(e.to_string().into()))?
                };
                i128::try_from(v).map_or(N::Big(v), N::Int)
            }
            I8 => N::Int(i128::from(
                d.byte().map_err(|e| EncodeError(e.to_string().into()))? as i8,
            )),
            I16 | I32 | I64 | I128 => N::Int(unzigzag(
                d.varint128()
                    .map_err(|e| EncodeError(e.to_string().into()))?,
            )),
            F32 => N::Float(f64::from(f32::from_le_bytes(
                d.array().map_err(|e| EncodeError(e.to_string().into()))?,
            ))),
            F64 => N::Float(f64::from_le_bytes(
                d.array().map_err(|e| EncodeError(e.to_string().into()))?,
            )),
            _ => return Ok(()), // not a number: left as written
        };
        self.out.truncate(at);
        match n {
            N::Int(v) if v >= 0 => {
                self.out.push(LOOSE_POS);
                put_varint128(&mut self.out, v as u128);
            }
            N::Int(v) => {
                self.out.push(LOOSE_NEG);
                put_varint128(&mut self.out, (-1 - v) as u128);
            }
            N::Big(v) => {
                self.out.push(LOOSE_POS);
                put_varint128(&mut self.out, v);
            }
            N::Float(f) => {
                self.out.push(LOOSE_FLOAT);
                self.out.extend_from_slice(&f.to_le_bytes());
            }
        }
        Ok(())
    }
}

impl<'a> ser::Serializer for &'a mut Encoder {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = Seq<'a>;
    type SerializeTuple = Seq<'a>;
    type SerializeTupleStruct = Seq<'a>;
    type SerializeTupleVariant = Seq<'a>;
    type SerializeMap = Map<'a>;
    type SerializeStruct = Map<'a>;
    type SerializeStructVariant = Map<'a>;

    fn serialize_bool(self, v: bool) -> Result<(), EncodeError> {
        self.out.push(if v { TRUE } else { FALSE });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), EncodeError> {
        self.out.extend_from_slice(&[I8, v as u8]);
        Ok(())
    }
    fn serialize_i16(self, v: i16) -> Result<(), EncodeError> {
        self.out.push(I16);
        put_varint(&mut self.out, zigzag64(v.into()));
        Ok(())
    }
    fn serialize_i32(self, v: i32) -> Result<(), EncodeError> {
        self.out.push(I32);
        put_varint(&mut self.out, zigzag64(v.into()));
        Ok(())
    }
    fn serialize_i64(self, v: i64) -> Result<(), EncodeError> {
        self.out.push(I64);
        put_varint(&mut self.out, zigzag64(v));
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Result<(), EncodeError> {
        self.out.push(I128);
        put_varint128(&mut self.out, zigzag(v));
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), EncodeError> {
        self.out.extend_from_slice(&[U8, v]);
        Ok(())
    }
    fn serialize_u16(self, v: u16) -> Result<(), EncodeError> {
        self.out.push(U16);
        put_varint(&mut self.out, v.into());
        Ok(())
    }
    fn serialize_u32(self, v: u32) -> Result<(), EncodeError> {
        self.out.push(U32);
        put_varint(&mut self.out, v.into());
        Ok(())
    }
    fn serialize_u64(self, v: u64) -> Result<(), EncodeError> {
        self.out.push(U64);
        put_varint(&mut self.out, v);
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Result<(), EncodeError> {
        self.out.push(U128);
        put_varint128(&mut self.out, v);
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), EncodeError> {
        self.out.push(F32);
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> Result<(), EncodeError> {
        self.out.push(F64);
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), EncodeError> {
        self.out.push(CHAR);
        put_varint(&mut self.out, u64::from(u32::from(v)));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), EncodeError> {
        self.bytes(STR, v.as_bytes());
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), EncodeError> {
        self.bytes(BYTES, v);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), EncodeError> {
        self.out.push(NONE);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), EncodeError> {
        self.out.push(SOME);
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), EncodeError> {
        self.out.push(UNIT);
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), EncodeError> {
        self.out.push(UNIT);
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), EncodeError> {
        self.out.push(UNIT_VARIANT);
        self.name(variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        if name == LOOSE {
            let at = self.out.len();
            value.serialize(&mut *self)?;
            return self.loosen(at);
        }
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        self.out.push(VARIANT);
        self.name(variant);
        value.serialize(self)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Seq<'a>, EncodeError> {
        Ok(match len {
            Some(n) => Seq::pending(self, n),
            None => {
                self.out.push(LIST_OPEN);
                Seq {
                    head: self.out.len(),
                    enc: self,
                    run: Run::Open,
                    declared: 0,
                    count: 0,
                    fill: 0,
                }
            }
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<Seq<'a>, EncodeError> {
        Ok(Seq::pending(self, len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Seq<'a>, EncodeError> {
        Ok(Seq::pending(self, len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Seq<'a>, EncodeError> {
        self.out.push(VARIANT);
        self.name(variant);
        Ok(Seq::pending(self, len))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Map<'a>, EncodeError> {
        Ok(match len {
            Some(n) => {
                let at = self.counted(MAP, n);
                Map::counted(self, at, n)
            }
            None => {
                self.out.push(MAP_OPEN);
                Map {
                    enc: self,
                    count_at: None,
                    declared: 0,
                    count: 0,
                }
            }
        })
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Map<'a>, EncodeError> {
        let at = self.counted(STRUCT, len);
        Ok(Map::counted(self, at, len))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Map<'a>, EncodeError> {
        self.out.push(VARIANT);
        self.name(variant);
        let at = self.counted(STRUCT, len);
        Ok(Map::counted(self, at, len))
    }

    /// A sequence from an iterator (what `Vec`, slices and most
    /// collections serialize as): as `serialize_seq` and an element each,
    /// but a run of `u8`s of known length is copied into its room in one
    /// loop ([`Seq::raw_bytes`]). The encoding is the same either way.
    fn collect_seq<I>(self, iter: I) -> Result<(), EncodeError>
    where
        I: IntoIterator,
        I::Item: Serialize,
    {
        let mut iter = iter.into_iter();
        let len = match iter.size_hint() {
            (lo, Some(hi)) if lo == hi => Some(lo),
            _ => None,
        };
        let mut seq = ser::Serializer::serialize_seq(self, len)?;
        if len.is_some() {
            seq.raw_bytes(&mut iter)?;
        }
        for item in iter {
            seq.element(&item)?;
        }
        seq.finish()
    }
}

/// Asks an element whether it is a `u8`: its `serialize` with this is a
/// load for a `u8`, an error at once for anything else.
struct ByteProbe;

/// What [`ByteProbe`] finds of an element that is not a `u8`.
#[derive(Debug)]
struct NotByte;

impl fmt::Display for NotByte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a u8")
    }
}

impl std::error::Error for NotByte {}

impl ser::Error for NotByte {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        NotByte
    }
}

macro_rules! not_byte {
    ($($method:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {$(
        fn $method(self, $(_: $ty),*) -> Result<$ret, NotByte> {
            Err(NotByte)
        }
    )*};
}

impl ser::Serializer for ByteProbe {
    type Ok = u8;
    type Error = NotByte;
    type SerializeSeq = ser::Impossible<u8, NotByte>;
    type SerializeTuple = ser::Impossible<u8, NotByte>;
    type SerializeTupleStruct = ser::Impossible<u8, NotByte>;
    type SerializeTupleVariant = ser::Impossible<u8, NotByte>;
    type SerializeMap = ser::Impossible<u8, NotByte>;
    type SerializeStruct = ser::Impossible<u8, NotByte>;
    type SerializeStructVariant = ser::Impossible<u8, NotByte>;

    #[inline]
    fn serialize_u8(self, v: u8) -> Result<u8, NotByte> {
        Ok(v)
    }

    not_byte! {
        serialize_bool(v: bool) -> u8;
        serialize_i8(v: i8) -> u8;
        serialize_i16(v: i16) -> u8;
        serialize_i32(v: i32) -> u8;
        serialize_i64(v: i64) -> u8;
        serialize_i128(v: i128) -> u8;
        serialize_u16(v: u16) -> u8;
        serialize_u32(v: u32) -> u8;
        serialize_u64(v: u64) -> u8;
        serialize_u128(v: u128) -> u8;
        serialize_f32(v: f32) -> u8;
        serialize_f64(v: f64) -> u8;
        serialize_char(v: char) -> u8;
        serialize_str(v: &str) -> u8;
        serialize_bytes(v: &[u8]) -> u8;
        serialize_none() -> u8;
        serialize_unit() -> u8;
        serialize_unit_struct(name: &'static str) -> u8;
        serialize_unit_variant(name: &'static str, index: u32, variant: &'static str) -> u8;
        serialize_seq(len: Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(len: usize) -> Self::SerializeTuple;
        serialize_tuple_struct(name: &'static str, len: usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(
            name: &'static str, index: u32, variant: &'static str, len: usize
        ) -> Self::SerializeTupleVariant;
        serialize_map(len: Option<usize>) -> Self::SerializeMap;
        serialize_struct(name: &'static str, len: usize) -> Self::SerializeStruct;
        serialize_struct_variant(
            name: &'static str, index: u32, variant: &'static str, len: usize
        ) -> Self::SerializeStructVariant;
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<u8, NotByte> {
        Err(NotByte)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<u8, NotByte> {
        Err(NotByte)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<u8, NotByte> {
        Err(NotByte)
    }
}

/// How a sequence's elements are being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    /// No element yet: the header waits for the first one.
    Pending,
    /// Every element so far was a `u8`, written as one raw byte each.
    Bytes,
    /// Each element with its own tag.
    Tagged,
    /// A list of unknown length, each element with its own tag.
    Open,
}

/// A sequence, tuple or tuple struct being written. A run of `u8`s (a
/// `Vec<u8>`, a `[u8; 32]`) is written as raw bytes from its first element:
/// no tag per byte, no pass to compact them afterwards.
#[derive(Debug)]
pub(crate) struct Seq<'a> {
    enc: &'a mut Encoder,
    run: Run,
    /// Where the header is (or will be, while pending); for an open list,
    /// where its first element is.
    head: usize,
    declared: usize,
    /// The tagged elements written (a run's are counted by `fill`).
    count: usize,
    /// In a run: where its next byte goes. The run's bytes are sized in
    /// advance from the declared length (up to [`PRESIZE`]), so that each
    /// is one store, not a push; past `fill` the buffer holds only that
    /// room, cut off when the run ends.
    fill: usize,
}

/// The most a run of bytes reserves from its declared length (a length a
/// `Serialize` claims; beyond it, the bytes are pushed as they come).
const PRESIZE: usize = 1 << 20;

impl<'a> Seq<'a> {
    fn pending(enc: &'a mut Encoder, declared: usize) -> Self {
        Seq {
            head: enc.out.len(),
            enc,
            run: Run::Pending,
            declared,
            count: 0,
            fill: 0,
        }
    }

    /// One more byte of the run.
    #[inline]
    fn run_byte(&mut self, v: u8) {
        let out = &mut self.enc.out;
        let at = self.fill;
        if at < out.len() {
            out[at] = v;
        } else {
            out.push(v);
        }
        self.fill = at + 1;
    }

    /// Makes the sequence a tagged list (from pending, or from a run of
    /// bytes, whose bytes then each get their tag: in place, no allocation).
    fn tagged(&mut self) -> &mut Encoder {
        match self.run {
            Run::Pending => {
                self.enc.counted(LIST, self.declared);
                self.run = Run::Tagged;
            }
            Run::Bytes => {
                let out = &mut self.enc.out;
                out.truncate(self.fill);
                out[self.head] = LIST;
                let start = self.head + 1 + varint_len(self.declared as u64);
                let k = self.fill - start;
                out.resize(out.len() + k, 0);
                for i in (0..k).rev() {
                    out[start + 2 * i + 1] = out[start + i];
                    out[start + 2 * i] = U8;
                }
                self.count = k;
                self.run = Run::Tagged;
            }
            Run::Tagged | Run::Open => {}
        }
        // This element, written next.
        self.count += 1;
        self.enc
    }

    /// Where a run's bytes start.
    fn run_start(&self) -> usize {
        self.head + 1 + varint_len(self.declared as u64)
    }

    /// A `u8` that is not in a run already: it starts one, or is tagged.
    #[inline(never)]
    fn first_u8(&mut self, v: u8) {
        match self.run {
            Run::Pending => {
                self.enc.counted(U8S, self.declared);
                self.run = Run::Bytes;
                self.fill = self.enc.out.len();
                let room = self.fill + self.declared.min(PRESIZE);
                self.enc.out.resize(room, 0);
                self.run_byte(v);
            }
            Run::Bytes => self.run_byte(v),
            Run::Tagged | Run::Open => {
                self.count += 1;
                self.enc.out.extend_from_slice(&[U8, v]);
            }
        }
    }

    /// The elements of a sequence of known length, while they are `u8`s:
    /// the first one the usual way (a `u8` starts the run and sizes its
    /// room), the next ones copied into the room in one loop, until the
    /// room is full (the rest are pushed as they come), the elements end,
    /// or one is not a `u8` (written as usual: the sequence becomes a
    /// tagged list).
    fn raw_bytes<I>(&mut self, iter: &mut I) -> Result<(), EncodeError>
    where
        I: Iterator,
        I::Item: Serialize,
    {
        let Some(first) = iter.next() else {
            return Ok(());
        };
        self.element(&first)?;
        if self.run != Run::Bytes {
            return Ok(());
        }
        let room = &mut self.enc.out[self.fill..];
        let mut n = 0;
        let mut other = None;
        for slot in room.iter_mut() {
            let Some(item) = iter.next() else {
                break;
            };
            match item.serialize(ByteProbe) {
                Ok(b) => {
                    *slot = b;
                    n += 1;
                }
                Err(NotByte) => {
                    other = Some(item);
                    break;
                }
            }
        }
        self.fill += n;
        match other {
            Some(item) => self.element(&item),
            None => Ok(()),
        }
    }

    #[inline]
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        value.serialize(Element { seq: self })
    }

    fn finish(self) -> Result<(), EncodeError> {
        match self.run {
            Run::Pending => {
                self.enc.counted(LIST, 0);
            }
            Run::Bytes => {
                let bytes = self.fill - self.run_start();
                self.enc.out.truncate(self.fill);
                self.enc.fix_count(self.head + 1, self.declared, bytes);
            }
            Run::Tagged => {
                self.enc.fix_count(self.head + 1, self.declared, self.count);
            }
            Run::Open => self.enc.out.push(END),
        }
        Ok(())
    }
}

impl ser::SerializeSeq for Seq<'_> {
    type Ok = ();
    type Error = EncodeError;
    #[inline]
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        self.element(value)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.finish()
    }
}

impl ser::SerializeTuple for Seq<'_> {
    type Ok = ();
    type Error = EncodeError;
    #[inline]
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        self.element(value)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for Seq<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        self.element(value)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.finish()
    }
}

impl ser::SerializeTupleVariant for Seq<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        self.element(value)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.finish()
    }
}

/// One element of a [`Seq`]: a `u8` joins (or starts) the run of raw
/// bytes; anything else makes the sequence a tagged list and is written
/// as usual.
struct Element<'b, 'a> {
    seq: &'b mut Seq<'a>,
}

/// The methods of [`Element`] that make the sequence a tagged list and
/// write the value as the encoder does.
macro_rules! tagged {
    ($($method:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {$(
        fn $method(self, $($arg: $ty),*) -> Result<$ret, EncodeError> {
            self.seq.tagged().$method($($arg),*)
        }
    )*};
}

impl<'b> ser::Serializer for Element<'b, '_> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = Seq<'b>;
    type SerializeTuple = Seq<'b>;
    type SerializeTupleStruct = Seq<'b>;
    type SerializeTupleVariant = Seq<'b>;
    type SerializeMap = Map<'b>;
    type SerializeStruct = Map<'b>;
    type SerializeStructVariant = Map<'b>;

    #[inline]
    fn serialize_u8(self, v: u8) -> Result<(), EncodeError> {
        // The run's bytes: one push each, the rest out of line.
        if self.seq.run == Run::Bytes {
            self.seq.run_byte(v);
        } else {
            self.seq.first_u8(v);
        }
        Ok(())
    }

    tagged! {
        serialize_bool(v: bool) -> ();
        serialize_i8(v: i8) -> ();
        serialize_i16(v: i16) -> ();
        serialize_i32(v: i32) -> ();
        serialize_i64(v: i64) -> ();
        serialize_i128(v: i128) -> ();
        serialize_u16(v: u16) -> ();
        serialize_u32(v: u32) -> ();
        serialize_u64(v: u64) -> ();
        serialize_u128(v: u128) -> ();
        serialize_f32(v: f32) -> ();
        serialize_f64(v: f64) -> ();
        serialize_char(v: char) -> ();
        serialize_str(v: &str) -> ();
        serialize_bytes(v: &[u8]) -> ();
        serialize_none() -> ();
        serialize_unit() -> ();
        serialize_unit_struct(name: &'static str) -> ();
        serialize_unit_variant(name: &'static str, index: u32, variant: &'static str) -> ();
        serialize_seq(len: Option<usize>) -> Seq<'b>;
        serialize_tuple(len: usize) -> Seq<'b>;
        serialize_tuple_struct(name: &'static str, len: usize) -> Seq<'b>;
        serialize_tuple_variant(name: &'static str, index: u32, variant: &'static str, len: usize) -> Seq<'b>;
        serialize_map(len: Option<usize>) -> Map<'b>;
        serialize_struct(name: &'static str, len: usize) -> Map<'b>;
        serialize_struct_variant(name: &'static str, index: u32, variant: &'static str, len: usize) -> Map<'b>;
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), EncodeError> {
        self.seq.tagged().serialize_some(value)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        self.seq.tagged().serialize_newtype_struct(name, value)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        self.seq
            .tagged()
            .serialize_newtype_variant(name, index, variant, value)
    }
}

/// A map, struct or struct variant being written.
#[derive(Debug)]
pub(crate) struct Map<'a> {
    enc: &'a mut Encoder,
    /// Where the count is; `None` for a map of unknown length.
    count_at: Option<usize>,
    declared: usize,
    count: usize,
}

impl<'a> Map<'a> {
    fn counted(enc: &'a mut Encoder, at: usize, declared: usize) -> Self {
        Map {
            enc,
            count_at: Some(at),
            declared,
            count: 0,
        }
    }

    fn field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        self.enc.name(key);
        value.serialize(&mut *self.enc)?;
        self.count += 1;
        Ok(())
    }

    fn finish(self) -> Result<(), EncodeError> {
        match self.count_at {
            Some(at) => self.enc.fix_count(at, self.declared, self.count),
            None => self.enc.out.push(END),
        }
        Ok(())
    }
}

impl ser::SerializeMap for Map<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), EncodeError> {
        key.serialize(&mut *self.enc)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        value.serialize(&mut *self.enc)?;
        self.count += 1;
        Ok(())
    }
    fn end(self) -> Result<(), EncodeError> {
        self.finish()
    }
}

impl ser::SerializeStruct for Map<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        self.field(key, value)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.finish()
    }
}

impl ser::SerializeStructVariant for Map<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        self.field(key, value)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.finish()
    }
}

// ----------------------------------------------------------------- decoder

/// Reads one payload. Strings, bytes and names are borrowed from the input.
pub(crate) struct Decoder<'de> {
    input: &'de [u8],
    pos: usize,
    depth: usize,
    names: Names<'de>,
}

/// The names a payload has defined so far: the first few inline (most
/// payloads define fewer, and decode without allocating for them).
#[derive(Clone, Default)]
struct Names<'de> {
    first: [&'de str; 8],
    len: usize,
    more: Vec<&'de str>,
}

impl<'de> Names<'de> {
    #[inline]
    fn get(&self, i: usize) -> Option<&'de str> {
        if i < self.len.min(8) {
            Some(self.first[i])
        } else {
            self.more.get(i.wrapping_sub(8)).copied()
        }
    }

    fn push(&mut self, name: &'de str) {
        if self.len < 8 {
            self.first[self.len] = name;
        } else {
            self.more.push(name);
        }
        self.len += 1;
    }
}

/// Decodes a whole payload as `T`, refusing trailing bytes.
pub(crate) fn decode<'de, T: de::Deserialize<'de>>(input: &'de [u8]) -> DResult<T> {
    if input.is_empty() {
        return Err(DecodeError::new("the payload is empty"));
    }
    let mut d = Decoder::new(input);
    let value = T::deserialize(&mut d)?;
    if d.pos != input.len() {
        return Err(DecodeError::new(format!(
            "{} trailing bytes after the value",
            input.len() - d.pos
        )));
    }
    Ok(value)
}

/// An integer's value as read: unsigned or signed, with the width its
/// writer gave it in bytes (0: none).
#[derive(Clone, Copy)]
enum Int {
    U(u128, u8),
    I(i128, u8),
}

impl<'de> Decoder<'de> {
    fn new(input: &'de [u8]) -> Self {
        Decoder {
            input,
            pos: 0,
            depth: 0,
            names: Names::default(),
        }
    }

    #[inline]
    fn left(&self) -> usize {
        self.input.len() - self.pos
    }

    fn short(&self) -> DecodeError {
        DecodeError::new("the payload ends in the middle of a value")
    }

    #[inline]
    fn byte(&mut self) -> DResult<u8> {
        match self.input.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(self.short()),
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    #[inline]
    fn take(&mut self, n: usize) -> DResult<&'de [u8]> {
        if n > self.left() {
            return Err(self.short());
        }
        let s = &self.input[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> DResult<[u8; N]> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn varint128(&mut self) -> DResult<u128> {
        let mut v = 0u128;
        let mut shift = 0;
        loop {
            let b = self.byte()?;
            let bits = u128::from(b & 0x7f);
            if shift == 126 && bits > 3 || shift > 126 {
                return Err(DecodeError::new("a malformed varint (more than 128 bits)"));
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
        }
    }

    #[inline]
    fn varint(&mut self) -> DResult<u64> {
        // The common case, one byte, without the loop.
        if let Some(&b) = self.input.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(u64::from(b));
            }
        }
        let v = self.varint128()?;
        u64::try_from(v).map_err(|_| DecodeError::new("a malformed varint (more than 64 bits)"))
    }

    /// A count or length: never more than the bytes left, since every
    /// element takes at least one.
    #[inline]
    fn count(&mut self) -> DResult<usize> {
        let n = self.varint()?;
        match usize::try_from(n) {
            Ok(n) if n <= self.left() => Ok(n),
            _ => Err(DecodeError::new(format!(
                "a length of {n} with only {} bytes left",
                self.left()
            ))),
        }
    }

    #[inline]
    fn str_body(&mut self) -> DResult<&'de str> {
        let n = self.count()?;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::new("a string that is not UTF-8"))
    }

    #[inline]
    fn name(&mut self) -> DResult<&'de str> {
        match self.varint()? {
            0 => {
                let s = self.str_body()?;
                if self.names.len < MAX_NAMES {
                    self.names.push(s);
                }
                Ok(s)
            }
            k => match self.names.get(k as usize - 1) {
                Some(s) => Ok(s),
                None => Err(DecodeError::new(format!(
                    "a reference to name {k} where {} are defined",
                    self.names.len
                ))),
            },
        }
    }

    #[inline]
    fn enter(&mut self) -> DResult<()> {
        if self.depth >= MAX_DEPTH {
            return Err(DecodeError::new(format!(
                "values nested deeper than {MAX_DEPTH} levels"
            )));
        }
        self.depth += 1;
        Ok(())
    }

    #[inline]
    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// The integer after `tag` (already read), if it is one.
    fn int(&mut self, tag: u8) -> DResult<Option<Int>> {
        Ok(Some(match tag {
            U8 => Int::U(self.byte()?.into(), 1),
            U16 | U32 | U64 | U128 => {
                let width = 1 << (tag - U8);
                let v = self.varint128()?;
                if width < 16 && v >> (8 * width) != 0 {
                    return Err(DecodeError::new(format!(
                        "a malformed u{} (value {v})",
                        8 * width
                    )));
                }
                Int::U(v, width)
            }
            I8 => Int::I((self.byte()? as i8).into(), 1),
            I16 | I32 | I64 | I128 => {
                let width = 1u8 << (tag - I8);
                let v = unzigzag(self.varint128()?);
                let bits = 8 * u32::from(width);
                if bits < 128 && (v < -(1i128 << (bits - 1)) || v >= 1i128 << (bits - 1)) {
                    return Err(DecodeError::new(format!("a malformed i{bits} (value {v})")));
                }
                Int::I(v, width)
            }
            LOOSE_POS => Int::U(self.varint128()?, 0),
            LOOSE_NEG => {
                let m = self.varint128()?;
                match i128::try_from(m) {
                    Ok(m) => Int::I(-1 - m, 0),
                    Err(_) => return Err(DecodeError::new("an integer below i128's range")),
                }
            }
            _ => return Ok(None),
        }))
    }

    /// An integer for a reader of `bits` and `signed`ness, by the rules of
    /// widths: the writer's sign and no more than the reader's width, or
    /// no width and a value in range.
    #[inline]
    fn integer(&mut self, signed: bool, bits: u32, expected: &str) -> DResult<Num> {
        // The common case first: a typed integer the reader takes, its
        // value in one varint byte.
        if let (Some(&t), Some(&b)) = (self.input.get(self.pos), self.input.get(self.pos + 1)) {
            let width = |first: u8| 8u32 << (t - first);
            if b < 0x80 {
                if !signed && (U8..=U128).contains(&t) && width(U8) <= bits {
                    self.pos += 2;
                    return Ok(Num::U(b.into()));
                }
                if signed && (I16..=I128).contains(&t) && width(I8) <= bits {
                    self.pos += 2;
                    return Ok(Num::I(unzigzag(b.into())));
                }
            }
        }
        self.integer_slow(signed, bits, expected)
    }

    fn integer_slow(&mut self, signed: bool, bits: u32, expected: &str) -> DResult<Num> {
        let at = self.pos;
        let tag = self.byte()?;
        let int = match self.int(tag)? {
            Some(i) => i,
            None => return Err(self.mismatch(at, expected)),
        };
        let width = |w: u8| u32::from(w) * 8;
        match int {
            Int::U(v, w) if !signed && w > 0 && width(w) <= bits => Ok(Num::U(v)),
            Int::I(v, w) if signed && w > 0 && width(w) <= bits => Ok(Num::I(v)),
            Int::U(v, 0) => {
                let fits = if signed {
                    bits == 128 && v <= i128::MAX as u128 || bits < 128 && v < 1u128 << (bits - 1)
                } else {
                    bits == 128 || v >> bits == 0
                };
                if fits {
                    Ok(if signed { Num::I(v as i128) } else { Num::U(v) })
                } else {
                    Err(DecodeError::new(format!(
                        "expected {expected}, found the integer {v}, out of its range"
                    )))
                }
            }
            Int::I(v, 0) => {
                let fits = signed && (bits == 128 || v >= -(1i128 << (bits - 1)));
                if fits {
                    Ok(Num::I(v))
                } else {
                    Err(DecodeError::new(format!(
                        "expected {expected}, found the integer {v}, out of its range"
                    )))
                }
            }
            _ => Err(self.mismatch(at, expected)),
        }
    }

    /// A float for a reader of f64 (`wide`) or f32.
    fn float(&mut self, wide: bool, expected: &str) -> DResult<f64> {
        let at = self.pos;
        let tag = self.byte()?;
        match tag {
            F32 => Ok(f64::from(f32::from_le_bytes(self.array()?))),
            F64 if wide => Ok(f64::from_le_bytes(self.array()?)),
            LOOSE_FLOAT => Ok(f64::from_le_bytes(self.array()?)),
            LOOSE_POS | LOOSE_NEG => {
                // Exactly representable: within the float's integer range.
                let limit: u128 = if wide { 1 << 53 } else { 1 << 24 };
                let v = match self.int(tag)? {
                    Some(Int::U(u, _)) if u <= limit => u as f64,
                    Some(Int::I(i, _)) if i.unsigned_abs() <= limit => i as f64,
                    _ => {
                        return Err(DecodeError::new(format!(
                            "expected {expected}, found {}, which it cannot hold exactly",
                            self.found(at)
                        )))
                    }
                };
                Ok(v)
            }
            _ => Err(self.mismatch(at, expected)),
        }
    }

    /// What the value at `at` is, for an error message.
    fn found(&self, at: usize) -> String {
        let mut d = Decoder {
            input: self.input,
            pos: at,
            depth: self.depth,
            names: self.names.clone(),
        };
        d.describe(0)
            .unwrap_or_else(|_| "a malformed value".to_owned())
    }

    /// What the value here is, looking `nest` levels into it at most.
    fn describe(&mut self, nest: usize) -> DResult<String> {
        let at = self.pos;
        let tag = self.byte()?;
        if let Some(i) = self.int(tag)? {
            return Ok(match i {
                Int::U(v, 0) => format!("the integer {v}"),
                Int::I(v, 0) => format!("the integer {v}"),
                Int::U(v, w) => format!("u{} {v}", 8 * u32::from(w)),
                Int::I(v, w) => format!("i{} {v}", 8 * u32::from(w)),
            });
        }
        Ok(match tag {
            UNIT => "unit".to_owned(),
            NONE => "None".to_owned(),
            SOME if nest < 2 => format!("Some({})", self.describe(nest + 1)?),
            SOME => "Some(...)".to_owned(),
            FALSE => "bool false".to_owned(),
            TRUE => "bool true".to_owned(),
            F32 => format!("f32 {}", f32::from_le_bytes(self.array()?)),
            F64 => format!("f64 {}", f64::from_le_bytes(self.array()?)),
            LOOSE_FLOAT => format!("the number {}", f64::from_le_bytes(self.array()?)),
            CHAR => match char::from_u32(self.varint()? as u32) {
                Some(c) => format!("char {c:?}"),
                None => "a malformed char".to_owned(),
            },
            STR => {
                let s = self.str_body()?;
                if s.chars().count() > 40 {
                    let cut: String = s.chars().take(40).collect();
                    format!("string {cut:?}...")
                } else {
                    format!("string {s:?}")
                }
            }
            BYTES => format!("bytes (length {})", self.count()?),
            U8S => format!("a sequence of {} u8", self.count()?),
            LIST => format!("a list of {}", self.count()?),
            LIST_OPEN => "a list".to_owned(),
            MAP => format!("a map of {} entries", self.count()?),
            MAP_OPEN => "a map".to_owned(),
            STRUCT => {
                let n = self.count()?;
                let mut names = Vec::new();
                for _ in 0..n.min(8) {
                    match self.name() {
                        Ok(name) => names.push(name),
                        Err(_) => break,
                    }
                    if self.skip().is_err() {
                        break;
                    }
                }
                if names.len() < n {
                    names.push("...");
                }
                format!("a struct {{{}}}", names.join(", "))
            }
            VARIANT => format!("variant {} with a value", self.name()?),
            UNIT_VARIANT => format!("unit variant {}", self.name()?),
            END => "the end of a list".to_owned(),
            t => {
                self.pos = at;
                format!("an unknown tag {t:#04x}")
            }
        })
    }

    /// A map's key at `at`, if it is a string.
    fn key_str(&self, at: usize) -> Option<&'de str> {
        let mut d = Decoder::new(self.input);
        d.pos = at;
        match d.byte() {
            Ok(STR) => d.str_body().ok(),
            _ => None,
        }
    }

    /// A map's key at `at`, for an error's path: a string quoted, anything
    /// else described.
    fn key_text(&self, at: usize) -> String {
        match self.key_str(at) {
            Some(s) => format!("{s:?}"),
            None => self.found(at),
        }
    }

    /// "expected X, found Y", with a word on widths when both are numbers.
    fn mismatch(&self, at: usize, expected: impl fmt::Display) -> DecodeError {
        let found = self.found(at);
        let tag = self.input.get(at).copied().unwrap_or(0);
        let expected = expected.to_string();
        let numeric = |s: &str| {
            let b = s.as_bytes();
            b.len() > 1 && matches!(b[0], b'u' | b'i' | b'f') && b[1].is_ascii_digit()
        };
        let hint = if numeric(&expected) && (U8..=F64).contains(&tag) {
            " (a number written with a type decodes only as a type of the same sign and at \
             least its width)"
        } else {
            ""
        };
        DecodeError::new(format!("expected {expected}, found {found}{hint}"))
    }

    /// Skips one value, as deep as it nests (within the depth limit).
    fn skip(&mut self) -> DResult<()> {
        let tag = self.byte()?;
        match tag {
            UNIT | NONE | TRUE | FALSE => {}
            SOME => {
                self.enter()?;
                self.skip()?;
                self.leave();
            }
            U8 | I8 => {
                self.byte()?;
            }
            U16 | U32 | U64 | U128 | I16 | I32 | I64 | I128 | LOOSE_POS | LOOSE_NEG => {
                self.int(tag)?;
            }
            CHAR => {
                self.pos -= 1;
                de::Deserializer::deserialize_char(&mut *self, de::IgnoredAny)?;
            }
            F32 => {
                self.take(4)?;
            }
            F64 | LOOSE_FLOAT => {
                self.take(8)?;
            }
            STR => {
                self.str_body()?;
            }
            BYTES | U8S => {
                let n = self.count()?;
                self.take(n)?;
            }
            LIST | MAP | STRUCT => {
                let n = self.count()?;
                self.enter()?;
                for _ in 0..n {
                    match tag {
                        LIST => self.skip()?,
                        MAP => {
                            self.skip()?;
                            self.skip()?;
                        }
                        _ => {
                            self.name()?;
                            self.skip()?;
                        }
                    }
                }
                self.leave();
            }
            LIST_OPEN | MAP_OPEN => {
                self.enter()?;
                while self.peek() != Some(END) {
                    self.skip()?;
                    if tag == MAP_OPEN {
                        self.skip()?;
                    }
                }
                self.pos += 1;
                self.leave();
            }
            VARIANT => {
                self.name()?;
                self.enter()?;
                self.skip()?;
                self.leave();
            }
            UNIT_VARIANT => {
                self.name()?;
            }
            _ => {
                self.pos -= 1;
                return Err(DecodeError::new(format!("an unknown tag {tag:#04x}")));
            }
        }
        Ok(())
    }

    /// A list (or a run of bytes) for `visitor`, with an exact `len` for a
    /// tuple.
    fn list<V: Visitor<'de>>(
        &mut self,
        len: Option<usize>,
        expected: &dyn fmt::Display,
        visitor: V,
    ) -> DResult<V::Value> {
        let at = self.pos;
        let tag = self.byte()?;
        let wrong_length =
            |d: &Self| DecodeError::new(format!("expected {expected}, found {}", d.found(at)));
        match tag {
            LIST | LIST_OPEN => {
                let n = if tag == LIST {
                    Some(self.count()?)
                } else {
                    None
                };
                if let (Some(l), Some(n)) = (len, n) {
                    if l != n {
                        return Err(wrong_length(self));
                    }
                }
                self.enter()?;
                let mut items = Items {
                    de: self,
                    left: n,
                    index: 0,
                };
                let value = visitor.visit_seq(&mut items)?;
                let unread = match items.left {
                    Some(left) => left,
                    None if items.de.peek() == Some(END) => {
                        items.de.pos += 1;
                        0
                    }
                    None => 1,
                };
                if unread > 0 {
                    return Err(match len {
                        Some(_) => {
                            DecodeError::new(format!("expected {expected}, found a longer list"))
                        }
                        None => DecodeError::new("elements left unread in a list"),
                    });
                }
                self.leave();
                Ok(value)
            }
            U8S | BYTES => {
                let n = self.count()?;
                if len.is_some_and(|l| l != n) {
                    return Err(wrong_length(self));
                }
                let bytes = self.take(n)?;
                let mut items = ByteItems { bytes, index: 0 };
                let value = visitor.visit_seq(&mut items)?;
                if items.index != bytes.len() {
                    return Err(DecodeError::new("elements left unread in a list"));
                }
                Ok(value)
            }
            _ => Err(self.mismatch(at, expected)),
        }
    }

    /// A map or struct for `visitor` (a struct's `fields`: string keys
    /// are its fields, in an error's path).
    fn map<V: Visitor<'de>>(
        &mut self,
        expected: &dyn fmt::Display,
        fields: bool,
        visitor: V,
    ) -> DResult<V::Value> {
        let at = self.pos;
        let tag = self.byte()?;
        let (left, names) = match tag {
            MAP => (Some(self.count()?), false),
            MAP_OPEN => (None, false),
            STRUCT => (Some(self.count()?), true),
            _ => return Err(self.mismatch(at, expected)),
        };
        self.enter()?;
        let mut entries = Entries {
            de: self,
            left,
            names,
            fields,
            key: Key::None,
        };
        let value = visitor.visit_map(&mut entries)?;
        let done = match entries.left {
            Some(left) => left == 0,
            None if entries.de.peek() == Some(END) => {
                entries.de.pos += 1;
                true
            }
            None => false,
        };
        if !done {
            return Err(DecodeError::new("entries left unread in a map"));
        }
        self.leave();
        Ok(value)
    }
}

/// Signed or unsigned, as an integer reader returns it.
enum Num {
    I(i128),
    U(u128),
}

impl Num {
    fn unsigned(self) -> u128 {
        match self {
            Num::U(v) => v,
            Num::I(v) => v as u128,
        }
    }
    fn signed(self) -> i128 {
        match self {
            Num::I(v) => v,
            Num::U(v) => v as i128,
        }
    }
}

/// The deserialize methods for integers.
macro_rules! integers {
    ($($method:ident $visit:ident $ty:ident $signed:literal $bits:literal $as:ident;)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> DResult<V::Value> {
            let v = self.integer($signed, $bits, stringify!($ty))?;
            visitor.$visit(v.$as() as $ty)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for &mut Decoder<'de> {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> DResult<V::Value> {
        let at = self.pos;
        let tag = self.byte()?;
        if let Some(int) = self.int(tag)? {
            return match int {
                Int::U(v, 1) => visitor.visit_u8(v as u8),
                Int::U(v, 2) => visitor.visit_u16(v as u16),
                Int::U(v, 4) => visitor.visit_u32(v as u32),
                Int::U(v, 8) => visitor.visit_u64(v as u64),
                Int::U(v, 0) if v <= u128::from(u64::MAX) => visitor.visit_u64(v as u64),
                Int::U(v, _) => visitor.visit_u128(v),
                Int::I(v, 1) => visitor.visit_i8(v as i8),
                Int::I(v, 2) => visitor.visit_i16(v as i16),
                Int::I(v, 4) => visitor.visit_i32(v as i32),
                Int::I(v, 8) => visitor.visit_i64(v as i64),
                Int::I(v, 0) if v >= i128::from(i64::MIN) => visitor.visit_i64(v as i64),
                Int::I(v, _) => visitor.visit_i128(v),
            };
        }
        match tag {
            UNIT => visitor.visit_unit(),
            NONE => visitor.visit_none(),
            SOME => {
                self.enter()?;
                let v = visitor.visit_some(&mut *self)?;
                self.leave();
                Ok(v)
            }
            FALSE => visitor.visit_bool(false),
            TRUE => visitor.visit_bool(true),
            F32 => visitor.visit_f32(f32::from_le_bytes(self.array()?)),
            F64 | LOOSE_FLOAT => visitor.visit_f64(f64::from_le_bytes(self.array()?)),
            CHAR => {
                self.pos = at;
                self.deserialize_char(visitor)
            }
            STR => visitor.visit_borrowed_str(self.str_body()?),
            BYTES => {
                let n = self.count()?;
                visitor.visit_borrowed_bytes(self.take(n)?)
            }
            U8S | LIST | LIST_OPEN => {
                self.pos = at;
                self.list(None, &"a sequence", visitor)
            }
            MAP | MAP_OPEN | STRUCT => {
                self.pos = at;
                self.map(&"a map", false, visitor)
            }
            UNIT_VARIANT => visitor.visit_borrowed_str(self.name()?),
            VARIANT => {
                // As a map of one entry: the variant's name to its content.
                let name = self.name()?;
                self.enter()?;
                let v = visitor.visit_map(OneEntry {
                    de: &mut *self,
                    name: Some(name),
                    done: false,
                })?;
                self.leave();
                Ok(v)
            }
            _ => Err(self.mismatch(at, "a value")),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> DResult<V::Value> {
        let at = self.pos;
        match self.byte()? {
            TRUE => visitor.visit_bool(true),
            FALSE => visitor.visit_bool(false),
            _ => Err(self.mismatch(at, "bool")),
        }
    }

    integers! {
        deserialize_u8 visit_u8 u8 false 8 unsigned;
        deserialize_u16 visit_u16 u16 false 16 unsigned;
        deserialize_u32 visit_u32 u32 false 32 unsigned;
        deserialize_u64 visit_u64 u64 false 64 unsigned;
        deserialize_u128 visit_u128 u128 false 128 unsigned;
        deserialize_i8 visit_i8 i8 true 8 signed;
        deserialize_i16 visit_i16 i16 true 16 signed;
        deserialize_i32 visit_i32 i32 true 32 signed;
        deserialize_i64 visit_i64 i64 true 64 signed;
        deserialize_i128 visit_i128 i128 true 128 signed;
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> DResult<V::Value> {
        let v = self.float(false, "f32")?;
        visitor.visit_f32(v as f32)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> DResult<V::Value> {
        let v = self.float(true, "f64")?;
        visitor.visit_f64(v)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> DResult<V::Value> {
        let at = self.pos;
        match self.byte()? {
            CHAR => {
                let v = self.varint()?;
                match u32::try_from(v).ok().and_then(char::from_u32) {
                    Some(c) => visitor.visit_char(c),
                    None => Err(DecodeError::new(format!("a malformed char ({v:#x})"))),
                }
            }
            STR => {
                let s = self.str_body()?;
                let mut chars = s.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => visitor.visit_char(c),
                    _ => Err(self.mismatch(at, "char")),
                }
            }
            _ => Err(self.mismatch(at, "char")),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> DResult<V::Value> {
        let at = self.pos;
        match self.byte()? {
            STR => visitor.visit_borrowed_str(self.str_body()?),
            CHAR => {
                self.pos = at;
                self.deserialize_char(visitor)
            }
            _ => Err(self.mismatch(at, "a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> DResult<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> DResult<V::Value> {
        let at = self.pos;
        match self.byte()? {
            BYTES | U8S => {
                let n = self.count()?;
                visitor.visit_borrowed_bytes(self.take(n)?)
            }
            LIST | LIST_OPEN => {
                self.pos = at;
                self.list(None, &"bytes", visitor)
            }
            _ => Err(self.mismatch(at, "bytes")),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> DResult<V::Value> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> DResult<V::Value> {
        match self.peek() {
            Some(NONE) | Some(UNIT) => {
                self.pos += 1;
                visitor.visit_none()
            }
            Some(SOME) => {
                self.pos += 1;
                self.enter()?;
                let v = visitor.visit_some(&mut *self)?;
                self.leave();
                Ok(v)
            }
            // A plain value where an option is expected: present.
            Some(_) => visitor.visit_some(self),
            None => Err(self.short()),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> DResult<V::Value> {
        let at = self.pos;
        match self.byte()? {
            UNIT | NONE => visitor.visit_unit(),
            _ => Err(self.mismatch(at, "unit")),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> DResult<V::Value> {
        let at = self.pos;
        match self.byte()? {
            UNIT | NONE => visitor.visit_unit(),
            _ => Err(self.mismatch(at, format_args!("unit struct {name}"))),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> DResult<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> DResult<V::Value> {
        self.list(None, &"a sequence", visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> DResult<V::Value> {
        self.list(Some(len), &format_args!("a tuple of {len}"), visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> DResult<V::Value> {
        self.list(
            Some(len),
            &format_args!("{name}, a tuple of {len}"),
            visitor,
        )
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> DResult<V::Value> {
        self.map(&"a map", false, visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> DResult<V::Value> {
        self.map(&format_args!("struct {name}"), true, visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> DResult<V::Value> {
        let at = self.pos;
        let (variant, content, open) = match self.byte()? {
            UNIT_VARIANT => (self.name()?, false, false),
            VARIANT => (self.name()?, true, false),
            STR => (self.str_body()?, false, false),
            // As JSON tools write a variant with content: {"Name": content}.
            t @ (MAP | MAP_OPEN) => {
                let open = t == MAP_OPEN;
                let one = open || self.count()? == 1;
                match self.byte()? {
                    STR if one => (self.str_body()?, true, open),
                    _ => return Err(self.mismatch(at, format_args!("enum {name}"))),
                }
            }
            _ => return Err(self.mismatch(at, format_args!("enum {name}"))),
        };
        self.enter()?;
        let value = visitor.visit_enum(Variant {
            de: &mut *self,
            name: variant,
            content,
        })?;
        if open {
            match self.byte()? {
                END => {}
                _ => {
                    return Err(DecodeError::new(format!(
                        "expected enum {name}, found a map of more than one entry"
                    )))
                }
            }
        }
        self.leave();
        Ok(value)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> DResult<V::Value> {
        let at = self.pos;
        match self.byte()? {
            STR => visitor.visit_borrowed_str(self.str_body()?),
            UNIT_VARIANT => visitor.visit_borrowed_str(self.name()?),
            _ => Err(self.mismatch(at, "a name")),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> DResult<V::Value> {
        self.skip()?;
        visitor.visit_unit()
    }

    fn is_human_readable(&self) -> bool {
        true
    }
}

/// The elements of a tagged list.
struct Items<'a, 'de> {
    de: &'a mut Decoder<'de>,
    /// `None` for a list of unknown length.
    left: Option<usize>,
    index: usize,
}

impl<'de> de::SeqAccess<'de> for Items<'_, 'de> {
    type Error = DecodeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> DResult<Option<T::Value>> {
        match &mut self.left {
            Some(0) => return Ok(None),
            Some(n) => *n -= 1,
            None if self.de.peek() == Some(END) => return Ok(None),
            None => {}
        }
        let i = self.index;
        self.index += 1;
        seed.deserialize(&mut *self.de)
            .map(Some)
            .map_err(|e| e.at(Step::Index(i)))
    }

    fn size_hint(&self) -> Option<usize> {
        // Each element takes a byte at least: never more than are left.
        self.left.map(|n| n.min(self.de.left()))
    }
}

/// The elements of a run of bytes, each a `u8`.
struct ByteItems<'de> {
    bytes: &'de [u8],
    index: usize,
}

impl<'de> de::SeqAccess<'de> for ByteItems<'de> {
    type Error = DecodeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> DResult<Option<T::Value>> {
        match self.bytes.get(self.index) {
            Some(&b) => {
                let i = self.index;
                self.index += 1;
                seed.deserialize(Byte(b))
                    .map(Some)
                    .map_err(|e| e.at(Step::Index(i)))
            }
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.bytes.len() - self.index)
    }
}

/// One byte of a run: a `u8`, by the rules of widths (so any unsigned
/// type reads it; a signed type, a float or a bool does not).
struct Byte(u8);

macro_rules! byte_as_u8 {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> DResult<V::Value> {
            visitor.visit_u8(self.0)
        }
    )*};
}

macro_rules! byte_refused {
    ($($method:ident $what:literal;)*) => {$(
        fn $method<V: Visitor<'de>>(self, _visitor: V) -> DResult<V::Value> {
            Err(self.refuse($what))
        }
    )*};
}

impl Byte {
    fn refuse(&self, expected: &str) -> DecodeError {
        let hint = if matches!(expected.as_bytes().first(), Some(b'i' | b'f')) {
            " (a number written with a type decodes only as a type of the same sign and at \
             least its width)"
        } else {
            ""
        };
        DecodeError::new(format!("expected {expected}, found u8 {}{hint}", self.0))
    }
}

impl<'de> de::Deserializer<'de> for Byte {
    type Error = DecodeError;

    byte_as_u8!(deserialize_any deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_ignored_any);

    byte_refused! {
        deserialize_bool "bool";
        deserialize_i8 "i8";
        deserialize_i16 "i16";
        deserialize_i32 "i32";
        deserialize_i64 "i64";
        deserialize_i128 "i128";
        deserialize_f32 "f32";
        deserialize_f64 "f64";
        deserialize_char "char";
        deserialize_str "a string";
        deserialize_string "a string";
        deserialize_bytes "bytes";
        deserialize_byte_buf "bytes";
        deserialize_unit "unit";
        deserialize_seq "a sequence";
        deserialize_map "a map";
        deserialize_identifier "a name";
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> DResult<V::Value> {
        visitor.visit_some(self)
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _visitor: V,
    ) -> DResult<V::Value> {
        Err(self.refuse(&format!("unit struct {name}")))
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> DResult<V::Value> {
        visitor.visit_newtype_struct(self)
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, _visitor: V) -> DResult<V::Value> {
        Err(self.refuse(&format!("a tuple of {len}")))
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        _visitor: V,
    ) -> DResult<V::Value> {
        Err(self.refuse(&format!("{name}, a tuple of {len}")))
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> DResult<V::Value> {
        Err(self.refuse(&format!("struct {name}")))
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        _variants: &'static [&'static str],
        _visitor: V,
    ) -> DResult<V::Value> {
        Err(self.refuse(&format!("enum {name}")))
    }
    fn is_human_readable(&self) -> bool {
        true
    }
}

/// Which key the entries of a map last read, for the path of an error in
/// its value.
#[derive(Clone, Copy)]
enum Key<'de> {
    None,
    Name(&'de str),
    At(usize),
}

/// The entries of a map or struct.
struct Entries<'a, 'de> {
    de: &'a mut Decoder<'de>,
    /// `None` for a map of unknown length.
    left: Option<usize>,
    /// A struct: keys are names.
    names: bool,
    /// Read as a struct: string keys are fields.
    fields: bool,
    key: Key<'de>,
}

impl<'de> de::MapAccess<'de> for Entries<'_, 'de> {
    type Error = DecodeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> DResult<Option<K::Value>> {
        match &mut self.left {
            Some(0) => return Ok(None),
            Some(n) => *n -= 1,
            None if self.de.peek() == Some(END) => return Ok(None),
            None => {}
        }
        if self.names {
            let name = self.de.name()?;
            self.key = Key::Name(name);
            return seed
                .deserialize(de::value::BorrowedStrDeserializer::new(name))
                .map(Some);
        }
        self.key = Key::At(self.de.pos);
        seed.deserialize(MapKey(&mut *self.de)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> DResult<V::Value> {
        seed.deserialize(&mut *self.de).map_err(|e| match self.key {
            Key::Name(n) => e.at(Step::Field(n.to_owned())),
            Key::At(at) => match (self.fields, self.de.key_str(at)) {
                (true, Some(name)) => e.at(Step::Field(name.to_owned())),
                _ => e.at(Step::Key(self.de.key_text(at))),
            },
            Key::None => e,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.left.map(|n| n.min(self.de.left() / 2))
    }
}

/// A variant seen through `deserialize_any`: a map of one entry.
struct OneEntry<'a, 'de> {
    de: &'a mut Decoder<'de>,
    name: Option<&'de str>,
    done: bool,
}

impl<'de> de::MapAccess<'de> for OneEntry<'_, 'de> {
    type Error = DecodeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> DResult<Option<K::Value>> {
        match self.name {
            Some(name) if !self.done => seed
                .deserialize(de::value::BorrowedStrDeserializer::new(name))
                .map(Some),
            _ => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> DResult<V::Value> {
        self.done = true;
        let name = self.name.unwrap_or_default();
        seed.deserialize(&mut *self.de)
            .map_err(|e| e.at(Step::Variant(name.to_owned())))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(usize::from(!self.done))
    }
}

/// A map's key: as a value, except that a string key decodes as an integer
/// or `bool` key when it parses (JSON's object keys are strings).
struct MapKey<'a, 'de>(&'a mut Decoder<'de>);

macro_rules! key_forward {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> DResult<V::Value> {
            self.0.$method(visitor)
        }
    )*};
}

macro_rules! key_parsed {
    ($($method:ident $visit:ident $ty:ty;)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> DResult<V::Value> {
            if self.0.peek() == Some(STR) {
                let at = self.0.pos;
                self.0.pos += 1;
                let s = self.0.str_body()?;
                return match s.parse::<$ty>() {
                    Ok(v) => visitor.$visit(v),
                    Err(_) => Err(self.0.mismatch(at, stringify!($ty))),
                };
            }
            self.0.$method(visitor)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for MapKey<'_, 'de> {
    type Error = DecodeError;

    key_forward!(deserialize_any deserialize_f32 deserialize_f64 deserialize_char
        deserialize_str deserialize_string deserialize_bytes deserialize_byte_buf
        deserialize_option deserialize_unit deserialize_seq deserialize_map
        deserialize_identifier deserialize_ignored_any);

    key_parsed! {
        deserialize_bool visit_bool bool;
        deserialize_u8 visit_u8 u8;
        deserialize_u16 visit_u16 u16;
        deserialize_u32 visit_u32 u32;
        deserialize_u64 visit_u64 u64;
        deserialize_u128 visit_u128 u128;
        deserialize_i8 visit_i8 i8;
        deserialize_i16 visit_i16 i16;
        deserialize_i32 visit_i32 i32;
        deserialize_i64 visit_i64 i64;
        deserialize_i128 visit_i128 i128;
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> DResult<V::Value> {
        self.0.deserialize_unit_struct(name, visitor)
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> DResult<V::Value> {
        visitor.visit_newtype_struct(self)
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> DResult<V::Value> {
        self.0.deserialize_tuple(len, visitor)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> DResult<V::Value> {
        self.0.deserialize_tuple_struct(name, len, visitor)
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> DResult<V::Value> {
        self.0.deserialize_struct(name, fields, visitor)
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> DResult<V::Value> {
        self.0.deserialize_enum(name, variants, visitor)
    }
    fn is_human_readable(&self) -> bool {
        true
    }
}

/// A variant being decoded: its name read, its content (if any) next.
struct Variant<'a, 'de> {
    de: &'a mut Decoder<'de>,
    name: &'de str,
    /// Whether a value follows the name.
    content: bool,
}

impl<'a, 'de> de::EnumAccess<'de> for Variant<'a, 'de> {
    type Error = DecodeError;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> DResult<(S::Value, Self)> {
        let v = seed.deserialize(de::value::BorrowedStrDeserializer::new(self.name))?;
        Ok((v, self))
    }
}

impl<'de> de::VariantAccess<'de> for Variant<'_, 'de> {
    type Error = DecodeError;

    fn unit_variant(self) -> DResult<()> {
        if !self.content {
            return Ok(());
        }
        // {"Name": null} from a tool is a unit variant too.
        match self.de.peek() {
            Some(UNIT) | Some(NONE) => {
                self.de.pos += 1;
                Ok(())
            }
            _ => Err(DecodeError::new(format!(
                "expected unit variant {}, found variant {} with a value",
                self.name, self.name
            ))),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> DResult<T::Value> {
        if !self.content {
            return Err(DecodeError::new(format!(
                "expected variant {} with a value, found unit variant {}",
                self.name, self.name
            )));
        }
        let name = self.name;
        seed.deserialize(&mut *self.de)
            .map_err(|e| e.at(Step::Variant(name.to_owned())))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> DResult<V::Value> {
        if !self.content {
            return Err(DecodeError::new(format!(
                "expected variant {} with a tuple of {len}, found unit variant {}",
                self.name, self.name
            )));
        }
        let name = self.name;
        de::Deserializer::deserialize_tuple(&mut *self.de, len, visitor)
            .map_err(|e| e.at(Step::Variant(name.to_owned())))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> DResult<V::Value> {
        if !self.content {
            return Err(DecodeError::new(format!(
                "expected struct variant {}, found unit variant {}",
                self.name, self.name
            )));
        }
        let name = self.name;
        de::Deserializer::deserialize_struct(&mut *self.de, "", fields, visitor)
            .map_err(|e| e.at(Step::Variant(name.to_owned())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};
    use std::collections::{BTreeMap, HashMap};

    fn enc<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
        let mut e = Encoder::default();
        v.serialize(&mut e).unwrap();
        e.out
    }

    fn dec<'de, T: Deserialize<'de>>(b: &'de [u8]) -> Result<T, String> {
        decode(b).map_err(|e| e.to_string())
    }

    fn round<T: Serialize + for<'de> Deserialize<'de> + PartialEq + fmt::Debug>(v: T) {
        let b = enc(&v);
        assert_eq!(dec::<T>(&b).as_ref(), Ok(&v), "{b:?}");
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
        Line(Point, Point),
        Rect { w: u32, h: u32 },
    }

    #[test]
    fn every_kind_of_value_round_trips() {
        round(());
        round(true);
        round(false);
        round(0u8);
        round(u16::MAX);
        round(u32::MAX);
        round(u64::MAX);
        round(u128::MAX);
        round(i8::MIN);
        round(i16::MIN);
        round(i32::MIN);
        round(i64::MIN);
        round(i64::MAX);
        round(i128::MIN);
        round(i128::MAX);
        round(1.5f32);
        round(-0.25f64);
        round('\u{10ffff}');
        round("héllo".to_owned());
        round(String::new());
        round(Some(3u8));
        round(None::<u8>);
        round(Some(Some(())));
        round(vec![1u8, 2, 3]);
        round(Vec::<u8>::new());
        round([7u8; 32]);
        round((1u8, "two".to_owned(), 3.0f64));
        round(vec![vec![1u8], vec![], vec![2, 3]]);
        round(vec!["a".to_owned(), "b".to_owned()]);
        round(Point { x: -1, y: 2 });
        round(vec![Shape::Empty, Shape::Circle(1.0)]);
        round(Shape::Line(Point { x: 1, y: 2 }, Point { x: 3, y: 4 }));
        round(Shape::Rect { w: 1, h: 2 });
        round(BTreeMap::from([
            (1u32, "a".to_owned()),
            (2, "b".to_owned()),
        ]));
        round(HashMap::from([("k".to_owned(), vec![Some(1i64), None])]));
    }

    #[test]
    fn a_run_of_bytes_is_one_length_and_the_raw_bytes() {
        let b = enc(&vec![7u8; 64]);
        assert_eq!(b[..2], [U8S, 64]);
        assert_eq!(b.len(), 66);
        assert!(b[2..].iter().all(|&x| x == 7));
        // A tuple or array of u8 too.
        assert_eq!(enc(&(1u8, 2u8)), [U8S, 2, 1, 2]);
        // Bytes and sequences of u8 read as each other.
        let as_bytes = enc(&Bytes(vec![1, 2, 3]));
        assert_eq!(as_bytes[0], BYTES);
        assert_eq!(dec::<Vec<u8>>(&as_bytes), Ok(vec![1, 2, 3]));
        assert_eq!(
            dec::<Bytes>(&enc(&vec![1u8, 2, 3])),
            Ok(Bytes(vec![1, 2, 3]))
        );
        // Each byte is a u8: any unsigned type of at least its width reads it.
        assert_eq!(dec::<Vec<u64>>(&b), Ok(vec![7u64; 64]));
        assert!(dec::<Vec<i8>>(&b)
            .unwrap_err()
            .contains("expected i8, found u8 7"));
    }

    /// A `serde_bytes`-like buffer, written with `serialize_bytes`.
    #[derive(Debug, PartialEq)]
    struct Bytes(Vec<u8>);
    impl Serialize for Bytes {
        fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }
    impl<'de> Deserialize<'de> for Bytes {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            crate::bounded::bytes::deserialize(d).map(Bytes)
        }
    }

    /// A sequence whose elements are not all u8: the run becomes a list.
    struct Mixed(usize);
    impl Serialize for Mixed {
        fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use ser::SerializeSeq;
            let mut seq = s.serialize_seq(Some(self.0 + 1))?;
            for i in 0..self.0 {
                seq.serialize_element(&(i as u8))?;
            }
            seq.serialize_element("end")?;
            seq.end()
        }
    }

    /// A sequence that claims a length it does not have.
    struct Liar {
        claims: usize,
        has: usize,
        bytes: bool,
    }
    impl Serialize for Liar {
        fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use ser::SerializeSeq;
            let mut seq = s.serialize_seq(Some(self.claims))?;
            for i in 0..self.has {
                if self.bytes {
                    seq.serialize_element(&(i as u8))?;
                } else {
                    seq.serialize_element(&(i as u32))?;
                }
            }
            seq.end()
        }
    }

    /// An element that is a `u8` when it fits, else a `u32`.
    #[derive(Clone, Copy)]
    struct Mix(u32);
    impl Serialize for Mix {
        fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match u8::try_from(self.0) {
                Ok(b) => s.serialize_u8(b),
                Err(_) => s.serialize_u32(self.0),
            }
        }
    }

    /// Elements given through `collect_seq` (with an iterator claiming
    /// `claims` elements exactly) or one by one after `serialize_seq`.
    struct Via {
        items: Vec<Mix>,
        claims: usize,
        collect: bool,
    }
    impl Serialize for Via {
        fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use ser::SerializeSeq;
            if self.collect {
                struct Claims<I>(I, usize);
                impl<I: Iterator> Iterator for Claims<I> {
                    type Item = I::Item;
                    fn next(&mut self) -> Option<I::Item> {
                        self.0.next()
                    }
                    fn size_hint(&self) -> (usize, Option<usize>) {
                        (self.1, Some(self.1))
                    }
                }
                return s.collect_seq(Claims(self.items.iter(), self.claims));
            }
            let mut seq = s.serialize_seq(Some(self.claims))?;
            for item in &self.items {
                seq.serialize_element(item)?;
            }
            seq.end()
        }
    }

    #[test]
    fn a_collected_sequence_is_written_as_one_given_element_by_element() {
        let mut cases: Vec<Vec<Mix>> = vec![vec![], vec![Mix(300)], vec![Mix(1); 64]];
        // A non-byte at each place of a run.
        for k in 0..6 {
            let mut v: Vec<Mix> = (0..5).map(Mix).collect();
            v.insert(k, Mix(70_000));
            cases.push(v);
        }
        for items in cases {
            let n = items.len();
            for claims in [n, 0, n + 3, n.saturating_sub(2)] {
                let by = |collect| {
                    enc(&Via {
                        items: items.clone(),
                        claims,
                        collect,
                    })
                };
                assert_eq!(by(true), by(false), "{n} items claiming {claims}");
                let back: Vec<u32> = dec(&by(true)).unwrap();
                assert_eq!(back, items.iter().map(|m| m.0).collect::<Vec<_>>());
            }
        }
        // Beyond the room sized in advance, bytes are pushed as they come.
        let big: Vec<u8> = (0..PRESIZE + 5).map(|i| i as u8).collect();
        let b = enc(&big);
        assert_eq!(b[0], U8S);
        assert_eq!(dec::<Vec<u8>>(&b).unwrap(), big);
    }

    #[test]
    fn sequences_that_are_not_all_bytes_or_lie_about_their_length_are_written_right() {
        let b = enc(&Mixed(3));
        let v: (u8, u16, u32, String) = dec(&b).unwrap();
        assert_eq!(v, (0, 1, 2, "end".into()));
        for (claims, has) in [(0, 3), (3, 0), (200, 3), (3, 200), (1 << 30, 2)] {
            for bytes in [true, false] {
                let b = enc(&Liar { claims, has, bytes });
                let n = if bytes {
                    dec::<Vec<u8>>(&b).map(|v| v.len())
                } else {
                    dec::<Vec<u32>>(&b).map(|v| v.len())
                };
                assert_eq!(n, Ok(has), "claims {claims}, has {has}, bytes {bytes}");
            }
        }
        // Of unknown length (an iterator without an exact size).
        let b = enc(&Unknown(5));
        assert_eq!(b[0], LIST_OPEN);
        assert_eq!(dec::<Vec<u8>>(&b), Ok(vec![0, 1, 2, 3, 4]));
        let b = enc(&UnknownMap(3));
        assert_eq!(b[0], MAP_OPEN);
        assert_eq!(
            dec::<BTreeMap<u8, u8>>(&b),
            Ok(BTreeMap::from([(0, 0), (1, 1), (2, 2)]))
        );
    }

    struct Unknown(u8);
    impl Serialize for Unknown {
        fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq((0..self.0).filter(|_| true))
        }
    }
    struct UnknownMap(u8);
    impl Serialize for UnknownMap {
        fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map((0..self.0).filter(|_| true).map(|i| (i, i)))
        }
    }

    #[test]
    fn integers_read_as_their_sign_and_at_least_their_width() {
        // Wider readers: always.
        assert_eq!(dec::<u64>(&enc(&7u8)), Ok(7));
        assert_eq!(dec::<u128>(&enc(&u64::MAX)), Ok(u128::from(u64::MAX)));
        assert_eq!(dec::<i64>(&enc(&-7i16)), Ok(-7));
        assert_eq!(dec::<f64>(&enc(&1.5f32)), Ok(1.5));
        // Narrower readers: never, whatever the value.
        let e = dec::<u32>(&enc(&5u64)).unwrap_err();
        assert!(e.contains("expected u32, found u64 5"), "{e}");
        assert!(e.contains("same sign"), "{e}");
        assert!(dec::<f32>(&enc(&1.5f64)).is_err());
        // The other sign: never.
        let e = dec::<u64>(&enc(&5i64)).unwrap_err();
        assert!(e.contains("expected u64, found i64 5"), "{e}");
        assert!(dec::<i64>(&enc(&5u64)).is_err());
        assert!(dec::<i128>(&enc(&5u8)).is_err());
        // Not a number: never.
        assert!(dec::<u64>(&enc(&true))
            .unwrap_err()
            .contains("found bool true"));
        assert!(dec::<bool>(&enc(&1u8))
            .unwrap_err()
            .contains("expected bool, found u8 1"));
        assert!(dec::<f64>(&enc(&1u8)).is_err());
        assert!(dec::<u8>(&enc(&1.0f64)).is_err());
        assert!(dec::<String>(&enc(&1u8)).is_err());
    }

    #[test]
    fn numbers_of_no_width_read_as_any_type_they_fit() {
        let loose = |v: Loose| enc(&v);
        let five = loose(Loose::I(5));
        assert_eq!(five[0], LOOSE_POS);
        assert_eq!(dec::<u8>(&five), Ok(5));
        assert_eq!(dec::<i8>(&five), Ok(5));
        assert_eq!(dec::<u128>(&five), Ok(5));
        assert_eq!(dec::<f32>(&five), Ok(5.0));
        assert_eq!(dec::<f64>(&five), Ok(5.0));
        let minus = loose(Loose::I(-129));
        assert_eq!(minus[0], LOOSE_NEG);
        assert_eq!(dec::<i16>(&minus), Ok(-129));
        let e = dec::<i8>(&minus).unwrap_err();
        assert!(
            e.contains("expected i8, found the integer -129, out of its range"),
            "{e}"
        );
        assert!(dec::<u64>(&minus).is_err());
        let big = loose(Loose::U(u64::MAX));
        assert_eq!(dec::<u64>(&big), Ok(u64::MAX));
        assert!(dec::<i64>(&big).is_err());
        assert_eq!(dec::<i128>(&big), Ok(i128::from(u64::MAX)));
        assert!(dec::<f64>(&big)
            .unwrap_err()
            .contains("cannot hold exactly"));
        assert_eq!(
            dec::<f64>(&loose(Loose::I(1 << 53))),
            Ok(9007199254740992.0)
        );
        assert!(dec::<f32>(&loose(Loose::I((1 << 24) + 1))).is_err());
        let half = loose(Loose::F(0.5));
        assert_eq!(half[0], LOOSE_FLOAT);
        assert_eq!(dec::<f32>(&half), Ok(0.5));
        assert_eq!(dec::<f64>(&half), Ok(0.5));
        assert!(dec::<u8>(&half).is_err());
    }

    /// A number of no declared width, as `Value` writes it.
    enum Loose {
        I(i64),
        U(u64),
        F(f64),
    }
    impl Serialize for Loose {
        fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self {
                Loose::I(v) => s.serialize_newtype_struct(LOOSE, v),
                Loose::U(v) => s.serialize_newtype_struct(LOOSE, v),
                Loose::F(v) => s.serialize_newtype_struct(LOOSE, v),
            }
        }
    }

    #[test]
    fn tuples_need_their_length_and_structs_their_names() {
        let e = dec::<(u8, u8)>(&enc(&(1u32, 2u32, 3u32))).unwrap_err();
        assert!(
            e.contains("expected a tuple of 2, found a list of 3"),
            "{e}"
        );
        let e = dec::<(u32, u32, u32)>(&enc(&(1u8, 2u8))).unwrap_err();
        assert!(
            e.contains("expected a tuple of 3, found a sequence of 2 u8"),
            "{e}"
        );
        let e = dec::<Point>(&enc(&(1i32, 2i32))).unwrap_err();
        assert!(
            e.contains("expected struct Point, found a list of 2"),
            "{e}"
        );
        let e = dec::<(i32, i32)>(&enc(&Point { x: 1, y: 2 })).unwrap_err();
        assert!(
            e.contains("expected a tuple of 2, found a struct {x, y}"),
            "{e}"
        );
        let e = dec::<Point>(&enc(&Other { x: 1, z: 2 })).unwrap_err();
        assert!(e.contains("missing field `y`"), "{e}");
        let e = dec::<Point>(&enc(&Point2 { x: 1, y: 2u32 })).unwrap_err();
        assert_eq!(e, "at .y: expected i32, found u32 2 (a number written with a type decodes only as a type of the same sign and at least its width)");
    }

    #[derive(Serialize)]
    struct Other {
        x: i32,
        z: i32,
    }
    #[derive(Serialize)]
    struct Point2 {
        x: i32,
        y: u32,
    }

    #[test]
    fn variants_are_matched_by_name() {
        #[derive(Serialize)]
        enum Wider {
            Circle(f64),
            Triangle(u8),
        }
        assert_eq!(
            dec::<Shape>(&enc(&Wider::Circle(2.0))),
            Ok(Shape::Circle(2.0))
        );
        let e = dec::<Shape>(&enc(&Wider::Triangle(3))).unwrap_err();
        assert!(
            e.contains("unknown variant `Triangle`, expected one of"),
            "{e}"
        );
        let e = dec::<Shape>(&enc(&5u8)).unwrap_err();
        assert!(e.contains("expected enum Shape, found u8 5"), "{e}");
        let e =
            dec::<Vec<Shape>>(&enc(&vec![Shape::Empty, Shape::Rect { w: 1, h: 2 }])).map(|_| ());
        assert_eq!(e, Ok(()));
        #[derive(Serialize)]
        enum Unit {
            Circle,
        }
        let e = dec::<Shape>(&enc(&Unit::Circle)).unwrap_err();
        assert!(
            e.contains("expected variant Circle with a value, found unit variant Circle"),
            "{e}"
        );
    }

    #[test]
    fn names_are_written_once_per_payload() {
        let points: Vec<Point> = (0..100).map(|i| Point { x: i, y: -i }).collect();
        let b = enc(&points);
        // "x" and "y" once each; afterwards one byte per name.
        assert_eq!(b.windows(2).filter(|w| w == b"\x01x").count(), 1, "{b:?}");
        assert!(b.len() < 100 * 9, "{}", b.len());
        assert_eq!(dec::<Vec<Point>>(&b), Ok(points));
        // More names than are numbered: the later ones are written out.
        let many = Many(
            (0..MAX_NAMES + 50)
                .map(|i| &*format!("f{i}").leak())
                .collect(),
        );
        let b = enc(&[&many, &many][..]);
        let v: Vec<BTreeMap<String, u32>> = dec(&b).unwrap();
        assert_eq!(v.len(), 2);
        for m in v {
            assert_eq!(m.len(), MAX_NAMES + 50);
            assert_eq!(m["f300"], 300);
        }
    }

    /// A struct with these fields, each holding its index.
    struct Many(Vec<&'static str>);
    impl Serialize for Many {
        fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use ser::SerializeStruct;
            let mut st = s.serialize_struct("Many", self.0.len())?;
            for (i, name) in self.0.iter().enumerate() {
                st.serialize_field(name, &(i as u32))?;
            }
            st.end()
        }
    }

    #[test]
    fn malformed_input_is_refused_without_panicking() {
        let cases: &[(&[u8], &str)] = &[
            (&[], "empty"),
            (&[0x00], "unknown tag 0x00"),
            (&[0xff], "unknown tag 0xff"),
            (&[STR, 5, b'a'], "length of 5 with only 1 bytes left"),
            (&[STR, 2, 0xff, 0xfe], "not UTF-8"),
            (&[U64, 0x80, 0x80], "ends in the middle"),
            (
                &[
                    U64, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                ],
                "malformed u64",
            ),
            (
                &[
                    U128, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                ],
                "ends in the middle",
            ),
            (
                &[
                    U128, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x04,
                ],
                "malformed varint",
            ),
            (&[U16, 0xff, 0xff, 0x7f], "malformed u16"),
            (&[I8, 1, 2], "1 trailing bytes"),
            (
                &[LIST, 0xff, 0xff, 0xff, 0xff, 0x0f],
                "length of 4294967295",
            ),
            (
                &[STRUCT, 1, 3, 1, UNIT],
                "reference to name 3 where 0 are defined",
            ),
            (&[CHAR, 0xff, 0xbf, 0x03], "malformed char"),
            (&[LIST_OPEN, UNIT, UNIT], "ends in the middle"),
            (&[SOME; 300], "nested deeper than 256"),
        ];
        for (input, want) in cases {
            let e = dec::<de::IgnoredAny>(input).unwrap_err();
            assert!(e.contains(want), "{input:?}: {e}");
        }
        // Deep nesting of every kind refused, within the stack of this test.
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
            let e = dec::<de::IgnoredAny>(&deep).unwrap_err();
            assert!(e.contains("deeper"), "{open:?}: {e}");
            assert!(dec::<Shape>(&deep).is_err());
        }
        // A count claiming more than the input is refused before anything
        // is allocated for it.
        let huge = [MAP, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert!(dec::<HashMap<String, String>>(&huge)
            .unwrap_err()
            .contains("length of"));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let sample = enc(&(
            vec![
                Shape::Empty,
                Shape::Line(Point { x: 1, y: 2 }, Point { x: 3, y: 4 }),
            ],
            BTreeMap::from([("k".to_owned(), (Some(1.5f32), 'c', vec![1u8, 2]))]),
        ));
        for _ in 0..20_000 {
            let mut b = if next() % 2 == 0 {
                sample.clone()
            } else {
                (0..next() % 64).map(|_| next() as u8).collect()
            };
            for _ in 0..next() % 4 {
                if !b.is_empty() {
                    let i = next() as usize % b.len();
                    b[i] = next() as u8;
                }
            }
            let _ = dec::<de::IgnoredAny>(&b);
            let _ = dec::<(Vec<Shape>, BTreeMap<String, (Option<f32>, char, Vec<u8>)>)>(&b);
        }
    }
}
