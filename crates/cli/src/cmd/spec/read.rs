//! Reading a spec directory: every `*.yaml`/`*.yml` file below it (honouring `.specignore`),
//! split into `---`-separated documents, each parsed by its `kind`.
//!
//! Nothing here stops at the first problem: every parse error is collected with the file, line
//! and document it comes from, so a user fixes them all in one go.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use fission_core::resources::{
    EnvironmentSpec, FunctionSpec, HttpTriggerSpec, KubernetesWatchTriggerSpec,
    MessageQueueTriggerSpec, PackageSpec, TimeTriggerSpec,
};
use fission_core::{AnyResource, Object, ResourceKind, Spec};
use serde::{Deserialize, Serialize};

use super::ignore::IgnoreRules;

/// The deployment config file `spec init` writes.
pub(crate) const DEPLOYMENT_CONFIG_FILE: &str = "fission-deployment-config.yaml";
/// The default ignore file inside the spec directory.
pub(crate) const DEFAULT_SPEC_IGNORE: &str = ".specignore";
/// The URL scheme packages use to name an `ArchiveUploadSpec`.
pub(crate) const ARCHIVE_URL_PREFIX: &str = "archive://";

/// `kind: DeploymentConfig`: the identity of a spec directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct DeploymentConfig {
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub(crate) api_version: String,
    #[serde(default)]
    pub(crate) kind: String,
    /// Human-friendly name, stored in the `fission-name` annotation.
    #[serde(default)]
    pub(crate) name: String,
    /// The deployment id, stored in the `fission-uid` annotation.
    #[serde(default)]
    pub(crate) uid: String,
}

/// `kind: ArchiveUploadSpec`: files to turn into a package archive at apply time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ArchiveUploadSpec {
    #[serde(default)]
    pub(crate) kind: String,
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub(crate) api_version: String,
    /// Referenced from packages as `archive://<name>`.
    #[serde(default)]
    pub(crate) name: String,
    /// Directory the globs are relative to (default: the parent of the spec directory).
    #[serde(rename = "rootdir", default, skip_serializing_if = "String::is_empty")]
    pub(crate) root_dir: String,
    /// Files, directories or globs to include.
    #[serde(rename = "include", default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) include: Vec<String>,
    /// Globs removed from what `include` matched.
    #[serde(rename = "exclude", default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) exclude: Vec<String>,
}

/// Where a document is: file, line and 1-based document index within the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Location {
    pub(crate) file: PathBuf,
    pub(crate) line: usize,
    pub(crate) doc: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} (document {})",
            self.file.display(),
            self.line,
            self.doc
        )
    }
}

/// One problem in the specs: where, which object, which field, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpecError {
    /// File position; a whole-file or whole-directory problem has only `file`.
    pub(crate) loc: Option<Location>,
    /// A file without a document position (unreadable file, missing config).
    pub(crate) file: Option<PathBuf>,
    /// `Function 'hello'`.
    pub(crate) object: Option<String>,
    /// `spec.environment.name`.
    pub(crate) field: Option<String>,
    pub(crate) message: String,
}

impl SpecError {
    pub(crate) fn at(loc: &Location, message: impl Into<String>) -> Self {
        Self {
            loc: Some(loc.clone()),
            file: None,
            object: None,
            field: None,
            message: message.into(),
        }
    }

    pub(crate) fn in_file(file: &Path, message: impl Into<String>) -> Self {
        Self {
            loc: None,
            file: Some(file.to_path_buf()),
            object: None,
            field: None,
            message: message.into(),
        }
    }

    pub(crate) fn object(mut self, kind: &str, name: &str) -> Self {
        self.object = Some(format!("{kind} '{name}'"));
        self
    }

