//! Hostile bytes sent to an exchange server's port from raw TCP clients:
//! each attack closes only the attacking connection; the server dispatcher,
//! its stats and its other (real) clients go on as before.
mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Instant;

use netsvc::*;
use util::link::{setup, Setup};
use util::*;

// ----- the wire, built by hand (tests/util/raw.rs) -----

use util::raw::{frame, MAGIC};

/// A handshake body with any magic: see [`util::raw::hello_body`].
fn hello_body(magic: &[u8; 6], version: u16, uid: u8, label: &str, group: &str) -> Vec<u8> {
    let mut v = util::raw::hello_body(version, uid, label, group);
    v[..6].copy_from_slice(magic);
    v
}

/// The uid every raw client below claims in its hello.
const RAW_UID: u8 = 7;
const RAW_LABEL: &str = "raw@1/7";

/// A correct hello frame for an exchange of group "".
fn good_hello() -> Vec<u8> {
    frame(&hello_body(
        MAGIC,
        util::raw::VERSION,
        RAW_UID,
        RAW_LABEL,
        "",
    ))
}

/// Reads one bincode standard varint.
fn varint(bytes: &[u8], pos: &mut usize) -> u64 {
    let tag = bytes[*pos];
    *pos += 1;
    let mut take = |n: usize| {
        let mut le = [0u8; 8];
        le[..n].copy_from_slice(&bytes[*pos..*pos + n]);
        *pos += n;
        u64::from_le_bytes(le)
    };
    match tag {
        0..=250 => tag as u64,
        251 => take(2),
        252 => take(4),
        253 => take(8),
        other => panic!("varint tag {other} not expected here"),
    }
}

/// Deterministic bytes (xorshift64*).
fn prng_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(n);
    out
}

// ----- raw client -----

fn raw_connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("raw connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// Reads (and discards what the server sends, such as its hello) until the
/// server closes the connection: Ok(0) or an error other than a timeout,
/// within [`WAIT`].
fn expect_closed(s: &mut TcpStream, what: &str) {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 4096];
    loop {
        assert!(
            Instant::now() < deadline,
            "{what}: server kept the connection open for {WAIT:?}"
        );
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("{what}: server did not close the connection within {WAIT:?}")
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return, // reset: closed with our bytes unread
        }
    }
}

/// Checks that the server has NOT closed the connection: after reading what
/// it sent, nothing more (not even end of file) comes within [`QUIET`].
fn expect_open(s: &mut TcpStream, what: &str) {
    s.set_read_timeout(Some(QUIET)).unwrap();
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 4096];
    loop {
        assert!(Instant::now() < deadline, "{what}: endless output");
        match s.read(&mut buf) {
            Ok(0) => panic!("{what}: the server closed the connection"),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => panic!("{what}: connection failed: {e}"),
        }
    }
}

/// Reads one whole frame body.
fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).expect("frame length");
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).expect("frame body");
    body
}

// ----- a server with one real client (tests/util/link.rs) -----

impl Setup {
    /// After an attack: the real client's link stayed up, it can still call
    /// the server, and the server's stats count exactly the frames the
    /// attack sent (`attack_frames`) plus the one request of this call.
    fn assert_unaffected(&self, before: &Stats, attack_frames: u64, x: u64) {
        if let Ok(a) = self.cx.connections().recv_timeout(QUIET) {
            panic!("the real client's link changed: {a:?}");
        }
        let r: u64 = self
            .me
            .call_timeout(&self.echo, "double", &x, WAIT)
            .expect("call after the attack");
        assert_eq!(r, 2 * x);
        let after = self.ds.stats();
        assert_eq!(
            after.frames_in,
            before.frames_in + attack_frames + 1,
            "frames in: {before:?} -> {after:?}"
        );
        assert_eq!(after.slow_consumers, before.slow_consumers);
        assert_eq!(after.reconnects, 0);
        assert_eq!(self.dc.stats().reconnects, 0);
        // The real client saw no change of the echo binding either.
        assert_quiet(&self.me);
    }

    /// The server announced nothing for a connection that never shook hands.
    fn assert_no_server_announcement(&self) {
        if let Ok(a) = self.ex.connections().try_recv() {
            panic!("server announced {a:?} for a connection that never shook hands");
        }
    }
}

// ----- attacks that close the connection -----

#[test]
fn random_garbage_closes_only_that_connection() {
    let s = setup(None);
    let before = s.ds.stats();
    let garbage = prng_bytes(0x5eed_0001, 64 * 1024);
    // With this seed the garbage's first 4 bytes claim more than the
    // default 16 MiB limit: refused before anything is allocated for it.
    let claimed = u32::from_be_bytes([garbage[0], garbage[1], garbage[2], garbage[3]]);
    assert!(claimed > 16 << 20, "seed precondition: claimed {claimed}");
    let mut raw = raw_connect(s.addr);
    // The server may close (and reset) while the bytes are still going out.
    let _ = raw.write_all(&garbage);
    expect_closed(&mut raw, "64 KiB of garbage");
    s.assert_no_server_announcement();
    s.assert_unaffected(&before, 0, 1);
}

