//! Tables in the style of Go's tabwriter (as Fission prints them), and `-o json|yaml`.

use std::io::Write;

use serde::Serialize;

/// Structured output formats for `get`/`list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Pretty-printed JSON (a list prints a JSON array)
    Json,
    /// YAML (a list prints a YAML sequence)
    Yaml,
}

/// A table rendered like Go's `tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)` fed with
/// `"%v\t%v\t…\n"`: every column but the last is padded to its widest cell plus one space; the
/// last cell is written as is. So the first column (NAME) is always `awk '{print $1}'`-able.
#[derive(Debug, Clone, Default)]
pub(crate) struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(headers: &[&str]) -> Self {
        Self {
            rows: vec![headers.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    /// A table without a header row (for `Label:\tvalue` blocks).
    pub(crate) fn headless() -> Self {
        Self { rows: Vec::new() }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn render(&self) -> String {
        let ncols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0usize; ncols];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if i + 1 < row.len() {
                    widths[i] = widths[i].max(cell.chars().count());
                }
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths[i] - cell.chars().count() + 1;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    pub(crate) fn print(&self) {
        print_stdout(self.render().as_bytes());
    }
}

/// Write to stdout, ignoring a closed pipe (`fission fn list | head -1`).
pub(crate) fn print_stdout(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes);
    let _ = out.flush();
}

/// Serialize for `-o json|yaml`.
pub(crate) fn render<T: Serialize + ?Sized>(
    format: OutputFormat,
    value: &T,
) -> anyhow::Result<String> {
    Ok(match format {
        OutputFormat::Json => {
            let mut s = serde_json::to_string_pretty(value)?;
            s.push('\n');
            s
        }
        OutputFormat::Yaml => serde_norway::to_string(value)?,
    })
}

pub(crate) fn print_structured<T: Serialize + ?Sized>(
    format: OutputFormat,
    value: &T,
) -> anyhow::Result<()> {
    print_stdout(render(format, value)?.as_bytes());
    Ok(())
}

/// YAML documents separated by `---`, as `--dry` prints them (spec-file compatible).
pub(crate) fn yaml_documents(docs: &[String]) -> String {
    docs.join("---\n")
}

/// Go's `fmt` rendering of a `map[string]string` (`map[a:b c:d]`), as Fission's tables show
/// labels and annotations.
pub(crate) fn go_map<'a>(m: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let parts: Vec<String> = m.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("map[{}]", parts.join(" "))
}

/// Go's `fmt` rendering of a `[]string` (`[GET POST]`).
pub(crate) fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_all_but_the_last_column_with_one_space() {
        let mut t = Table::new(&["NAME", "ENV", "NAMESPACE"]);
        t.row(vec!["hello".into(), "nodejs".into(), "default".into()]);
        t.row(vec!["a-much-longer-name".into(), "py".into(), "ns1".into()]);
        let out = t.render();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "NAME               ENV    NAMESPACE");
        assert_eq!(lines[1], "hello              nodejs default");
        assert_eq!(lines[2], "a-much-longer-name py     ns1");
    }

    #[test]
    fn table_name_column_is_the_first_awk_field() {
        let mut t = Table::new(&["NAME", "IMAGE"]);
        t.row(vec!["e1".into(), "ghcr.io/fission/node-env-22".into()]);
        t.row(vec!["environment-two".into(), "".into()]);
        let out = t.render();
        let names: Vec<&str> = out
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().next().unwrap_or(""))
            .collect();
        assert_eq!(names, ["e1", "environment-two"]);
    }

    #[test]
    fn table_columns_align_with_wide_characters_counted_once() {
        let mut t = Table::new(&["NAME", "X"]);
        t.row(vec!["é".into(), "1".into()]);
        let out = t.render();
        assert_eq!(out.lines().nth(1), Some("é    1"));
    }

    #[test]
    fn go_style_collections_render_like_fission() {
        let mut m = std::collections::BTreeMap::new();
        m.insert("a".to_owned(), "b".to_owned());
        m.insert("c".to_owned(), "d".to_owned());
        assert_eq!(go_map(&m), "map[a:b c:d]");
        assert_eq!(go_map(&std::collections::BTreeMap::new()), "map[]");
        assert_eq!(go_list(&["GET".into(), "POST".into()]), "[GET POST]");
    }

    #[test]
    fn yaml_documents_are_separated_by_dashes() {
        let docs = [
            render(OutputFormat::Yaml, &serde_json::json!({"a": 1})).expect("yaml"),
            "b: 2\n".to_owned(),
        ];
        let s = yaml_documents(&docs);
        assert_eq!(s, "a: 1\n---\nb: 2\n");
    }
}
