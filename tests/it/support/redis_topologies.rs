//! Redis as managed services run it, started by the test on free loopback ports: a TLS server
//! with a test CA (and client certificates), a three-node Redis Cluster, and a primary with a
//! replica watched by a Sentinel. Certificates are generated per run with `openssl`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::{Child, Command};
use tollgate::redis_link::{Endpoint, RedisLink, TlsFiles};

/// How a gateway reaches one of these servers: `REDIS_URL` and the TLS variables.
#[derive(Clone)]
pub struct Target {
    pub url: String,
    pub env: Vec<(&'static str, String)>,
}

impl Target {
    /// A plain URL, no TLS files.
    pub fn plain(url: String) -> Self {
        Self { url, env: vec![] }
    }

    /// The TLS files the variables name, as the gateway reads them.
    pub fn tls_files(&self) -> TlsFiles {
        let file = |name: &str| {
            self.env
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| PathBuf::from(v))
        };
        TlsFiles {
            ca: file("TOLLGATE_REDIS_CA_FILE"),
            client_cert: file("TOLLGATE_REDIS_CERT_FILE"),
            client_key: file("TOLLGATE_REDIS_KEY_FILE"),
        }
    }

    /// A link as the gateway builds one, for the store-level behaviour suites.
    pub fn link(&self, timeout: Duration) -> Arc<RedisLink> {
        let endpoint = Endpoint::parse(&self.url).unwrap();
        Arc::new(RedisLink::new(&endpoint, &self.tls_files(), timeout).unwrap())
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn openssl(args: &[&str]) {
    let output = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A certificate authority made for one test, and certificates it signs.
pub struct TestCa {
    dir: PathBuf,
    name: String,
}

impl TestCa {
    /// A new CA in `dir`, its files named after `name`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let ca = Self {
            dir: dir.to_owned(),
            name: name.to_owned(),
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=tollgate test CA {name}"),
            "-keyout",
            &ca.path("ca.key"),
            "-out",
            &ca.path("ca.crt"),
        ]);
        ca
    }

    fn path(&self, file: &str) -> String {
        self.dir
            .join(format!("{}-{file}", self.name))
            .display()
            .to_string()
    }

    /// The CA certificate's path.
    pub fn cert(&self) -> String {
        self.path("ca.crt")
    }

