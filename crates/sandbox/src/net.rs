//! Network namespaces, per-slot veth pairs and the run's nftables table.
//!
//! Every slot gets a named network namespace `fission-<run>-<index>` (`/run/netns/…`) with
//! loopback up. The router never connects into it: the runtime serves on a listening socket
//! the host created and passed as fd 3.
//!
//! With egress, a veth pair links it to the host: `fsn<run><index hex>` on the host with
//! `<subnet>.1/30`, `eth0` inside with `<subnet>.2/30` and a default route. The run's table
//! `inet fission-<run>` then
//! * drops everything a slot sends to the host itself (`input` hook, IPv4 and IPv6, any host
//!   address — the host's loopback-bound listeners are out of reach anyway: a netns has its
//!   own loopback, and the kernel drops packets for 127/8 arriving on a veth as martians);
//! * forwards a slot's traffic to the outside only: not to another slot, not to link-local
//!   (169.254/16, cloud metadata), not to the slot pool's range, no IPv6; replies come back
//!   through connection tracking;
//! * masquerades the slot pool's range on the way out.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::Error;

/// Absolute paths of the tools we run.
#[derive(Debug, Clone)]
pub(crate) struct NetTools {
    pub(crate) ip: std::path::PathBuf,
    pub(crate) nft: Option<std::path::PathBuf>,
}

