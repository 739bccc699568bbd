//! The log port: where the lines function instances (and builds) print go, per function, and
//! how they are read back (`fission fn logs`, `-f`).

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use futures::Stream;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl OutputStream {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// Where the lines of one writer go.
pub trait LineSink: Send + Sync + 'static {
    /// One line, without its newline.
    fn line(&self, stream: OutputStream, line: &str);
}

/// One line of output, as stored and served.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    /// When the line was read.
    pub timestamp: DateTime<Utc>,
    /// Which instance printed it (for builds: the package's resource version).
    pub instance: u64,
    /// stdout or stderr.
    pub stream: OutputStream,
    /// The line, without its newline.
    pub message: String,
}

/// The line `fission fn logs` prints: `<rfc3339 ms> <instance> <stream> <message>`.
impl fmt::Display for LogRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.timestamp.to_rfc3339_opts(SecondsFormat::Millis, true),
            self.instance,
            self.stream.as_str(),
            self.message
        )
    }
}

/// Why reading logs failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Storage failure.
    #[error("log store I/O on {path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// A function's records from the moment of subscribing on. A follower that falls behind
/// misses records rather than holding writers up; the stream ends when the log store goes away.
pub type LogRecordStream = Pin<Box<dyn Stream<Item = LogRecord> + Send>>;

/// Per-function logs (`fission fn logs`).
#[async_trait::async_trait]
pub trait FunctionLogs: Send + Sync + 'static {
    /// A sink for the lines of one instance of one function.
    fn writer(&self, namespace: &str, function: &str, instance_id: u64) -> Arc<dyn LineSink>;
    /// The last `tail` records of a function, oldest first.
    async fn read(
        &self,
        namespace: &str,
        function: &str,
        tail: usize,
    ) -> Result<Vec<LogRecord>, LogError>;
    /// Records of a function written from now on. Subscribe before [`read`](Self::read)ing
    /// the tail so no line falls between the two.
    fn follow(&self, namespace: &str, function: &str) -> LogRecordStream;
}
