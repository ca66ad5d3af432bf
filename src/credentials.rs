//! Named credentials for exchange links, with permissions in the NATS
//! style: which service names a client may offer (announce), call and
//! subscribe to, and which groups its services may join. The public
//! builder is [`Credential`]; a server keeps its credentials in a
//! [`Credentials`] table, and each link authenticated with one carries its
//! [`Identity`] (shared, behind an `Arc`) into the routing core, which
//! checks what the link sends against it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::auth::Secret;
use crate::error::{Error, Result};
use crate::pattern::Pattern;

/// A named credential an exchange server accepts
/// ([`ServerBuilder::credential`](crate::ServerBuilder::credential)): a
/// name, a secret, and what a client holding it may do.
///
/// A client names it with
/// [`ClientBuilder::credential`](crate::ClientBuilder::credential) and
/// proves it holds the secret in the same HMAC challenge-response as the
/// shared secret's; the name is covered by both sides' proofs. Once the
/// link is up, the name is the link's identity
/// ([`ConnectionAnnouncement::identity`](crate::ConnectionAnnouncement::identity)).
///
/// Permissions are lists of patterns, one list per kind, matched against
/// whole names with the subject patterns' wildcards (`*` any run of
/// characters, dots included, `?` exactly one):
///
/// - [`offer`](Self::offer): the service names the client may announce;
/// - [`call`](Self::call): the service names it may send requests to;
/// - [`subscribe`](Self::subscribe): the service names of the publishers
///   it may subscribe to;
/// - [`join`](Self::join): the groups its services may be in (those in
///   their announcement, and those they join later).
///
/// **A kind with no list allows everything of that kind**: a credential
/// made with [`new`](Self::new) alone may do everything, as the shared
/// secret may. Giving a kind a list allows only what its patterns match
/// (an empty list allows nothing); [`deny_all`](Self::deny_all) gives
/// every kind an empty list, so that what follows it is all that is
/// allowed:
///
/// ```
/// use netsvc::Credential;
/// // May announce calc.* services and call anything, nothing else.
/// let calc = Credential::new("calc-host", "s3cret").deny_all().offer(&["calc.*"]).call(&["*"]);
/// // May do everything but subscribe to anything other than news.
/// let reader = Credential::new("reader", "other").subscribe(&["news"]);
/// # let _ = (calc, reader);
/// ```
///
/// The checks are the server's, on what each client sends it; what the
/// refused client sees is described on each method. The secret never
/// appears in logs or `Debug` output.
#[derive(Clone)]
pub struct Credential {
    name: String,
    /// `None`: a credential only a client certificate selects.
    secret: Option<Secret>,
    permissions: Permissions,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("secret", &self.secret)
            .field("permissions", &self.permissions)
            .finish()
    }
}

impl Credential {
    /// A credential with this name and secret, allowed everything until
    /// its lists say otherwise. The name must not be empty nor longer than
    /// the dispatcher's longest name
    /// ([`DispatcherBuilder::max_name_len`](crate::DispatcherBuilder::max_name_len),
    /// 255 bytes by default): [`ServerBuilder::listen`](crate::ServerBuilder::listen)
    /// refuses it otherwise.
    pub fn new(name: impl Into<String>, secret: impl AsRef<[u8]>) -> Self {
        Credential {
            name: name.into(),
            secret: Some(Secret::new(secret.as_ref())),
            permissions: Permissions::default(),
        }
    }

    /// A credential without a secret, which only a client certificate of
    /// mutual TLS selects: a server with a client CA
    /// ([`TlsServerConfig::client_ca_pem`](crate::TlsServerConfig::client_ca_pem))
    /// gives a client whose certificate's subject common name (CN) is
    /// `name` this credential's identity and permissions. No client can
    /// prove it with a secret (one naming it is refused as a wrong secret
    /// is), and it does not make the server require secrets. The name is
    /// checked as [`new`](Self::new)'s is.
    pub fn for_certificate(name: impl Into<String>) -> Self {
        Credential {
            name: name.into(),
            secret: None,
            permissions: Permissions::default(),
        }
    }

    /// The credential's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Allows nothing of any kind: every list is emptied. Call it first;
    /// the lists given after it are then all that is allowed.
    pub fn deny_all(mut self) -> Self {
        self.permissions = Permissions {
            offer: Some(Vec::new()),
            call: Some(Vec::new()),
            subscribe: Some(Vec::new()),
            join: Some(Vec::new()),
        };
        self
    }

