//! Objects created straight through the controller's REST API (fission.io/v1 JSON, the shapes
//! the CLI sends), and the router's Prometheus text.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use hyper::Method;
use serde_json::{Value, json};

use crate::http::Conn;
use crate::procs::Lang;

const NS: &str = "default";

/// Execution limits of a function.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub concurrency: u32,
    pub requests_per_pod: u32,
}

impl Default for Limits {
    fn default() -> Self {
        // Fission's defaults.
        Self {
            concurrency: 500,
            requests_per_pod: 1,
        }
    }
}

/// A client of the controller (one keep-alive connection).
pub struct Api {
    conn: Conn,
}

impl Api {
    pub async fn connect(controller: SocketAddr) -> Result<Self> {
        Ok(Self {
            conn: Conn::connect(controller).await?,
        })
    }

    async fn post(&mut self, path: &str, body: &Value) -> Result<Value> {
        let r = self.conn.post_json(path, body).await?;
        if !r.status.is_success() {
            bail!("POST {path} answered {}: {}", r.status, r.text().trim());
        }
        if r.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&r.body).with_context(|| format!("POST {path}: answer is not JSON"))
    }

    async fn delete(&mut self, path: &str) -> Result<()> {
        let r = self.conn.send(Method::DELETE, path, None).await?;
        if !r.status.is_success() && r.status.as_u16() != 404 {
            bail!("DELETE {path} answered {}: {}", r.status, r.text().trim());
        }
        Ok(())
    }

    pub async fn create_env(&mut self, name: &str, lang: Lang, poolsize: u32) -> Result<()> {
        let env = json!({
            "apiVersion": "fission.io/v1",
            "kind": "Environment",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "version": 3,
                "runtime": {"image": lang.image()},
                "poolsize": poolsize,
                "keeparchive": false,
                "allowedFunctionsPerContainer": "single",
                "terminationGracePeriod": 5,
                "resources": {},
            },
        });
        self.post("/v2/environments", &env).await.map(|_| ())
    }

    /// Package (literal deployment, build succeeded) + Function referencing it.
    pub async fn create_function(
        &mut self,
        name: &str,
        env: &str,
        lang: Lang,
        limits: Limits,
    ) -> Result<()> {
        let (_, code) = lang.hello();
        self.create_function_with(name, env, code, limits, 120)
            .await
    }

    /// Like [`create_function`](Self::create_function) with the function's own `code` and
    /// `idletimeout` (seconds an idle instance is kept).
    pub async fn create_function_with(
        &mut self,
        name: &str,
        env: &str,
        code: &str,
        limits: Limits,
        idletimeout: u32,
    ) -> Result<()> {
        let pkg_name = format!("{name}-pkg");
        let pkg = json!({
            "apiVersion": "fission.io/v1",
            "kind": "Package",
            "metadata": {"name": pkg_name, "namespace": NS},
            "spec": {
                "environment": {"name": env, "namespace": NS},
                "source": {"checksum": {}},
                "deployment": {
                    "type": "literal",
                    "literal": base64::engine::general_purpose::STANDARD.encode(code),
                    "checksum": {},
                },
            },
            "status": {"buildstatus": "succeeded"},
        });
        let meta = self
            .post("/v2/packages", &pkg)
            .await
            .context("creating the package")?;
        let rv = meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let f = json!({
            "apiVersion": "fission.io/v1",
            "kind": "Function",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "environment": {"name": env, "namespace": NS},
                "package": {
                    "functionName": "",
                    "packageref": {"name": pkg_name, "namespace": NS, "resourceversion": rv},
                },
                "InvokeStrategy": {
                    "StrategyType": "execution",
                    "ExecutionStrategy": {"ExecutorType": "poolmgr", "MinScale": 0, "MaxScale": 0, "TargetCPUPercent": 0, "SpecializationTimeout": 120},
                },
                "functionTimeout": 60,
                "idletimeout": idletimeout,
                "concurrency": limits.concurrency,
                "requestsPerPod": limits.requests_per_pod,
                "resources": {},
            },
        });
        self.post("/v2/functions", &f)
            .await
            .context("creating the function")?;
        Ok(())
    }

    pub async fn create_route(&mut self, name: &str, url: &str, function: &str) -> Result<()> {
        let t = json!({
            "apiVersion": "fission.io/v1",
            "kind": "HTTPTrigger",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "host": "",
                "relativeurl": url,
                "method": "GET",
                "methods": ["GET"],
                "functionref": {"type": "name", "name": function},
                "createingress": false,
            },
        });
        self.post("/v2/triggers/http", &t).await.map(|_| ())
    }

    /// Delete a function and its package (its instances are retired by the executor).
    pub async fn delete_function(&mut self, name: &str) -> Result<()> {
        self.delete(&format!("/v2/functions/{name}?namespace={NS}"))
            .await?;
        self.delete(&format!("/v2/packages/{name}-pkg?namespace={NS}"))
            .await
    }

    pub async fn delete_env(&mut self, name: &str) -> Result<()> {
        self.delete(&format!("/v2/environments/{name}?namespace={NS}"))
            .await
    }
}

/// The router's `/metrics`.
pub struct Metrics {
    conn: Conn,
}

/// Sum and count of a histogram series.
#[derive(Debug, Clone, Copy, Default)]
pub struct SumCount {
    pub sum: f64,
    pub count: f64,
}

impl SumCount {
    pub fn minus(self, before: SumCount) -> SumCount {
        SumCount {
            sum: self.sum - before.sum,
            count: self.count - before.count,
        }
    }

    pub fn mean(self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }
}

impl Metrics {
    pub async fn connect(router: SocketAddr) -> Result<Self> {
        Ok(Self {
            conn: Conn::connect(router).await?,
        })
    }

    pub async fn text(&mut self) -> Result<String> {
        let body = self.conn.get_ok("/metrics").await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// `fission_pool_ready_instances` of one environment (0 when not exported yet).
    pub async fn pool_ready(&mut self, env: &str) -> Result<u32> {
        let text = self.text().await?;
        let label = format!("environment_name=\"{env}\"");
        Ok(text
            .lines()
            .filter(|l| l.starts_with("fission_pool_ready_instances{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u32)
            .sum())
    }

    /// Wait until the environment's pool holds `poolsize` ready generic instances.
    pub async fn wait_pool_full(
        &mut self,
        env: &str,
        poolsize: u32,
        timeout: Duration,
    ) -> Result<Duration> {
        let t0 = Instant::now();
        loop {
            if self.pool_ready(env).await? >= poolsize {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > timeout {
                bail!(
                    "the pool of environment {env} did not refill to {poolsize} within {timeout:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Sum/count of `metric` (a histogram base name) over the series whose labels contain
    /// every string in `labels`.
    pub async fn histogram(&mut self, metric: &str, labels: &[&str]) -> Result<SumCount> {
        let text = self.text().await?;
        let mut out = SumCount::default();
        for l in text.lines() {
            let (is_sum, rest) = if let Some(r) = l.strip_prefix(&format!("{metric}_sum")) {
                (true, r)
            } else if let Some(r) = l.strip_prefix(&format!("{metric}_count")) {
                (false, r)
            } else {
                continue;
            };
            if !labels.iter().all(|lab| rest.contains(lab)) {
                continue;
            }
            let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
                continue;
            };
            if is_sum { out.sum += v } else { out.count += v }
        }
        Ok(out)
    }
}
