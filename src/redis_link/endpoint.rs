//! What `REDIS_URL` names: one server, a Redis Cluster or a Sentinel-managed primary, over TCP or
//! TLS. Parsed once, at configuration time, so a bad URL stops start-up with a clear line.
//!
//! | scheme | topology |
//! | --- | --- |
//! | `redis://`, `rediss://` | one server (`rediss` is TLS) |
//! | `redis+cluster://`, `rediss+cluster://` | a Redis Cluster: `HOST:PORT[,HOST:PORT…]`, any seed nodes |
//! | `redis+sentinel://`, `rediss+sentinel://` | the primary a set of Sentinels names: `HOST:PORT[,…]/MASTER[/DB]` |
//!
//! Credentials (`user:password@`) are for the data nodes; Sentinels are asked without them.
//! A fragment (`#insecure`, which would switch off certificate checks) is refused: trust a
//! private CA with `TOLLGATE_REDIS_CA_FILE` instead.

/// How the gateway reaches Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// One server (or a managed endpoint that looks like one).
    Standalone,
    /// A Redis Cluster, found from its seed nodes; commands follow `MOVED`/`ASK`.
    Cluster,
    /// Whichever server the Sentinels currently name primary for `master`.
    Sentinel { master: String },
}

/// A parsed `REDIS_URL`.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub topology: Topology,
    /// TLS to every node (the `rediss` schemes).
    pub tls: bool,
    /// `HOST:PORT` of each node given (seed nodes, Sentinels, or the one server).
    pub nodes: Vec<(String, u16)>,
    /// `user:password`, still percent-encoded as written.
    userinfo: Option<String>,
    /// The database index (standalone and Sentinel only: a cluster has one database).
    pub db: i64,
}

/// Not shown: the URL may carry a password.
impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("topology", &self.topology)
            .field("tls", &self.tls)
            .field("nodes", &self.nodes)
            .field("credentials", &self.userinfo.as_ref().map(|_| "[redacted]"))
            .field("db", &self.db)
            .finish()
    }
}

const DEFAULT_PORT: u16 = 6379;
const DEFAULT_SENTINEL_PORT: u16 = 26379;

impl Endpoint {
    /// Parses `url`; the error says what is wrong without repeating the URL (it may hold a
    /// password).
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or("expected a URL such as redis://HOST:PORT")?;
        let (tls, kind) = match scheme.to_ascii_lowercase().as_str() {
            "redis" => (false, "standalone"),
            "rediss" => (true, "standalone"),
            "redis+cluster" => (false, "cluster"),
            "rediss+cluster" => (true, "cluster"),
            "redis+sentinel" => (false, "sentinel"),
            "rediss+sentinel" => (true, "sentinel"),
            _ => {
                return Err(
                    "expected redis://, rediss://, redis+cluster://, rediss+cluster://, \
                     redis+sentinel:// or rediss+sentinel://"
                        .to_owned(),
                );
            }
        };
        if rest.contains('#') {
            return Err(
                "a fragment (such as #insecure) is not accepted: certificates are always \
                        checked; trust a private CA with TOLLGATE_REDIS_CA_FILE"
                    .to_owned(),
            );
        }
        if rest.contains('?') {
            return Err(
                "query parameters are not accepted: set the database in the path \
                        and TLS files with TOLLGATE_REDIS_CA_FILE, _CERT_FILE and _KEY_FILE"
                    .to_owned(),
            );
        }
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (rest, ""),
        };
        let (userinfo, hosts) = match authority.rfind('@') {
            Some(at) => (Some(authority[..at].to_owned()), &authority[at + 1..]),
            None => (None, authority),
        };
        let default_port = if kind == "sentinel" {
            DEFAULT_SENTINEL_PORT
        } else {
            DEFAULT_PORT
        };
        let nodes = hosts
            .split(',')
            .map(|node| parse_node(node, default_port))
            .collect::<Result<Vec<_>, _>>()?;
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (topology, db) = match kind {
            "standalone" => {
                if nodes.len() != 1 {
                    return Err("one HOST:PORT expected; list several nodes with \
                                redis+cluster:// or redis+sentinel://"
                        .to_owned());
                }
                (Topology::Standalone, parse_db(&segments, 0)?)
            }
            "cluster" => {
                if !segments.is_empty() {
                    return Err("a Redis Cluster has one database: no path expected".to_owned());
                }
                (Topology::Cluster, 0)
            }
            _ => {
                let master = segments
                    .first()
                    .ok_or("expected redis+sentinel://HOST:PORT[,HOST:PORT]/MASTER[/DB]")?;
                (
                    Topology::Sentinel {
                        master: (*master).to_owned(),
                    },
                    parse_db(&segments, 1)?,
                )
            }
        };
        Ok(Self {
            topology,
            tls,
            nodes,
            userinfo,
            db,
        })
    }

    /// A plain `redis[s]://[userinfo@]host:port/db` URL for one node, as the client library
    /// reads it (it decodes the credentials).
    pub fn node_url(&self, (host, port): &(String, u16)) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let credentials = self
            .userinfo
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        format!("{scheme}://{credentials}{host}:{port}/{}", self.db)
    }
}

