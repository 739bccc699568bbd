//! The log port: where the lines function instances (and builds) print go, per function.

use std::sync::Arc;

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

/// Per-function logs (`fission fn logs`).
pub trait FunctionLogs: Send + Sync + 'static {
    /// A sink for the lines of one instance of one function.
    fn writer(&self, namespace: &str, function: &str, instance_id: u64) -> Arc<dyn LineSink>;
}
