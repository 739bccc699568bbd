//! Running one build step: a process started by the build's [`BuildRunner`], its output
//! streamed into the build log line by line, stopped (everything it started) on deadline, on
//! too much output or on cancellation.

use std::io;
use std::process::ExitStatus;
use std::time::Duration;

use fission_store::logs::LogStream;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::log::BuildLog;
use crate::runner::{BuildRunner, BuildStep, StepProcess};

/// Lines longer than this are split (a build printing megabytes without a newline still shows).
const MAX_LINE: usize = 8 * 1024;
/// After the step exits, how long its output pipes may stay open (a daemon it left behind)
/// before the group is killed and the rest of the output dropped.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Why a step did not succeed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StepError {
    /// The program could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// What was run.
        program: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// It exited unsuccessfully.
    #[error("{program} failed: {}", describe_exit(.status))]
    Exit {
        /// What was run.
        program: String,
        /// How it ended.
        status: ExitStatus,
    },
    /// It failed after hitting a limit of its sandbox (memory, processes).
    #[error("{program} failed ({}): {limit}", describe_exit(.status))]
    Limit {
        /// What was run.
        program: String,
        /// How it ended.
        status: ExitStatus,
        /// Which limit, as the runner says it.
        limit: String,
    },
    /// The build's deadline passed.
    #[error("the build did not finish within {0:?}; it was stopped")]
    TimedOut(Duration),
    /// The build printed more than allowed.
    #[error("the build printed more than {0} bytes of output; it was stopped")]
    TooMuchOutput(u64),
    /// The build was cancelled (superseded, package deleted, shutdown).
    #[error("the build was cancelled")]
    Cancelled,
}

fn describe_exit(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}

/// Limits that apply to a step.
#[derive(Debug, Clone)]
pub(crate) struct StepLimits {
    /// When the whole build must be done.
    pub deadline: Instant,
    /// The build's total timeout (for the message).
    pub timeout: Duration,
    /// Output budget of the whole build.
    pub max_output_bytes: u64,
}

/// Run `step` to completion, streaming its output into `log`.
pub(crate) async fn run_step(
    runner: &dyn BuildRunner,
    step: &BuildStep,
    display: &str,
    log: &BuildLog,
    limits: &StepLimits,
    cancel: &CancellationToken,
) -> Result<(), StepError> {
    let mut process = runner
        .start(step)
        .await
        .map_err(|source| StepError::Spawn {
            program: display.to_owned(),
            source,
        })?;
    let result = supervise(process.as_mut(), display, log, limits, cancel).await;
    // Everything the step started is gone by now; its sandbox (if any) goes too.
    process.release().await;
    result
}

/// Stream the step's output until it exits or must be stopped; on every path, kill whatever
/// it left running.
async fn supervise(
    process: &mut dyn StepProcess,
    display: &str,
    log: &BuildLog,
    limits: &StepLimits,
    cancel: &CancellationToken,
) -> Result<(), StepError> {
    let child = process.child();
    let over = CancellationToken::new();
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(
            out,
            LogStream::Stdout,
            log.clone(),
            limits.max_output_bytes,
            over.clone(),
        )));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(
            err,
            LogStream::Stderr,
            log.clone(),
            limits.max_output_bytes,
            over.clone(),
        )));
    }
    let stopped = tokio::select! {
        status = child.wait() => Ok(status),
        () = tokio::time::sleep_until(limits.deadline) => Err(StepError::TimedOut(limits.timeout)),
        () = over.cancelled() => Err(StepError::TooMuchOutput(limits.max_output_bytes)),
        () = cancel.cancelled() => Err(StepError::Cancelled),
    };
    match stopped {
        Ok(status) => {
            // The step is done; give the pipes a moment to drain, then stop anything it left
            // running (which would otherwise hold them open).
            let drain = futures::future::join_all(pumps.iter_mut());
            let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, drain).await;
            process.kill_all().await;
            for p in &pumps {
                p.abort();
            }
            let status = status.map_err(|source| StepError::Spawn {
                program: display.to_owned(),
                source,
            })?;
            if over.is_cancelled() {
                return Err(StepError::TooMuchOutput(limits.max_output_bytes));
            }
            if status.success() {
                Ok(())
            } else if let Some(limit) = process.limit_hit() {
                Err(StepError::Limit {
                    program: display.to_owned(),
                    status,
                    limit,
                })
            } else {
                Err(StepError::Exit {
                    program: display.to_owned(),
                    status,
                })
            }
        }
        Err(e) => {
            process.kill_all().await;
            for p in &pumps {
                p.abort();
            }
            Err(e)
        }
    }
}

