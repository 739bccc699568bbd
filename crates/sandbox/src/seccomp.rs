//! The seccomp filters every sandboxed process runs under, compiled with `seccompiler`
//! (rust-vmm / Firecracker) and handed to bubblewrap as raw `sock_filter` arrays
//! (`--add-seccomp-fd`).
//!
//! Two programs, both "allow unless listed" (the kernel applies all of them, the most
//! restrictive answer wins):
//!
//! * **deny** — `EPERM` for system calls a function never needs and that widen the kernel's
//!   attack surface or escape the sandbox: mounts and new mount API, `pivot_root`/`chroot`,
//!   `ptrace` and cross-process memory access, kexec/reboot, kernel modules, BPF,
//!   `perf_event_open`, `userfaultfd`, keyrings, swap, accounting, quotas, clock setting,
//!   file handles, `setns`, `io_uring`, and `clone`/`unshare` with `CLONE_NEWUSER`.
//!   On x86-64 the same calls through the x32 ABI are denied too.
//! * **clone3** — `ENOSYS` for `clone3`, whose flags live in memory a filter cannot inspect;
//!   libc then falls back to `clone`, whose flags the deny program checks.
//!
//! A system call from a foreign architecture (e.g. 32-bit `int 0x80` on x86-64) kills the
//! process (seccompiler's architecture check).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// System calls refused with `EPERM` whatever their arguments.
fn denied_syscalls() -> Vec<i64> {
    #[allow(unused_mut)]
    let mut v = vec![
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_mount_setattr,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_reboot,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_acct,
        libc::SYS_quotactl,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_setns,
        libc::SYS_syslog,
        libc::SYS_vhangup,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        libc::SYS_iopl,
        libc::SYS_ioperm,
        libc::SYS_uselib,
        libc::SYS__sysctl,
        libc::SYS_lookup_dcookie,
        libc::SYS_nfsservctl,
    ]);
    v
}

/// x86-64's x32 ABI: the same calls with bit 30 set, plus the x32-only numbers of calls whose
/// x32 entry differs from the 64-bit one.
#[cfg(target_arch = "x86_64")]
fn x32_aliases(nrs: &[i64]) -> Vec<i64> {
    const X32_BIT: i64 = 0x4000_0000;
    // x32 numbers of ptrace, kexec_load, process_vm_readv, process_vm_writev (arch/x86/entry/
    // syscalls/syscall_64.tbl, "x32" rows).
    const X32_SPECIFIC: [i64; 4] = [521, 528, 539, 540];
    nrs.iter()
        .map(|n| n | X32_BIT)
        .chain(X32_SPECIFIC.iter().map(|n| n | X32_BIT))
        .collect()
}

/// `flags & CLONE_NEWUSER != 0` on the first argument (`clone`, `unshare`).
fn new_user_ns_rule() -> Result<SeccompRule, seccompiler::BackendError> {
    let flag = libc::CLONE_NEWUSER as u64;
    SeccompRule::new(vec![SeccompCondition::new(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(flag),
        flag,
    )?])
}

fn target_arch() -> Result<TargetArch, String> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| format!("seccomp: unsupported architecture: {e:?}"))
}

/// The deny program (see the module docs).
pub(crate) fn deny_program() -> Result<BpfProgram, String> {
    deny_program_allowing(&[])
}

/// The deny program without `setns`, for the Python zygote (which must join slots'
/// namespaces, and does nothing else the deny program refuses). Its children add the regular
/// programs on top before they run anything of a user.
pub(crate) fn zygote_program() -> Result<BpfProgram, String> {
    deny_program_allowing(&[libc::SYS_setns])
}

fn deny_program_allowing(allowed: &[i64]) -> Result<BpfProgram, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let denied: Vec<i64> = denied_syscalls()
        .into_iter()
        .filter(|nr| !allowed.contains(nr))
        .collect();
    for nr in &denied {
        rules.insert(*nr, vec![]);
    }
    #[cfg(target_arch = "x86_64")]
    for nr in x32_aliases(&denied) {
        rules.insert(nr, vec![]);
    }
    let userns = new_user_ns_rule().map_err(|e| format!("seccomp rule: {e}"))?;
    rules.insert(libc::SYS_clone, vec![userns.clone()]);
    rules.insert(libc::SYS_unshare, vec![userns]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        target_arch()?,
    )
    .map_err(|e| format!("seccomp filter: {e}"))?;
    BpfProgram::try_from(filter).map_err(|e| format!("seccomp compile: {e}"))
}

/// The clone3 program (see the module docs).
pub(crate) fn clone3_program() -> Result<BpfProgram, String> {
    let rules: BTreeMap<i64, Vec<SeccompRule>> = [(libc::SYS_clone3, vec![])].into_iter().collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        target_arch()?,
    )
    .map_err(|e| format!("seccomp filter: {e}"))?;
    BpfProgram::try_from(filter).map_err(|e| format!("seccomp compile: {e}"))
}

/// The program as the kernel (and bubblewrap) reads it: `struct sock_filter[]` in native byte
/// order, 8 bytes per instruction.
pub(crate) fn to_bytes(program: &BpfProgram) -> Vec<u8> {
    let mut out = Vec::with_capacity(program.len() * 8);
    for ins in program {
        out.extend_from_slice(&ins.code.to_ne_bytes());
        out.push(ins.jt);
        out.push(ins.jf);
        out.extend_from_slice(&ins.k.to_ne_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_compile_to_whole_instructions() {
        let deny = deny_program().expect("deny program");
        let clone3 = clone3_program().expect("clone3 program");
        assert!(
            deny.len() > 50,
            "deny program suspiciously short: {}",
            deny.len()
        );
        assert_eq!(to_bytes(&deny).len(), deny.len() * 8);
        assert_eq!(to_bytes(&clone3).len(), clone3.len() * 8);
        // BPF programs are limited to 4096 instructions.
        assert!(deny.len() < 4096);
    }
}
