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

/// Connects an exchange client and waits until its link is active.
pub(crate) fn connect_exchange(d: &Dispatcher, a: &Args) -> Exchange {
    let port = a.get("--port").unwrap_or_else(|| fail("needs --port"));
    let addr = format!("127.0.0.1:{port}");
    let ex = Exchange::client(d)
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

/// `exchange`: an exchange server on an ephemeral port, nothing else.
pub(crate) fn role_exchange() {
    let _cmds = child_init();
    let d = dispatcher("bench-exchange");
    let ex = Exchange::server(&d)
        .listen("127.0.0.1:0")
        .unwrap_or_else(|e| fail(&format!("listen: {e}")));
    println!("READY port={}", ex.local_addr().port());
    park_forever();
}