/// Copy one output stream into the log, line by line, counting against the output budget.
async fn pump(
    mut r: impl AsyncRead + Unpin,
    stream: LogStream,
    log: BuildLog,
    max: u64,
    over: CancellationToken,
) {
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if log.count_output(n) > max {
            over.cancel();
            break;
        }
        pending.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some(pos) = pending[start..].iter().position(|b| *b == b'\n') {
            emit(&log, stream, &pending[start..start + pos]);
            start += pos + 1;
        }
        pending.drain(..start);
        while pending.len() > MAX_LINE {
            let rest = pending.split_off(MAX_LINE);
            emit(&log, stream, &pending);
            pending = rest;
        }
    }
    if !pending.is_empty() {
        emit(&log, stream, &pending);
    }
}

fn emit(log: &BuildLog, stream: LogStream, line: &[u8]) {
    let line = String::from_utf8_lossy(line);
    // Progress bars redraw with '\r'; keep what was drawn last.
    let line = line.trim_end_matches('\r');
    let line = line.rsplit('\r').next().unwrap_or(line);
    log.output(stream, line);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> BuildStep {
        BuildStep {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            cwd: std::env::temp_dir(),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            tool_dirs: Vec::new(),
            work_dir: std::env::temp_dir(),
            resources: Default::default(),
        }
    }

    async fn run_step(
        step: &BuildStep,
        display: &str,
        log: &BuildLog,
        limits: &StepLimits,
        cancel: &CancellationToken,
    ) -> Result<(), StepError> {
        super::run_step(&crate::HostRunner, step, display, log, limits, cancel).await
    }

    fn limits(secs: u64, max: u64) -> StepLimits {
        StepLimits {
            deadline: Instant::now() + Duration::from_secs(secs),
            timeout: Duration::from_secs(secs),
            max_output_bytes: max,
        }
    }

    #[tokio::test]
    async fn streams_both_outputs_and_reports_the_exit_status() {
        let log = BuildLog::new(None, 1 << 20);
        let cancel = CancellationToken::new();
        run_step(
            &sh("echo out; echo err >&2; printf 'no newline'"),
            "sh",
            &log,
            &limits(10, 1 << 20),
            &cancel,
        )
        .await
        .expect("ok");
        let text = log.text();
        for l in ["out\n", "err\n", "no newline\n"] {
            assert!(text.contains(l), "{text}");
        }
        let err = run_step(&sh("exit 3"), "sh", &log, &limits(10, 1 << 20), &cancel)
            .await
            .expect_err("fails");
        assert!(matches!(err, StepError::Exit { .. }), "{err}");
        assert_eq!(err.to_string(), "sh failed: exit status 3");
    }

    #[tokio::test]
    async fn the_environment_is_exactly_what_the_step_says() {
        let log = BuildLog::new(None, 1 << 20);
        let mut step = sh("env | sort");
        step.env.push(("SRC_PKG".into(), "/x".into()));
        run_step(
            &step,
            "sh",
            &log,
            &limits(10, 1 << 20),
            &CancellationToken::new(),
        )
        .await
        .expect("ok");
        let vars: Vec<String> = log
            .text()
            .lines()
            .filter_map(|l| l.split('=').next())
            .map(str::to_owned)
            .collect();
        // sh itself may add PWD/SHLVL/_ ; nothing of the server's environment leaks in.
        for v in &vars {
            assert!(
                ["PATH", "SRC_PKG", "PWD", "SHLVL", "_", "OLDPWD"].contains(&v.as_str()),
                "leaked {v}: {vars:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("survivor");
        let log = BuildLog::new(None, 1 << 20);
        let script = format!("(sleep 2; touch {}) & sleep 30", marker.display());
        let started = std::time::Instant::now();
        let err = run_step(
            &sh(&script),
            "sh",
            &log,
            &limits(1, 1 << 20),
            &CancellationToken::new(),
        )
        .await
        .expect_err("times out");
        assert!(matches!(err, StepError::TimedOut(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(
            !marker.exists(),
            "the background child was killed with its group"
        );
    }

    #[tokio::test]
    async fn too_much_output_stops_the_step() {
        let log = BuildLog::new(None, 4096);
        let err = run_step(
            &sh("yes build-output"),
            "sh",
            &log,
            &limits(20, 100_000),
            &CancellationToken::new(),
        )
        .await
        .expect_err("stopped");
        assert!(matches!(err, StepError::TooMuchOutput(100_000)), "{err}");
    }

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_error() {
        let log = BuildLog::new(None, 4096);
        let step = BuildStep {
            program: "/nonexistent/npm".into(),
            ..sh("")
        };
        let err = run_step(
            &step,
            "npm",
            &log,
            &limits(5, 1000),
            &CancellationToken::new(),
        )
        .await
        .expect_err("fails");
        assert!(err.to_string().starts_with("cannot run npm: "), "{err}");
    }

    #[tokio::test]
    async fn a_daemon_left_behind_does_not_hang_the_build() {
        let log = BuildLog::new(None, 4096);
        let started = std::time::Instant::now();
        run_step(
            &sh("sleep 60 & echo started"),
            "sh",
            &log,
            &limits(30, 100_000),
            &CancellationToken::new(),
        )
        .await
        .expect("ok");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(log.text().contains("started"));
    }
}
