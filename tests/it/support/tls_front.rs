//! nginx terminating TLS in front of the gateway, as a deployment puts it (docs/DEPLOY.md):
//! for clients that only dial `https://` and `wss://`, like the Node SDK's Realtime client.
//! Its certificate is signed by a CA made for the test.

use std::path::Path;
use std::process::Stdio;

use tokio::process::{Child, Command};

use super::redis_topologies::{TestCa, free_port};

/// A running nginx that forwards `https://127.0.0.1:PORT` (WebSocket upgrades included) to a
/// plain-HTTP gateway; stopped when dropped.
pub struct TlsFront {
    /// `https://127.0.0.1:PORT`.
    pub base: String,
    /// The CA that signed its certificate, for the client to trust.
    pub ca: String,
    _nginx: Child,
}

impl TlsFront {
    /// Starts nginx in `dir` in front of the gateway at `gateway` (`127.0.0.1:PORT`).
    pub async fn start(dir: &Path, gateway: &str) -> Self {
        let ca = TestCa::new(dir, "front");
        let (cert, key) = ca.issue("server");
        let port = free_port();
        let prefix = dir.display();
        let conf = format!(
            r#"
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://{gateway};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 60s;
        }}
    }}
}}
"#
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let nginx = Command::new("nginx")
            .args(["-p", &prefix.to_string(), "-c", &path.display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nginx is installed");
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Self {
                    base: format!("https://127.0.0.1:{port}"),
                    ca: ca.cert(),
                    _nginx: nginx,
                };
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!(
            "nginx did not listen on {port}: {}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
    }
}
