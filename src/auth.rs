//! Shared-secret authentication for exchange links: HMAC-SHA256 over fresh
//! nonces from both sides, so that a captured handshake cannot be replayed.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A shared secret. Never printed: its `Debug` says only that it is there.
#[derive(Clone)]
pub(crate) struct Secret(Arc<[u8]>);

impl Secret {
    pub(crate) fn new(key: &[u8]) -> Self {
        Secret(key.into())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Bytes of a nonce.
pub(crate) const NONCE: usize = 32;

/// A fresh, unpredictable nonce: from the OS where it offers one, else from
/// std's randomly keyed hashers.
pub(crate) fn nonce() -> Vec<u8> {
    use std::io::Read;
    let mut n = vec![0u8; NONCE];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        if f.read_exact(&mut n).is_ok() {
            return n;
        }
    }
    use std::hash::{BuildHasher, Hasher};
    for (i, chunk) in n.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
    }
    n
}

/// Which side a proof is for: each side's proof covers its own label, so
/// a proof cannot be reflected back to its sender.
#[derive(Clone, Copy)]
pub(crate) enum Side {
    Client,
    Server,
}

fn mac(
    secret: &Secret,
    side: Side,
    first: &[u8],
    second: &[u8],
    me: u64,
    peer: u64,
    credential: &[u8],
) -> Hmac<Sha256> {
    // HMAC takes keys of any length: new_from_slice cannot fail for it.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&secret.0).unwrap_or_else(|_| unreachable!());
    m.update(match side {
        Side::Client => b"netsvc-auth-client",
        Side::Server => b"netsvc-auth-server",
    });
    m.update(first);
    m.update(second);
    m.update(&me.to_be_bytes());
    m.update(&peer.to_be_bytes());
    // The name of the credential the client proves (empty for the shared
    // secret), length first: a relay that swaps it breaks both proofs.
    m.update(&(credential.len() as u64).to_be_bytes());
    m.update(credential);
    m
}

/// The proof `side` gives: over the other side's nonce, then its own, then
/// its process uid and the peer's, then the name of the client's credential
/// (empty for the shared secret).
pub(crate) fn prove(
    secret: &Secret,
    side: Side,
    theirs: &[u8],
    mine: &[u8],
    me: u64,
    peer: u64,
    credential: &[u8],
) -> Vec<u8> {
    mac(secret, side, theirs, mine, me, peer, credential)
        .finalize()
        .into_bytes()
        .to_vec()
}

/// Checks, in constant time, a proof `side` gave.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check(
    secret: &Secret,
    side: Side,
    proof: &[u8],
    verifier_nonce: &[u8],
    prover_nonce: &[u8],
    prover: u64,
    verifier: u64,
    credential: &[u8],
) -> bool {
    mac(
        secret,
        side,
        verifier_nonce,
        prover_nonce,
        prover,
        verifier,
        credential,
    )
    .verify_slice(proof)
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_verify_only_with_the_key_and_nonces() {
        let k = Secret::new(b"key");
        let (ns, nc) = (nonce(), nonce());
        assert_ne!(ns, nc);
        let p = prove(&k, Side::Client, &ns, &nc, 1, 2, b"");
        assert!(check(&k, Side::Client, &p, &ns, &nc, 1, 2, b""));
        let other = Secret::new(b"other");
        assert!(!check(&other, Side::Client, &p, &ns, &nc, 1, 2, b""));
        assert!(
            !check(&k, Side::Client, &p, &nonce(), &nc, 1, 2, b""),
            "fresh server nonce"
        );
        assert!(
            !check(&k, Side::Server, &p, &ns, &nc, 1, 2, b""),
            "no reflection"
        );
        assert!(
            !check(&k, Side::Client, &p, &ns, &nc, 1, 3, b""),
            "bound to the peers"
        );
        assert_eq!(format!("{k:?}"), "Secret(..)");
    }

    #[test]
    fn proofs_are_bound_to_the_credential_name() {
        let k = Secret::new(b"key");
        let (ns, nc) = (nonce(), nonce());
        let p = prove(&k, Side::Client, &ns, &nc, 1, 2, b"alice");
        assert!(check(&k, Side::Client, &p, &ns, &nc, 1, 2, b"alice"));
        for swapped in [&b"bob"[..], b"", b"alic", b"alicee"] {
            assert!(
                !check(&k, Side::Client, &p, &ns, &nc, 1, 2, swapped),
                "a proof for alice taken for {swapped:?}"
            );
        }
        let s = prove(&k, Side::Server, &nc, &ns, 2, 1, b"alice");
        assert!(check(&k, Side::Server, &s, &nc, &ns, 2, 1, b"alice"));
        assert!(!check(&k, Side::Server, &s, &nc, &ns, 2, 1, b"bob"));
    }
}
