//! A raw TCP peer speaking just enough of the exchange protocol: frames and
//! a hand-built hello, for tests that misbehave on purpose.

use std::io::{Read, Write};
use std::net::TcpStream;

/// The protocol magic.
pub const MAGIC: &[u8; 6] = b"NETSVC";

/// A frame: 4-byte big-endian length, then the body.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// The protocol version this build speaks (src/wire.rs).
pub const VERSION: u16 = 6;

/// The process uid of the raw peer numbered `seed`: derived from its
/// identity token, as a server checks.
pub fn uid(seed: u8) -> u64 {
    netsvc::peer_frames::uid(u64::from(seed))
}

/// bincode's standard varint of `v`.
pub fn varint(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=250 => out.push(v as u8),
        251..=0xffff => {
            out.push(251);
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(252);
            out.extend_from_slice(&(v as u32).to_le_bytes());
        }
        _ => {
            out.push(253);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// A hello body: magic, version, then bincode's standard (varint) encoding
/// of `{ process: { uid, label }, group, auth: false, identity, bind:
/// false }` for the raw peer numbered `seed` ([`uid`] of it, with its
/// identity token).
pub fn hello_body(version: u16, seed: u8, label: &str, group: &str) -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.extend_from_slice(&version.to_be_bytes());
    varint(&mut v, uid(seed));
    varint(&mut v, label.len() as u64);
    v.extend_from_slice(label.as_bytes());
    varint(&mut v, group.len() as u64);
    v.extend_from_slice(group.as_bytes());
    v.push(0); // auth: false
    let token = netsvc::peer_frames::token(u64::from(seed));
    varint(&mut v, token.len() as u64);
    v.extend_from_slice(&token);
    v.push(0); // bind: false
    v
}

/// A hello frame claiming the process `uid` (someone else's, say) with the
/// identity token of the raw peer numbered `token_seed`.
pub fn hello_claiming(uid: u64, token_seed: u8) -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.extend_from_slice(&VERSION.to_be_bytes());
    varint(&mut v, uid);
    let label = "claimed@1/0";
    varint(&mut v, label.len() as u64);
    v.extend_from_slice(label.as_bytes());
    varint(&mut v, 0); // group: ""
    v.push(0); // auth: false
    let token = netsvc::peer_frames::token(u64::from(token_seed));
    varint(&mut v, token.len() as u64);
    v.extend_from_slice(&token);
    v.push(0); // bind: false
    frame(&v)
}

/// A correct hello frame for an exchange of `group`.
pub fn hello(seed: u8, group: &str) -> Vec<u8> {
    frame(&hello_body(VERSION, seed, &format!("raw@1/{seed}"), group))
}

/// Reads one frame's body.
pub fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body)?;
    Ok(body)
}

/// Connects and completes the handshake, then returns the stream; the
/// caller decides how to misbehave from there.
pub fn handshake(addr: std::net::SocketAddr, uid: u8) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("raw connect");
    s.set_read_timeout(Some(super::WAIT)).expect("read timeout");
    s.write_all(&hello(uid, "")).expect("send hello");
    let body = read_frame(&mut s).expect("the server's hello");
    assert_eq!(&body[..6], MAGIC);
    s
}

/// Reads until the other side closes; panics if it does not within WAIT.
pub fn wait_closed(s: &mut TcpStream) {
    s.set_read_timeout(Some(super::WAIT)).unwrap();
    let deadline = std::time::Instant::now() + super::WAIT;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the connection was not closed"
        );
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                panic!("the connection was not closed within {:?}", super::WAIT)
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                panic!("the connection was not closed within {:?}", super::WAIT)
            }
            Err(_) => return, // reset
        }
    }
}

/// A `Credit` frame giving the far side back `bytes` of report-frame
/// credit (src/routing/flow.rs): bincode's variant index of
/// `Message::Credit` (14), then its field, as varints.
pub fn credit(bytes: u64) -> Vec<u8> {
    let mut body = Vec::new();
    varint(&mut body, 14);
    varint(&mut body, bytes);
    frame(&body)
}
