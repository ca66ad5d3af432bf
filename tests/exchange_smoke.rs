mod util;
use netsvc::*;
use std::time::Duration;
use util::*;

#[test]
fn call_and_report_across_an_exchange() {
    let ds = Dispatcher::builder().name("server").build().unwrap();
    let ex = Exchange::server(&ds).listen("127.0.0.1:0").unwrap();
    let addr = ex.local_addr();
    let echo = ds
        .service("echo")
        .spawn(|_s, ev| {
            if let Event::Request(r) = ev {
                let x: u64 = r.decode().unwrap();
                let _ = r.reply(&(x * 2));
            }
        })
        .unwrap();
    let publisher = ds.service("publisher").open().unwrap();
    publisher
        .publish_report("system.startup", &7u64, Lifetime::Forever)
        .unwrap();

    let dc = Dispatcher::builder().name("client").build().unwrap();
    let cx = Exchange::client(&dc)
        .connect(addr, Duration::from_millis(200))
        .unwrap();
    let conns = cx.connections();
    let ann = conns.recv_timeout(WAIT).unwrap();
    assert_eq!(ann.state(), ConnectionState::Active);
    assert_eq!(ann.remote_process(), Some(&ds.process_id()));

    let me = dc.service("me").open().unwrap();
    me.monitor_service_name("echo");
    let a = wait_announcement(&me, "echo", None, ServiceStatus::Available);
    assert_eq!(a.binding(), echo.binding());
    let r: u64 = me.call(a.binding(), "double", &21u64).unwrap();
    assert_eq!(r, 42);

    me.subscribe_reports("publisher", "system.*");
    let rep = wait_for(&me, "report", |e| match e {
        Event::Report(r) => Some(r),
        _ => None,
    });
    assert_eq!(rep.subject(), "system.startup");
    assert_eq!(rep.decode::<u64>().unwrap(), 7);
    let sub = subscription(&publisher);
    assert_eq!(sub.subscriber(), me.binding());
    publisher
        .publish_report("system.time", &8u64, Lifetime::None)
        .unwrap();
    let rep = report(&me);
    assert_eq!(rep.decode::<u64>().unwrap(), 8);

    // The server goes away: the client sees the link and the binding go.
    ds.shutdown();
    let ann = conns.recv_timeout(WAIT).unwrap();
    assert_eq!(ann.state(), ConnectionState::Inactive);
    wait_announcement(&me, "echo", None, ServiceStatus::Withdrawn);
}