    pub(crate) fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = &self.loc {
            write!(f, "{l}: ")?;
        } else if let Some(p) = &self.file {
            write!(f, "{}: ", p.display())?;
        }
        if let Some(o) = &self.object {
            write!(f, "{o}: ")?;
        }
        if let Some(fl) = &self.field {
            write!(f, "{fl}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A Fission object read from a spec file.
#[derive(Debug, Clone)]
pub(crate) struct SpecObject {
    pub(crate) loc: Location,
    pub(crate) res: AnyResource,
}

/// An `ArchiveUploadSpec` read from a spec file.
#[derive(Debug, Clone)]
pub(crate) struct SpecArchive {
    pub(crate) loc: Location,
    pub(crate) aus: ArchiveUploadSpec,
}

/// Everything read from a spec directory.
#[derive(Debug, Default)]
pub(crate) struct Specs {
    /// The spec directory as given.
    pub(crate) dir: PathBuf,
    pub(crate) config: Option<(Location, DeploymentConfig)>,
    /// Fission objects in file order.
    pub(crate) objects: Vec<SpecObject>,
    pub(crate) archives: Vec<SpecArchive>,
    /// Warnings (unknown kinds).
    pub(crate) warnings: Vec<String>,
    /// Parse errors.
    pub(crate) errors: Vec<SpecError>,
    /// Every spec file read.
    pub(crate) files: Vec<PathBuf>,
}

impl Specs {
    /// The deployment config, or the error every command gives without one.
    pub(crate) fn deployment(&self) -> anyhow::Result<&DeploymentConfig> {
        match &self.config {
            Some((_, c)) => Ok(c),
            None => bail!(
                "no DeploymentConfig found in '{}': run 'fission spec init' first",
                self.dir.display()
            ),
        }
    }

    /// The objects of one kind.
    pub(crate) fn of_kind(&self, kind: ResourceKind) -> impl Iterator<Item = &SpecObject> {
        self.objects.iter().filter(move |o| o.res.kind() == kind)
    }

    /// Whether an object of `kind` named `ns/name` is in the specs.
    pub(crate) fn contains(&self, kind: ResourceKind, ns: &str, name: &str) -> Option<&SpecObject> {
        self.of_kind(kind)
            .find(|o| o.res.meta().namespace == ns && o.res.meta().name == name)
    }
}

/// The parent of the spec directory: default root of archive globs.
pub(crate) fn project_root(spec_dir: &Path) -> PathBuf {
    let abs = absolute(spec_dir);
    abs.parent().map(Path::to_path_buf).unwrap_or(abs)
}

/// `p` made absolute against the current directory (without resolving symlinks).
pub(crate) fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    let joined = std::env::current_dir()
        .map(|d| d.join(p))
        .unwrap_or_else(|_| p.to_path_buf());
    normalize_path(&joined)
}

/// Remove `.` and resolve `..` lexically.
pub(crate) fn normalize_path(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Read every spec file in `dir`. Fails only when the directory (or a custom ignore file)
/// is missing; problems inside files are collected in [`Specs::errors`].
pub(crate) fn read_specs(dir: &Path, specignore: &str) -> anyhow::Result<Specs> {
    if !dir.is_dir() {
        bail!(
            "spec directory '{}' doesn't exist; check the path or run 'fission spec init' to create it",
            dir.display()
        );
    }
    let ignore_path = dir.join(specignore);
    let rules = if ignore_path.is_file() {
        let text = std::fs::read_to_string(&ignore_path).with_context(|| {
            format!("error reading spec ignore file '{}'", ignore_path.display())
        })?;
        IgnoreRules::parse(&text)
    } else if specignore != DEFAULT_SPEC_IGNORE {
        bail!(
            "spec ignore file '{specignore}' doesn't exist; check the path '{}'",
            ignore_path.display()
        );
    } else {
        IgnoreRules::default()
    };
    let mut files = Vec::new();
    collect_files(dir, Path::new(""), &rules, &mut files)?;
    let mut specs = Specs {
        dir: dir.to_path_buf(),
        ..Specs::default()
    };
    for rel in files {
        let path = dir.join(&rel);
        match std::fs::read_to_string(&path) {
            Ok(text) => parse_file(&mut specs, &path, &text),
            Err(e) => specs
                .errors
                .push(SpecError::in_file(&path, format!("cannot read file: {e}"))),
        }
        specs.files.push(path);
    }
    Ok(specs)
}

fn is_spec_file(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

/// Spec files below `dir/rel`, sorted, skipping what the ignore rules match.
fn collect_files(
    root: &Path,
    rel: &Path,
    rules: &IgnoreRules,
    out: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    let here = root.join(rel);
    let mut entries: Vec<(PathBuf, bool)> = std::fs::read_dir(&here)
        .with_context(|| format!("error reading spec directory '{}'", here.display()))?
        .filter_map(Result::ok)
        .map(|e| {
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false)
                || (e.file_type().map(|t| t.is_symlink()).unwrap_or(false) && e.path().is_dir());
            (rel.join(e.file_name()), is_dir)
        })
        .collect();
    entries.sort();
    for (path, is_dir) in entries {
        if rules.is_ignored(&path, is_dir) {
            continue;
        }
        if is_dir {
            collect_files(root, &path, rules, out)?;
        } else if is_spec_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// Whether a line separates YAML documents (`---`, optionally followed by a comment).
fn is_separator(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("---") else {
        return false;
    };
    let rest = rest.trim();
    rest.is_empty() || rest.starts_with('#')
}

/// One `---`-separated chunk of a file: its text and the line it starts on.
pub(crate) struct RawDoc {
    pub(crate) text: String,
    pub(crate) first_line: usize,
}

/// Split a file into documents. Lines keep their numbers: the chunk text starts at
/// `first_line`.
pub(crate) fn split_documents(text: &str) -> Vec<RawDoc> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if is_separator(line) {
            docs.push(RawDoc {
                text: std::mem::take(&mut cur),
                first_line: start,
            });
            start = n + 1;
        } else if line.trim_end() == "..." {
            // Explicit document end: the rest until the next separator belongs to nobody.
            cur.push('\n');
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    docs.push(RawDoc {
        text: cur,
        first_line: start,
    });
    docs
}

/// The first line of a chunk with content (not blank, not a comment).
fn content_line(doc: &RawDoc) -> usize {
    doc.text
        .lines()
        .position(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        })
        .map(|i| doc.first_line + i)
        .unwrap_or(doc.first_line)
}

/// A serde_norway error as `(absolute line, message)`; line numbers inside the message are
/// made absolute too (they count from the start of the document).
fn yaml_error(e: &serde_norway::Error, doc: &RawDoc) -> (Option<usize>, String) {
    let msg = shift_lines(&e.to_string(), doc.first_line - 1);
    (
        e.location()
            .map(|l| doc.first_line + l.line().saturating_sub(1)),
        msg,
    )
}

/// Add `offset` to every `line N` in a parser message.
fn shift_lines(msg: &str, offset: usize) -> String {
    let mut out = String::new();
    let mut rest = msg;
    while let Some(i) = rest.find("line ") {
        let (before, after) = rest.split_at(i + "line ".len());
        out.push_str(before);
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        match digits.parse::<usize>() {
            Ok(n) => out.push_str(&(n + offset).to_string()),
            Err(_) => out.push_str(&digits),
        }
        rest = &after[digits.len()..];
    }
    out.push_str(rest);
    out
}

#[derive(Deserialize)]
struct TypeMeta {
    #[serde(default)]
    kind: Option<serde_norway::Value>,
}

/// Parse one file's documents into `specs`.
pub(crate) fn parse_file(specs: &mut Specs, path: &Path, text: &str) {
    let mut index = 0;
    for raw in split_documents(text) {
        let head: serde_norway::Value = match serde_norway::from_str(&raw.text) {
            Ok(v) => v,
            Err(e) => {
                index += 1;
                let (line, msg) = yaml_error(&e, &raw);
                let loc = Location {
                    file: path.to_path_buf(),
                    line: line.unwrap_or(raw.first_line),
                    doc: index,
                };
                specs
                    .errors
                    .push(SpecError::at(&loc, format!("invalid YAML: {msg}")));
                continue;
            }
        };
        if head.is_null() {
            continue;
        }
        index += 1;
        let loc = Location {
            file: path.to_path_buf(),
            line: content_line(&raw),
            doc: index,
        };
        if !head.is_mapping() {
            specs.errors.push(SpecError::at(
                &loc,
                "a spec document must be a mapping with 'kind', 'metadata' and 'spec'",
            ));
            continue;
        }
        let kind = match serde_norway::from_value::<TypeMeta>(head)
            .ok()
            .and_then(|t| t.kind)
        {
            Some(serde_norway::Value::String(k)) => k,
            Some(_) => {
                specs
                    .errors
                    .push(SpecError::at(&loc, "must be a string").field("kind"));
                continue;
            }
            None => {
                specs
                    .errors
                    .push(SpecError::at(&loc, "is required").field("kind"));
                continue;
            }
        };
        parse_document(specs, &raw, loc, &kind);
    }
}

fn parse_document(specs: &mut Specs, raw: &RawDoc, loc: Location, kind: &str) {
    fn typed<S: Spec>(raw: &RawDoc) -> Result<AnyResource, serde_norway::Error>
    where
        AnyResource: From<Object<S>>,
    {
        serde_norway::from_str::<Object<S>>(&raw.text).map(AnyResource::from)
    }
    let parsed = match kind {
        "Environment" => typed::<EnvironmentSpec>(raw),
        "Package" => typed::<PackageSpec>(raw),
        "Function" => typed::<FunctionSpec>(raw),
        "HTTPTrigger" => typed::<HttpTriggerSpec>(raw),
        "KubernetesWatchTrigger" => typed::<KubernetesWatchTriggerSpec>(raw),
        "TimeTrigger" => typed::<TimeTriggerSpec>(raw),
        "MessageQueueTrigger" => typed::<MessageQueueTriggerSpec>(raw),
        "DeploymentConfig" => {
            match serde_norway::from_str::<DeploymentConfig>(&raw.text) {
                Ok(c) => match &specs.config {
                    Some((first, _)) => specs.errors.push(
                        SpecError::at(
                            &loc,
                            format!("a second DeploymentConfig; the first is at {first}"),
                        )
                        .field("kind"),
                    ),
                    None => specs.config = Some((loc, c)),
                },
                Err(e) => {
                    let (line, msg) = yaml_error(&e, raw);
                    let loc = Location {
                        line: line.unwrap_or(loc.line),
                        ..loc
                    };
                    specs
                        .errors
                        .push(SpecError::at(&loc, msg).object("DeploymentConfig", ""));
                }
            }
            return;
        }
        "ArchiveUploadSpec" => {
            match serde_norway::from_str::<ArchiveUploadSpec>(&raw.text) {
                Ok(aus) => specs.archives.push(SpecArchive { loc, aus }),
                Err(e) => {
                    let (line, msg) = yaml_error(&e, raw);
                    let loc = Location {
                        line: line.unwrap_or(loc.line),
                        ..loc
                    };
                    specs
                        .errors
                        .push(SpecError::at(&loc, msg).object("ArchiveUploadSpec", ""));
                }
            }
            return;
        }
        other => {
            specs
                .warnings
                .push(format!("Ignoring unknown type {other} in {loc}"));
            return;
        }
    };
    match parsed {
        Ok(res) => specs.objects.push(SpecObject { loc, res }),
        Err(e) => {
            let (line, msg) = yaml_error(&e, raw);
            let loc = Location {
                line: line.unwrap_or(loc.line),
                ..loc
            };
            let mut err = SpecError::at(&loc, msg);
            // Name the object when the name itself could be read.
            err.object = Some(match object_name(&raw.text) {
                Some(name) => format!("{kind} '{name}'"),
                None => kind.to_owned(),
            });
            specs.errors.push(err);
        }
    }
}

/// `metadata.name` of a document that failed to parse as a whole, if readable.
fn object_name(text: &str) -> Option<String> {
    let v: serde_norway::Value = serde_norway::from_str(text).ok()?;
    v.get("metadata")?.get("name")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Specs {
        let mut s = Specs {
            dir: PathBuf::from("specs"),
            ..Specs::default()
        };
        parse_file(&mut s, Path::new("specs/a.yaml"), text);
        s
    }

    #[test]
    fn multi_document_files_yield_every_object_with_its_document_index_and_line() {
        let s = parse(
            "# leading comment\n---\napiVersion: fission.io/v1\nkind: Environment\nmetadata:\n  name: nodejs\nspec:\n  \
             runtime:\n    image: fission/node-env\n---\n\n---\nkind: HTTPTrigger\nmetadata:\n  name: r\nspec:\n  \
             relativeurl: /x\n",
        );
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        assert_eq!(s.objects.len(), 2);
        assert_eq!(
            s.objects[0].loc,
            Location {
                file: "specs/a.yaml".into(),
                line: 3,
                doc: 1
            }
        );
        assert_eq!(
            s.objects[1].loc,
            Location {
                file: "specs/a.yaml".into(),
                line: 13,
                doc: 2
            }
        );
        assert_eq!(s.objects[1].res.kind(), ResourceKind::HttpTrigger);
    }

    #[test]
    fn a_wrongly_typed_field_is_reported_with_file_line_document_and_field() {
        let s = parse(
            "kind: Environment\nmetadata:\n  name: e\nspec:\n  runtime:\n    image: x\n---\nkind: Function\n\
             metadata:\n  name: hello\nspec:\n  functionTimeout: soon\n",
        );
        assert_eq!(s.errors.len(), 1);
        let e = s.errors[0].to_string();
        assert!(
            e.starts_with(
                "specs/a.yaml:12 (document 2): Function 'hello': spec.functionTimeout: invalid type"
            ),
            "{e}"
        );
    }

    #[test]
    fn invalid_yaml_names_the_file_and_the_line() {
        let s = parse(
            "kind: Environment\nmetadata:\n  name: e\n---\nkind: Function\nmetadata:\n  name: x\n   bad: [\n",
        );
        assert_eq!(s.errors.len(), 1, "{:?}", s.errors);
        let e = s.errors[0].to_string();
        assert!(e.starts_with("specs/a.yaml:"), "{e}");
        assert!(e.contains("(document 2): invalid YAML:"), "{e}");
        let line: usize = e["specs/a.yaml:".len()..]
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("line");
        assert!((7..=9).contains(&line), "{e}");
    }

    #[test]
    fn unknown_kinds_are_warned_about_and_ignored() {
        let s = parse("kind: Workflow\nmetadata:\n  name: w\n");
        assert!(s.errors.is_empty());
        assert!(s.objects.is_empty());
        assert_eq!(
            s.warnings,
            ["Ignoring unknown type Workflow in specs/a.yaml:1 (document 1)"]
        );
    }

    #[test]
    fn missing_kind_is_an_error_on_the_kind_field() {
        let s = parse("metadata:\n  name: w\n");
        assert_eq!(
            s.errors[0].to_string(),
            "specs/a.yaml:1 (document 1): kind: is required"
        );
    }

    #[test]
    fn deployment_config_and_archive_upload_specs_are_read() {
        let s = parse(
            "apiVersion: fission.io/v1\nkind: DeploymentConfig\nname: app\nuid: 1234\n---\nkind: ArchiveUploadSpec\n\
             name: hello-js-abcd\ninclude:\n- hello.js\n",
        );
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        assert_eq!(s.deployment().expect("config").uid, "1234");
        assert_eq!(s.archives[0].aus.include, ["hello.js"]);
        assert_eq!(s.archives[0].aus.name, "hello-js-abcd");
    }

    #[test]
    fn a_second_deployment_config_is_an_error() {
        let s = parse(
            "kind: DeploymentConfig\nname: a\nuid: x\n---\nkind: DeploymentConfig\nname: b\nuid: y\n",
        );
        assert_eq!(s.errors.len(), 1);
        assert!(
            s.errors[0]
                .to_string()
                .contains("a second DeploymentConfig")
        );
    }

    #[test]
    fn positions_inside_parser_messages_count_from_the_start_of_the_file() {
        assert_eq!(
            shift_lines("bad at line 2 column 3, while parsing at line 1", 10),
            "bad at line 12 column 3, while parsing at line 11"
        );
        assert_eq!(shift_lines("no position", 10), "no position");
    }

    #[test]
    fn separators_with_comments_split_documents() {
        let docs = split_documents("a: 1\n--- # next\nb: 2\n---\n");
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[1].first_line, 3);
        assert_eq!(docs[1].text, "b: 2\n");
    }

    #[test]
    fn spec_files_below_the_directory_are_read_sorted_and_specignore_is_honoured() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path();
        std::fs::write(
            d.join("b.yaml"),
            "kind: DeploymentConfig\nname: a\nuid: u\n",
        )
        .expect("w");
        std::fs::write(d.join("a.yml"), "kind: Environment\nmetadata:\n  name: e\n").expect("w");
        std::fs::write(d.join("skip.yaml"), "kind: [broken\n").expect("w");
        std::fs::create_dir_all(d.join("sub/drafts")).expect("mkdir");
        std::fs::write(
            d.join("sub/c.yaml"),
            "kind: Environment\nmetadata:\n  name: c\n",
        )
        .expect("w");
        std::fs::write(d.join("sub/drafts/x.yaml"), "kind: [broken\n").expect("w");
        std::fs::write(d.join("README"), "not yaml: [").expect("w");
        std::fs::write(d.join(".specignore"), "# comment\nskip.yaml\ndrafts/\n").expect("w");
        let s = read_specs(d, DEFAULT_SPEC_IGNORE).expect("read");
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        let names: Vec<&str> = s
            .objects
            .iter()
            .map(|o| o.res.meta().name.as_str())
            .collect();
        assert_eq!(names, ["e", "c"]);
        assert!(s.config.is_some());
    }

    #[test]
    fn a_missing_custom_specignore_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let e = read_specs(dir.path(), "mine.ignore")
            .expect_err("must fail")
            .to_string();
        assert!(
            e.contains("spec ignore file 'mine.ignore' doesn't exist"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_spec_directory_says_to_run_spec_init() {
        let e = read_specs(Path::new("/nonexistent/specs"), DEFAULT_SPEC_IGNORE)
            .expect_err("must fail")
            .to_string();
        assert!(e.contains("fission spec init"), "{e}");
    }
}
