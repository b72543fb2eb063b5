//! A PostgreSQL cluster owned by one test (`initdb` into a temporary directory, run as the
//! `postgres` user on a free port), so the test can stop the real server (`pg_ctl stop -m
//! fast`: connections refused, as in a restart or failover) and start it again. Optionally TLS
//! only, with a certificate the test's CA signed.

use std::path::{Path, PathBuf};

use super::redis_topologies::{TestCa, free_port};

/// A private PostgreSQL server.
pub struct PgCluster {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    options: String,
}

fn bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let version = std::fs::read_dir(root)
        .expect("PostgreSQL server packages are installed")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .max()
        .expect("a PostgreSQL version directory");
    root.join(version).join("bin")
}

/// Runs `program` as the `postgres` user; panics with its output on failure.
fn as_postgres(program: &Path, args: &[&str]) {
    let output = std::process::Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(args)
        .output()
        .expect("runuser is installed");
    assert!(
        output.status.success(),
        "{} {args:?}: {}{}",
        program.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn chown_postgres(path: &Path) {
    let status = std::process::Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

impl PgCluster {
    /// Creates and starts a cluster; with `ca`, it accepts TLS connections only, presenting a
    /// certificate for localhost and 127.0.0.1 that `ca` signed.
    pub async fn start(ca: Option<&TestCa>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        chown_postgres(dir.path());
        let bin = bin_dir();
        let data = dir.path().join("data");
        let data_str = data.display().to_string();
        as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                &data_str,
                "--auth=trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        let port = free_port();
        let mut options = format!(
            "-p {port} -c listen_addresses=127.0.0.1,127.0.0.2 -c unix_socket_directories={} \
             -c fsync=off -c full_page_writes=off",
            dir.path().display()
        );
        if let Some(ca) = ca {
            let (cert, key) = ca.issue("server");
            for (from, to) in [(&cert, "server.crt"), (&key, "server.key")] {
                std::fs::copy(from, data.join(to)).unwrap();
            }
            chown_postgres(&data);
            let status = std::process::Command::new("chmod")
                .args(["600"])
                .arg(data.join("server.key"))
                .status()
                .unwrap();
            assert!(status.success());
            // TLS or nothing: a client that does not ask for it is turned away.
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.0/8 trust\n\
                 hostnossl all all 0.0.0.0/0 reject\n",
            )
            .unwrap();
            chown_postgres(&data);
            options.push_str(" -c ssl=on");
        }
        let cluster = Self {
            port,
            bin,
            dir,
            options,
        };
        cluster.start_again().await;
        cluster
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// `postgres://postgres@HOST:PORT/postgres` plus `params` (`sslmode=…`).
    pub fn url(&self, host: &str, params: &str) -> String {
        let query = if params.is_empty() {
            String::new()
        } else {
            format!("?{params}")
        };
        format!("postgres://postgres@{host}:{}/postgres{query}", self.port)
    }

    #[allow(
        dead_code,
        reason = "the outage test in tests/quiet stops the server; the main suite does not"
    )]
    /// Stops the server the way a restart or failover does (`-m fast`: sessions are
    /// terminated, new connections refused).
    pub async fn stop(&self) {
        let (bin, data) = (self.bin.join("pg_ctl"), self.data());
        tokio::task::spawn_blocking(move || {
            as_postgres(&bin, &["-D", &data, "-m", "fast", "-w", "stop"]);
        })
        .await
        .unwrap();
    }

    /// Starts the (stopped) server and waits until it accepts connections.
    pub async fn start_again(&self) {
        let (bin, data, options) = (self.bin.join("pg_ctl"), self.data(), self.options.clone());
        let log = self.dir.path().join("server.log").display().to_string();
        tokio::task::spawn_blocking(move || {
            as_postgres(
                &bin,
                &["-D", &data, "-l", &log, "-o", &options, "-w", "start"],
            );
        })
        .await
        .unwrap();
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}
