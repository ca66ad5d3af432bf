//! [`Target`]: where an RPC message goes (oslo.messaging's Target).

/// Where a message goes or what a server listens for.
///
/// A client's target names a topic (and maybe one server of it); a server's
/// target names the topic and the server it is. Exchanges isolate topics:
/// the same topic in two exchanges is two topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub(crate) exchange: String,
    pub(crate) topic: String,
    pub(crate) server: Option<String>,
    pub(crate) fanout: bool,
    pub(crate) version: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) accepted_namespaces: Option<Vec<Option<String>>>,
}

/// The exchange a target uses unless told otherwise (oslo's control exchange).
pub const DEFAULT_EXCHANGE: &str = "openstack";

impl Target {
    /// A target for a topic, in the default exchange.
    pub fn new(topic: &str) -> Self {
        Target {
            exchange: DEFAULT_EXCHANGE.to_owned(),
            topic: topic.to_owned(),
            server: None,
            fanout: false,
            version: None,
            namespace: None,
            accepted_namespaces: None,
        }
    }

    /// The exchange, which scopes the topic.
    pub fn exchange(mut self, exchange: &str) -> Self {
        self.exchange = exchange.to_owned();
        self
    }

    /// The topic.
    pub fn topic(mut self, topic: &str) -> Self {
        self.topic = topic.to_owned();
        self
    }

    /// One server of the topic: a client reaches only it; a server is it.
    pub fn server(mut self, server: &str) -> Self {
        self.server = Some(server.to_owned());
        self
    }

    /// A client's casts go to every server of the topic.
    pub fn fanout(mut self, fanout: bool) -> Self {
        self.fanout = fanout;
        self
    }

    /// The API version: what a client asks for, what an endpoint implements.
    pub fn version(mut self, version: &str) -> Self {
        self.version = Some(version.to_owned());
        self
    }

    /// The namespace of the methods.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_owned());
        self
    }

    /// For an endpoint: every namespace it accepts (by default only its own).
    /// `None` in the list accepts requests that name no namespace.
    pub fn accepted_namespaces(mut self, namespaces: &[Option<&str>]) -> Self {
        self.accepted_namespaces = Some(namespaces.iter().map(|n| n.map(str::to_owned)).collect());
        self
    }

    /// For an endpoint: namespaces accepted besides its own (oslo's legacy
    /// namespaces, such as the unnamed one of older clients).
    pub fn legacy_namespaces(mut self, namespaces: &[Option<&str>]) -> Self {
        let mut all = self
            .accepted_namespaces
            .take()
            .unwrap_or_else(|| vec![self.namespace.clone()]);
        all.extend(namespaces.iter().map(|n| n.map(str::to_owned)));
        self.accepted_namespaces = Some(all);
        self
    }

    /// The exchange's name.
    pub fn get_exchange(&self) -> &str {
        &self.exchange
    }

    /// The topic's name.
    pub fn get_topic(&self) -> &str {
        &self.topic
    }

    /// The server, if one is named.
    pub fn get_server(&self) -> Option<&str> {
        self.server.as_deref()
    }

    /// Whether casts fan out.
    pub fn is_fanout(&self) -> bool {
        self.fanout
    }

    /// The version, if one is given.
    pub fn get_version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// The namespace, if one is given.
    pub fn get_namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    pub(crate) fn accepts_namespace(&self, namespace: Option<&str>) -> bool {
        match &self.accepted_namespaces {
            Some(list) => list.iter().any(|n| n.as_deref() == namespace),
            None => self.namespace.as_deref() == namespace,
        }
    }

    /// The registry group every server of this topic joins.
    pub(crate) fn topic_group(&self) -> String {
        format!("rpc:{}:{}", self.exchange, self.topic)
    }

    /// The registry name of one server of this topic.
    pub(crate) fn server_name(&self, server: &str) -> String {
        format!("rpc:{}:{}:{}", self.exchange, self.topic, server)
    }
}

/// Whether an implementation at `imp` can serve a request for `wanted`
/// (oslo's `version_is_compatible`): the same major version, and a minor
/// (and revision) no greater than the implementation's.
pub(crate) fn version_is_compatible(imp: &str, wanted: &str) -> bool {
    fn parts(v: &str) -> Option<Vec<u64>> {
        v.split('.').map(|p| p.trim().parse().ok()).collect()
    }
    let (Some(imp), Some(wanted)) = (parts(imp), parts(wanted)) else {
        return false;
    };
    let at = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
    if at(&wanted, 0) != at(&imp, 0) {
        return false;
    }
    if at(&wanted, 1) > at(&imp, 1) {
        return false;
    }
    !(wanted.len() > 2 && at(&wanted, 1) == at(&imp, 1) && at(&wanted, 2) > at(&imp, 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(version_is_compatible("3.4", "3.2"));
        assert!(version_is_compatible("3.2", "3.2"));
        assert!(!version_is_compatible("3.0", "3.2"));
        assert!(!version_is_compatible("1.5", "3.2"));
        assert!(!version_is_compatible("2.0", "1.0"));
        assert!(version_is_compatible("1.1.2", "1.1.1"));
        assert!(!version_is_compatible("1.1.0", "1.1.1"));
        assert!(version_is_compatible("1.2", "1.1.5"));
        assert!(!version_is_compatible("x", "1.0"));
    }

    #[test]
    fn namespaces() {
        let t = Target::new("t").namespace("ns");
        assert!(t.accepts_namespace(Some("ns")));
        assert!(!t.accepts_namespace(None));
        let t = Target::new("t").legacy_namespaces(&[Some("old")]);
        assert!(t.accepts_namespace(None));
        assert!(t.accepts_namespace(Some("old")));
        assert!(!t.accepts_namespace(Some("ns")));
    }
}