fn parse_node(node: &str, default_port: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(bracketed) = node.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or("an IPv6 address needs its closing ]")?;
        (host, after.strip_prefix(':'))
    } else {
        match node.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (node, None),
        }
    };
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return Err("every node needs a host".to_owned());
    }
    let port = match port {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or("a port is a number from 1 to 65535")?,
        None => default_port,
    };
    Ok((host.to_owned(), port))
}

fn parse_db(segments: &[&str], at: usize) -> Result<i64, String> {
    match segments.get(at..) {
        None | Some([]) => Ok(0),
        Some([db]) => db
            .parse::<i64>()
            .ok()
            .filter(|d| *d >= 0)
            .ok_or_else(|| "the database is a number (redis://HOST:PORT/DB)".to_owned()),
        Some(_) => Err("unexpected path after the database".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_topology_and_its_nodes() {
        let one = Endpoint::parse("redis://127.0.0.1:6380/2").unwrap();
        assert_eq!(one.topology, Topology::Standalone);
        assert_eq!(one.nodes, vec![("127.0.0.1".to_owned(), 6380)]);
        assert_eq!((one.tls, one.db), (false, 2));

        let tls = Endpoint::parse("rediss://:s3cret@cache.example.com").unwrap();
        assert!(tls.tls);
        assert_eq!(tls.nodes, vec![("cache.example.com".to_owned(), 6379)]);
        assert_eq!(
            tls.node_url(&tls.nodes[0]),
            "rediss://:s3cret@cache.example.com:6379/0"
        );
        assert!(!format!("{tls:?}").contains("s3cret"));

        let cluster = Endpoint::parse("redis+cluster://a:7000,b:7001,[::1]:7002").unwrap();
        assert_eq!(cluster.topology, Topology::Cluster);
        assert_eq!(cluster.nodes.len(), 3);
        assert_eq!(cluster.nodes[2], ("::1".to_owned(), 7002));
        assert_eq!(cluster.node_url(&cluster.nodes[2]), "redis://[::1]:7002/0");

        let sentinel = Endpoint::parse("rediss+sentinel://u:p@s1,s2:26380/mymaster/3").unwrap();
        assert_eq!(
            sentinel.topology,
            Topology::Sentinel {
                master: "mymaster".to_owned()
            }
        );
        assert_eq!(
            sentinel.nodes,
            vec![("s1".to_owned(), 26379), ("s2".to_owned(), 26380)]
        );
        assert_eq!((sentinel.tls, sentinel.db), (true, 3));
    }

    #[test]
    fn refuses_what_it_cannot_honour_without_echoing_the_url() {
        for (url, says) in [
            ("http://x", "expected redis://"),
            (
                "rediss://h:6379/#insecure",
                "certificates are always checked",
            ),
            ("redis://h:6379/?protocol=resp3", "query parameters"),
            ("redis://a:1,b:2", "one HOST:PORT"),
            ("redis+cluster://a:1/0", "one database"),
            ("redis+sentinel://a:1", "MASTER"),
            ("redis://:pw@h:99999", "port"),
            ("redis://:pw@:6379", "host"),
            ("redis://h/x", "database is a number"),
            ("redis+sentinel://a/m/1/2", "unexpected path"),
        ] {
            let error = Endpoint::parse(url).unwrap_err();
            assert!(error.contains(says), "{url}: {error}");
            assert!(!error.contains("pw"), "{error}");
        }
    }
}
