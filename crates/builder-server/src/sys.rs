//! The only unsafe code of the builder: signalling a build's process group.
#![allow(unsafe_code)]

/// Kills the build's whole process group when dropped: when the build ends (nothing it forked
/// outlives it) or when its caller gives up and the request future is dropped.
pub(crate) struct GroupGuard(pub(crate) Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let Some(pgid) = self.0.and_then(|p| i32::try_from(p).ok()) else {
            return;
        };
        if pgid <= 1 {
            return; // never signal "every process" (-1) or our own group (0)
        }
        // SAFETY: kill(2) with a negative pid only sends a signal; no memory is involved.
        // ESRCH (group already gone) is expected and ignored.
        let _ = unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
}
