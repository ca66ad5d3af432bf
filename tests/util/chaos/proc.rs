//! Child processes (the wrapper of tests/processes.rs): an example binary,
//! or this test binary again in the caller role.

use std::process::{Child, ChildStdin, Command, Stdio};

use crossbeam_channel::Receiver;

use crate::util::child::{example, read_lines, Out};
use crate::{PORT_VAR, ROLE_VAR};

/// A running child with its stdout read line by line on a thread of its
/// own; killed (SIGKILL) and reaped when dropped, also on panic.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub out: Receiver<Out>,
    /// Every line read so far, for failure messages.
    pub seen: Vec<String>,
    pub eof: bool,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, piped_stdin: bool) -> Proc {
        let mut child = cmd
            .stdin(if piped_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdin = child.stdin.take();
        let rx = read_lines(name, &mut child);
        Proc {
            name: format!("{name}[{}]", child.id()),
            child,
            stdin,
            out: rx,
            seen: Vec::new(),
            eof: false,
        }
    }

    /// An example binary, linked to (or listening on) 127.0.0.1:`port`.
    pub fn example(name: &str, port: u16) -> Proc {
        let mut cmd = Command::new(example(name));
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
        Proc::spawn(name, cmd, false)
    }

    /// This test binary again, in the caller role.
    pub fn caller(port: u16) -> Proc {
        let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
        cmd.args(["--exact", "caller_role", "--nocapture"])
            .env(ROLE_VAR, "caller")
            .env(PORT_VAR, port.to_string());
        Proc::spawn("caller", cmd, true)
    }

    /// The start of its dispatcher's process identity,
    /// `<dispatcher name>@<os pid>/`.
    pub fn ident(&self, dispatcher: &str) -> String {
        format!("{dispatcher}@{}/", self.child.id())
    }

    /// The last lines it printed, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let from = self.seen.len().saturating_sub(n);
        format!(
            "{} (last {} of {} lines):\n    {}",
            self.name,
            self.seen.len() - from,
            self.seen.len(),
            self.seen[from..].join("\n    ")
        )
    }

    /// SIGKILL, and reap the process (its sockets are closed afterwards).
    pub fn sigkill(&mut self) {
        self.child.kill().expect("kill the child");
        self.child.wait().expect("reap the child");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Never outlive the test, also when it panics.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
