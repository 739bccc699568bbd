//! The only unsafe code of the builder: signalling a build step's process group.
#![allow(unsafe_code)]

/// Send SIGKILL to every process in process group `pgid` (the step and anything it forked).
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
