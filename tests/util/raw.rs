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

/// A hello body: magic, version, then bincode's standard (varint) encoding
/// of `{ process: { uid, label }, group, auth: false }`, with one-byte varints.
pub fn hello_body(version: u16, uid: u8, label: &str, group: &str) -> Vec<u8> {
    assert!(
        uid < 251 && label.len() < 251 && group.len() < 251,
        "one-byte varints"
    );
    let mut v = MAGIC.to_vec();
    v.extend_from_slice(&version.to_be_bytes());
    v.push(uid);
    v.push(label.len() as u8);
    v.extend_from_slice(label.as_bytes());
    v.push(group.len() as u8);
    v.extend_from_slice(group.as_bytes());
    v.push(0); // auth: false
    v
}

/// A correct hello frame for an exchange of `group`.
pub fn hello(uid: u8, group: &str) -> Vec<u8> {
    frame(&hello_body(2, uid, &format!("raw@1/{uid}"), group))
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