/// Run `program args…` (with `stdin` fed in, if any) and turn failure into [`Error::Command`].
pub(crate) fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> Result<(), Error> {
    let describe = || format!("{} {}", program.display(), args.join(" "));
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("spawn {}", describe()), e))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|e| Error::io(format!("feed {}", describe()), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io(format!("wait {}", describe()), e))?;
    if out.status.success() {
        Ok(())
    } else {
        let stdin_note = stdin
            .map(|s| format!(" <<< {:?}", s.trim()))
            .unwrap_or_default();
        Err(Error::Command {
            command: format!("{}{stdin_note}", describe()),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Addresses of slot `index` in the pool starting at `base` (/30 per slot).
pub(crate) fn slot_addrs(base: Ipv4Addr, index: u32) -> (Ipv4Addr, Ipv4Addr) {
    let net = u32::from(base).wrapping_add(index.wrapping_mul(4));
    (Ipv4Addr::from(net + 1), Ipv4Addr::from(net + 2))
}

/// What one slot's network looks like.
#[derive(Debug, Clone)]
pub(crate) struct SlotNet {
    /// Namespace name (`/run/netns/<name>`).
    pub(crate) netns: String,
    /// Host end of the veth pair, when egress is on.
    pub(crate) veth: Option<String>,
    /// (host, slot) addresses, when egress is on.
    pub(crate) addrs: Option<(Ipv4Addr, Ipv4Addr)>,
}

/// Create the namespace and, with `egress`, the veth pair and routes: one `ip -batch` on the
/// host side, one inside the namespace. (Loopback is brought up by the slot's first process,
/// see `sys::ChildSetup`.) On error, whatever was created is removed.
pub(crate) fn create_slot_net(
    tools: &NetTools,
    netns: &str,
    veth: Option<(&str, Ipv4Addr, Ipv4Addr)>,
) -> Result<SlotNet, Error> {
    let net = SlotNet {
        netns: netns.to_owned(),
        veth: veth.map(|v| v.0.to_owned()),
        addrs: veth.map(|v| (v.1, v.2)),
    };
    let result = (|| {
        let Some((host_if, host_ip, slot_ip)) = veth else {
            return run(&tools.ip, &["netns", "add", netns], None);
        };
        let host = format!(
            "netns add {netns}\n\
             link add {host_if} type veth peer name eth0 netns {netns}\n\
             addr add {host_ip}/30 dev {host_if}\n\
             link set {host_if} up\n"
        );
        run(&tools.ip, &["-batch", "-"], Some(&host))?;
        // No IPv6 on the host end: no link-local address a slot could talk to.
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{host_if}/disable_ipv6"),
            "1",
        );
        let inside = format!(
            "addr add {slot_ip}/30 dev eth0\n\
             link set eth0 up\n\
             route add default via {host_ip} dev eth0 onlink\n"
        );
        run(&tools.ip, &["-n", netns, "-batch", "-"], Some(&inside))
    })();
    match result {
        Ok(()) => Ok(net),
        Err(e) => {
            let _ = destroy_slot_net(tools, &net);
            Err(e)
        }
    }
}

/// Remove the veth (if any) and the namespace. Missing pieces count as removed.
pub(crate) fn destroy_slot_net(tools: &NetTools, net: &SlotNet) -> Result<(), Error> {
    // One `ip` run for both; -force keeps going past a piece that is already gone.
    let mut script = String::new();
    if let Some(v) = net.veth.as_deref().filter(|v| link_exists(v)) {
        script.push_str(&format!("link del {v}\n"));
    }
    if netns_exists(&net.netns) {
        script.push_str(&format!("netns del {}\n", net.netns));
    }
    if script.is_empty() {
        return Ok(());
    }
    let result = run(&tools.ip, &["-force", "-batch", "-"], Some(&script));
    let left = net.veth.as_deref().is_some_and(link_exists) || netns_exists(&net.netns);
    match result {
        Err(e) if left => Err(e),
        _ if left => Err(Error::Command {
            command: format!("{} -force -batch - <<< {script:?}", tools.ip.display()),
            status: "exit status: 0".to_owned(),
            stderr: "network namespace or veth still present afterwards".to_owned(),
        }),
        _ => Ok(()),
    }
}

pub(crate) fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

pub(crate) fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Names in `/run/netns` starting with `prefix`.
pub(crate) fn list_netns(prefix: &str) -> Vec<String> {
    list_names(Path::new("/run/netns"), prefix)
}

/// Host interfaces whose name starts with `prefix`.
pub(crate) fn list_links(prefix: &str) -> Vec<String> {
    list_names(Path::new("/sys/class/net"), prefix)
}

fn list_names(dir: &Path, prefix: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// The nftables script creating the run's table. `if_prefix` matches the host ends of this
/// run's veths, `all_if_prefix` those of every run; `pool` is the slot pool (`a.b.c.d/len`).
pub(crate) fn firewall_script(
    table: &str,
    if_prefix: &str,
    all_if_prefix: &str,
    pool: &str,
) -> String {
    format!(
        r#"table inet {table}
delete table inet {table}
table inet {table} {{
  chain input {{
    type filter hook input priority -10; policy accept;
    iifname "{if_prefix}*" counter drop
  }}
  chain forward {{
    type filter hook forward priority -10; policy accept;
    iifname "{if_prefix}*" oifname "{all_if_prefix}*" counter drop
    iifname "{if_prefix}*" meta nfproto ipv6 counter drop
    iifname "{if_prefix}*" ip daddr {{ 169.254.0.0/16, {pool}, 127.0.0.0/8 }} counter drop
    iifname "{if_prefix}*" accept
    oifname "{if_prefix}*" ct state established,related accept
    oifname "{if_prefix}*" counter drop
  }}
  chain postrouting {{
    type nat hook postrouting priority 100; policy accept;
    ip saddr {pool} oifname != "{all_if_prefix}*" masquerade
  }}
}}
"#
    )
}

/// Install (or replace) the run's table.
pub(crate) fn install_firewall(nft: &Path, script: &str) -> Result<(), Error> {
    run(nft, &["-f", "-"], Some(script))
}

/// Delete a table; a missing table is fine.
pub(crate) fn delete_table(nft: &Path, table: &str) -> Result<(), Error> {
    // "table X" then "delete table X" in one transaction: succeeds whether or not it existed.
    run(
        nft,
        &["-f", "-"],
        Some(&format!("table inet {table}\ndelete table inet {table}\n")),
    )
}

/// Names of `inet` tables starting with `prefix`.
pub(crate) fn list_tables(nft: &Path, prefix: &str) -> Vec<String> {
    let Ok(out) = Command::new(nft)
        .args(["list", "tables"])
        .stderr(Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("table inet "))
        .map(|t| t.trim().to_owned())
        .filter(|t| t.starts_with(prefix))
        .collect()
}

/// Turn on IPv4 forwarding (needed to route slot traffic to the outside). Machine-wide.
pub(crate) fn enable_ip_forward() -> Result<(), Error> {
    let p = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(p)
        .map(|s| s.trim() == "1")
        .unwrap_or(false)
    {
        return Ok(());
    }
    std::fs::write(p, "1").map_err(|e| Error::io("enable net.ipv4.ip_forward", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_get_disjoint_slash30s() {
        let base = Ipv4Addr::new(10, 213, 0, 0);
        assert_eq!(
            slot_addrs(base, 0),
            (Ipv4Addr::new(10, 213, 0, 1), Ipv4Addr::new(10, 213, 0, 2))
        );
        assert_eq!(
            slot_addrs(base, 1),
            (Ipv4Addr::new(10, 213, 0, 5), Ipv4Addr::new(10, 213, 0, 6))
        );
        assert_eq!(
            slot_addrs(base, 64),
            (Ipv4Addr::new(10, 213, 1, 1), Ipv4Addr::new(10, 213, 1, 2))
        );
    }

    #[test]
    fn firewall_blocks_input_from_this_runs_slots() {
        let s = firewall_script("fission-abc123", "fsnabc123", "fsn", "10.213.0.0/16");
        assert!(s.contains(r#"iifname "fsnabc123*" counter drop"#));
        assert!(s.contains("masquerade"));
    }
}