    /// Signs a certificate for `who` (`server`: localhost and 127.0.0.1; `client`: client
    /// authentication); returns its certificate and key paths.
    pub fn issue(&self, who: &str) -> (String, String) {
        let (key, csr, cert, ext) = (
            self.path(&format!("{who}.key")),
            self.path(&format!("{who}.csr")),
            self.path(&format!("{who}.crt")),
            self.path(&format!("{who}.ext")),
        );
        let extensions = if who == "server" {
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
        } else {
            "extendedKeyUsage=clientAuth\n"
        };
        std::fs::write(&ext, extensions).unwrap();
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={who}"),
            "-keyout",
            &key,
            "-out",
            &csr,
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &self.cert(),
            "-CAkey",
            &self.path("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ]);
        (cert, key)
    }
}

/// Starts `redis-server` with `args` and waits until `port` accepts connections.
async fn spawn_redis(args: &[String], port: u16) -> Child {
    let child = Command::new("redis-server")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server is installed");
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("redis-server did not start on {port}");
}

fn common_args(port: u16) -> Vec<String> {
    [
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--port",
        &port.to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// `redis-cli` against a plain port; its output.
pub async fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .await
        .expect("redis-cli is installed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A TLS-only Redis that requires a client certificate signed by its CA.
pub struct TlsRedis {
    pub port: u16,
    _child: Child,
}

impl TlsRedis {
    /// Serves with a certificate `ca` signed, trusting clients `ca` signed.
    pub async fn start(ca: &TestCa) -> Self {
        let port = free_port();
        let (cert, key) = ca.issue("server");
        let mut args = common_args(0);
        args.extend(
            [
                "--tls-port",
                &port.to_string(),
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca.cert(),
                "--tls-auth-clients",
                "yes",
            ]
            .map(str::to_owned),
        );
        Self {
            port,
            _child: spawn_redis(&args, port).await,
        }
    }
}

/// A three-node Redis Cluster (primaries only), its slots spread over the nodes.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    _children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut children = Vec::new();
        for port in &ports {
            let mut args = common_args(*port);
            args.extend(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &dir.path()
                        .join(format!("nodes-{port}.conf"))
                        .display()
                        .to_string(),
                    "--cluster-node-timeout",
                    "2000",
                    "--dir",
                    &dir.path().display().to_string(),
                ]
                .map(str::to_owned),
            );
            children.push(spawn_redis(&args, *port).await);
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .await
            .expect("redis-cli is installed");
        assert!(
            output.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let cluster = Self {
            ports,
            _children: children,
            _dir: dir,
        };
        for port in &cluster.ports {
            let ready = crate::support::eventually(Duration::from_secs(15), || async {
                cli(*port, &["CLUSTER", "INFO"])
                    .await
                    .contains("cluster_state:ok")
            })
            .await;
            assert!(ready, "the cluster did not settle on {port}");
        }
        cluster
    }

    /// `redis+cluster://` naming one seed node: the client finds the others.
    pub fn target(&self) -> Target {
        Target::plain(format!("redis+cluster://127.0.0.1:{}", self.ports[0]))
    }

    /// The node ids, in `ports` order.
    pub async fn node_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for port in &self.ports {
            ids.push(cli(*port, &["CLUSTER", "MYID"]).await.trim().to_owned());
        }
        ids
    }

    /// Moves `slots` slots from the first node to the second while the caller runs load:
    /// clients meet `MOVED` and `ASK` on the way.
    pub async fn reshard(&self, slots: u32) {
        let ids = self.node_ids().await;
        let output = Command::new("redis-cli")
            .args([
                "--cluster",
                "reshard",
                &format!("127.0.0.1:{}", self.ports[0]),
                "--cluster-from",
                &ids[0],
                "--cluster-to",
                &ids[1],
                "--cluster-slots",
                &slots.to_string(),
                "--cluster-yes",
                "--cluster-pipeline",
                "10",
            ])
            .stdout(Stdio::null())
            .output()
            .await
            .expect("redis-cli is installed");
        assert!(
            output.status.success(),
            "reshard: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// How many keys each node holds.
    pub async fn keys_per_node(&self) -> Vec<u64> {
        let mut counts = Vec::new();
        for port in &self.ports {
            counts.push(cli(*port, &["DBSIZE"]).await.trim().parse().unwrap_or(0));
        }
        counts
    }
}

/// A primary, its replica, and one Sentinel watching them (quorum 1, quick to fail over).
pub struct SentinelGroup {
    pub primary: u16,
    pub replica: u16,
    pub sentinel: u16,
    children: Vec<Option<Child>>,
    _dir: tempfile::TempDir,
}

/// The name the Sentinel knows the primary by.
pub const MASTER_NAME: &str = "tgprimary";

impl SentinelGroup {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (primary, replica, sentinel) = (free_port(), free_port(), free_port());
        // A replica's first sync writes an RDB file: into the test's directory, not the
        // working directory.
        let in_dir = |port: u16| {
            let mut args = common_args(port);
            args.extend(["--dir".to_owned(), dir.path().display().to_string()]);
            args.extend(["--dbfilename".to_owned(), format!("dump-{port}.rdb")]);
            args
        };
        let first = spawn_redis(&in_dir(primary), primary).await;
        let mut args = in_dir(replica);
        args.extend(["--replicaof", "127.0.0.1", &primary.to_string()].map(str::to_owned));
        let second = spawn_redis(&args, replica).await;
        let linked = crate::support::eventually(Duration::from_secs(15), || async {
            cli(replica, &["INFO", "replication"])
                .await
                .contains("master_link_status:up")
        })
        .await;
        assert!(linked, "the replica did not link to the primary");
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} 1\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 400\n\
                 sentinel failover-timeout {MASTER_NAME} 2000\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let watcher = spawn_redis(
            &[conf.display().to_string(), "--sentinel".to_owned()],
            sentinel,
        )
        .await;
        let knows_replica = crate::support::eventually(Duration::from_secs(40), || async {
            cli(sentinel, &["SENTINEL", "REPLICAS", MASTER_NAME])
                .await
                .contains(&replica.to_string())
        })
        .await;
        assert!(knows_replica, "the Sentinel did not find the replica");
        Self {
            primary,
            replica,
            sentinel,
            children: vec![Some(first), Some(second), Some(watcher)],
            _dir: dir,
        }
    }

    /// `redis+sentinel://` naming the Sentinel and the primary's name.
    pub fn target(&self) -> Target {
        Target::plain(format!(
            "redis+sentinel://127.0.0.1:{}/{MASTER_NAME}",
            self.sentinel
        ))
    }

    /// Waits until the replica holds every write the primary acknowledged, then kills the
    /// primary: the Sentinel promotes the replica.
    pub async fn kill_primary(&mut self) {
        let synced = cli(self.primary, &["WAIT", "1", "2000"]).await;
        assert_eq!(synced.trim(), "1", "the replica caught up before the kill");
        if let Some(mut child) = self.children[0].take() {
            child.kill().await.unwrap();
        }
    }

    /// The port the Sentinel names primary now.
    pub async fn current_primary(&self) -> Option<u16> {
        let answer = cli(
            self.sentinel,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
        )
        .await;
        answer.lines().nth(1)?.trim().parse().ok()
    }
}
