//! Encoding: the one place where values become bytes and back.
//!
//! Payloads (request arguments, replies, report contents) are encoded with
//! serde + bincode 2 in its standard configuration. The codec can change here
//! without touching the rest of the crate.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// An encoded value. Cheap to clone: a report fanned out to many subscribers
/// shares one encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Payload(Arc<[u8]>);

impl Payload {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Self {
        Payload(v.into())
    }
}

/// The bincode configuration used everywhere. The limit bounds what a single
/// decode may claim (a string or byte buffer is allocated at its claimed
/// length before it is read), so a corrupt length can never ask for more.
const LIMIT: usize = 1 << 30;

fn config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<LIMIT>,
> {
    bincode::config::standard().with_limit::<LIMIT>()
}

/// Encodes a value.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Payload> {
    bincode::serde::encode_to_vec(value, config())
        .map(Payload::from)
        .map_err(|e| Error::Encode(e.to_string()))
}

/// Decodes a value, requiring that every byte is used.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(bytes, config())
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn huge_claimed_length_is_refused_without_allocating() {
        // A varint length prefix claiming u64::MAX bytes for a String.
        let bytes = [253u8, 255, 255, 255, 255, 255, 255, 255, 255];
        assert!(matches!(decode::<String>(&bytes), Err(Error::Decode(_))));
    }
}
