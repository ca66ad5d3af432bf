//! Limits on what a peer (or a local caller) may make this process hold:
//! the lengths of names and subjects, and what each exchange connection's
//! state costs in bytes. The defaults are here; the settings are on
//! [`DispatcherBuilder`](crate::DispatcherBuilder) (lengths) and
//! [`ServerBuilder`](crate::ServerBuilder) (per connection).

use crate::ids::ServiceBinding;

/// Default longest service name, audience, group or method name, in bytes
/// (RabbitMQ's names are at most 255 bytes too).
pub(crate) const MAX_NAME_LEN: usize = 255;
/// Default longest report subject or subscription pattern, in bytes
/// (comparable to NATS's subjects).
pub(crate) const MAX_SUBJECT_LEN: usize = 1024;
/// Default most groups one service binding from a client may be in.
pub(crate) const MAX_GROUPS: usize = 64;
/// Default most calls one client may have pending through a server.
pub(crate) const MAX_PENDING_CALLS: usize = 10_000;
/// Default most bytes of state one client may make a server hold.
pub(crate) const MAX_CONNECTION_MEMORY: usize = 16 << 20;

/// What the bookkeeping of one entry costs beside its strings, roughly:
/// a binding (its allocation and the registry's entries for it), one of its
/// groups (the string and the index entry), a pending call (its entry and
/// timer), a subscription (its entries in the indexes).
pub(crate) const BINDING_OVERHEAD: usize = 192;
pub(crate) const GROUP_OVERHEAD: usize = 96;
pub(crate) const PENDING_OVERHEAD: usize = 160;
pub(crate) const SUBSCRIPTION_OVERHEAD: usize = 160;

/// Checks one name's length: `Err` names the limit, for instance
/// "service name of 100000 bytes, at most 255".
pub(crate) fn check_name(what: &str, s: &str, max: usize) -> Result<(), String> {
    if s.len() <= max {
        Ok(())
    } else {
        Err(format!("{what} of {} bytes, at most {max}", s.len()))
    }
}

/// Checks a binding from a peer: its name, audience and groups against
/// `max_name`, its process label against `max_name` plus the 64 bytes a
/// dispatcher adds to its name, and the number of its groups against
/// `max_groups` (if given).
pub(crate) fn check_binding(
    b: &ServiceBinding,
    max_name: usize,
    max_groups: Option<usize>,
) -> Result<(), String> {
    check_name("service name", b.service_name(), max_name)?;
    check_name("service audience", b.service_audience(), max_name)?;
    check_name(
        "process label",
        b.process_identity().as_str(),
        max_name + 64,
    )?;
    if let Some(max) = max_groups {
        let n = b.groups().len();
        if n > max {
            return Err(format!("{n} groups in one binding, at most {max}"));
        }
    }
    for g in b.groups() {
        check_name("group name", g, max_name)?;
    }
    Ok(())
}

/// What holding a binding costs, roughly, in bytes.
pub(crate) fn binding_bytes(b: &ServiceBinding) -> usize {
    BINDING_OVERHEAD
        + b.service_name().len()
        + b.service_audience().len()
        + b.process_identity().as_str().len()
        + b.groups()
            .iter()
            .map(|g| g.len() + GROUP_OVERHEAD)
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{AgentId, ProcessId};

    fn binding(name: &str, groups: Vec<String>) -> ServiceBinding {
        ServiceBinding::new(
            name.into(),
            "*".into(),
            AgentId(1),
            ProcessId::new("t"),
            groups,
        )
    }

    #[test]
    fn names_up_to_the_limit_pass() {
        assert!(check_name("service name", &"x".repeat(255), 255).is_ok());
        assert_eq!(
            check_name("service name", &"x".repeat(100_000), 255),
            Err("service name of 100000 bytes, at most 255".to_owned())
        );
        // Bytes, not characters.
        assert!(check_name("group name", &"é".repeat(128), 255).is_err());
    }

    #[test]
    fn bindings_are_checked_whole() {
        assert!(check_binding(&binding("ok", vec!["g".into()]), 255, Some(1)).is_ok());
        let e = check_binding(&binding("ok", vec!["g".into(), "h".into()]), 255, Some(1));
        assert_eq!(e, Err("2 groups in one binding, at most 1".to_owned()));
        assert!(check_binding(&binding("ok", vec!["g".into(), "h".into()]), 255, None).is_ok());
        let e = check_binding(&binding("ok", vec!["g".repeat(300)]), 255, None);
        assert_eq!(e, Err("group name of 300 bytes, at most 255".to_owned()));
        let e = check_binding(&binding(&"n".repeat(256), vec![]), 255, None);
        assert!(e.is_err_and(|e| e.starts_with("service name of 256 bytes")));
    }

    #[test]
    fn a_binding_costs_its_strings_and_more() {
        let small = binding_bytes(&binding("a", vec![]));
        let big = binding_bytes(&binding("a", vec!["g".repeat(1000)]));
        assert!(small >= BINDING_OVERHEAD);
        assert!(big >= small + 1000);
    }
}
