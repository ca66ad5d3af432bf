//! A server dispatcher with an "echo" service (doubling a u64) and one
//! real client connected to it, for tests that attack or measure the
//! server while checking that a well-behaved client is unaffected.

use std::net::SocketAddr;
use std::time::Duration;

use netsvc::{
    ConnectionState, Dispatcher, Event, Exchange, Service, ServiceBinding, ServiceHandle,
    ServiceStatus,
};

use super::{wait_announcement, WAIT};

pub struct Setup {
    pub ds: Dispatcher,
    pub ex: Exchange,
    pub addr: SocketAddr,
    pub _echo: ServiceHandle,
    pub dc: Dispatcher,
    pub cx: Exchange,
    pub me: Service,
    pub echo: ServiceBinding,
}

/// A server dispatcher with an "echo" service, and a client dispatcher
/// connected to it whose service "me" has called echo once.
pub fn setup(max_frame_size: Option<usize>) -> Setup {
    let mut b = Dispatcher::builder().name("server");
    if let Some(n) = max_frame_size {
        b = b.max_frame_size(n);
    }
    let ds = b.build().unwrap();
    let ex = Exchange::server(&ds).listen("127.0.0.1:0").unwrap();
    let addr = ex.local_addr();
    let echo_handle = ds
        .service("echo")
        .spawn(|_s, ev| {
            if let Event::Request(r) = ev {
                let x: u64 = r.decode().unwrap();
                let _ = r.reply(&(x * 2));
            }
        })
        .unwrap();

    let dc = Dispatcher::builder().name("client").build().unwrap();
    let cx = Exchange::client(&dc)
        .connect(addr, Duration::from_millis(200))
        .unwrap();
    let a = cx.connections().recv_timeout(WAIT).unwrap();
    assert_eq!(a.state(), ConnectionState::Active);
    assert_eq!(a.remote_process(), Some(&ds.process_id()));
    let a = ex.connections().recv_timeout(WAIT).unwrap();
    assert_eq!(a.state(), ConnectionState::Active);
    assert_eq!(a.remote_process(), Some(&dc.process_id()));

    let me = dc.service("me").open().unwrap();
    me.monitor_service_name("echo");
    let echo = wait_announcement(&me, "echo", None, ServiceStatus::Available)
        .binding()
        .clone();
    assert_eq!(&echo, echo_handle.binding());
    let r: u64 = me.call_timeout(&echo, "double", &21u64, WAIT).unwrap();
    assert_eq!(r, 42);
    Setup {
        ds,
        ex,
        addr,
        _echo: echo_handle,
        dc,
        cx,
        me,
        echo,
    }
}
