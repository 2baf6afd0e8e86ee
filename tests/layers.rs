//! The layer rules of `src/lib.rs`, held true: every `use crate::X` and `crate::X::` path in
//! `src/**/*.rs` (comments and string literals aside) is checked against what module `X`'s
//! importer may import, nothing imports from the crate root, and no two modules import each
//! other, however indirectly. The table below mirrors the one in lib.rs's module doc, and
//! the test checks the doc says the same. Every violation is reported at once.
//!
//! The binary (`main.rs`, `cli/`) is its own crate, above all of this, and is not checked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules any layer may use: vocabulary and plumbing that import no layer.
const LEAVES: &[&str] =
    &["aws", "egress", "error_text", "events", "lifecycle_policy", "metrics", "pattern", "secret", "tls_client"];

/// What each top-level module may import besides itself; `"leaves"` stands for [`LEAVES`].
const RULES: &[(&str, &[&str])] = &[
    ("settings", &["config", "http", "core", "store", "upstream", "shared", "cluster", "oci", "leaves"]),
    ("hosts_toml", &["config", "oci"]),
    ("registries_conf", &["config", "oci"]),
    ("http", &["core", "store", "upstream", "shared", "cluster", "oci", "leaves"]),
    ("core", &["store", "upstream", "shared", "cluster", "oci", "leaves"]),
    ("store", &["oci", "leaves"]),
    ("upstream", &["oci", "leaves"]),
    ("shared", &["oci", "leaves"]),
    ("cluster", &["oci", "leaves"]),
    ("config", &["oci", "pattern", "secret", "lifecycle_policy"]),
    ("events", &["oci", "error_text", "metrics", "tls_client", "egress"]),
    ("lifecycle_policy", &["oci", "pattern"]),
    ("aws", &["oci", "egress"]),
    ("egress", &["oci", "secret"]),
    ("error_text", &["oci"]),
    ("metrics", &["oci"]),
    ("pattern", &["oci"]),
    ("secret", &["oci"]),
    ("tls_client", &["oci"]),
    ("oci", &[]),
];

/// One `crate::…` reference: which module of the crate it names, and where.
#[derive(Debug, Clone)]
struct Import {
    from: String,
    to: String,
    file: PathBuf,
    line: usize,
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rules() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    RULES
        .iter()
        .map(|(m, allowed)| {
            let set = allowed.iter().flat_map(|a| if *a == "leaves" { LEAVES.to_vec() } else { vec![*a] }).collect();
            (*m, set)
        })
        .collect()
}

/// Every `.rs` file under `dir`, recursively, in a stable order.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// `text` with comments removed and string and char literals emptied, newlines kept (so
/// line numbers stay right): what is left is code.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let keep_newlines = |s: &[u8], out: &mut String| out.extend(s.iter().filter(|c| **c == b'\n').map(|_| '\n'));
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let end = text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            keep_newlines(&b[i..end], &mut out);
            i = end;
        } else if b[i] == b'"' {
            let start = i;
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(b.len());
            keep_newlines(&b[start..i], &mut out);
            out.push_str("\"\"");
        } else if b[i] == b'\'' && b.get(i + 1) == Some(&b'\\') {
            // '\n', '\'', '\u{..}'
            i = text[i + 2..].find('\'').map_or(b.len(), |e| i + 2 + e + 1);
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            // 'x' (a lifetime `'a` has no closing quote and is left alone)
            i += 3;
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The first identifier of `s` (after whitespace).
fn ident(s: &str) -> &str {
    let s = s.trim_start();
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// The crate-level names `crate::…` references in `code`, with their line numbers:
/// `crate::x::…`, `use crate::x`, and each item of `use crate::{x, y::z}`.
fn crate_paths(code: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = code[from..].find("crate::") {
        let at = from + pos;
        from = at + "crate::".len();
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue; // `$crate::` in a macro, or the tail of another identifier
        }
        let line = code[..at].matches('\n').count() + 1;
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: split on commas outside nested braces.
            let (mut depth, mut item_start) = (0usize, 0usize);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.push((ident(&group[item_start..i]).to_string(), line));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push((ident(&group[item_start..i]).to_string(), line));
                        item_start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.push((ident(rest).to_string(), line));
        }
    }
    out.retain(|(name, _)| !name.is_empty());
    out
}

/// Every `crate::…` reference of the library, by the top-level module it is in.
fn imports() -> Vec<Import> {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut out = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&root).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
        let from = first.strip_suffix(".rs").unwrap_or(&first).to_string();
        if matches!(from.as_str(), "main" | "cli" | "lib") {
            continue;
        }
        let code = code_only(&std::fs::read_to_string(&file).unwrap());
        for (to, line) in crate_paths(&code) {
            if to != from {
                out.push(Import { from: from.clone(), to, file: rel.to_path_buf(), line });
            }
        }
    }
    out
}

