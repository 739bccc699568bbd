//! The [`RemoteBuilds`] port: builds that run outside this process (Fission's builder pods).
//! The build manager still claims the package, keeps the log and records the result; only the
//! fetch–build–upload in between happens elsewhere.

use fission_core::OutputStream;
use fission_core::resources::{Archive, Environment, Package};
use futures::future::BoxFuture;

use crate::log::BuildLog;

/// Where builds of some environments run instead of on this machine.
pub trait RemoteBuilds: Send + Sync + std::fmt::Debug {
    /// Whether packages of `env` are built here (e.g. it names a builder image).
    fn handles(&self, env: &Environment) -> bool;

    /// Build `pkg` (already `running`) of `env`: the deployment archive, already stored where
    /// functions fetch it from, or why the build failed (written to the log as Fission's
    /// `error building source package: …`). Dropping the future abandons the build.
    fn build<'a>(
        &'a self,
        pkg: &'a Package,
        env: &'a Environment,
        log: &'a RemoteLog,
    ) -> BoxFuture<'a, Result<Archive, String>>;

    /// How the build log names where builds run.
    fn describe(&self) -> String;
}

/// The log of a remote build: what the builder printed, and notes of our own.
#[derive(Debug)]
pub struct RemoteLog {
    log: BuildLog,
}

impl RemoteLog {
    pub(crate) fn new(log: BuildLog) -> Self {
        Self { log }
    }

    /// Lines the build printed (one string, split on newlines).
    pub fn output(&self, text: &str) {
        for line in text.lines() {
            self.log.count_output(line.len() + 1);
            self.log.output(OutputStream::Stdout, line);
        }
    }

    /// A line of our own (a step starting, a wait).
    pub fn note(&self, msg: impl AsRef<str>) {
        self.log.note(msg);
    }
}