    /// Allows the client to announce services whose names match one of
    /// these patterns, and no others (patterns add to those of earlier
    /// calls). A service it may not offer is not taken in: nobody else
    /// sees it, and the client is not told.
    pub fn offer<S: AsRef<str>>(mut self, patterns: &[S]) -> Self {
        add(&mut self.permissions.offer, patterns);
        self
    }

    /// Allows the client to call services whose names match one of these
    /// patterns, and no others (patterns add to those of earlier calls).
    /// A call it may not make fails at the caller with
    /// [`Error::Service`](crate::Error::Service) and the code
    /// [`codes::PERMISSION_DENIED`](crate::codes::PERMISSION_DENIED); a
    /// cast is dropped.
    pub fn call<S: AsRef<str>>(mut self, patterns: &[S]) -> Self {
        add(&mut self.permissions.call, patterns);
        self
    }

    /// Allows the client to subscribe to the reports of publishers whose
    /// service names match one of these patterns, and no others (patterns
    /// add to those of earlier calls). A subscription it may not hold is
    /// not added, and the subscriber sees the publisher go:
    /// [`Event::Publisher`](crate::Event::Publisher) with status
    /// [`Withdrawn`](crate::ServiceStatus::Withdrawn), after the
    /// `Available` its own dispatcher announced when it sent the
    /// subscription (one `Withdrawn` per refused subscription). No
    /// reports of that publisher reach it. Its dispatcher keeps the
    /// subscription, so a subscription by name is asked again, and refused
    /// again, when the link comes back or another publisher of that name
    /// appears.
    pub fn subscribe<S: AsRef<str>>(mut self, patterns: &[S]) -> Self {
        add(&mut self.permissions.subscribe, patterns);
        self
    }

    /// Allows the client's services to be in groups whose names match one
    /// of these patterns, and no others (patterns add to those of earlier
    /// calls). A service announced with a group it may not join is not
    /// taken in at all (as for [`offer`](Self::offer)); a later join of
    /// such a group is not taken in (the service stays, without that
    /// group). The client is not told; leaving a group is always allowed.
    pub fn join<S: AsRef<str>>(mut self, patterns: &[S]) -> Self {
        add(&mut self.permissions.join, patterns);
        self
    }
}

fn add<S: AsRef<str>>(list: &mut Option<Vec<Pattern>>, patterns: &[S]) {
    let list = list.get_or_insert_with(Vec::new);
    list.extend(patterns.iter().map(|p| Pattern::new(p.as_ref())));
}

/// What a link may do, by kind (see [`Credential`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Offer,
    Call,
    Subscribe,
    Join,
}

/// The lists of a credential: `None` allows everything of that kind.
#[derive(Clone, Default)]
pub(crate) struct Permissions {
    offer: Option<Vec<Pattern>>,
    call: Option<Vec<Pattern>>,
    subscribe: Option<Vec<Pattern>>,
    join: Option<Vec<Pattern>>,
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |l: &Option<Vec<Pattern>>| -> Option<Vec<String>> {
            l.as_ref()
                .map(|l| l.iter().map(|p| p.as_str().to_owned()).collect())
        };
        f.debug_struct("Permissions")
            .field("offer", &show(&self.offer))
            .field("call", &show(&self.call))
            .field("subscribe", &show(&self.subscribe))
            .field("join", &show(&self.join))
            .finish()
    }
}

impl Permissions {
    /// Whether `action` on `name` (a service name, or a group's) is
    /// allowed: always for a kind with no list, else if a pattern of its
    /// list matches the whole name.
    pub(crate) fn allows(&self, action: Action, name: &str) -> bool {
        let list = match action {
            Action::Offer => &self.offer,
            Action::Call => &self.call,
            Action::Subscribe => &self.subscribe,
            Action::Join => &self.join,
        };
        list.as_ref()
            .is_none_or(|l| l.iter().any(|p| p.matches(name)))
    }
}

/// Who a link authenticated as: its credential's name and permissions,
/// shared by every link of that credential.
#[derive(Debug)]
pub(crate) struct Identity {
    pub name: String,
    pub permissions: Permissions,
}

/// A server's named credentials, by name.
#[derive(Debug, Default)]
pub(crate) struct Credentials {
    by_name: HashMap<String, (Option<Secret>, Arc<Identity>)>,
    /// The longest name it holds may have (the dispatcher's longest name).
    max_name: usize,
}