/// The top-level modules of the library: `src/<name>.rs` and `src/<name>/`.
fn modules() -> BTreeSet<String> {
    std::fs::read_dir(src())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| Some(p.file_stem()?.to_string_lossy().to_string()))
        .filter(|m| !matches!(m.as_str(), "main" | "lib" | "cli"))
        .collect()
}

/// Every import that breaks the rules, one line each.
fn violations(imports: &[Import], modules: &BTreeSet<String>) -> Vec<String> {
    let rules = rules();
    let mut out = Vec::new();
    for m in modules {
        if !rules.contains_key(m.as_str()) {
            out.push(format!("src/{m}: a module the layer rules do not name; add it to lib.rs's table and RULES"));
        }
    }
    for i in imports {
        let Some(allowed) = rules.get(i.from.as_str()) else { continue };
        let at = format!("src/{}:{}", i.file.display(), i.line);
        if !modules.contains(&i.to) {
            out.push(format!(
                "{at}: `{}` uses `crate::{}` from the crate root (lib.rs); move it into a layer",
                i.from, i.to
            ));
        } else if !allowed.contains(i.to.as_str()) {
            out.push(format!("{at}: `{}` may not import `{}` (it may import: {allowed:?})", i.from, i.to));
        }
    }
    out
}

/// An import circle between modules, as `a -> b -> … -> a`, if there is one.
fn circle(imports: &[Import]) -> Option<String> {
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for i in imports {
        graph.entry(&i.from).or_default().insert(&i.to);
    }
    fn visit<'a>(
        m: &'a str,
        graph: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<String> {
        if let Some(start) = path.iter().position(|p| *p == m) {
            let mut cycle = path[start..].to_vec();
            cycle.push(m);
            return Some(cycle.join(" -> "));
        }
        if !done.insert(m) {
            return None;
        }
        path.push(m);
        for next in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|m| visit(m, &graph, &mut Vec::new(), &mut done))
}

#[test]
fn every_import_follows_the_layer_rules() {
    let imports = imports();
    // The scan sees the imports that are known to exist, so an empty result means a broken
    // scanner, not a clean tree.
    assert!(imports.iter().any(|i| i.from == "core" && i.to == "store"), "the scan found no core -> store import");
    assert!(imports.iter().any(|i| i.from == "config" && i.to == "oci"), "the scan found no config -> oci import");
    let bad = violations(&imports, &modules());
    assert!(bad.is_empty(), "{} import(s) break the layer rules of src/lib.rs:\n{}", bad.len(), bad.join("\n"));
}

#[test]
fn no_import_circle_between_modules() {
    let imports = imports();
    assert_eq!(circle(&imports), None, "an import circle between top-level modules");
}

#[test]
fn lib_rs_states_the_same_rules() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let mut doc: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in lib.lines().filter_map(|l| l.strip_prefix("//! |")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(module) = cells.first().and_then(|c| c.strip_prefix('`')?.strip_suffix('`')) else { continue };
        let allowed = cells.get(1).copied().unwrap_or("");
        let set = allowed
            .split(',')
            .map(|a| a.trim().trim_matches('`').to_string())
            .filter(|a| !a.is_empty())
            .flat_map(|a| if a == "leaves" { LEAVES.iter().map(|l| l.to_string()).collect() } else { vec![a] })
            .collect();
        doc.insert(module.to_string(), set);
    }
    let mine: BTreeMap<String, BTreeSet<String>> =
        rules().into_iter().map(|(m, set)| (m.to_string(), set.into_iter().map(str::to_string).collect())).collect();
    assert_eq!(doc, mine, "the table in src/lib.rs's module doc and RULES in tests/layers.rs differ");
}

#[test]
fn the_checks_catch_what_they_are_for() {
    // A source below the top importing the serde schema, a sideways import between two
    // sources, an import from the crate root, and a circle: each is reported.
    let code = code_only(
        "use crate::config::UpstreamConfig; // crate::core in a comment\n\
         use crate::{oci::Digest, shared::SharedTier};\n\
         let ua = \"crate::http\"; let x = crate::USER_AGENT;\n",
    );
    let at = |to: &str, line| Import { from: "upstream".into(), to: to.into(), file: "upstream/x.rs".into(), line };
    let found: Vec<Import> = crate_paths(&code).into_iter().map(|(to, line)| at(&to, line)).collect();
    let names: Vec<&str> = found.iter().map(|i| i.to.as_str()).collect();
    assert_eq!(names, ["config", "oci", "shared", "USER_AGENT"]);
    let bad = violations(&found, &modules());
    assert_eq!(bad.len(), 3, "{bad:#?}");
    assert!(bad[0].contains("upstream/x.rs:1") && bad[0].contains("may not import `config`"), "{}", bad[0]);
    assert!(bad[1].contains("may not import `shared`"), "{}", bad[1]);
    assert!(bad[2].contains("crate root"), "{}", bad[2]);
    let back = Import { from: "oci".into(), to: "upstream".into(), file: "oci/x.rs".into(), line: 1 };
    assert_eq!(circle(&[at("oci", 1), back]).as_deref(), Some("oci -> upstream -> oci"));
}
