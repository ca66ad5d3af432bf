//! The `exchange` role (an exchange server and nothing else), and what
//! every netsvc role shares: a dispatcher, and an exchange client whose
//! link is active.

use std::time::{Duration, Instant};

use netsvc::{ConnectionState, Dispatcher, Exchange};

use crate::child::{child_init, fail, park_forever};
use crate::cli::Args;

pub(crate) fn dispatcher(name: &str) -> Dispatcher {
    Dispatcher::builder()
        .name(name)
        .build()
        .unwrap_or_else(|e| fail(&format!("dispatcher: {e}")))
}

/// Connects an exchange client (with TLS for `--tls DIR`) and waits until
/// its link is active.
pub(crate) fn connect_exchange(d: &Dispatcher, a: &Args) -> Exchange {
    let port = a.get("--port").unwrap_or_else(|| fail("needs --port"));
    let addr = format!("127.0.0.1:{port}");
    let mut b = Exchange::client(d);
    if let Some(tls) = crate::tls::client_tls(a) {
        b = b.tls(tls);
    }
    let ex = b
        .connect(addr.as_str(), Duration::from_millis(200))
        .unwrap_or_else(|e| fail(&format!("connect {addr}: {e}")));
    let conns = ex.connections();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match conns.recv_deadline(deadline) {
            Ok(ann) if ann.state() == ConnectionState::Active => return ex,
            Ok(_) => continue,
            Err(_) => fail(&format!("exchange link to {addr} not active within 15 s")),
        }
    }
}

/// `exchange [--tls DIR]`: an exchange server on an ephemeral port (with
/// TLS), nothing else.
pub(crate) fn role_exchange(a: &Args) {
    let _cmds = child_init();
    let d = dispatcher("bench-exchange");
    let mut b = Exchange::server(&d);
    if let Some(tls) = crate::tls::server_tls(a) {
        b = b.tls(tls);
    }
    let ex = b
        .listen("127.0.0.1:0")
        .unwrap_or_else(|e| fail(&format!("listen: {e}")));
    println!("READY port={}", ex.local_addr().port());
    park_forever();
}
