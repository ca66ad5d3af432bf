//! Memory under hostile length prefixes: a peer announcing a huge frame
//! (4 GiB, or just under the 16 MiB limit with only a few bytes of it sent)
//! makes the server allocate nothing for it; before the handshake, more than
//! 4 KiB is refused. RSS is process-wide, so this
//! file holds a single test: nothing else runs beside it.
#![cfg(target_os = "linux")]

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use util::*;

/// A field of /proc/self/status, in bytes.
fn proc_status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kib: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

fn rss() -> u64 {
    proc_status_bytes("VmRSS:")
}

fn virtual_size() -> u64 {
    proc_status_bytes("VmSize:")
}

const MIB: u64 = 1 << 20;

#[test]
fn huge_length_prefixes_allocate_nothing() {
    // Server with the default limit (16 MiB) and an echo service, and a
    // real client whose calls serve as the barrier: a reply means the
    // server's dispatcher has handled everything that arrived before.
    let s = util::link::setup(None);
    let (ds, addr, me, echo) = (&s.ds, s.addr, &s.me, &s.echo);
    let call = |x: u64| {
        let r: u64 = me.call_timeout(echo, "double", &x, WAIT).unwrap();
        assert_eq!(r, 2 * x);
    };
    call(1);
    call(2);

    let rss0 = rss();
    let vsz0 = virtual_size();

    // 1. A 4 GiB length prefix as the very first bytes: closed.
    let mut huge = TcpStream::connect(addr).unwrap();
    huge.set_read_timeout(Some(WAIT)).unwrap();
    huge.write_all(&[0xFF; 4]).unwrap();
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 4096];
    loop {
        assert!(Instant::now() < deadline, "4 GiB prefix: never closed");
        match huge.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("4 GiB prefix: connection not closed within {WAIT:?}")
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    call(3);
    let rss1 = rss();
    let vsz1 = virtual_size();
    assert!(
        rss1 <= rss0 + 8 * MIB,
        "RSS grew from {} KiB to {} KiB after a 4 GiB length prefix",
        rss0 / 1024,
        rss1 / 1024
    );
    // Not even reserved (untouched) memory: a 4 GiB reservation would show
    // in the virtual size though not in RSS.
    assert!(
        vsz1 <= vsz0 + 1024 * MIB,
        "virtual size grew from {} MiB to {} MiB after a 4 GiB length prefix",
        vsz0 / MIB,
        vsz1 / MIB
    );

    // 2. Before the handshake, a frame over 4 KiB is refused at once: an
    //    unauthenticated peer can make the server buffer a few KiB, no more.
    let mut early = TcpStream::connect(addr).unwrap();
    early.set_read_timeout(Some(WAIT)).unwrap();
    early.write_all(&(4097u32).to_be_bytes()).unwrap();
    let mut closed = false;
    while let Ok(n) = early.read(&mut buf) {
        if n == 0 {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a 4097-byte frame before the handshake was not refused"
    );

    // 3. After the handshake, 16 MiB - 1 announced (just under the limit),
    //    10 bytes sent, the connection held open: the server waits without
    //    allocating the frame.
    let mut big = util::raw::handshake(addr, 9);
    let mut bytes = ((16u32 << 20) - 1).to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0x5A; 10]);
    big.write_all(&bytes).unwrap();
    call(4);
    call(5);
    let rss2 = rss();
    assert!(
        rss2 <= rss0 + 8 * MIB,
        "RSS grew from {} KiB to {} KiB after a 16 MiB - 1 length prefix",
        rss0 / 1024,
        rss2 / 1024
    );
    // It is still open (the server waits for the rest, nothing refused it).
    big.set_read_timeout(Some(QUIET)).unwrap();
    loop {
        match big.read(&mut buf) {
            Ok(0) => panic!("16 MiB - 1 prefix: the server closed the connection"),
            Ok(_) => continue, // the server's hello
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => panic!("16 MiB - 1 prefix: connection failed: {e}"),
        }
    }
    let st = ds.stats();
    assert_eq!(st.slow_consumers, 0);
    drop(big);
    s.dc.shutdown();
    ds.shutdown();
}
