//! Real brokers started by the tests, each on free loopback ports in a temp dir, stopped on
//! drop (also when the test panics).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn wait_port(port: u16, what: &str, secs: u64, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {port} within {secs} s; its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The Kafka jars (scripts/brokers/kafka.sh, cached), or why they cannot be had.
fn kafka_jars() -> Result<PathBuf, String> {
    fission_test_support::binary_on_path("java")?;
    let out = Command::new(repo_root().join("scripts/brokers/kafka.sh"))
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run scripts/brokers/kafka.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!("scripts/brokers/kafka.sh failed: {}", out.status));
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok(PathBuf::from(dir))
}

/// A single-node Kafka cluster in KRaft mode (one process, broker and controller).
pub struct Kafka {
    child: Child,
    jars: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Kafka {
    /// A fresh broker; `None` (a skip) only outside CI when java or the jars are missing.
    pub fn start() -> Option<Self> {
        let jars = fission_test_support::require(
            "Apache Kafka (java 17+ and the jars of scripts/brokers/kafka.sh)",
            "apt-get install default-jre-headless maven; scripts/brokers/kafka.sh",
            kafka_jars(),
        )?;
        let dir = tempfile::tempdir().unwrap();
        let (port, controller) = (free_port(), free_port());
        let data = dir.path().join("data");
        let props = format!(
            "process.roles=broker,controller\n\
             node.id=1\n\
             controller.quorum.voters=1@127.0.0.1:{controller}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
             controller.listener.names=CONTROLLER\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
             inter.broker.listener.name=PLAINTEXT\n\
             log.dirs={}\n\
             offsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions=1\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             share.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\n\
             group.initial.rebalance.delay.ms=0\n\
             num.partitions=1\n\
             auto.create.topics.enable=true\n",
            data.display()
        );
        std::fs::write(dir.path().join("server.properties"), props).unwrap();
        // A random cluster id: 16 random bytes, base64url without padding.
        let id = {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
        };
        let status = Command::new("java")
            .arg("-cp")
            .arg(jars.join("*"))
            .args(["kafka.tools.StorageTool", "format", "-t", &id, "-c"])
            .arg(dir.path().join("server.properties"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "kafka storage format failed: {status}");
        let child = Self::spawn(&jars, dir.path());
        let k = Self {
            child,
            jars,
            dir,
            port,
        };
        wait_port(port, "kafka", 120, &k.dir.path().join("broker.log"));
        Some(k)
    }

    fn spawn(jars: &Path, dir: &Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("broker.log"))
            .unwrap();
        Command::new("java")
            // Small heap: several brokers may run at once on a small machine.
            .args([
                "-Xmx384m",
                "-Xms64m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
            ])
            .arg("-cp")
            .arg(jars.join("*"))
            .arg("kafka.Kafka")
            .arg(dir.join("server.properties"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    pub fn servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kill the broker (no clean shutdown) and start it again on the same port and data.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(&self.jars, self.dir.path());
        wait_port(
            self.port,
            "kafka (restarted)",
            120,
            &self.dir.path().join("broker.log"),
        );
    }

    /// The offset `group` has committed on partition 0 of `topic`.
    pub async fn committed(&self, group: &str, topic: &str) -> Option<i64> {
        use rdkafka::consumer::Consumer as _;
        let (servers, group, topic) = (self.servers(), group.to_owned(), topic.to_owned());
        tokio::task::spawn_blocking(move || {
            let c: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &servers)
                .set("group.id", &group)
                .create()
                .ok()?;
            let mut tpl = rdkafka::TopicPartitionList::new();
            tpl.add_partition(&topic, 0);
            let got = c.committed_offsets(tpl, Duration::from_secs(10)).ok()?;
            got.find_partition(&topic, 0)?.offset().to_raw()
        })
        .await
        .unwrap()
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGKILL one process by its (positive) pid. Never a negative pid or a process group:
/// procps-ng's kill(1) took `-KILL -<pgid>` for "every process" here.
fn kill_pid(pid: u32) {
    assert!(pid > 1, "refusing to signal pid {pid}");
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// A RabbitMQ node of its own: own node name, ports, data and log dirs, no plugins.
pub struct RabbitMq {
    child: Child,
    dir: tempfile::TempDir,
    node: String,
    pub port: u16,
    dist_port: u16,
}

impl RabbitMq {
    /// A fresh node; `None` (a skip) only outside CI when rabbitmq-server is missing.
    pub fn start() -> Option<Self> {
        const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
        fission_test_support::require(
            "rabbitmq-server",
            "apt-get install rabbitmq-server",
            if Path::new(SERVER).exists() {
                Ok(())
            } else {
                Err(format!("{SERVER} not found"))
            },
        )?;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n").unwrap();
        let (port, dist_port) = (free_port(), free_port());
        let node = format!("fission-test-{port}@localhost");
        let child = Self::spawn(dir.path(), &node, port, dist_port);
        let r = Self {
            child,
            dir,
            node,
            port,
            dist_port,
        };
        r.wait_booted(1);
        Some(r)
    }

    fn spawn(dir: &Path, node: &str, port: u16, dist_port: u16) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("out.log"))
            .unwrap();
        Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server")
            .current_dir(dir)
            // The Erlang cookie lives in $HOME.
            .env("HOME", dir)
            .env("RABBITMQ_NODENAME", node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", dir.join("pid"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("advanced.config"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Kill the start script and the Erlang VM it started (whose pid the node writes to its
    /// pid file).
    fn kill(&mut self) {
        let beam = std::fs::read_to_string(self.dir.path().join("pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(pid) = beam {
            kill_pid(pid);
        }
        let _ = std::fs::remove_file(self.dir.path().join("pid"));
    }

    /// Kill the node (no clean shutdown) and start it again with the same data.
    pub fn restart(&mut self) {
        self.kill();
        let booted = self.boots();
        self.child = Self::spawn(self.dir.path(), &self.node, self.port, self.dist_port);
        self.wait_booted(booted + 1);
    }

    fn boots(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("out.log"))
            .unwrap_or_default()
            .matches("Starting broker... completed")
            .count()
    }

    /// Until the node has said it finished booting `n` times (its listener accepts, then
    /// resets, connections while it boots).
    fn wait_booted(&self, n: usize) {
        let log = self.dir.path().join("out.log");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.matches("Starting broker... completed").count() >= n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "rabbitmq did not boot within 120 s; its log:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        wait_port(self.port, "rabbitmq", 10, &log);
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        self.kill();
    }
}
