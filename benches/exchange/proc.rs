//! The parent's side of the child processes: spawning one in a role,
//! waiting for its `READY`/`RESULT` lines and parsing their key=value
//! [`Fields`], sending it commands, killing it (each on drop, all at the
//! end or on a panic), and reading its memory and the open-files limit
//! from /proc.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// Every child still running, killed by [`kill_all`].
static CHILDREN: Mutex<Vec<(u32, Child)>> = Mutex::new(Vec::new());

fn children() -> std::sync::MutexGuard<'static, Vec<(u32, Child)>> {
    CHILDREN.lock().unwrap_or_else(|e| e.into_inner())
}

fn kill_pid(pid: u32) {
    let child = {
        let mut list = children();
        list.iter()
            .position(|(p, _)| *p == pid)
            .map(|i| list.remove(i).1)
    };
    if let Some(mut c) = child {
        let _ = c.kill();
        let _ = c.wait();
    }
}

pub(crate) fn kill_all() {
    let all: Vec<(u32, Child)> = children().drain(..).collect();
    for (_, mut c) in all {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Kills every child when dropped: at the end, and on a panic.
pub(crate) struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        kill_all();
    }
}

/// The key=value fields of a child's line.
pub(crate) struct Fields(HashMap<String, String>);

impl Fields {
    fn parse(line: &str) -> Fields {
        Fields(
            line.split_whitespace()
                .filter_map(|t| t.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    pub(crate) fn u(&self, key: &str) -> Result<u64, String> {
        self.0
            .get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no {key} in result"))
    }

    pub(crate) fn f(&self, key: &str) -> Result<f64, String> {
        self.0
            .get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no {key} in result"))
    }

    pub(crate) fn s(&self, key: &str) -> Result<String, String> {
        self.0
            .get(key)
            .cloned()
            .ok_or_else(|| format!("no {key} in result"))
    }
}

/// A child process in a role; killed when dropped.
pub(crate) struct Proc {
    pub(crate) pid: u32,
    name: String,
    lines: Receiver<String>,
}

pub(crate) fn spawn(name: &str, args: &[&str]) -> Result<Proc, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn {name}: {e}"))?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let pid = child.id();
    children().push((pid, child));
    Ok(Proc {
        pid,
        name: name.to_owned(),
        lines: rx,
    })
}

impl Proc {
    /// Waits for a line starting with `prefix` (`FAILED` lines end the wait).
    pub(crate) fn expect(&self, prefix: &str, timeout: Duration) -> Result<Fields, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return Ok(Fields::parse(&l)),
                Ok(l) if l.starts_with("FAILED") => return Err(format!("{}: {l}", self.name)),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("{}: no {prefix} within {timeout:?}", self.name))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("{}: exited before {prefix}", self.name))
                }
            }
        }
    }

    /// Sends a command line to the child's stdin.
    pub(crate) fn send(&self, line: &str) -> Result<(), String> {
        let mut list = children();
        let child = list
            .iter_mut()
            .find(|(p, _)| *p == self.pid)
            .map(|(_, c)| c)
            .ok_or("child gone")?;
        let stdin = child.stdin.as_mut().ok_or("no stdin")?;
        writeln!(stdin, "{line}").map_err(|e| format!("{}: {e}", self.name))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        kill_pid(self.pid);
    }
}

/// A field of /proc/<pid>/status in bytes (VmRSS, VmHWM).
pub(crate) fn proc_status_bytes(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The soft limit on open files, from /proc/self/limits.
pub(crate) fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

pub(crate) const SETUP: Duration = Duration::from_secs(15);

pub(crate) fn port_of(p: &Proc) -> Result<String, String> {
    p.expect("READY", SETUP)?.s("port")
}
