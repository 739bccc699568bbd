//! The executor's side of the Python zygote (`environments/python/zygote.py`): one
//! pre-initialized interpreter per server that forks runtime instances, each of which joins a
//! sandbox slot's confinement before it loads anything of the user (see ARCHITECTURE.md,
//! "Python zygote").
//!
//! The zygote is a child of this server with a `SOCK_SEQPACKET` control socket on fd 3.
//! Requests are JSON messages carrying descriptors (SCM_RIGHTS); a reader thread takes the
//! answers and the zygote's reports of its children's exits.

use std::collections::HashMap;
use std::io;
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::net::{
    AddressFamily, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags,
    SocketType,
};
use tokio::sync::{oneshot, watch};

use crate::launcher::{LogSink, OutputStream, pump_lines};
use crate::sys;

/// Largest message the zygote sends (JSON of an answer or exit report).
const MAX_ANSWER: usize = 64 * 1024;
/// Most descriptors one request carries (the zygote refuses more).
pub(crate) const MAX_FDS: usize = 32;
/// How long the zygote may take to import the loader and report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a fork request may take.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(10);

/// How to start the zygote.
#[derive(Debug, Clone)]
pub struct ZygoteConfig {
    /// The Python interpreter (the one instances run with).
    pub python: PathBuf,
    /// `zygote.py` on the host.
    pub script: PathBuf,
}

