//! Property tests of the exchange's input path (frame reader, handshake and
//! message decoding) and of payload decoding (as a `Value`, ignored, and as
//! typed shapes): random and mutated inputs never panic, and what one input
//! makes the decoder allocate stays proportional to what was received,
//! never to what a length prefix claims.
//!
//! The binary installs a counting allocator and reads its peak, which
//! another test running at once would disturb: its tests take turns
//! ([`ONE_AT_A_TIME`]).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use std::sync::Mutex;

use netsvc::fuzzing::{decode_payload, feed, sample_frames, sample_payloads};

/// Held by each test for its whole run: one measures at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Counts the bytes live and the peak since the last reset.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counters are only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// xorshift64*: deterministic, so a failure is reproducible from the seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const MAX_FRAME: usize = 64 * 1024;
const CASES: usize = 20_000;

/// Runs one input and returns the peak extra allocation it caused.
fn peak_for(input: &[u8], chunk: usize) -> usize {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let _ = feed(input, MAX_FRAME, chunk);
    PEAK.load(Ordering::Relaxed).saturating_sub(base)
}

fn mutate(rng: &mut Rng, frames: &[Vec<u8>]) -> Vec<u8> {
    // A valid start (the hello), then some frames, then damage.
    let mut input = frames[0].clone();
    for _ in 0..rng.below(4) {
        input.extend_from_slice(&frames[1 + rng.below(frames.len() - 1)]);
    }
    for _ in 0..1 + rng.below(4) {
        let len = input.len();
        match rng.below(6) {
            0 => input[rng.below(len)] ^= 1 << rng.below(8),
            1 => input.truncate(rng.below(len)),
            2 => {
                let at = rng.below(len);
                input.insert(at, rng.next() as u8)
            }
            3 => {
                // A length prefix (anywhere) claiming something large.
                let at = rng.below(len.saturating_sub(4).max(1));
                let claim = [
                    u32::MAX,
                    MAX_FRAME as u32,
                    MAX_FRAME as u32 + 1,
                    rng.next() as u32,
                ][rng.below(4)];
                if at + 4 <= input.len() {
                    input[at..at + 4].copy_from_slice(&claim.to_be_bytes());
                }
            }
            4 => {
                // A varint inside a body claiming a huge string or vector.
                let at = rng.below(len);
                let huge = [253u8, 255, 255, 255, 255, 255, 255, 255, 127];
                input.splice(at..at, huge);
            }
            _ => {
                let at = rng.below(len);
                input.splice(at..at, (0..rng.below(64)).map(|_| rng.next() as u8));
            }
        }
        if input.is_empty() {
            break;
        }
    }
    input
}

#[test]
fn random_and_mutated_input_never_panics_nor_allocates_beyond_what_arrived() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let seed = 0x6e65_7473_7663_0001;
    let mut rng = Rng(seed);
    let frames = sample_frames();
    assert!(frames.len() > 10, "every message kind is sampled");
    // The samples themselves decode: the property test starts from valid input.
    let all: Vec<u8> = frames.concat();
    let ok = feed(&all, MAX_FRAME, 7);
    assert_eq!(
        (ok.frames, ok.decoded, ok.refused),
        (frames.len(), frames.len(), false)
    );

    let mut refused = 0;
    let mut worst = (0usize, 0usize);
    for case in 0..CASES {
        let input = if case % 4 == 0 {
            (0..rng.below(4096)).map(|_| rng.next() as u8).collect()
        } else {
            mutate(&mut rng, &frames)
        };
        let chunk = 1 + rng.below(2048);
        if feed(&input, MAX_FRAME, chunk).refused {
            refused += 1;
        }
        let peak = peak_for(&input, chunk);
        // The reader holds what arrived (read in chunks of at most 64 KiB,
        // and at most one frame of MAX_FRAME); a decode allocates at most 64
        // times the frame it decodes. A claimed length adds nothing.
        let bound = 64 * 1024 + 2 * MAX_FRAME.min(input.len() + 4) + 64 * input.len() + 4096;
        assert!(
            peak <= bound,
            "case {case} (seed {seed:#x}): {} input bytes made the decoder allocate {peak} bytes",
            input.len()
        );
        if peak > worst.0 {
            worst = (peak, input.len());
        }
    }
    assert!(
        refused > CASES / 4,
        "the mutations reach the refusals: {refused}"
    );
    println!(
        "{CASES} cases, {refused} refused; worst peak {} bytes for {} input bytes",
        worst.0, worst.1
    );
}