#[test]
fn truncated_frame_then_end_of_input_closes_only_that_connection() {
    let s = setup(None);
    let before = s.ds.stats();
    let mut raw = raw_connect(s.addr);
    let mut bytes = 100u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0xAB; 10]);
    raw.write_all(&bytes).unwrap();
    raw.shutdown(Shutdown::Write).unwrap();
    expect_closed(&mut raw, "truncated frame");
    s.assert_no_server_announcement();
    s.assert_unaffected(&before, 0, 2);
}

#[test]
fn four_gib_length_prefix_closes_only_that_connection() {
    let s = setup(None);
    let before = s.ds.stats();
    let mut raw = raw_connect(s.addr);
    raw.write_all(&[0xFF, 0xFF, 0xFF, 0xFF]).unwrap();
    expect_closed(&mut raw, "4 GiB length prefix");
    s.assert_no_server_announcement();
    s.assert_unaffected(&before, 0, 3);
}

#[test]
fn wrong_protocol_version_closes_only_that_connection() {
    let s = setup(None);
    let before = s.ds.stats();
    let mut raw = raw_connect(s.addr);
    raw.write_all(&frame(&hello_body(MAGIC, 2, RAW_UID, RAW_LABEL, "")))
        .unwrap();
    expect_closed(&mut raw, "version 2 hello");
    s.assert_no_server_announcement();
    // The refused hello was a whole frame: counted in.
    s.assert_unaffected(&before, 1, 4);
}

#[test]
fn raw_http_request_closes_only_that_connection() {
    let s = setup(None);
    let before = s.ds.stats();
    let mut raw = raw_connect(s.addr);
    // "GET " read as a length is 0x47455420 (1.1 GiB): over the limit.
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    expect_closed(&mut raw, "HTTP request");
    s.assert_no_server_announcement();
    s.assert_unaffected(&before, 0, 5);
}

#[test]
fn framed_wrong_magic_closes_only_that_connection() {
    let s = setup(None);
    let before = s.ds.stats();
    let mut raw = raw_connect(s.addr);
    // A well-formed frame of the right shape whose magic is not NETSVC.
    raw.write_all(&frame(&hello_body(
        b"HTTP/1",
        util::raw::VERSION,
        RAW_UID,
        RAW_LABEL,
        "",
    )))
    .unwrap();
    expect_closed(&mut raw, "hello with magic HTTP/1");
    s.assert_no_server_announcement();
    s.assert_unaffected(&before, 1, 6);
}

#[test]
fn undecodable_frame_after_a_valid_hello_closes_only_that_connection() {
    let s = setup(None);
    let before = s.ds.stats();
    let mut raw = raw_connect(s.addr);
    let mut bytes = good_hello();
    bytes.extend_from_slice(&frame(&[0xFF; 5]));
    raw.write_all(&bytes).unwrap();
    expect_closed(&mut raw, "undecodable frame after the hello");
    // The hand-built hello was accepted (so the frame after it is what
    // closed the link): Active then Inactive, both naming uid 7.
    let conns = s.ex.connections();
    let a = conns.recv_timeout(WAIT).unwrap();
    assert_eq!(a.state(), ConnectionState::Active);
    assert_eq!(
        a.remote_process().map(|p| p.uid()),
        Some(util::raw::uid(RAW_UID))
    );
    assert_eq!(a.remote_process().map(|p| p.as_str()), Some(RAW_LABEL));
    let a = conns.recv_timeout(WAIT).unwrap();
    assert_eq!(a.state(), ConnectionState::Inactive);
    assert_eq!(
        a.remote_process().map(|p| p.uid()),
        Some(util::raw::uid(RAW_UID))
    );
    s.assert_no_server_announcement();
    s.assert_unaffected(&before, 2, 7);
}

