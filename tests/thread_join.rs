//! Every netsvc thread is joined by the time `shutdown()` (or the drop of
//! the last `Dispatcher` handle) returns.
//!
//! ONE test only in this file: it counts the threads of the whole process,
//! so no other test may run concurrently in this binary.

#[cfg(target_os = "linux")]
mod util;

#[cfg(target_os = "linux")]
mod linux {
    use super::util::*;

    use std::fs;
    use std::thread;
    use std::time::Duration;

    use netsvc::{Dispatcher, Event, Service, ServiceHandle};

    /// The kernel's flag for a task inside `do_exit` (include/linux/sched.h).
    const PF_EXITING: u64 = 0x4;

    /// The flags field of /proc/self/task/<tid>/stat (the 9th field; the
    /// command name in parentheses may itself hold spaces or parentheses).
    fn task_flags(tid: &str) -> Option<u64> {
        let stat = fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
        let after_comm = &stat[stat.rfind(')')? + 1..];
        // state ppid pgrp session tty_nr tpgid flags
        after_comm.split_whitespace().nth(6)?.parse().ok()
    }

    /// The names of this process's live netsvc threads, sorted. The OS
    /// truncates names to 15 bytes: "netsvc-dispatch", "netsvc-svc-<...>".
    ///
    /// A thread that has finished (its joiner has been released) may stay
    /// listed for a few microseconds while the kernel reaps it; such a task
    /// is marked PF_EXITING and is not counted: it runs no code any more.
    pub(super) fn netsvc_threads() -> Vec<String> {
        let mut names = Vec::new();
        let tasks = fs::read_dir("/proc/self/task").expect("read /proc/self/task");
        for task in tasks {
            let Ok(task) = task else { continue };
            let tid = task.file_name().to_string_lossy().into_owned();
            // A task may vanish between the listing and the reads.
            let Ok(comm) = fs::read_to_string(task.path().join("comm")) else {
                continue;
            };
            let comm = comm.trim_end_matches('\n').to_owned();
            if !comm.starts_with("netsvc-") {
                continue;
            }
            match task_flags(&tid) {
                Some(flags) if flags & PF_EXITING != 0 => continue,
                None => continue, // gone meanwhile
                Some(_) => names.push(comm),
            }
        }
        names.sort();
        names
    }

    /// Drops slowly: a worker thread that shutdown did not join would still
    /// be alive, dropping it, when the threads are counted.
    struct SlowDrop;

    impl Drop for SlowDrop {
        fn drop(&mut self) {
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Everything that keeps a dispatcher busy: three spawned services, two
    /// pulled ones, calls made, timers running.
    pub(super) struct Busy {
        _handles: Vec<ServiceHandle>,
        _pulled: Vec<Service>,
    }

    pub(super) fn make_busy(d: &Dispatcher) -> Busy {
        let echo = d
            .service("echo")
            .spawn(|_svc, event| {
                if let Event::Request(r) = event {
                    let v: u64 = r.decode().unwrap();
                    let _ = r.reply(&v);
                }
            })
            .unwrap();
        let ticker = d
            .service("ticker")
            .spawn(|svc, event| match event {
                Event::Request(r) => {
                    svc.start_timer(Duration::from_millis(1), 1);
                    svc.start_timer(Duration::from_secs(60), 2);
                    let _ = r.reply(&0u64);
                }
                Event::Timer(1) => svc.start_timer(Duration::from_millis(1), 1),
                _ => {}
            })
            .unwrap();
        let slow_guard = SlowDrop;
        let slow = d
            .service("slow")
            .spawn(move |_svc, event| {
                let _keep = &slow_guard;
                if let Event::Request(r) = event {
                    let _ = r.reply(&3u64);
                }
            })
            .unwrap();

        let a = d.service("puller-a").open().unwrap();
        let b = d.service("puller-b").open().unwrap();
        for i in 0..5u64 {
            assert_eq!(a.call::<u64, _>(echo.binding(), "echo", &i).unwrap(), i);
        }
        assert_eq!(b.call::<u64, _>(ticker.binding(), "arm", &()).unwrap(), 0);
        assert_eq!(b.call::<u64, _>(slow.binding(), "x", &()).unwrap(), 3);
        a.start_timer(Duration::from_secs(60), 9);
        b.start_timer(Duration::from_millis(1), 9);
        // b's timer has fired: the dispatcher is running timers.
        assert!(matches!(next(&b), Event::Timer(9)));
        Busy {
            _handles: vec![echo, ticker, slow],
            _pulled: vec![a, b],
        }
    }

    pub(super) fn expected_threads() -> Vec<String> {
        let mut v: Vec<String> = [
            "netsvc-dispatch",
            "netsvc-svc-echo",
            "netsvc-svc-slow",
            "netsvc-svc-tick",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.sort();
        v
    }
}

#[cfg(target_os = "linux")]
#[test]
fn shutdown_and_last_handle_drop_leave_no_netsvc_thread_running() {
    use linux::*;

    assert_eq!(
        netsvc_threads(),
        Vec::<String>::new(),
        "before any dispatcher"
    );

    // 1. Dispatcher::shutdown().
    let d = netsvc::Dispatcher::new().unwrap();
    let busy = make_busy(&d);
    assert_eq!(netsvc_threads(), expected_threads());
    let d2 = d.clone();
    util::within("shutdown", move || d2.shutdown());
    // No waiting: every thread was joined before shutdown() returned.
    assert_eq!(netsvc_threads(), Vec::<String>::new(), "after shutdown()");
    drop(busy);
    drop(d);
    assert_eq!(netsvc_threads(), Vec::<String>::new());

    // 2. The drop of the last Dispatcher handle.
    let d = netsvc::Dispatcher::new().unwrap();
    let busy = make_busy(&d);
    assert_eq!(netsvc_threads(), expected_threads());
    util::within("drop of the last handle", move || drop(d));
    assert_eq!(
        netsvc_threads(),
        Vec::<String>::new(),
        "after the last handle was dropped"
    );
    drop(busy);
}
