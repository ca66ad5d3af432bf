//! Notifications in one process: a notifier sends events of several
//! priorities; two listeners share pool "billing" (each event goes to one of
//! them), an "audit" listener filtered on event types gets its own copy.
//!
//! `cargo run --example notifications`; it ends by itself. It takes no
//! options but `--help`; `RUST_LOG` chooses what is logged on stderr
//! (default `warn`).

#[path = "common/mod.rs"]
mod common;

use std::sync::mpsc;
use std::time::Duration;

use netsvc::{Context, Dispatcher, Notification, NotificationListener, Notifier};

fn main() -> netsvc::Result<()> {
    common::args(
        "notifications",
        "Notifications in one process: a notifier, two listeners sharing pool \
         billing, and a filtered audit listener; it ends by itself.",
        &[],
    );
    let d = Dispatcher::new()?;
    let (tx, rx) = mpsc::channel::<String>();

    let mut listeners = Vec::new();
    for name in ["billing-1", "billing-2"] {
        let tx = tx.clone();
        listeners.push(
            NotificationListener::new(&d, &["notifications"])
                .pool("billing")
                .on("info", move |_ctx: &Context, n: &Notification| {
                    let vm: String = n.decode_payload().unwrap_or_default();
                    let _ = tx.send(format!("[{name}] {} {} {vm}", n.priority, n.event_type));
                })
                .start()?,
        );
    }
    let audit_tx = tx.clone();
    listeners.push(
        NotificationListener::new(&d, &["notifications"])
            .filter_event_type("instance.delete.*")
            .on("info", move |_ctx: &Context, n: &Notification| {
                let _ = audit_tx.send(format!("[audit] {} from {}", n.event_type, n.publisher_id));
            })
            .on("error", {
                let tx = tx.clone();
                move |_ctx: &Context, n: &Notification| {
                    let _ = tx.send(format!(
                        "[audit] ERROR {} from {}",
                        n.event_type, n.publisher_id
                    ));
                }
            })
            .start()?,
    );

    let notifier = Notifier::new(&d, "compute.host1", &["notifications"]);
    let ctx = Context::new();
    let mut expected = 0;
    for vm in ["vm-1", "vm-2", "vm-3"] {
        notifier.info(&ctx, "instance.create.end", &vm)?;
        expected += 1; // one billing listener
    }
    notifier
        .prepare("compute.host2")
        .info(&ctx, "instance.delete.end", &"vm-2")?;
    expected += 2; // one billing listener and the audit listener
    notifier.error(&ctx, "instance.delete.error", &"vm-3")?;
    expected += 1; // only the audit listener handles errors

    for _ in 0..expected {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(line) => println!("{line}"),
            Err(_) => {
                println!("a notification did not arrive");
                break;
            }
        }
    }
    for l in &listeners {
        l.stop();
        l.wait();
    }
    d.shutdown();
    Ok(())
}
