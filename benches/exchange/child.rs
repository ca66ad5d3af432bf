//! What every child role shares: a stdin watcher that ends the child when
//! the parent goes, the `FAILED` report, and parking until killed.

use std::io::{self, BufRead};
use std::sync::mpsc::{self, Receiver};
use std::thread;

/// Every child: a thread reads stdin line by line (commands such as `go`)
/// and ends the process when stdin closes, so that no child outlives the
/// parent even if the parent is killed.
pub(crate) fn child_init() -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let stdin = io::stdin();
        for line in stdin.lock().lines() {
            match line {
                Ok(l) => {
                    let _ = tx.send(l);
                }
                Err(_) => break,
            }
        }
        std::process::exit(0);
    });
    rx
}

/// Reports a failure to the parent and ends the child.
pub(crate) fn fail(msg: &str) -> ! {
    println!("FAILED {}", msg.replace('\n', " "));
    eprintln!("bench child {}: {msg}", std::process::id());
    std::process::exit(1);
}

/// Keeps a child alive until the parent closes its stdin or kills it.
pub(crate) fn park_forever() -> ! {
    loop {
        thread::park();
    }
}

/// Waits for `go` from the parent (the start of a measured run); ends the
/// child if the parent goes first.
pub(crate) fn wait_for_go(cmds: &Receiver<String>) {
    loop {
        match cmds.recv() {
            Ok(l) if l.trim() == "go" => return,
            Ok(_) => {}
            Err(_) => std::process::exit(0),
        }
    }
}