impl Credentials {
    /// The table of these credentials; `Error::InvalidArgument` for an
    /// empty name, one longer than `max_name` bytes, or a name given twice.
    pub(crate) fn new(list: Vec<Credential>, max_name: usize) -> Result<Credentials> {
        let mut by_name = HashMap::with_capacity(list.len());
        for c in list {
            if c.name.is_empty() {
                return Err(Error::InvalidArgument(
                    "credential: the name is empty".into(),
                ));
            }
            if c.name.len() > max_name {
                return Err(Error::InvalidArgument(format!(
                    "credential: a name of {} bytes, at most {max_name}",
                    c.name.len()
                )));
            }
            if by_name.contains_key(&c.name) {
                return Err(Error::InvalidArgument(format!(
                    "credential: the name {:?} is given twice",
                    c.name
                )));
            }
            let identity = Arc::new(Identity {
                name: c.name.clone(),
                permissions: c.permissions,
            });
            by_name.insert(c.name, (c.secret, identity));
        }
        Ok(Credentials { by_name, max_name })
    }

    /// Whether there are none.
    pub(crate) fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Whether any has a secret (clients must then authenticate).
    pub(crate) fn has_secrets(&self) -> bool {
        self.by_name.values().any(|(s, _)| s.is_some())
    }

    /// The secret and identity of the credential of that name with a
    /// secret (a name a client sent: one longer than any name may be is
    /// not even hashed).
    pub(crate) fn get(&self, name: &str) -> Option<(&Secret, &Arc<Identity>)> {
        if name.len() > self.max_name {
            return None;
        }
        match self.by_name.get(name) {
            Some((Some(s), i)) => Some((s, i)),
            _ => None,
        }
    }

    /// The identity of the credential of that name, with a secret or
    /// without (what a client certificate's name selects).
    pub(crate) fn identity(&self, name: &str) -> Option<&Arc<Identity>> {
        if name.len() > self.max_name {
            return None;
        }
        self.by_name.get(name).map(|(_, i)| i)
    }

    /// Every credential's name.
    pub(crate) fn names(&self) -> std::collections::HashSet<String> {
        self.by_name.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_list_allows_everything_and_a_list_only_what_it_matches() {
        let all = Credential::new("a", "k").permissions;
        for action in [Action::Offer, Action::Call, Action::Subscribe, Action::Join] {
            assert!(all.allows(action, "anything.at.all"));
        }
        let some = Credential::new("a", "k")
            .offer(&[String::from("calc.*")])
            .offer(&["echo"])
            .join(&["pool-?"])
            .permissions;
        assert!(some.allows(Action::Offer, "calc.add"));
        assert!(some.allows(Action::Offer, "echo"));
        assert!(!some.allows(Action::Offer, "echoes"));
        assert!(!some.allows(Action::Offer, "calc"));
        assert!(some.allows(Action::Join, "pool-1"));
        assert!(!some.allows(Action::Join, "pool-12"));
        assert!(some.allows(Action::Call, "x"), "call has no list");
        let none = Credential::new("a", "k")
            .deny_all()
            .call(&["news"])
            .permissions;
        assert!(none.allows(Action::Call, "news"));
        assert!(!none.allows(Action::Call, "newsy"));
        assert!(!none.allows(Action::Offer, "news"));
        assert!(!none.allows(Action::Subscribe, "news"));
        assert!(!none.allows(Action::Join, ""));
    }

    #[test]
    fn names_are_checked_and_secrets_never_shown() {
        let ok = Credentials::new(
            vec![Credential::new("a", "k1"), Credential::new("b", "k2")],
            255,
        )
        .unwrap();
        assert!(ok.get("a").is_some() && ok.get("c").is_none());
        assert!(ok.get(&"a".repeat(4000)).is_none());
        assert_eq!(ok.get("b").unwrap().1.name, "b");
        for (list, what) in [
            (
                vec![Credential::new("a", "x"), Credential::new("a", "y")],
                "twice",
            ),
            (vec![Credential::new("", "x")], "empty"),
            (vec![Credential::new("n".repeat(256), "x")], "256 bytes"),
        ] {
            match Credentials::new(list, 255) {
                Err(Error::InvalidArgument(e)) => assert!(e.contains(what), "{e}"),
                other => panic!("{other:?}"),
            }
        }
        let c = Credential::new("alice", "hunter2").call(&["x.*"]);
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2") && shown.contains("alice") && shown.contains("x.*"));
    }
}
