//! Opening the process's connection for each topology, and the one connection type the
//! backends call through ([`Connection`]).
//!
//! - One server: a `ConnectionManager` (multiplexed, reconnects by itself).
//! - A cluster: the cluster client's connection, which maps slots to nodes, follows `MOVED` and
//!   `ASK`, and refreshes its map when the cluster changes.
//! - Sentinel: a multiplexed connection to the primary the Sentinels name. It is dropped when
//!   the primary went away or was demoted ([`Connector::follows_primary`], `RedisLink::note`):
//!   the next call asks the Sentinels again, which is how a failover is followed.
//!
//! Each connection attempt builds its client anew, reading the TLS files again, so rotated
//! certificates (cert-manager, a managed service's renewal) are used from the next reconnect.

use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline, RedisFuture,
    TlsCertificates, TlsMode, Value,
};

use super::LinkError;
use super::endpoint::{Endpoint, Topology};

/// PEM files for TLS: the CA to trust instead of the system's, and a client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TlsFiles {
    #[serde(rename = "redis_ca_file", skip_serializing_if = "Option::is_none")]
    pub ca: Option<std::path::PathBuf>,
    #[serde(rename = "redis_cert_file", skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<std::path::PathBuf>,
    #[serde(rename = "redis_key_file", skip_serializing_if = "Option::is_none")]
    pub client_key: Option<std::path::PathBuf>,
}

/// A connection the backends call through, whatever the topology.
#[derive(Clone)]
pub enum Connection {
    Managed(ConnectionManager),
    Cluster(ClusterConnection),
    Primary(MultiplexedConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Managed(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
            Self::Primary(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Managed(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Primary(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Managed(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
            Self::Primary(c) => c.get_db(),
        }
    }
}

/// What opens connections: the URL and TLS files, read again for every connection attempt so
/// that rotated certificates are picked up when the link reconnects.
pub struct Connector {
    endpoint: Endpoint,
    tls: TlsFiles,
    timeout: Duration,
}

/// The client library's client for one topology.
enum Client {
    Standalone(redis::Client),
    Cluster(redis::cluster::ClusterClient),
    Sentinel(SentinelClient),
}

fn backend(error: impl std::fmt::Display) -> LinkError {
    LinkError::Backend(error.to_string())
}

fn read_pem(path: &std::path::Path, what: &str) -> Result<Vec<u8>, LinkError> {
    std::fs::read(path).map_err(|e| backend(format!("reading the {what} {}: {e}", path.display())))
}

impl TlsFiles {
    /// The certificates to hand the client, or `None` to trust the system's CAs alone.
    fn load(&self) -> Result<Option<TlsCertificates>, LinkError> {
        let root_cert = self
            .ca
            .as_deref()
            .map(|p| read_pem(p, "Redis CA file"))
            .transpose()?;
        let client_tls = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read_pem(cert, "Redis client certificate")?,
                client_key: read_pem(key, "Redis client key")?,
            }),
            (None, None) => None,
            _ => {
                return Err(backend(
                    "a Redis client certificate needs both a certificate and a key file",
                ));
            }
        };
        Ok(
            (root_cert.is_some() || client_tls.is_some()).then_some(TlsCertificates {
                client_tls,
                root_cert,
            }),
        )
    }
}

impl Connector {
    /// A connector for `endpoint`; builds a client once now, so a missing or unreadable TLS
    /// file fails start-up.
    pub fn new(endpoint: &Endpoint, tls: &TlsFiles, timeout: Duration) -> Result<Self, LinkError> {
        let connector = Self {
            endpoint: endpoint.clone(),
            tls: tls.clone(),
            timeout,
        };
        connector.client()?;
        Ok(connector)
    }

    /// Whether a failed call should drop the connection so that the next call finds the
    /// current primary again (Sentinel); the other connections reconnect by themselves.
    pub fn follows_primary(&self) -> bool {
        matches!(self.endpoint.topology, Topology::Sentinel { .. })
    }

    fn client(&self) -> Result<Client, LinkError> {
        let endpoint = &self.endpoint;
        let certificates = if endpoint.tls { self.tls.load()? } else { None };
        Ok(match &endpoint.topology {
            Topology::Standalone => {
                let url = endpoint.node_url(&endpoint.nodes[0]);
                Client::Standalone(
                    match certificates {
                        Some(certificates) => redis::Client::build_with_tls(url, certificates),
                        None => redis::Client::open(url),
                    }
                    .map_err(backend)?,
                )
            }
            Topology::Cluster => {
                let urls: Vec<String> = endpoint
                    .nodes
                    .iter()
                    .map(|n| endpoint.node_url(n))
                    .collect();
                let mut builder = ClusterClientBuilder::new(urls)
                    .connection_timeout(connect_timeout(self.timeout))
                    .response_timeout(self.timeout)
                    .retries(2);
                if let Some(certificates) = certificates {
                    builder = builder.certs(certificates);
                }
                Client::Cluster(builder.build().map_err(backend)?)
            }
            Topology::Sentinel { master } => {
                let sentinels = endpoint.nodes.iter().map(|(host, port)| {
                    if endpoint.tls {
                        ConnectionAddr::TcpTls {
                            host: host.clone(),
                            port: *port,
                            insecure: false,
                            tls_params: None,
                        }
                    } else {
                        ConnectionAddr::Tcp(host.clone(), *port)
                    }
                });
                // The credentials and database, decoded by the client library from a node URL.
                let node = endpoint
                    .node_url(&endpoint.nodes[0])
                    .into_connection_info()
                    .map_err(backend)?;
                let settings = node.redis_settings();
                let mut builder =
                    SentinelClientBuilder::new(sentinels, master, SentinelServerType::Master)
                        .map_err(backend)?
                        .set_client_to_redis_db(settings.db());
                if let Some(username) = settings.username() {
                    builder = builder.set_client_to_redis_username(username);
                }
                if let Some(password) = settings.password() {
                    builder = builder.set_client_to_redis_password(password);
                }
                if endpoint.tls {
                    builder = builder
                        .set_client_to_redis_tls_mode(TlsMode::Secure)
                        .set_client_to_sentinel_tls_mode(TlsMode::Secure);
                    if let Some(certificates) = certificates {
                        builder = builder
                            .set_client_to_redis_certificates(certificates.clone())
                            .set_client_to_sentinel_certificates(certificates);
                    }
                }
                Client::Sentinel(builder.build().map_err(backend)?)
            }
        })
    }

    /// Opens a connection (reading the TLS files again); `self.timeout` bounds each reply once
    /// connected.
    pub async fn connect(&self) -> Result<Connection, LinkError> {
        let timeout = self.timeout;
        match self.client()? {
            Client::Standalone(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(connect_timeout(timeout)))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1);
                ConnectionManager::new_with_config(client, config)
                    .await
                    .map(Connection::Managed)
            }
            Client::Cluster(client) => client.get_async_connection().await.map(Connection::Cluster),
            Client::Sentinel(mut client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(connect_timeout(timeout)))
                    .set_response_timeout(Some(timeout));
                client
                    .get_async_connection_with_config(&config)
                    .await
                    .map(Connection::Primary)
            }
        }
        .map_err(backend)
    }
}

/// Connecting (TCP, TLS, `HELLO`) may take several round trips to a managed service: allow
/// more than one reply's timeout.
pub(super) fn connect_timeout(timeout: Duration) -> Duration {
    (timeout * 4).max(Duration::from_secs(1))
}
