//! Failures are diagnosable from their message alone: errors name the
//! service, topic or binding they are about, and a binding's display tells
//! the bindings of two processes apart.

use std::time::Duration;

use netsvc::{Context, Dispatcher, Error, RpcClient, Target};

/// Longer than any of these calls may take (they fail at once or at a
/// short timeout of their own).
const LONG: Duration = Duration::from_secs(10);

fn message(e: &Error) -> String {
    match e {
        Error::DeliveryFailure(m) | Error::ServiceUnavailable(m) | Error::InvalidTarget(m) => {
            m.clone()
        }
        other => panic!("not a failure with a message: {other:?}"),
    }
}

#[test]
fn rpc_call_without_servers_names_the_topic() {
    let d = Dispatcher::new().unwrap();
    // At once (no retry), and after waiting for a server until the timeout.
    let at_once = RpcClient::new(&d, Target::new("nobody-serves-this")).retry(Some(0));
    let waiting =
        RpcClient::new(&d, Target::new("nobody-serves-this")).timeout(Duration::from_millis(50));
    for client in [at_once, waiting] {
        let r: netsvc::Result<()> = client.call(&Context::new(), "ping", &());
        let e = r.unwrap_err();
        assert!(matches!(e, Error::DeliveryFailure(_)), "{e:?}");
        let m = message(&e);
        assert!(m.contains("nobody-serves-this"), "{m}");
        assert!(m.contains("no server"), "{m}");
        assert!(m.contains("no exchange"), "the link state: {m}");
    }
    d.shutdown();
}

#[test]
fn rpc_call_to_a_missing_server_names_it() {
    let d = Dispatcher::new().unwrap();
    let client = RpcClient::new(&d, Target::new("calc").server("s9")).retry(Some(0));
    let e = client
        .call::<(), _>(&Context::new(), "ping", &())
        .unwrap_err();
    let m = message(&e);
    assert!(m.contains("calc") && m.contains("s9"), "{m}");
    d.shutdown();
}

#[test]
fn call_on_a_fanout_target_names_topic_and_method() {
    let d = Dispatcher::new().unwrap();
    let client = RpcClient::new(&d, Target::new("everyone").fanout(true));
    let e = client
        .call::<(), _>(&Context::new(), "ping", &())
        .unwrap_err();
    assert!(matches!(e, Error::InvalidTarget(_)), "{e:?}");
    let m = message(&e);
    assert!(m.contains("everyone") && m.contains("ping"), "{m}");
    d.shutdown();
}

#[test]
fn call_to_a_withdrawn_binding_names_it() {
    let d = Dispatcher::new().unwrap();
    let gone = d.service("gone").open().unwrap();
    let binding = gone.binding().clone();
    drop(gone);
    let me = d.service("caller").open().unwrap();
    let e = me
        .call_timeout::<(), _>(&binding, "anything", &(), LONG)
        .unwrap_err();
    assert!(matches!(e, Error::ServiceUnavailable(_)), "{e:?}");
    let m = message(&e);
    assert!(m.contains(&binding.to_string()), "{m}");
    d.shutdown();
}

#[test]
fn bindings_of_two_processes_display_differently() {
    let a = Dispatcher::builder().name("p").build().unwrap();
    let b = Dispatcher::builder().name("p").build().unwrap();
    let sa = a.service("publisher").open().unwrap();
    let sb = b.service("publisher").open().unwrap();
    let (da, db) = (sa.binding().to_string(), sb.binding().to_string());
    assert_ne!(da, db);
    for (shown, d) in [(&da, &a), (&db, &b)] {
        // `<name>@<agent>/<8 hex digits that start the process uid's hex>`.
        let (head, short) = shown.split_once('/').expect("name@agent/process");
        assert!(head.starts_with("publisher@"), "{shown}");
        assert_eq!(short.len(), 8, "{shown}");
        let uid_hex = format!("{:016x}", d.process_id().uid());
        assert!(uid_hex.starts_with(short), "{shown} vs {uid_hex}");
        assert!(d.process_id().to_string().ends_with(&uid_hex));
    }
    a.shutdown();
    b.shutdown();
}
