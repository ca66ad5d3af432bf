//! Shared-secret authentication for exchange links: HMAC-SHA256 over fresh
//! nonces from both sides, so that a captured handshake cannot be replayed,
//! and over the handshake's transcript (both hellos, and what each side
//! sees of the connection), so that a relayed one is refused. Also the
//! process identities: a dispatcher's uid is derived from a secret token
//! that only it holds, which it shows to the exchanges it connects to.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

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

/// `n` bytes from the operating system's random source, or the error that
/// kept it from giving them: there is no fallback (a predictable nonce or
/// identity would be worse than none).
pub(crate) fn random(n: usize) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| io::Error::new(e.kind(), format!("no random source (/dev/urandom): {e}")))?;
    Ok(bytes)
}

/// A fresh, unpredictable nonce.
pub(crate) fn nonce() -> io::Result<Vec<u8>> {
    random(NONCE)
}

/// Bytes of a process's identity token.
pub(crate) const IDENTITY: usize = 32;

/// The process uid that an identity token stands for: the first eight
/// bytes of its SHA-256 (with a label of its own). Whoever shows a token
/// proves the uid is theirs; the uid alone (public: every binding carries
/// it) gives nothing away.
pub(crate) fn identity_uid(token: &[u8]) -> u64 {
    let mut h = Sha256::new();
    h.update(b"netsvc-process-identity");
    h.update(token);
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_be_bytes(first)
}

/// What a handshake's proofs cover besides the nonces and the uids: both
/// hellos as they were sent (client's first), and, when `bound`, the
/// client's and the server's addresses as the prover sees them (an IPv4
/// address mapped into IPv6 counts as IPv4). A party in the middle that
/// relays a handshake has two connections, seen differently at each end:
/// the proofs of one do not verify on the other. Over TLS, `session` is
/// keying material exported from the TLS session (the same at both of
/// its ends, and at no other session's): a party in the middle that
/// terminates TLS on both sides has two sessions, and the proofs of one
/// do not verify on the other either, addresses bound or not.
pub(crate) fn transcript(
    client_hello: &[u8],
    server_hello: &[u8],
    bound: Option<(SocketAddr, SocketAddr)>,
    session: Option<&[u8]>,
) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"netsvc-handshake");
    for part in [client_hello, server_hello] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    if let Some((client, server)) = bound {
        for addr in [client, server] {
            let ip = match addr.ip() {
                std::net::IpAddr::V6(v6) => v6
                    .to_ipv4_mapped()
                    .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
                v4 => v4,
            };
            h.update(ip.to_string().as_bytes());
            h.update(addr.port().to_be_bytes());
        }
    }
    if let Some(session) = session {
        h.update(b"netsvc-tls-session");
        h.update((session.len() as u64).to_be_bytes());
        h.update(session);
    }
    h.finalize().to_vec()
}

/// Which side a proof is for: each side's proof covers its own label, so
/// a proof cannot be reflected back to its sender.
#[derive(Clone, Copy)]
pub(crate) enum Side {
    Client,
    Server,
}

#[allow(clippy::too_many_arguments)] // (each is a part of what the proof covers)
fn mac(
    secret: &Secret,
    side: Side,
    first: &[u8],
    second: &[u8],
    me: u64,
    peer: u64,
    transcript: &[u8],
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
    m.update(transcript);
    // The name of the credential the client proves (empty for the shared
    // secret), length first: a relay that swaps it breaks both proofs.
    m.update(&(credential.len() as u64).to_be_bytes());
    m.update(credential);
    m
}

/// The proof `side` gives: over the other side's nonce, then its own, then
/// its process uid and the peer's, then the handshake's [`transcript`],
/// then the name of the client's credential (empty for the shared secret).
#[allow(clippy::too_many_arguments)] // (each is a part of what the proof covers)
pub(crate) fn prove(
    secret: &Secret,
    side: Side,
    theirs: &[u8],
    mine: &[u8],
    me: u64,
    peer: u64,
    transcript: &[u8],
    credential: &[u8],
) -> Vec<u8> {
    mac(secret, side, theirs, mine, me, peer, transcript, credential)
        .finalize()
        .into_bytes()
        .to_vec()
}