#[test]
fn random_frames_after_a_valid_hello_close_only_that_connection() {
    let s = setup(None);
    let before = s.ds.stats();
    let mut raw = raw_connect(s.addr);
    let mut bytes = good_hello();
    // 200 small frames of random bytes, each starting with a valid message
    // tag (0..=6) so that decoding gets past the first byte.
    let noise = prng_bytes(0x5eed_0002, 200 * 65);
    let frames = 200;
    for i in 0..frames {
        let chunk = &noise[i * 65..(i + 1) * 65];
        let len = 1 + (chunk[0] as usize % 64);
        let mut body = chunk[1..=len].to_vec();
        body[0] %= 7;
        bytes.extend_from_slice(&frame(&body));
    }
    let _ = raw.write_all(&bytes);
    expect_closed(&mut raw, "random frames after the hello");
    let conns = s.ex.connections();
    let a = conns.recv_timeout(WAIT).unwrap();
    assert_eq!(a.state(), ConnectionState::Active);
    let a = conns.recv_timeout(WAIT).unwrap();
    assert_eq!(a.state(), ConnectionState::Inactive);
    assert_eq!(
        a.remote_process().map(|p| p.uid()),
        Some(util::raw::uid(RAW_UID))
    );
    // Hello + at least one frame, at most all of them; then the call.
    if let Ok(a) = s.cx.connections().recv_timeout(QUIET) {
        panic!("the real client's link changed: {a:?}");
    }
    let r: u64 = s.me.call_timeout(&s.echo, "double", &8u64, WAIT).unwrap();
    assert_eq!(r, 16);
    let got = s.ds.stats().frames_in - before.frames_in;
    assert!(
        (3..=frames as u64 + 2).contains(&got),
        "frames in during the attack and call: {got}"
    );
}

#[test]
fn length_just_over_max_frame_size_closes_only_that_connection() {
    let s = setup(Some(1024));
    let before = s.ds.stats();
    let mut raw = raw_connect(s.addr);
    raw.write_all(&1025u32.to_be_bytes()).unwrap();
    expect_closed(&mut raw, "length 1025 with max_frame_size 1024");
    s.assert_no_server_announcement();
    s.assert_unaffected(&before, 0, 9);
}

#[test]
fn length_equal_to_max_frame_size_is_not_refused() {
    let s = setup(Some(1024));
    let before = s.ds.stats();
    let mut raw = raw_connect(s.addr);
    // Exactly the limit, body not all sent: the server waits for the rest.
    let mut bytes = 1024u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0u8; 10]);
    raw.write_all(&bytes).unwrap();
    s.assert_unaffected(&before, 0, 10);
    expect_open(&mut raw, "length 1024 with max_frame_size 1024");
    s.assert_no_server_announcement();
}

// ----- peers that say nothing, and what the server says -----

#[test]
fn silent_peer_is_not_closed_before_the_handshake_timeout() {
    let s = setup(None);
    let before = s.ds.stats();
    let mut raw = raw_connect(s.addr);
    // The server speaks first: its hello arrives although we said nothing.
    let hello = read_frame(&mut raw);
    assert_eq!(&hello[..6], MAGIC);
    s.assert_unaffected(&before, 0, 11);
    expect_open(&mut raw, "silent peer");
    s.assert_no_server_announcement();
    // (Closing it after the 10 s handshake timeout is not checked here: the
    // timeout is a constant and would make this test take 10 s.)
}

#[test]
fn server_hello_is_the_first_frame_with_magic_version_and_identity() {
    for group in ["", "plant"] {
        let ds = Dispatcher::builder().name("hello-server").build().unwrap();
        let ex = Exchange::server(&ds)
            .group(group)
            .listen("127.0.0.1:0")
            .unwrap();
        let mut raw = raw_connect(ex.local_addr());
        let body = read_frame(&mut raw);
        assert_eq!(&body[..6], b"NETSVC");
        assert_eq!(u16::from_be_bytes([body[6], body[7]]), util::raw::VERSION);
        let mut pos = 8;
        let uid = varint(&body, &mut pos);
        let label_len = varint(&body, &mut pos) as usize;
        let label = std::str::from_utf8(&body[pos..pos + label_len]).unwrap();
        pos += label_len;
        let group_len = varint(&body, &mut pos) as usize;
        let their_group = std::str::from_utf8(&body[pos..pos + group_len]).unwrap();
        pos += group_len;
        assert_eq!(uid, ds.process_id().uid());
        assert_eq!(label, ds.process_id().as_str());
        assert_eq!(their_group, group);
        assert_eq!(body.get(pos), Some(&0), "auth: false (no secret)");
        pos += 1;
        assert_eq!(
            varint(&body, &mut pos),
            0,
            "a server shows no identity token"
        );
        assert_eq!(body.get(pos), Some(&1), "bind: true (the default)");
        pos += 1;
        assert_eq!(pos, body.len(), "trailing bytes in the hello");
        ds.shutdown();
    }
}

#[test]
fn hello_frames_are_counted_in_and_out() {
    // A server with no services: the handshake is its only traffic.
    let ds = Dispatcher::builder().name("counting").build().unwrap();
    let ex = Exchange::server(&ds).listen("127.0.0.1:0").unwrap();
    let mut raw = raw_connect(ex.local_addr());
    raw.write_all(&good_hello()).unwrap();
    let body = read_frame(&mut raw);
    assert_eq!(&body[..6], MAGIC);
    let a = ex.connections().recv_timeout(WAIT).unwrap();
    assert_eq!(a.state(), ConnectionState::Active);
    let st = ds.stats();
    assert_eq!(st.frames_in, 1, "our hello");
    assert_eq!(st.frames_out, 1, "the server's hello: {st:?}");
    ds.shutdown();
}
