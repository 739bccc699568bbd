//! Per-function logs: every line an instance prints, timestamped, kept bounded on disk, and
//! fanned out live to followers (`fission fn logs -f`).

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

/// A log file is rotated once it grows past this; one rotated file is kept.
const MAX_LOG_BYTES: u64 = 2 * 1024 * 1024;
/// Live records buffered per follower before it lags.
const FOLLOW_BUFFER: usize = 1024;

/// Which stream a line came from.
pub use fission_core::OutputStream as LogStream;

pub use fission_core::{LogError, LogRecord};

/// A stored line back as a record (the inverse of its `Display`).
fn parse_record(line: &str) -> Option<LogRecord> {
    let mut parts = line.splitn(4, ' ');
    let timestamp = DateTime::parse_from_rfc3339(parts.next()?)
        .ok()?
        .with_timezone(&Utc);
    let instance = parts.next()?.parse().ok()?;
    let stream = match parts.next()? {
        "stdout" => LogStream::Stdout,
        "stderr" => LogStream::Stderr,
        _ => return None,
    };
    Some(LogRecord {
        timestamp,
        instance,
        stream,
        message: parts.next().unwrap_or("").to_owned(),
    })
}

type Key = (String, String);

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    followers: Mutex<HashMap<Key, broadcast::Sender<LogRecord>>>,
    // Serializes appends and rotation per store; log volume is small next to request volume.
    write_lock: Mutex<()>,
}

/// Function logs under one directory: `<dir>/<namespace>/<function>.log`.
#[derive(Debug, Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

impl LogStore {
    /// Open (creating) the store.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, LogError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| LogError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                dir,
                followers: Mutex::new(HashMap::new()),
                write_lock: Mutex::new(()),
            }),
        })
    }

    fn path(&self, namespace: &str, function: &str) -> PathBuf {
        // Names are DNS-1123 labels (validated), except synthetic ones like `env:<name>`.
        let safe = |s: &str| s.replace(['/', '\\'], "_").replace("..", "_");
        self.inner
            .dir
            .join(safe(namespace))
            .join(format!("{}.log", safe(function)))
    }

    /// A writer that appends lines for one instance of one function.
    pub fn writer(&self, namespace: &str, function: &str, instance_id: u64) -> FunctionLogWriter {
        FunctionLogWriter {
            store: self.clone(),
            namespace: namespace.to_owned(),
            function: function.to_owned(),
            instance: instance_id,
        }
    }

    /// The last `tail` records of a function (oldest first).
    pub fn read(
        &self,
        namespace: &str,
        function: &str,
        tail: usize,
    ) -> Result<Vec<LogRecord>, LogError> {
        let path = self.path(namespace, function);
        let mut text = String::new();
        for p in [path.with_extension("log.1"), path.clone()] {
            match fs::read(&p) {
                Ok(b) => text.push_str(&String::from_utf8_lossy(&b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(LogError::Io { path: p, source }),
            }
        }
        let records: Vec<LogRecord> = text.lines().filter_map(parse_record).collect();
        let skip = records.len().saturating_sub(tail);
        Ok(records.into_iter().skip(skip).collect())
    }

    /// Live records of a function from now on.
    pub fn follow(&self, namespace: &str, function: &str) -> broadcast::Receiver<LogRecord> {
        let mut followers = self
            .inner
            .followers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        followers
            .entry((namespace.to_owned(), function.to_owned()))
            .or_insert_with(|| broadcast::channel(FOLLOW_BUFFER).0)
            .subscribe()
    }

    /// Remove a function's logs.
    pub fn remove(&self, namespace: &str, function: &str) {
        let path = self.path(namespace, function);
        let _ = fs::remove_file(path.with_extension("log.1"));
        let _ = fs::remove_file(path);
    }

    fn append(&self, namespace: &str, function: &str, record: LogRecord) {
        let path = self.path(namespace, function);
        {
            let _guard = self
                .inner
                .write_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(dir) = path.parent() {
                let _ = fs::create_dir_all(dir);
            }
            if fs::metadata(&path)
                .map(|m| m.len() > MAX_LOG_BYTES)
                .unwrap_or(false)
            {
                let _ = fs::rename(&path, path.with_extension("log.1"));
            }
            // Logging must never take an instance down: failures to write are reported once
            // per line to the server's own log and otherwise ignored.
            let result = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| writeln!(f, "{record}"));
            if let Err(e) = result {
                tracing::warn!(path = %path.display(), error = %e, "cannot write function log");
            }
        }
        let followers = self
            .inner
            .followers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = followers.get(&(namespace.to_owned(), function.to_owned())) {
            let _ = tx.send(record);
        }
    }
}