/// Runs one payload through every decoding and returns the peak extra
/// allocation it caused.
fn payload_peak(input: &[u8]) -> usize {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let _ = decode_payload(input);
    PEAK.load(Ordering::Relaxed).saturating_sub(base)
}

#[test]
fn random_mutated_and_hostile_payloads_never_panic_nor_allocate_beyond_linear() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let seed = 0x6e65_7473_7663_0015;
    let mut rng = Rng(seed);
    let samples = sample_payloads();
    assert!(samples.len() > 5);
    // The samples decode (each in at least two ways: as a Value, ignored).
    for s in &samples {
        assert!(decode_payload(s) >= 2, "{s:?}");
    }
    // Hostile by construction: nesting far past the limit, claimed lengths
    // far past the input, and a run of garbage.
    let mut hostile: Vec<Vec<u8>> = Vec::new();
    for open in [
        &[0x16u8, 1][..],
        &[0x17],
        &[0x18, 1, 0x13, 0],
        &[0x1a, 1, 0, 1, b'a'],
        &[0x03],
    ] {
        let mut deep = open.repeat(10_000);
        deep.push(0x01);
        hostile.push(deep);
    }
    for tag in [0x13u8, 0x14, 0x15, 0x16, 0x18, 0x1a] {
        hostile.push(vec![
            tag, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x01,
        ]);
    }
    hostile.push((0..4096).map(|_| rng.next() as u8).collect());
    for h in &hostile {
        assert_eq!(
            decode_payload(h),
            0,
            "hostile input decoded: {:?}",
            &h[..16]
        );
    }

    // What costs a Value most per input byte: many maps of one entry (a
    // map node each), 5 bytes apiece.
    let mut dense = vec![0x16u8, 0xd0, 0x0f]; // a list of 2000
    for _ in 0..2000 {
        dense.extend_from_slice(&[0x18, 1, 0x13, 0, 0x01]);
    }
    assert!(decode_payload(&dense) >= 2);
    let peak = payload_peak(&dense);
    assert!(
        peak <= 160 * dense.len() + 4096,
        "{peak} bytes for {}",
        dense.len()
    );
    println!(
        "2000 maps of one entry: {peak} bytes for {} input bytes",
        dense.len()
    );

    let mut worst = (0usize, 0usize);
    let mut decoded = 0;
    for case in 0..CASES + hostile.len() {
        let input = if case < hostile.len() {
            hostile[case].clone()
        } else if case % 4 == 0 {
            (0..rng.below(512)).map(|_| rng.next() as u8).collect()
        } else {
            let mut p = samples[rng.below(samples.len())].clone();
            for _ in 0..1 + rng.below(3) {
                let len = p.len();
                match rng.below(4) {
                    0 => p[rng.below(len)] ^= 1 << rng.below(8),
                    1 => p.truncate(rng.below(len)),
                    2 => p.insert(rng.below(len), rng.next() as u8),
                    _ => {
                        let at = rng.below(len);
                        p.splice(at..at, [0xff, 0xff, 0xff, 0xff, 0x0f]);
                    }
                }
                if p.is_empty() {
                    break;
                }
            }
            p
        };
        if decode_payload(&input) > 0 {
            decoded += 1;
        }
        let peak = payload_peak(&input);
        // Linear in the input: a decoded Value costs at most a map node
        // (under 700 bytes) per one-entry map of 5 input bytes; a claimed
        // length or count adds nothing.
        let bound = 160 * input.len() + 4096;
        assert!(
            peak <= bound,
            "case {case} (seed {seed:#x}): {} payload bytes made the decoders allocate {peak} bytes",
            input.len()
        );
        if peak > worst.0 {
            worst = (peak, input.len());
        }
    }
    assert!(
        decoded > CASES / 40,
        "the mutations keep some payloads valid: {decoded}"
    );
    println!(
        "{} payloads, {decoded} decoded some way; worst peak {} bytes for {} input bytes",
        CASES + hostile.len(),
        worst.0,
        worst.1
    );
}
