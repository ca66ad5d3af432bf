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

/// The bincode configuration for encoding.
fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes a value.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Payload> {
    bincode::serde::encode_to_vec(value, config())
        .map(Payload::from)
        .map_err(|e| Error::Encode(e.to_string()))
}

/// Decodes a value, requiring that every byte is used.
///
/// What a decode may allocate is bounded by the bytes it is given: bincode
/// allocates a string or byte buffer at its claimed length before reading
/// it, so a corrupt or hostile length could otherwise ask for gigabytes. The
/// limit is 16 times the input (the most any genuine value claims per byte:
/// a `u128` in one varint byte), rounded up to a power of four, so a decode
/// never allocates more than 64 times what was received.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
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
        // A 10-byte input claiming a 1 MiB string: over the limit for its size.
        let mut bytes = vec![252u8];
        bytes.extend_from_slice(&(1u32 << 20).to_le_bytes());
        bytes.extend_from_slice(b"abcde");
        assert!(matches!(decode::<String>(&bytes), Err(Error::Decode(_))));
    }

    #[test]
    fn huge_claimed_length_is_refused_without_allocating() {
        // A varint length prefix claiming u64::MAX bytes for a String.
        let bytes = [253u8, 255, 255, 255, 255, 255, 255, 255, 255];
        assert!(matches!(decode::<String>(&bytes), Err(Error::Decode(_))));
    }
}