/// Checks, in constant time, a proof `side` gave.
#[allow(clippy::too_many_arguments)] // (each is a part of what the proof covers)
pub(crate) fn check(
    secret: &Secret,
    side: Side,
    proof: &[u8],
    verifier_nonce: &[u8],
    prover_nonce: &[u8],
    prover: u64,
    verifier: u64,
    transcript: &[u8],
    credential: &[u8],
) -> bool {
    mac(
        secret,
        side,
        verifier_nonce,
        prover_nonce,
        prover,
        verifier,
        transcript,
        credential,
    )
    .verify_slice(proof)
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nonce() -> Vec<u8> {
        super::nonce().expect("a random source")
    }

    #[test]
    fn proofs_verify_only_with_the_key_nonces_peers_and_transcript() {
        let k = Secret::new(b"key");
        let (ns, nc) = (nonce(), nonce());
        assert_ne!(ns, nc);
        let t = transcript(b"client hello", b"server hello", None, None);
        let p = prove(&k, Side::Client, &ns, &nc, 1, 2, &t, b"");
        assert!(check(&k, Side::Client, &p, &ns, &nc, 1, 2, &t, b""));
        let other = Secret::new(b"other");
        assert!(!check(&other, Side::Client, &p, &ns, &nc, 1, 2, &t, b""));
        let fresh = nonce();
        assert!(
            !check(&k, Side::Client, &p, &fresh, &nc, 1, 2, &t, b""),
            "fresh server nonce"
        );
        assert!(
            !check(&k, Side::Server, &p, &ns, &nc, 1, 2, &t, b""),
            "no reflection"
        );
        assert!(
            !check(&k, Side::Client, &p, &ns, &nc, 1, 3, &t, b""),
            "bound to the peers"
        );
        let t2 = transcript(b"client hello", b"another server hello", None, None);
        assert!(
            !check(&k, Side::Client, &p, &ns, &nc, 1, 2, &t2, b""),
            "bound to the hellos"
        );
        assert_eq!(format!("{k:?}"), "Secret(..)");
    }

    #[test]
    fn transcripts_bind_what_each_side_sees_of_the_connection() {
        let a: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let relay: SocketAddr = "127.0.0.1:6000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:4000".parse().unwrap();
        let t = |c, s| transcript(b"c", b"s", Some((c, s)), None);
        assert_eq!(t(a, b), t(mapped, b), "a mapped address is the address");
        assert_ne!(t(a, b), t(a, relay), "the client saw a relay");
        assert_ne!(t(a, b), t(relay, b), "the server saw a relay");
        assert_ne!(t(a, b), transcript(b"c", b"s", None, None));
        let s1 = transcript(b"c", b"s", None, Some(&[1u8; 32]));
        assert_ne!(
            s1,
            transcript(b"c", b"s", None, None),
            "bound to the TLS session"
        );
        assert_ne!(
            s1,
            transcript(b"c", b"s", None, Some(&[2u8; 32])),
            "to that session only"
        );
    }

    #[test]
    fn an_identity_token_stands_for_one_uid() {
        let (x, y) = (nonce(), nonce());
        assert_eq!(identity_uid(&x), identity_uid(&x));
        assert_ne!(identity_uid(&x), identity_uid(&y));
    }

    #[test]
    fn proofs_are_bound_to_the_credential_name() {
        let k = Secret::new(b"key");
        let (ns, nc) = (nonce(), nonce());
        let p = prove(&k, Side::Client, &ns, &nc, 1, 2, b"", b"alice");
        assert!(check(&k, Side::Client, &p, &ns, &nc, 1, 2, b"", b"alice"));
        for swapped in [&b"bob"[..], b"", b"alic", b"alicee"] {
            assert!(
                !check(&k, Side::Client, &p, &ns, &nc, 1, 2, b"", swapped),
                "a proof for alice taken for {swapped:?}"
            );
        }
        let s = prove(&k, Side::Server, &nc, &ns, 2, 1, b"", b"alice");
        assert!(check(&k, Side::Server, &s, &nc, &ns, 2, 1, b"", b"alice"));
        assert!(!check(&k, Side::Server, &s, &nc, &ns, 2, 1, b"", b"bob"));
    }
}
