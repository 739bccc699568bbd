//! Boolean flags spelled the way Go's pflag (Fission's CLI) accepts them: `--flag=true`,
//! `--flag=false`, `--flag=1`, `--flag=F`. clap's switches take no value, so scripts written for
//! Fission's CLI would fail; they are rewritten to `--flag` or dropped before parsing.

use std::ffi::OsString;

use clap::{ArgAction, Command};

/// What Go's `strconv.ParseBool` reads as true and false.
fn go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn takes_value(a: &clap::Arg) -> bool {
    matches!(a.get_action(), ArgAction::Set | ArgAction::Append)
}

fn long_arg<'c>(cmd: &'c Command, name: &str) -> Option<&'c clap::Arg> {
    cmd.get_arguments().find(|a| {
        a.get_long() == Some(name) || a.get_all_aliases().is_some_and(|al| al.contains(&name))
    })
}

/// Rewrite Go-style boolean flags in `args` (program name first) for `root`, which must have
/// been built (`Command::build`) so that global flags are visible in every subcommand.
/// Anything not recognised is left for clap to judge.
pub fn go_style_bools(root: &Command, args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut current = root;
    let mut iter = args.into_iter();
    if let Some(program) = iter.next() {
        out.push(program);
    }
    let mut skip_value = false;
    let mut rest_verbatim = false;
    for arg in iter {
        if rest_verbatim || skip_value {
            skip_value = false;
            out.push(arg);
            continue;
        }
        let Some(s) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if s == "--" {
            rest_verbatim = true;
        } else if let Some(long) = s.strip_prefix("--") {
            match long.split_once('=') {
                Some((name, value)) => {
                    if let Some(a) = long_arg(current, name)
                        .filter(|a| matches!(a.get_action(), ArgAction::SetTrue))
                    {
                        match go_bool(value) {
                            Some(true) => out.push(OsString::from(format!(
                                "--{}",
                                a.get_long().unwrap_or(name)
                            ))),
                            Some(false) => {}
                            None => out.push(arg),
                        }
                        continue;
                    }
                }
                None => skip_value = long_arg(current, long).is_some_and(takes_value),
            }
        } else if let Some(short) = s.strip_prefix('-') {
            // `-n default`: the value is the next word; `-ndefault` carries it.
            let mut chars = short.chars();
            if let (Some(c), None) = (chars.next(), chars.next()) {
                skip_value = current
                    .get_arguments()
                    .any(|a| a.get_short() == Some(c) && takes_value(a));
            }
        } else if let Some(sub) = current.find_subcommand(s) {
            current = sub;
        }
        out.push(arg);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    fn cli() -> Command {
        let mut c = Command::new("fission")
            .arg(
                Arg::new("namespace")
                    .long("namespace")
                    .short('n')
                    .global(true),
            )
            .subcommand(
                Command::new("env").alias("environment").subcommand(
                    Command::new("create")
                        .arg(Arg::new("name").long("name"))
                        .arg(
                            Arg::new("keeparchive")
                                .long("keeparchive")
                                .action(ArgAction::SetTrue),
                        )
                        .arg(Arg::new("spec").long("spec").action(ArgAction::SetTrue)),
                ),
            );
        c.build();
        c
    }

    fn run(args: &[&str]) -> Vec<String> {
        let c = cli();
        go_style_bools(&c, args.iter().map(OsString::from))
            .into_iter()
            .map(|s| s.into_string().expect("utf-8"))
            .collect()
    }

    #[test]
    fn go_style_booleans_become_switches_or_vanish() {
        assert_eq!(
            run(&[
                "fission",
                "env",
                "create",
                "--name",
                "x",
                "--keeparchive=true",
                "--spec=false"
            ]),
            ["fission", "env", "create", "--name", "x", "--keeparchive"]
        );
        assert_eq!(
            run(&["fission", "environment", "create", "--spec=T"]),
            ["fission", "environment", "create", "--spec"]
        );
    }

    #[test]
    fn values_and_unknown_spellings_are_left_alone() {
        // The first `env` is the value of --namespace, not the subcommand.
        assert_eq!(
            run(&[
                "fission",
                "--namespace",
                "env",
                "env",
                "create",
                "--spec=true"
            ]),
            ["fission", "--namespace", "env", "env", "create", "--spec"]
        );
        assert_eq!(
            run(&["fission", "--namespace", "env", "--spec=true"]),
            ["fission", "--namespace", "env", "--spec=true"]
        );
        assert_eq!(
            run(&["fission", "env", "create", "--spec=maybe"]),
            ["fission", "env", "create", "--spec=maybe"]
        );
        assert_eq!(
            run(&["fission", "-n", "env", "env", "create", "--spec=1"]),
            ["fission", "-n", "env", "env", "create", "--spec"]
        );
        assert_eq!(
            run(&["fission", "env", "create", "--", "--spec=1"]),
            ["fission", "env", "create", "--", "--spec=1"]
        );
    }
}
