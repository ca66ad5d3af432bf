//! Child processes for multi-process tests: find an example binary, and
//! read a child's stdout line by line on a thread of its own.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use crossbeam_channel::Receiver;

/// What a child's reader thread passes on.
#[derive(Debug)]
pub enum Out {
    /// A line of its stdout, with when it was read.
    Line(Instant, String),
    /// Its stdout ended (it exited, or closed it).
    Eof,
}

/// The path of an example binary, next to this test's own executable:
/// target/<profile>/deps/<test> -> target/<profile>/examples/<name>.
/// `cargo test` builds the examples; `cargo test --test x` does not.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test executable is in target/<profile>/deps");
    let path = dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "example binary {} is missing: run `cargo build --examples` first \
         (`cargo test` without --test builds them)",
        path.display()
    );
    path
}

/// Takes the child's (piped) stdout and reads it line by line on a thread
/// named `read-<name>`; the lines, then `Eof`, arrive on the receiver.
pub fn read_lines(name: &str, child: &mut Child) -> Receiver<Out> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name(format!("read-{name}"))
        .spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(line) => {
                        if tx.send(Out::Line(Instant::now(), line)).is_err() {
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            let _ = tx.send(Out::Eof);
        })
        .expect("spawn a reader thread");
    rx
}

/// Starts an example binary with `args`, stdin closed, stdout piped and
/// read line by line (see [`read_lines`]), stderr the test's own.
pub fn spawn_example<S: AsRef<std::ffi::OsStr>>(name: &str, args: &[S]) -> (Child, Receiver<Out>) {
    let mut child = Command::new(example(name))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start example {name}: {e}"));
    let out = read_lines(name, &mut child);
    (child, out)
}
