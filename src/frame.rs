//! Framing for exchange connections: a 4-byte big-endian length, then that
//! many bytes. Reading is incremental and bounded: a length over the limit is
//! refused before anything is allocated for it, and the read buffer only ever
//! holds bytes that actually arrived.

use std::io::{self, Read, Write};

/// Bytes in the length prefix.
pub(crate) const PREFIX: usize = 4;

/// Why a connection's input was refused.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// The peer announced a frame over the limit.
    TooLarge { claimed: u64, limit: usize },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge { claimed, limit } => {
                write!(f, "frame of {claimed} bytes announced, limit is {limit}")
            }
        }
    }
}

/// The bytes received on a connection and not yet taken as frames.
#[derive(Debug, Default)]
pub(crate) struct ReadBuffer {
    buf: Vec<u8>,
    start: usize,
}

/// How much one read asks the socket for: the size of the scratch buffer
/// the dispatcher reads into (one for all connections).
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// The outcome of [`ReadBuffer::fill`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fill {
    /// The socket has no more bytes for now.
    WouldBlock,
    /// The peer closed its side.
    Closed,
    /// The buffer holds as much as the caller allows; take frames first.
    Full,
}

impl ReadBuffer {
    /// Reads from the socket through `scratch` until it would block, the
    /// peer closes, the buffer holds `max` unread bytes, or this call has
    /// read a whole `scratch` (then [`Fill::Full`]: frames are taken a chunk
    /// at a time, so a busy connection's buffer stays about one chunk long
    /// instead of growing with everything the socket holds and being freed
    /// again). The buffer grows only by what arrived, so an idle connection
    /// holds (almost) nothing.
    pub(crate) fn fill(
        &mut self,
        src: &mut impl Read,
        max: usize,
        scratch: &mut [u8],
    ) -> io::Result<(Fill, usize)> {
        let mut total = 0;
        loop {
            let unread = self.buf.len() - self.start;
            if unread >= max || total >= scratch.len() {
                return Ok((Fill::Full, total));
            }
            if self.start > 0 && self.start == self.buf.len() {
                self.buf.clear();
                self.start = 0;
            }
            let want = (scratch.len() - total).min(max - unread);
            match src.read(&mut scratch[..want]) {
                Ok(0) => return Ok((Fill::Closed, total)),
                Ok(n) => {
                    self.buf.extend_from_slice(&scratch[..n]);
                    total += n;
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return Ok((Fill::WouldBlock, total)),
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(e),
                },
            }
        }
    }

    /// The next complete frame's body, if one has arrived. A length over
    /// `limit` is an error at once, whatever else has arrived.
    pub(crate) fn next_frame(&mut self, limit: usize) -> Result<Option<&[u8]>, FrameError> {
        let unread = &self.buf[self.start..];
        if unread.len() < PREFIX {
            self.compact();
            return Ok(None);
        }
        let claimed = u32::from_be_bytes([unread[0], unread[1], unread[2], unread[3]]) as u64;
        if claimed > limit as u64 {
            return Err(FrameError::TooLarge { claimed, limit });
        }
        let len = claimed as usize;
        if unread.len() < PREFIX + len {
            self.compact();
            return Ok(None);
        }
        let begin = self.start + PREFIX;
        self.start = begin + len;
        Ok(Some(&self.buf[begin..begin + len]))
    }

    /// How many unread bytes the frame at the front needs in all, prefix
    /// included, as far as its prefix says (at most `limit` plus the
    /// prefix: a larger claim is refused by `next_frame`).
    pub(crate) fn wanted(&self, limit: usize) -> usize {
        let unread = &self.buf[self.start..];
        match unread.get(..PREFIX) {
            Some(p) => {
                let claimed = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize;
                PREFIX + claimed.min(limit)
            }
            None => PREFIX,
        }
    }

