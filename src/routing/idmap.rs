//! Hash maps keyed by identifiers the dispatcher hands out itself (mio
//! tokens, its own agents' ids, exchange and timer ids): small sequential
//! integers that no peer chooses, so they need no protection against
//! crafted collisions and can skip SipHash, which showed at 20 % of a
//! dispatcher's time in profiles of a report stream. Maps keyed by anything
//! a peer chooses (remote agent keys, conversation ids, names, subjects)
//! keep the standard, randomly seeded SipHash.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map keyed by a dispatcher-issued identifier.
pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// The Fx hash (as in rustc): a rotate, an xor and a multiply per word.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_spread() {
        let mut m: IdMap<usize, usize> = IdMap::default();
        for i in 0..10_000 {
            m.insert(i, i * 2);
        }
        assert!((0..10_000).all(|i| m.get(&i) == Some(&(i * 2))));
        let mut h = IdHasher::default();
        h.write(b"ab");
        assert_ne!(h.finish(), IdHasher::default().finish());
    }
}
