//! Data flows one way: the `crate::` edges between top-level modules of `src/` form no cycle, and
//! no source file grows past the size a reader keeps in mind.
//!
//! The edges are read from the source text: every `crate::name` path and every `use crate::{…}`
//! group, in every file under `src/<module>.rs` and `src/<module>/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
/// Files past this many lines are split along their seams (tests in a file count; a large
/// `#[cfg(test)]` module may move to its own `x/tests.rs`).
const MAX_LINES: usize = 600;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
        let p = e.expect("directory entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file under `src/` belongs to (`src/fat/plan.rs` → `fat`).
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(SRC).expect("file under src/");
    let first = rel.components().next().expect("non-empty path");
    let s = first.as_os_str().to_string_lossy();
    s.trim_end_matches(".rs").to_string()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The first identifier of a path such as ` fat::{self, X}`.
fn first_ident(item: &str) -> Option<String> {
    let name: String = item
        .trim_start()
        .chars()
        .take_while(|&c| is_ident(c))
        .collect();
    (!name.is_empty()).then_some(name)
}

/// Top-level modules named by `crate::…` paths in `text` (comments included: a doc link to a
/// module is a dependency a reader follows too).
fn referenced_modules(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a, b::c, d::{e, f}}`: the first segment of each top-level item.
            let mut depth = 0usize;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.extend(first_ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.extend(first_ident(&item));
        } else {
            let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let from = module_of(f);
        if from == "main" || from == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let entry = g.entry(from.clone()).or_default();
        for to in referenced_modules(&text) {
            if to != from && modules.contains(&to) {
                entry.insert(to);
            }
        }
    }
    g
}

/// A cycle in `g` as a path `a → b → … → a`, if there is one.
fn find_cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(n) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let at = stack
                    .iter()
                    .position(|s| s == n)
                    .expect("open node is on the stack");
                let mut c = stack[at..].to_vec();
                c.push(n.to_string());
                return Some(c);
            }
            None => {}
        }
        marks.insert(n.to_string(), Mark::Open);
        stack.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, marks, stack) {
                return Some(c);
            }
        }
        stack.pop();
        marks.insert(n.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for n in g.keys() {
        if let Some(c) = visit(n, g, &mut marks, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

#[test]
fn parser_reads_paths_and_groups() {
    let m = referenced_modules(
        "use crate::{fat::{self, FatFile}, partition, seed::k3s};\nlet x = crate::output::write(1);",
    );
    let want: BTreeSet<String> = ["fat", "output", "partition", "seed"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(m, want);
}

#[test]
fn cycle_finder_finds_cycles() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_cycle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    let c = find_cycle(&g).expect("a → b → c → a is a cycle");
    assert_eq!(c.first(), c.last());
    assert_eq!(c.len(), 4);
}

#[test]
fn top_level_modules_form_no_cycle() {
    let g = graph();
    assert!(
        g.len() > 10,
        "expected the crate's modules, found {:?}",
        g.keys()
    );
    if let Some(c) = find_cycle(&g) {
        panic!(
            "module cycle: {} (data must flow one way; move the shared piece below both)",
            c.join(" → ")
        );
    }
}

#[test]
fn no_source_file_past_the_size_limit() {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut long = Vec::new();
    for f in files {
        let n = std::fs::read_to_string(&f)
            .expect("source file")
            .lines()
            .count();
        let rel = f
            .strip_prefix(root)
            .expect("file under the crate")
            .to_string_lossy()
            .to_string();
        if n > MAX_LINES {
            long.push(format!("{rel} ({n} lines, limit {MAX_LINES})"));
        }
    }
    assert!(
        long.is_empty(),
        "split these along their seams: {}",
        long.join(", ")
    );
}