    /// Moves unread bytes to the front so the buffer does not creep.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        // A chunk plus the start of a frame is the steady state of a busy
        // connection: kept. More is a burst's memory: given back.
        if self.buf.is_empty() && self.buf.capacity() > 2 * READ_CHUNK {
            self.buf = Vec::new();
        }
    }

    /// Bytes received and not yet taken.
    #[cfg(test)]
    pub(crate) fn unread(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// Frames waiting to be written to a connection, written in as few system
/// calls as the socket allows.
#[derive(Debug, Default)]
pub(crate) struct WriteBuffer {
    buf: Vec<u8>,
    start: usize,
}

impl WriteBuffer {
    /// Appends one frame: its length prefix, then its bytes.
    pub(crate) fn push_frame(&mut self, body: &[u8]) {
        put_frame(&mut self.buf, body);
    }

    /// Appends bytes that already carry their prefix (a frame encoded once
    /// for many connections).
    pub(crate) fn push_encoded(&mut self, frame: &[u8]) {
        self.buf.extend_from_slice(frame);
    }

    /// Bytes waiting.
    pub(crate) fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Writes until done or the socket would block; true when all is written.
    pub(crate) fn flush(&mut self, dst: &mut impl Write) -> io::Result<bool> {
        while self.start < self.buf.len() {
            match dst.write(&self.buf[self.start..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.start += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Written bytes are dropped from the front once they
                    // are the larger part, so that a connection that never
                    // quite catches up does not grow its buffer without end.
                    if self.start > self.buf.len() / 2 {
                        self.buf.drain(..self.start);
                        self.start = 0;
                    }
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf.clear();
        self.start = 0;
        // Give back memory after a burst.
        if self.buf.capacity() > 4 * READ_CHUNK {
            self.buf.shrink_to(READ_CHUNK);
        }
        // A stream that holds bytes of its own (TLS records) writes them
        // now, also when this buffer was empty (the socket turned writable
        // again): until they are out, not all is written.
        match dst.flush() {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Appends one frame to `out`: its length prefix, then its bytes.
pub(crate) fn put_frame(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
}

/// Encodes a frame with its prefix into a new buffer.
pub(crate) fn with_prefix(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(PREFIX + body.len());
    v.extend_from_slice(&(body.len() as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader handing out its bytes in chunks of at most `step`, then
    /// WouldBlock.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        step: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos == self.data.len() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.step).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    #[test]
    fn frames_split_across_reads() {
        let mut w = WriteBuffer::default();
        w.push_frame(b"hello");
        w.push_frame(b"");
        w.push_frame(&[7u8; 1000]);
        let mut src = Trickle {
            data: w.buf.clone(),
            pos: 0,
            step: 3,
        };
        let mut r = ReadBuffer::default();
        let mut frames = Vec::new();
        let mut scratch = vec![0u8; READ_CHUNK];
        loop {
            let (fill, _) = r.fill(&mut src, 1 << 20, &mut scratch).unwrap();
            while let Some(f) = r.next_frame(4096).unwrap() {
                frames.push(f.to_vec());
            }
            if fill == Fill::WouldBlock {
                break;
            }
        }
        assert_eq!(frames, vec![b"hello".to_vec(), vec![], vec![7u8; 1000]]);
        assert_eq!(r.unread(), 0);
    }

    #[test]
    fn fill_takes_one_chunk_at_a_time() {
        let mut w = WriteBuffer::default();
        for _ in 0..100 {
            w.push_frame(&[1u8; 100]);
        }
        let mut src = Trickle {
            data: w.buf.clone(),
            pos: 0,
            step: 1000,
        };
        let mut r = ReadBuffer::default();
        let mut scratch = vec![0u8; 2500];
        let (fill, n) = r.fill(&mut src, 1 << 20, &mut scratch).unwrap();
        assert_eq!((fill, n), (Fill::Full, 2500));
        let mut frames = 0;
        while r.next_frame(4096).unwrap().is_some() {
            frames += 1;
        }
        assert_eq!(frames, 24);
        loop {
            let (fill, _) = r.fill(&mut src, 1 << 20, &mut scratch).unwrap();
            while r.next_frame(4096).unwrap().is_some() {
                frames += 1;
            }
            if fill == Fill::WouldBlock {
                break;
            }
        }
        assert_eq!(frames, 100);
    }

    #[test]
    fn oversized_length_is_refused_before_the_body() {
        let mut r = ReadBuffer::default();
        let mut src = Trickle {
            data: vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3],
            pos: 0,
            step: 100,
        };
        r.fill(&mut src, 1 << 20, &mut [0u8; 256]).unwrap();
        assert!(matches!(
            r.next_frame(1024),
            Err(FrameError::TooLarge {
                claimed: 4_294_967_295,
                ..
            })
        ));
        assert!(r.unread() < 16);
    }

    /// A socket that takes `budget` more bytes, then would block.
    struct Slow {
        out: Vec<u8>,
        budget: usize,
    }

    impl Write for Slow {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.budget);
            self.out.extend_from_slice(&buf[..n]);
            self.budget -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_buffer_that_never_empties_stays_bounded() {
        // A peer that always takes a little less than is queued: the
        // buffer is never flushed completely, yet its written part must
        // not pile up in front of the unwritten one.
        let mut w = WriteBuffer::default();
        let mut dst = Slow {
            out: Vec::new(),
            budget: 0,
        };
        let frame = [9u8; 1000];
        let mut expected = Vec::new();
        for _ in 0..10_000 {
            w.push_frame(&frame);
            expected.extend_from_slice(&with_prefix(&frame));
            dst.budget = 1004 - 1;
            assert!(!w.flush(&mut dst).unwrap());
            assert!(
                w.buf.len() <= 2 * w.pending() + 2008,
                "{} bytes held",
                w.buf.len()
            );
        }
        assert_eq!(w.pending(), 10_000);
        dst.budget = usize::MAX;
        assert!(w.flush(&mut dst).unwrap());
        assert_eq!(dst.out, expected);
    }

    #[test]
    fn write_buffer_resumes_after_would_block() {
        let mut w = WriteBuffer::default();
        w.push_frame(b"abcdef");
        let mut dst = Slow {
            out: Vec::new(),
            budget: 4,
        };
        assert!(!w.flush(&mut dst).unwrap());
        assert_eq!(w.pending(), 6);
        dst.budget = 100;
        assert!(w.flush(&mut dst).unwrap());
        assert_eq!(dst.out, with_prefix(b"abcdef"));
    }
}
