//! What users compare a FaaS warm path with: their own bare Node server, and the same server
//! behind nginx (keep-alive upstream). Both are started by the bench, measured in the same run
//! as the router, with the same client.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::http::Conn;
use crate::procs::{free_port, sigterm};

/// The hello world a user writes without any framework.
const BARE_NODE: &str = r#"
const http = require('http');
http.createServer((req, res) => { res.end('Hello, world!\n'); })
  .listen(Number(process.env.PORT), '127.0.0.1', () => console.log('listening'));
"#;

/// A bare Node server and nginx in front of it, killed on drop.
pub struct Anchors {
    pub bare: SocketAddr,
    pub nginx: SocketAddr,
    node: tokio::process::Child,
    nginx_proc: tokio::process::Child,
    _dir: tempfile::TempDir,
}

/// Where nginx is, if installed (Debian puts it in /usr/sbin, often not on a user's PATH).
pub fn nginx_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|d: PathBuf| d.join("nginx"))
        .find(|p| p.is_file())
}

impl Anchors {
    pub async fn start(node: &Path, nginx: &Path) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("fission-bench-anchor-")
            .tempdir()?;
        let bare_port = free_port()?;
        let script = dir.path().join("bare.js");
        std::fs::write(&script, BARE_NODE)?;
        let node = tokio::process::Command::new(node)
            .arg(&script)
            .env_clear()
            .env("PORT", bare_port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the bare Node server")?;

        let nginx_port = free_port()?;
        let prefix = dir.path().join("nginx");
        std::fs::create_dir_all(prefix.join("logs"))?;
        // One worker (like the router on this box, it shares two cores with the upstream),
        // keep-alive to the upstream as a production config has it, no access log.
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\npid {p}/nginx.pid;\n\
             error_log {p}/logs/error.log warn;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n\
               fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
               upstream bare {{ server 127.0.0.1:{bare_port}; keepalive 64; }}\n\
               server {{\n    listen 127.0.0.1:{nginx_port};\n    location / {{\n\
                   proxy_pass http://bare;\n      proxy_http_version 1.1;\n\
                   proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
            p = prefix.display()
        );
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let nginx_proc = tokio::process::Command::new(nginx)
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(prefix.join("logs/error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start nginx")?;
        let anchors = Self {
            bare: (Ipv4Addr::LOCALHOST, bare_port).into(),
            nginx: (Ipv4Addr::LOCALHOST, nginx_port).into(),
            node,
            nginx_proc,
            _dir: dir,
        };
        anchors.wait_answering(anchors.bare, "bare Node").await?;
        anchors.wait_answering(anchors.nginx, "nginx").await?;
        Ok(anchors)
    }

    async fn wait_answering(&self, addr: SocketAddr, what: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = Conn::connect(addr).await
                && let Ok(body) = c.get_ok("/").await
            {
                if body.starts_with(b"Hello, world!") {
                    return Ok(());
                }
                bail!("{what} answered {:?}", String::from_utf8_lossy(&body));
            }
            if Instant::now() > deadline {
                bail!("{what} did not answer on {addr} within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(mut self) {
        // SIGTERM, not SIGKILL: nginx's master takes its worker down with it; a killed master
        // would leave the worker running.
        if let Some(pid) = self.nginx_proc.id() {
            sigterm(pid);
        }
        if tokio::time::timeout(Duration::from_secs(5), self.nginx_proc.wait())
            .await
            .is_err()
        {
            let _ = self.nginx_proc.start_kill();
            let _ = self.nginx_proc.wait().await;
        }
        let _ = self.node.start_kill();
        let _ = self.node.wait().await;
    }
}

impl Drop for Anchors {
    fn drop(&mut self) {
        // On an early return the children are killed on drop; nginx's master must get SIGTERM
        // so that its worker goes too.
        if let Some(pid) = self.nginx_proc.id() {
            sigterm(pid);
        }
    }
}
