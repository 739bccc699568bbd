//! The log of one build: every line goes to the log store as it comes (so it can be followed),
//! and the end of it is kept for `status.buildlog`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fission_core::{LineSink, OutputStream as LogStream};

/// A build's log. Cheap to clone; clones share the text.
#[derive(Debug, Clone)]
pub(crate) struct BuildLog {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Option<Arc<dyn LineSink>>,
    max: usize,
    tail: Mutex<Tail>,
    /// Bytes the build's processes printed (not counting our own notes).
    output_bytes: AtomicU64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildLog")
            .field("logged", &self.writer.is_some())
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Tail {
    text: String,
    dropped: u64,
}

impl BuildLog {
    /// A log keeping the last `max` bytes, also written to `writer` when given.
    pub(crate) fn new(writer: Option<Arc<dyn LineSink>>, max: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                writer,
                max: max.max(1024),
                tail: Mutex::new(Tail::default()),
                output_bytes: AtomicU64::new(0),
            }),
        }
    }

    /// One line the build printed (without its newline).
    pub(crate) fn output(&self, stream: LogStream, line: &str) {
        self.append(stream, line);
    }

    /// Count raw output bytes; returns the total so far.
    pub(crate) fn count_output(&self, n: usize) -> u64 {
        self.inner
            .output_bytes
            .fetch_add(n as u64, Ordering::Relaxed)
            + n as u64
    }

    /// A line of our own (what runs, why it failed).
    pub(crate) fn note(&self, msg: impl AsRef<str>) {
        for line in msg.as_ref().lines() {
            self.append(LogStream::Stdout, line);
        }
    }

    fn append(&self, stream: LogStream, line: &str) {
        if let Some(w) = &self.inner.writer {
            w.line(stream, line);
        }
        let mut t = self.inner.tail.lock().unwrap_or_else(|e| e.into_inner());
        t.text.push_str(line);
        t.text.push('\n');
        // Trim in batches (a quarter over the budget) so appending stays cheap.
        let max = self.inner.max;
        if t.text.len() > max + max / 4 {
            let mut cut = t.text.len() - max;
            // Start at a line boundary when one is near, and always at a char boundary.
            if let Some(nl) = t.text[cut..].find('\n').filter(|nl| *nl < 4096) {
                cut += nl + 1;
            }
            while !t.text.is_char_boundary(cut) {
                cut += 1;
            }
            t.text.drain(..cut);
            t.dropped += cut as u64;
        }
    }

    /// The kept log, marked when its beginning was dropped.
    pub(crate) fn text(&self) -> String {
        let t = self.inner.tail.lock().unwrap_or_else(|e| e.into_inner());
        if t.dropped == 0 {
            t.text.clone()
        } else {
            format!(
                "[... {} bytes of earlier build output omitted ...]\n{}",
                t.dropped, t.text
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_end_of_long_logs_and_says_what_was_dropped() {
        let log = BuildLog::new(None, 4096);
        for i in 0..2000 {
            log.output(LogStream::Stdout, &format!("line {i:05}"));
        }
        let text = log.text();
        assert!(text.starts_with("[... "), "{}", &text[..60]);
        assert!(text.ends_with("line 01999\n"));
        assert!(text.len() < 4096 + 1024 + 100, "{}", text.len());
        // Whole lines only after the marker.
        let first = text.lines().nth(1).expect("line");
        assert!(first.starts_with("line "), "{first}");
    }

    #[test]
    fn short_logs_are_kept_verbatim() {
        let log = BuildLog::new(None, 4096);
        log.note("a\nb");
        log.output(LogStream::Stderr, "ünïcode");
        assert_eq!(log.text(), "a\nb\nünïcode\n");
    }
}
