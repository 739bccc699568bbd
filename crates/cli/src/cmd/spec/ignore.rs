//! `.specignore`: gitignore-style patterns, matched against paths relative to the spec
//! directory.
//!
//! * blank lines and lines starting with `#` are skipped (`\#` for a literal `#`);
//! * `!pattern` re-includes what an earlier pattern excluded;
//! * a trailing `/` matches directories only (and so everything below them);
//! * a pattern containing `/` (other than a trailing one) is matched against the whole relative
//!   path (a leading `/` anchors it to the spec directory); otherwise against the file name at
//!   any depth;
//! * `*`, `?`, `[...]` and `**` work as in gitignore.

use std::path::Path;

#[derive(Debug, Clone)]
struct Rule {
    pattern: glob::Pattern,
    negate: bool,
    dir_only: bool,
    anchored: bool,
}

/// Parsed ignore patterns; the last matching pattern decides.
#[derive(Debug, Clone, Default)]
pub(crate) struct IgnoreRules {
    rules: Vec<Rule>,
}

const MATCH: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

impl IgnoreRules {
    pub(crate) fn parse(text: &str) -> Self {
        let mut rules = Vec::new();
        for line in text.lines() {
            let mut p = line.trim_end();
            if p.trim().is_empty() || p.starts_with('#') {
                continue;
            }
            if let Some(rest) = p.strip_prefix('\\') {
                p = rest;
            }
            let negate = p.starts_with('!');
            if negate {
                p = &p[1..];
            }
            let dir_only = p.ends_with('/');
            let p = p.trim_end_matches('/');
            let anchored = p.contains('/');
            let p = p.trim_start_matches('/');
            if p.is_empty() {
                continue;
            }
            // A pattern that glob cannot compile is taken literally.
            let pattern = glob::Pattern::new(p).unwrap_or_else(|_| {
                glob::Pattern::new(&glob::Pattern::escape(p)).unwrap_or_default()
            });
            rules.push(Rule {
                pattern,
                negate,
                dir_only,
                anchored,
            });
        }
        Self { rules }
    }

    /// Whether `rel` (relative to the spec directory) is ignored. Directories are checked as
    /// the walk reaches them, so an ignored directory hides everything below it.
    pub(crate) fn is_ignored(&self, rel: &Path, is_dir: bool) -> bool {
        let path: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let joined = path.join("/");
        let base = path.last().cloned().unwrap_or_default();
        let mut ignored = false;
        for r in &self.rules {
            if r.dir_only && !is_dir {
                continue;
            }
            let hit = if r.anchored {
                r.pattern.matches_with(&joined, MATCH)
                    || (r.pattern.as_str().starts_with("**/")
                        && r.pattern.matches_with(&format!("x/{joined}"), MATCH))
            } else {
                r.pattern.matches_with(&base, MATCH)
            };
            if hit {
                ignored = !r.negate;
            }
        }
        ignored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignored(rules: &str, path: &str, is_dir: bool) -> bool {
        IgnoreRules::parse(rules).is_ignored(Path::new(path), is_dir)
    }

    #[test]
    fn plain_names_and_globs_match_at_any_depth() {
        assert!(ignored("old.yaml", "old.yaml", false));
        assert!(ignored("old.yaml", "sub/old.yaml", false));
        assert!(ignored("*.bak.yaml", "x/y.bak.yaml", false));
        assert!(!ignored("old.yaml", "new.yaml", false));
    }

    #[test]
    fn patterns_with_a_slash_are_anchored_to_the_spec_directory() {
        assert!(ignored("/top.yaml", "top.yaml", false));
        assert!(!ignored("/top.yaml", "sub/top.yaml", false));
        assert!(ignored("sub/*.yaml", "sub/a.yaml", false));
        assert!(!ignored("sub/*.yaml", "sub/deeper/a.yaml", false));
        assert!(ignored("**/gen/*.yaml", "a/b/gen/x.yaml", false));
        assert!(ignored("**/gen/*.yaml", "gen/x.yaml", false));
    }

    #[test]
    fn trailing_slash_matches_directories_only() {
        assert!(ignored("drafts/", "drafts", true));
        assert!(!ignored("drafts/", "drafts", false));
    }

    #[test]
    fn negation_re_includes_and_comments_are_skipped() {
        let rules = "# all yaml but one\n*.yaml\n!keep.yaml\n\n";
        assert!(ignored(rules, "x.yaml", false));
        assert!(!ignored(rules, "keep.yaml", false));
    }
}
