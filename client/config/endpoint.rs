//! Where a connection may connect: one or more broker nodes, tried in turn.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// One broker node a connection may use: a host (name or IP address) and port, and, for TLS,
/// the server name to check its certificate against when it is not the host.
///
/// A connection is given several with [`ConnectionOptions::endpoints`] or
/// [`ConnectionOptions::from_uris`]: the first connection and every recovery walk them (see
/// [`EndpointOrder`]), so that a client moves to a surviving node of a cluster by itself. A
/// host name that resolves to several addresses counts as one endpoint per address.
///
/// [`ConnectionOptions::endpoints`]: crate::ConnectionOptions::endpoints
/// [`ConnectionOptions::from_uris`]: crate::ConnectionOptions::from_uris
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    host: String,
    port: u16,
    server_name: Option<String>,
}

impl Endpoint {
    /// The node at `host` (a name or an IP address) and `port`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            server_name: None,
        }
    }

    /// The name the node's TLS certificate is checked against (and sent as SNI), when it is not
    /// the host; it takes precedence over [`TlsOptions::server_name`](crate::TlsOptions).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// The host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TLS server name set for this endpoint, if any.
    pub fn get_server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }
}

impl fmt::Display for Endpoint {
    /// `host:port`, with brackets around an IPv6 address.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// In which order the endpoints of a connection are tried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EndpointOrder {
    /// A random order for each walk (the default), so that the clients of a cluster spread
    /// over its nodes.
    #[default]
    Shuffled,
    /// The order given: the first that answers wins, the others are fallbacks.
    AsGiven,
}

impl crate::ConnectionOptions {
    /// Options for a cluster given as one URI per node, which must share the scheme (`amqp`
    /// or `amqps`), user name, password and virtual host: each URI gives an [`Endpoint`] (its
    /// host and port, and with `amqps` its `server_name_indication`), and the first gives every
    /// other option (query parameters included).
    ///
    /// ```
    /// use warren::ConnectionOptions;
    ///
    /// let options = ConnectionOptions::from_uris([
    ///     "amqp://app:secret@rabbit-1:5672/prod?heartbeat=10",
    ///     "amqp://app:secret@rabbit-2:5672/prod",
    ///     "amqp://app:secret@rabbit-3:5672/prod",
    /// ])?;
    /// assert_eq!(options.get_endpoints().len(), 3);
    /// # Ok::<(), warren::Error>(())
    /// ```
    pub fn from_uris<I>(uris: I) -> crate::Result<Self>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut uris = uris.into_iter();
        let Some(first) = uris.next() else {
            return Err(crate::Error::Config(
                "from_uris needs at least one URI".to_owned(),
            ));
        };
        let mut base: Self = first.as_ref().parse()?;
        // Each URI's server_name_indication is its node's only: it moves to its endpoint.
        let first_server_name = base.tls.as_mut().and_then(|tls| tls.server_name.take());
        let mut first_endpoint = Endpoint::new(base.host.clone(), base.port);
        if let Some(name) = first_server_name {
            first_endpoint = first_endpoint.server_name(name);
        }
        let mut endpoints = vec![first_endpoint];
        for (index, uri) in uris.enumerate() {
            let other: Self = uri.as_ref().parse()?;
            let differs = if other.tls.is_some() != base.tls.is_some() {
                Some("scheme")
            } else if other.username != base.username {
                Some("user name")
            } else if other.password != base.password {
                Some("password")
            } else if other.vhost != base.vhost {
                Some("virtual host")
            } else {
                None
            };
            if let Some(what) = differs {
                return Err(crate::Error::Config(format!(
                    "URI {} of the cluster has another {what} than the first; the URIs of one \
                     connection must share scheme, credentials and virtual host",
                    index + 2
                )));
            }
            let mut endpoint = Endpoint::new(other.host.clone(), other.port);
            if let Some(name) = other.tls.as_ref().and_then(|tls| tls.server_name.clone()) {
                endpoint = endpoint.server_name(name);
            }
            endpoints.push(endpoint);
        }
        Ok(base.endpoints(endpoints))
    }
}

/// One address to connect to: an endpoint and one of the addresses its host resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub endpoint: Endpoint,
    pub address: SocketAddr,
}

impl Target {
    /// The endpoint, and the address when the host is a name (`mq.example.com:5672
    /// (10.0.0.7)`), for events and errors.
    pub(crate) fn describe(&self) -> String {
        if self.endpoint.host.parse::<IpAddr>().is_ok() {
            self.endpoint.to_string()
        } else {
            format!("{} ({})", self.endpoint, self.address.ip())
        }
    }
}

/// Shuffles `items` in place (Fisher-Yates), with warren's jitter randomness.
pub(crate) fn shuffle<T>(items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = (super::recovery::random_unit() * (i + 1) as f64) as usize;
        items.swap(i, j.min(i));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_uris_share_credentials_and_give_one_endpoint_each() {
        let options = crate::ConnectionOptions::from_uris([
            "amqps://app:secret@a:5671/prod?server_name_indication=a.example",
            "amqps://app:secret@b/prod",
        ])
        .unwrap();
        let endpoints = options.get_endpoints();
        assert_eq!(
            endpoints[0],
            Endpoint::new("a", 5671).server_name("a.example")
        );
        assert_eq!(endpoints[1], Endpoint::new("b", 5671));
        for (uri, what) in [
            ("amqp://app:secret@b/prod", "scheme"),
            ("amqps://other:secret@b/prod", "user name"),
            ("amqps://app:other@b/prod", "password"),
            ("amqps://app:secret@b/test", "virtual host"),
        ] {
            let error = crate::ConnectionOptions::from_uris(["amqps://app:secret@a/prod", uri])
                .unwrap_err()
                .to_string();
            assert!(error.contains(what), "{error}");
            assert!(
                !error.contains("secret") && !error.contains("other@"),
                "{error}"
            );
        }
        assert!(crate::ConnectionOptions::from_uris(Vec::<String>::new()).is_err());
    }

    #[test]
    fn endpoints_show_as_host_and_port() {
        assert_eq!(Endpoint::new("mq", 5672).to_string(), "mq:5672");
        assert_eq!(Endpoint::new("::1", 5671).to_string(), "[::1]:5671");
        let target = Target {
            endpoint: Endpoint::new("mq.example", 5672),
            address: "10.0.0.7:5672".parse().unwrap(),
        };
        assert_eq!(target.describe(), "mq.example:5672 (10.0.0.7)");
    }

    #[test]
    fn shuffling_keeps_every_item_and_varies_the_order() {
        let mut orders = std::collections::HashSet::new();
        for _ in 0..50 {
            let mut items: Vec<u8> = (0..5).collect();
            shuffle(&mut items);
            let mut sorted = items.clone();
            sorted.sort();
            assert_eq!(sorted, [0, 1, 2, 3, 4]);
            orders.insert(items);
        }
        assert!(orders.len() > 10, "{orders:?}");
    }
}
