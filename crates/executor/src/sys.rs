//! The only unsafe code of the executor: what the child must do between `fork` and `exec` to
//! inherit its listening socket as fd 3, and signalling a process group.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;

/// The descriptor number the runtimes expect their listening socket on (`FISSION_LISTEN_FD`).
pub(crate) const LISTEN_FD: RawFd = 3;

/// Make the child see `fd` as [`LISTEN_FD`], without the close-on-exec flag.
///
/// The caller must keep `fd` open until the child has been spawned.
pub(crate) fn inherit_as_listen_fd(cmd: &mut tokio::process::Command, fd: RawFd) {
    let hook = move || -> io::Result<()> {
        if fd == LISTEN_FD {
            // dup2 onto itself is a no-op that would leave FD_CLOEXEC set; clear it instead.
            // SAFETY: fcntl on a descriptor number is async-signal-safe and touches no memory.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0
            {
                return Err(io::Error::last_os_error());
            }
        } else {
            // SAFETY: dup2 is async-signal-safe; the new descriptor does not inherit FD_CLOEXEC.
            if unsafe { libc::dup2(fd, LISTEN_FD) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec. It only calls dup2/fcntl (both
    // async-signal-safe), allocates nothing and takes no locks, so it cannot deadlock on state
    // another thread of this process held at fork time.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// Send SIGKILL to every process in process group `pgid` (the runtime and anything it forked).
///
/// Only call this while the group leader has not been reaped yet, or right after, so the id
/// cannot have been reused by an unrelated group.
pub(crate) fn kill_process_group(pgid: u32) {
    let Ok(pgid) = i32::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return; // never signal "every process" (-1) or our own group (0)
    }
    // SAFETY: kill(2) with a negative pid only sends a signal; no memory is involved.
    // ESRCH (group already gone) is expected and ignored.
    let _ = unsafe { libc::kill(-pgid, libc::SIGKILL) };
}
