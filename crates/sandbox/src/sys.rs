//! The only place with `unsafe`: thin wrappers over a handful of libc calls, and the code that
//! runs in the forked child between `fork` and `exec` of bubblewrap.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

/// The effective user id of this process.
pub(crate) fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Send `signal` to `pid`. `ESRCH` (already gone) counts as success.
pub(crate) fn kill(pid: i32, signal: i32) -> io::Result<()> {
    if pid <= 0 {
        // Never signal a process group or "every process" by accident.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to signal pid <= 0",
        ));
    }
    // SAFETY: kill takes plain integers; pid > 0 addresses exactly one process.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(err)
    }
}

/// Try to take an exclusive `flock` on `file` without blocking. `Ok(false)`: someone else
/// holds it. `flock` locks belong to the open file description, so a second `open` of the same
/// file in this very process conflicts too (unlike POSIX record locks).
pub(crate) fn try_flock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: flock only takes a descriptor we own (borrowed from `file`) and flags.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// What the child does between `fork` and `exec` of bubblewrap, in this order:
///
/// 1. joins the slot's cgroups (writes `0`, i.e. "myself", to each pre-opened `cgroup.procs`);
/// 2. with bind mounts: enters a new mount namespace (propagation from it to the host's cut
///    off) and bind-mounts each (source, mount point) there, while still root;
/// 3. joins the slot's network namespace (`setns` on a pre-opened `/run/netns/…` descriptor)
///    and brings its loopback interface up;
/// 4. places the inherited descriptors at their fixed numbers (listener on 3, seccomp
///    programs after it) without close-on-exec, and marks every higher one close-on-exec;
/// 5. drops every supplementary group, then gid, then uid to the slot's unprivileged ids;
/// 6. sets `no_new_privs`.
///
/// Every descriptor here was opened by the parent before forking; the child only uses
/// async-signal-safe system calls and allocates nothing.
#[derive(Debug, Clone)]
pub(crate) struct ChildSetup {
    pub(crate) cgroup_procs: Vec<RawFd>,
    pub(crate) netns: RawFd,
    /// (descriptor in the parent, number it must have in the child)
    pub(crate) fd_map: Vec<(RawFd, RawFd)>,
    /// (source directory, mount point) bound in a private mount namespace of the child.
    pub(crate) bind_mounts: Vec<(CString, CString)>,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// Lowest number used to park descriptors while moving them into place, above any target.
const PARK_FLOOR: RawFd = 64;
/// Most descriptors [`ChildSetup::fd_map`] may hold (the child cannot allocate).
const MAX_FDS: usize = 8;

impl ChildSetup {
    fn run(&self) -> io::Result<()> {
        for &fd in &self.cgroup_procs {
            // SAFETY: `fd` is an open cgroup.procs file owned by the parent (kept alive until
            // spawn returns); the buffer is a static one-byte string.
            let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
            if n != 1 {
                return Err(io::Error::last_os_error());
            }
        }
        if !self.bind_mounts.is_empty() {
            // SAFETY: unshare/mount take flags and NUL-terminated strings prepared by the
            // parent (alive until spawn returns); the child is single-threaded.
            unsafe {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // Nothing mounted from here on may propagate back to the host.
                if libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_SLAVE,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                for (source, point) in &self.bind_mounts {
                    if libc::mount(
                        source.as_ptr(),
                        point.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
            }
        }
        // SAFETY: `netns` is an open namespace descriptor owned by the parent; the child is
        // single-threaded, as setns(CLONE_NEWNET) requires.
        if unsafe { libc::setns(self.netns, libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        bring_loopback_up()?;
        if self.fd_map.len() > MAX_FDS {
            return Err(io::Error::from_raw_os_error(libc::EMFILE));
        }
        // Park every source above all targets first, so that moving one into place can never
        // clobber another source that happens to sit on a target number.
        let mut parked = [-1 as RawFd; MAX_FDS];
        for (i, &(src, _)) in self.fd_map.iter().enumerate() {
            // SAFETY: F_DUPFD on an open descriptor; the copy is not close-on-exec.
            let p = unsafe { libc::fcntl(src, libc::F_DUPFD, PARK_FLOOR) };
            if p < 0 {
                return Err(io::Error::last_os_error());
            }
            parked[i] = p;
        }
        for (i, &(_, dst)) in self.fd_map.iter().enumerate() {
            // SAFETY: dup2 between descriptors of this (child) process; the new descriptor has
            // no close-on-exec flag, so bubblewrap and the runtime inherit it.
            if unsafe { libc::dup2(parked[i], dst) } < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: closing our own parked copy.
            unsafe { libc::close(parked[i]) };
        }
        // Nothing else of this process reaches bubblewrap, even descriptors some library
        // opened without close-on-exec: mark everything above our targets close-on-exec.
        // (close_range with CLOSE_RANGE_CLOEXEC, Linux 5.11+; older kernels refuse the flag
        // and then only the usual close-on-exec hygiene applies.)
        let first_free = self.fd_map.iter().map(|&(_, dst)| dst).max().unwrap_or(2) + 1;
        // SAFETY: close_range only changes descriptor flags of this (child) process.
        unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first_free as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
        }
        // SAFETY: plain credential calls; order matters (groups and gid while still root).
        unsafe {
            if libc::setgroups(0, std::ptr::null()) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setresgid(self.gid, self.gid, self.gid) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setresuid(self.uid, self.uid, self.uid) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(
                libc::PR_SET_NO_NEW_PRIVS,
                1 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Arrange for [`run`](Self::run) to happen in the child of `cmd`.
    pub(crate) fn install(self, cmd: &mut tokio::process::Command) {
        // SAFETY: the closure only performs async-signal-safe system calls on integers and
        // descriptors captured by value, with no allocation and no locks (see `run`).
        unsafe {
            cmd.pre_exec(move || self.run());
        }
    }
}

/// `ip link set lo up` in the current network namespace, with two ioctls (no allocation).
fn bring_loopback_up() -> io::Result<()> {
    // SAFETY: socket() takes integers; the descriptor is closed below on every path.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write `ifr`, which lives on our stack and has
    // the layout the kernel expects; `ifru_flags` is the union member these ioctls use.
    let result = unsafe {
        if libc::ioctl(sock, libc::SIOCGIFFLAGS as _, &mut ifr) != 0 {
            Err(io::Error::last_os_error())
        } else {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(sock, libc::SIOCSIFFLAGS as _, &ifr) != 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: closing the socket we opened above.
    unsafe { libc::close(sock) };
    result
}
