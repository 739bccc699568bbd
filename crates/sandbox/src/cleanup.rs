//! Removing what dead runs (crashed servers) left behind.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use crate::cgroup;
use crate::net;
use crate::sandbox::{IF_PREFIX, PREFIX, RUN_ID_LEN, Run};
use crate::{Error, sys};

/// What [`Sandbox::cleanup_leftovers`](crate::Sandbox::cleanup_leftovers) removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Run ids found dead and cleaned.
    pub dead_runs: Vec<String>,
    /// Processes that were still alive in their cgroups and were killed.
    pub processes_killed: usize,
    /// Slot cgroups removed (counted in the pids hierarchy).
    pub cgroups: usize,
    /// Network namespaces removed.
    pub netns: usize,
    /// Host veth interfaces removed.
    pub veths: usize,
    /// nftables tables removed.
    pub tables: usize,
    /// Slot directories removed.
    pub slot_dirs: usize,
    /// Index claims released.
    pub claims: usize,
    /// What could not be removed.
    pub errors: Vec<String>,
}

impl CleanupReport {
    /// Whether anything at all was found.
    pub fn is_empty(&self) -> bool {
        self.dead_runs.is_empty()
    }
}

fn is_run_id(s: &str) -> bool {
    s.len() == RUN_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The run id in `fission-<run>` or `fission-<run>-<index>`.
fn run_of_name(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(PREFIX)?;
    let id = rest.get(..RUN_ID_LEN)?;
    let tail = &rest[RUN_ID_LEN..];
    (is_run_id(id) && (tail.is_empty() || tail.starts_with('-'))).then_some(id)
}

/// The run id in `fsn<run><index hex>`.
fn run_of_link(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(IF_PREFIX)?;
    let id = rest.get(..RUN_ID_LEN)?;
    (is_run_id(id) && rest.len() > RUN_ID_LEN).then_some(id)
}

fn list_dir(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn cleanup(run: &Run) -> Result<CleanupReport, Error> {
    let mut report = CleanupReport::default();
    let runs_dir = run.config.state_dir.join("runs");
    let cg = &run.caps.cgroups;

    // Every run id we can see traces of.
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for n in list_dir(&runs_dir) {
        let id = n.strip_suffix(".lock").unwrap_or(&n);
        if is_run_id(id) {
            seen.insert(id.to_owned());
        }
    }
    for p in cg.list_run_groups(PREFIX) {
        if let Some(id) = p
            .file_name()
            .and_then(|n| run_of_name(&n.to_string_lossy()).map(str::to_owned))
        {
            seen.insert(id);
        }
    }
    for n in net::list_netns(PREFIX)
        .iter()
        .chain(list_dir(&run.slots_dir).iter())
    {
        if let Some(id) = run_of_name(n) {
            seen.insert(id.to_owned());
        }
    }
    for n in net::list_links(IF_PREFIX) {
        if let Some(id) = run_of_link(&n) {
            seen.insert(id.to_owned());
        }
    }
    if let Some(nft) = &run.tools.nft {
        for t in net::list_tables(nft, PREFIX) {
            if let Some(id) = run_of_name(&t) {
                seen.insert(id.to_owned());
            }
        }
    }
    for n in list_dir(&run.claims_dir) {
        if let Ok(id) = fs::read_to_string(run.claims_dir.join(&n))
            && is_run_id(id.trim())
        {
            seen.insert(id.trim().to_owned());
        }
    }

    // Dead: not us, and nobody holds its lock. Keep the locks we take until we are done, so
    // a run cannot come back to life under our feet.
    let mut held_locks = Vec::new();
    let mut dead = Vec::new();
    for id in seen {
        if id == run.id {
            continue;
        }
        let lock = runs_dir.join(format!("{id}.lock"));
        match fs::OpenOptions::new().write(true).open(&lock) {
            Ok(f) => match sys::try_flock_exclusive(&f) {
                Ok(true) => {
                    held_locks.push(f);
                    dead.push(id);
                }
                Ok(false) => {} // alive
                Err(e) => report.errors.push(format!("lock {}: {e}", lock.display())),
            },
            // No lock file: its owner is gone (or never finished starting).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => dead.push(id),
            Err(e) => report.errors.push(format!("open {}: {e}", lock.display())),
        }
    }

    for id in &dead {
        let group = format!("{PREFIX}{id}");
        // Processes: count, then kill through the cgroups.
        let pids_run = cg.pids.join(&group);
        for slot in list_dir(&pids_run) {
            let d = pids_run.join(&slot);
            if d.is_dir() {
                report.processes_killed += cgroup::procs(&d).map(|p| p.len()).unwrap_or(0);
            }
        }
        match cgroup::remove_run_group(cg, &group) {
            Ok(n) => report.cgroups += n,
            Err(e) => report.errors.push(format!("cgroups of {group}: {e}")),
        }
        for link in net::list_links(&format!("{IF_PREFIX}{id}")) {
            match net::run(&run.tools.ip, &["link", "del", &link], None) {
                Ok(()) => report.veths += 1,
                Err(e) if !net::link_exists(&link) => {
                    // Went away with its namespace meanwhile.
                    let _ = e;
                }
                Err(e) => report.errors.push(e.to_string()),
            }
        }
        for ns in net::list_netns(&format!("{group}-")) {
            match net::run(&run.tools.ip, &["netns", "del", &ns], None) {
                Ok(()) => report.netns += 1,
                Err(e) => report.errors.push(e.to_string()),
            }
        }
        if let Some(nft) = &run.tools.nft
            && net::list_tables(nft, &group).contains(&group)
        {
            match net::delete_table(nft, &group) {
                Ok(()) => report.tables += 1,
                Err(e) => report.errors.push(e.to_string()),
            }
        }
        for d in list_dir(&run.slots_dir) {
            if d.starts_with(&format!("{group}-")) {
                match fs::remove_dir_all(run.slots_dir.join(&d)) {
                    Ok(()) => report.slot_dirs += 1,
                    Err(e) => report.errors.push(format!("remove {d}: {e}")),
                }
            }
        }
        for n in list_dir(&run.claims_dir) {
            let p = run.claims_dir.join(&n);
            if fs::read_to_string(&p)
                .map(|s| s.trim() == id)
                .unwrap_or(false)
                && fs::remove_file(&p).is_ok()
            {
                report.claims += 1;
            }
        }
        let _ = fs::remove_dir_all(runs_dir.join(id));
        let _ = fs::remove_file(runs_dir.join(format!("{id}.lock")));
    }
    drop(held_locks);
    report.dead_runs = dead;
    if !report.is_empty() {
        tracing::info!(?report, "sandbox: removed leftovers of dead runs");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_only_our_names() {
        assert_eq!(run_of_name("fission-a1b2c3"), Some("a1b2c3"));
        assert_eq!(run_of_name("fission-a1b2c3-17"), Some("a1b2c3"));
        assert_eq!(run_of_name("fission-test-peer"), None);
        assert_eq!(run_of_name("fission-A1B2C3"), None);
        assert_eq!(run_of_name("fission-a1b2c3x"), None);
        assert_eq!(run_of_link("fsna1b2c3f"), Some("a1b2c3"));
        assert_eq!(run_of_link("fsna1b2c3"), None);
        assert_eq!(run_of_link("eth0"), None);
    }
}