/// Appends lines of one instance to its function's log.
#[derive(Debug, Clone)]
pub struct FunctionLogWriter {
    store: LogStore,
    namespace: String,
    function: String,
    instance: u64,
}

impl FunctionLogWriter {
    /// Append one line (a trailing newline is stripped; embedded newlines split records).
    pub fn write(&self, stream: LogStream, line: &str) {
        for l in line.trim_end_matches(['\n', '\r']).split('\n') {
            let record = LogRecord {
                timestamp: Utc::now(),
                instance: self.instance,
                stream,
                message: l.trim_end_matches('\r').to_owned(),
            };
            self.store.append(&self.namespace, &self.function, record);
        }
    }
}

impl fission_core::LineSink for FunctionLogWriter {
    fn line(&self, stream: LogStream, line: &str) {
        self.write(stream, line);
    }
}

#[async_trait::async_trait]
impl fission_core::FunctionLogs for LogStore {
    fn writer(
        &self,
        namespace: &str,
        function: &str,
        instance_id: u64,
    ) -> Arc<dyn fission_core::LineSink> {
        Arc::new(LogStore::writer(self, namespace, function, instance_id))
    }

    async fn read(
        &self,
        namespace: &str,
        function: &str,
        tail: usize,
    ) -> Result<Vec<LogRecord>, LogError> {
        let (store, ns, f) = (self.clone(), namespace.to_owned(), function.to_owned());
        tokio::task::spawn_blocking(move || store.read(&ns, &f, tail))
            .await
            .map_err(|e| LogError::Io {
                path: self.inner.dir.clone(),
                source: std::io::Error::other(e),
            })?
    }

    fn follow(&self, namespace: &str, function: &str) -> fission_core::LogRecordStream {
        let rx = LogStore::follow(self, namespace, function);
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(r) => return Some((r, rx)),
                    // A slow follower skips what it missed instead of slowing writers down.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_lines_per_function_and_returns_the_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = LogStore::open(dir.path()).expect("open");
        let w = logs.writer("default", "hello", 7);
        for i in 0..30 {
            w.write(LogStream::Stdout, &format!("line {i}\n"));
        }
        logs.writer("default", "other", 1)
            .write(LogStream::Stderr, "boom");
        let tail = logs.read("default", "hello", 20).expect("read");
        assert_eq!(tail.len(), 20);
        assert_eq!(tail[0].message, "line 10");
        assert_eq!(tail[19].message, "line 29");
        assert_eq!(tail[19].instance, 7);
        let other = logs.read("default", "other", 20).expect("read");
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].stream, LogStream::Stderr);
    }

    #[tokio::test]
    async fn followers_receive_new_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = LogStore::open(dir.path()).expect("open");
        let mut rx = logs.follow("default", "hello");
        logs.writer("default", "hello", 1)
            .write(LogStream::Stdout, "live");
        assert_eq!(rx.recv().await.expect("record").message, "live");
    }

    #[tokio::test]
    async fn the_port_reads_the_tail_and_follows_what_comes_after() {
        use fission_core::FunctionLogs;
        use futures::StreamExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let logs: Arc<dyn FunctionLogs> = Arc::new(LogStore::open(dir.path()).expect("open"));
        let w = logs.writer("default", "hello", 3);
        w.line(LogStream::Stdout, "before");
        let mut live = logs.follow("default", "hello");
        w.line(LogStream::Stderr, "after");
        let tail = logs.read("default", "hello", 10).await.expect("read");
        let messages: Vec<_> = tail.iter().map(|r| r.message.as_str()).collect();
        assert_eq!(messages, ["before", "after"]);
        let next = live.next().await.expect("a live record");
        assert_eq!(
            (next.message.as_str(), next.stream),
            ("after", LogStream::Stderr)
        );
        assert!(next.to_string().ends_with(" 3 stderr after"), "{next}");
    }

    #[test]
    fn rotates_instead_of_growing_without_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = LogStore::open(dir.path()).expect("open");
        let w = logs.writer("default", "noisy", 1);
        let line = "x".repeat(1000);
        for _ in 0..(3 * MAX_LOG_BYTES as usize / 1000) {
            w.write(LogStream::Stdout, &line);
        }
        let total: u64 = fs::read_dir(dir.path().join("default"))
            .expect("dir")
            .map(|e| e.expect("entry").metadata().expect("meta").len())
            .sum();
        assert!(total <= 2 * MAX_LOG_BYTES + 4096, "logs use {total} bytes");
    }
}