/// Why the zygote could not start or fork.
#[derive(Debug, thiserror::Error)]
pub enum ZygoteError {
    /// Starting the zygote failed.
    #[error("cannot start the Python zygote ({script}): {reason}")]
    Start {
        /// `zygote.py`.
        script: PathBuf,
        /// Why.
        reason: String,
    },
    /// The zygote is gone (it crashed or was killed); a new one starts on the next request.
    #[error("the Python zygote exited")]
    Gone,
    /// The zygote refused the request (its message).
    #[error("the Python zygote refused to fork: {0}")]
    Refused(String),
    /// Talking to it failed.
    #[error("talking to the Python zygote failed: {0}")]
    Io(#[from] io::Error),
}

/// How a zygote child ended (`exit status N`, `killed by signal N`, or that the zygote died).
pub(crate) type ChildExit = watch::Receiver<Option<String>>;

type Answer = Result<(u32, ChildExit), ZygoteError>;

#[derive(Default)]
struct Shared {
    pending: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    children: Mutex<HashMap<u32, watch::Sender<Option<String>>>>,
    alive: AtomicBool,
}

/// A running zygote. Dropping it closes the control socket, which ends the zygote.
pub(crate) struct Zygote {
    sock: Mutex<OwnedFd>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    pid: Option<u32>,
    _process: tokio::process::Child,
}

impl std::fmt::Debug for Zygote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zygote").field("pid", &self.pid).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Zygote {
    /// Start a zygote and wait until it has imported the loader. Its own output goes to `log`.
    /// `seccomp`: filters the zygote installs on itself before it does anything else (none:
    /// it runs unfiltered).
    pub(crate) async fn start(
        config: &ZygoteConfig,
        log: LogSink,
        seccomp: Vec<std::fs::File>,
    ) -> Result<Self, ZygoteError> {
        let fail = |reason: String| ZygoteError::Start {
            script: config.script.clone(),
            reason,
        };
        let (ours, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| fail(format!("socketpair: {e}")))?;
        let mut cmd = tokio::process::Command::new(&config.python);
        cmd.arg("-I")
            .arg("-S")
            .arg(&config.script)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("FISSION_ZYGOTE_FD", sys::LISTEN_FD.to_string())
            .env(
                "FISSION_ZYGOTE_SECCOMP",
                if seccomp.is_empty() { "" } else { "1" },
            )
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        sys::inherit_as_listen_fd(&mut cmd, theirs.as_raw_fd());
        let mut process = cmd.spawn().map_err(|e| fail(e.to_string()))?;
        drop(theirs);
        if let Some(out) = process.stdout.take() {
            tokio::spawn(pump_lines(out, OutputStream::Stdout, log.clone()));
        }
        if let Some(err) = process.stderr.take() {
            tokio::spawn(pump_lines(err, OutputStream::Stderr, log.clone()));
        }
        let pid = process.id();
        if !seccomp.is_empty() {
            let fds: Vec<BorrowedFd<'_>> = seccomp.iter().map(AsFd::as_fd).collect();
            send_with_fds(&ours, br#"{"op":"confine"}"#, &fds)
                .map_err(|e| fail(format!("cannot send its seccomp programs: {e}")))?;
        }

        let shared = Arc::new(Shared::default());
        shared.alive.store(true, Ordering::SeqCst);
        let reader_sock = ours.try_clone().map_err(|e| fail(e.to_string()))?;
        let (ready_tx, ready_rx) = oneshot::channel();
        let reader_shared = shared.clone();
        std::thread::Builder::new()
            .name("zygote-reader".into())
            .spawn(move || read_answers(reader_sock, reader_shared, ready_tx))
            .map_err(|e| fail(e.to_string()))?;
        match tokio::time::timeout(READY_TIMEOUT, ready_rx).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return Err(fail(format!(
                    "it exited while starting: {}",
                    log.recent_output()
                )));
            }
            Err(_) => return Err(fail(format!("not ready within {READY_TIMEOUT:?}"))),
        }
        Ok(Self {
            sock: Mutex::new(ours),
            shared,
            next_id: AtomicU64::new(1),
            pid,
            _process: process,
        })
    }

    /// Whether the zygote still answers.
    pub(crate) fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::SeqCst)
    }

    /// Host pid of the zygote.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Ask for a child: `request` (a JSON object; `id` and `fds` are filled in here) with
    /// `fds`, each named. Returns its host pid and a watch of its exit.
    pub(crate) async fn spawn(
        &self,
        mut request: serde_json::Map<String, serde_json::Value>,
        fds: &[(&str, BorrowedFd<'_>)],
    ) -> Answer {
        if fds.len() > MAX_FDS {
            return Err(ZygoteError::Refused(format!(
                "{} descriptors, at most {MAX_FDS}",
                fds.len()
            )));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        request.insert("op".into(), "spawn".into());
        request.insert("id".into(), id.into());
        request.insert(
            "fds".into(),
            fds.iter()
                .map(|(n, _)| serde_json::Value::from(*n))
                .collect(),
        );
        let body = serde_json::to_vec(&request).map_err(io::Error::other)?;
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.pending).insert(id, tx);
        if !self.is_alive() {
            lock(&self.shared.pending).remove(&id);
            return Err(ZygoteError::Gone);
        }
        let raw: Vec<BorrowedFd<'_>> = fds.iter().map(|(_, fd)| *fd).collect();
        let sent = send_with_fds(&lock(&self.sock), &body, &raw);
        if let Err(e) = sent {
            lock(&self.shared.pending).remove(&id);
            return Err(ZygoteError::Io(e));
        }
        match tokio::time::timeout(SPAWN_TIMEOUT, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(ZygoteError::Gone),
            Err(_) => {
                lock(&self.shared.pending).remove(&id);
                Err(ZygoteError::Refused(format!(
                    "no answer within {SPAWN_TIMEOUT:?}"
                )))
            }
        }
    }
}

/// One message with descriptors attached (SCM_RIGHTS); at most [`MAX_FDS`].
fn send_with_fds(sock: &OwnedFd, body: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other(format!("more than {MAX_FDS} descriptors")));
    }
    rustix::net::sendmsg(
        sock.as_fd(),
        &[IoSlice::new(body)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    Ok(())
}

/// The reader thread: answers to requests, exit reports, and the end of the zygote.
fn read_answers(sock: OwnedFd, shared: Arc<Shared>, ready: oneshot::Sender<()>) {
    let mut ready = Some(ready);
    let mut buf = vec![0u8; MAX_ANSWER];
    loop {
        let n = match rustix::net::recv(&sock, &mut buf[..], RecvFlags::empty()) {
            Ok((n, _)) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => 0,
        };
        if n == 0 {
            break;
        }
        let Ok(msg) = serde_json::from_slice::<serde_json::Value>(&buf[..n]) else {
            tracing::warn!("the Python zygote sent a message that is not JSON");
            continue;
        };
        if msg.get("ready").is_some() {
            if let Some(r) = ready.take() {
                let _ = r.send(());
            }
        } else if let Some(pid) = msg.get("exit").and_then(|p| p.as_u64()) {
            let status = if let Some(sig) = msg.get("signal").and_then(|s| s.as_i64()) {
                format!("killed by signal {sig}")
            } else {
                let code = msg.get("code").and_then(|c| c.as_i64()).unwrap_or(-1);
                format!("exit status {code}")
            };
            if let Some(tx) = u32::try_from(pid)
                .ok()
                .and_then(|p| lock(&shared.children).remove(&p))
            {
                let _ = tx.send(Some(status));
            }
        } else if let Some(id) = msg.get("id").and_then(|i| i.as_u64()) {
            let Some(tx) = lock(&shared.pending).remove(&id) else {
                continue;
            };
            let answer = match (msg.get("pid").and_then(|p| p.as_u64()), msg.get("error")) {
                (Some(pid), _) => match u32::try_from(pid) {
                    Ok(pid) => {
                        // Registered before the answer is handed on: the exit report of this
                        // pid can only come after this message.
                        let (exit_tx, exit_rx) = watch::channel(None);
                        lock(&shared.children).insert(pid, exit_tx);
                        Ok((pid, exit_rx))
                    }
                    Err(_) => Err(ZygoteError::Refused(format!("bad pid {pid}"))),
                },
                (None, Some(e)) => Err(ZygoteError::Refused(
                    e.as_str().unwrap_or("unknown error").to_owned(),
                )),
                (None, None) => Err(ZygoteError::Refused("an empty answer".into())),
            };
            let _ = tx.send(answer);
        }
    }
    shared.alive.store(false, Ordering::SeqCst);
    for (_, tx) in lock(&shared.pending).drain() {
        let _ = tx.send(Err(ZygoteError::Gone));
    }
    // Its children may live on (re-parented); whoever owns them must kill them now.
    for (_, tx) in lock(&shared.children).drain() {
        let _ = tx.send(Some("the Python zygote exited".to_owned()));
    }
}
