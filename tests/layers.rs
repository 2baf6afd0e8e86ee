//! The layer rules of `src/lib.rs`, held true: every `use crate::X` and `crate::X::` path in
//! `src/**/*.rs` (comments and string literals aside) is checked against what module `X`'s
//! importer may import, nothing imports from the crate root, and no two modules import each
//! other, however indirectly. The table below mirrors the one in lib.rs's module doc, and
//! the test checks the doc says the same. Every violation is reported at once.
//!
//! The binary (`main.rs`, `cli/`) is its own crate, above all of this, and is not checked.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

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
    paths_after(code, "crate::")
}

/// The names that follow `prefix` (`crate::`, `crate::core::`, `super::`) in `code`, with
/// their line numbers, each item of a `{…}` group apart.
fn paths_after(code: &str, prefix: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = code[from..].find(prefix) {
        let at = from + pos;
        from = at + prefix.len();
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$' || c == ':') {
            continue; // `$crate::` in a macro, the tail of another identifier or path
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
    out.retain(|(name, _)| !name.is_empty() && name != "super" && name != "self");
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

// Inside `core`: its children (`src/core/<child>.rs` or `src/core/<child>/`) follow a table
// of their own, and no two of them import each other, however indirectly. `core/mod.rs`
// declares and re-exports them; nothing inside core imports it.

/// What each child of `core` may import from its siblings, besides itself. From the top:
/// the upkeep and the referrers API work on the service (`pull`), a façade over the
/// manifest side (`manifest`) and the blob path (`blob`); below them the vocabulary.
const CORE_RULES: &[(&str, &[&str])] = &[
    (
        "upkeep",
        &["referrers", "pull", "manifest", "blob", "answers", "error", "lifecycle", "policy", "progress", "rate"],
    ),
    ("referrers", &["pull", "manifest", "error"]),
    ("pull", &["manifest", "blob", "answers", "error", "policy", "vouch"]),
    ("manifest", &["blob", "answers", "error", "flight", "policy", "tiers", "vouch"]),
    ("blob", &["answers", "error", "flight", "policy", "progress", "tiers", "vouch"]),
    ("tiers", &["blob"]),
    ("vouch", &["error"]),
    ("error", &["blob"]),
    ("policy", &["lifecycle", "rate"]),
    ("answers", &[]),
    ("flight", &[]),
    ("lifecycle", &[]),
    ("progress", &[]),
    ("rate", &[]),
];

/// The blob path's files, one child of core (`core/blob/`) once they move there.
const BLOB: &[&str] = &["fill", "follow", "relay", "source", "pipeline"];

/// The child of core a top-level name of `src/core/` belongs to.
fn child(name: &str) -> String {
    if BLOB.contains(&name) {
        "blob".to_string()
    } else {
        name.to_string()
    }
}

/// Every reference between two children of `core`: `crate::core::x`, and `super::x` (or
/// `super::super::x` from a grandchild) that names a sibling.
fn core_imports() -> Vec<Import> {
    let root = src().join("core");
    let exports = core_exports(&std::fs::read_to_string(root.join("mod.rs")).unwrap());
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut out = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&root).unwrap().to_path_buf();
        let mut parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().to_string()).collect();
        if parts == ["mod.rs"] {
            continue;
        }
        let last = parts.pop().unwrap();
        if last != "mod.rs" {
            parts.push(last.trim_end_matches(".rs").to_string());
        }
        let from = child(&parts[0]);
        let code = code_only(&std::fs::read_to_string(&file).unwrap());
        let up = "super::".repeat(parts.len());
        let found = paths_after(&code, "crate::core::").into_iter().chain(paths_after(&code, &up));
        for (to, line) in found {
            // A name core/mod.rs re-exports stands for the child that defines it.
            let to = child(&exports.get(&to).cloned().unwrap_or(to));
            if to != from && !KNOWN_BACK_EDGES.contains(&(from.as_str(), to.as_str())) {
                out.push(Import { from: from.clone(), to, file: Path::new("core").join(&rel), line });
            }
        }
    }
    out
}

/// What `core/mod.rs` re-exports (`pub use child::…::{A, B as C}`), by the name it is
/// exported as: the child that defines it.
fn core_exports(mod_rs: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for stmt in code_only(mod_rs).split(';') {
        let Some(path) = stmt.trim().strip_prefix("pub use ") else { continue };
        let child = ident(path).to_string();
        let items = match (path.find('{'), path.rfind('}')) {
            (Some(open), Some(close)) => path[open + 1..close].split(',').map(str::trim).collect(),
            _ => vec![path.trim()],
        };
        for item in items.into_iter().filter(|i| !i.is_empty()) {
            let name = match item.split_once(" as ") {
                Some((_, alias)) => alias.trim(),
                None => item.rsplit("::").next().unwrap_or(item).trim(),
            };
            out.insert(name.to_string(), child.clone());
        }
    }
    out
}

/// Imports left out of the check until the blob path's split (issue 24, item 2) removes
/// them: `fill::settle` answers with `CoreError` (the error that wraps `FillError`), and
/// the blob entry points are still `impl PullThrough` (`blob/handle.rs`, which vouches and
/// answers with `CoreError` as the service's façade does).
const KNOWN_BACK_EDGES: &[(&str, &str)] = &[("blob", "error"), ("blob", "pull"), ("blob", "vouch")];

/// The children of `core`.
fn core_modules() -> BTreeSet<String> {
    std::fs::read_dir(src().join("core"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| Some(p.file_stem()?.to_string_lossy().to_string()))
        .filter(|m| m != "mod")
        .map(|m| child(&m))
        .collect()
}

fn core_violations(imports: &[Import], modules: &BTreeSet<String>) -> Vec<String> {
    let rules: BTreeMap<&str, BTreeSet<&str>> =
        CORE_RULES.iter().map(|(m, allowed)| (*m, allowed.iter().copied().collect())).collect();
    let mut out = Vec::new();
    for m in modules {
        if !rules.contains_key(m.as_str()) {
            out.push(format!("src/core/{m}: a child of core that CORE_RULES does not name"));
        }
    }
    for i in imports {
        let Some(allowed) = rules.get(i.from.as_str()) else { continue };
        let at = format!("src/{}:{}", i.file.display(), i.line);
        if !modules.contains(&i.to) {
            out.push(format!("{at}: `core::{}` uses `{}`, which is not a child of core (core/mod.rs?)", i.from, i.to));
        } else if !allowed.contains(i.to.as_str()) {
            out.push(format!("{at}: `core::{}` may not import `core::{}` (it may import: {allowed:?})", i.from, i.to));
        }
    }
    out
}

#[test]
fn every_core_import_follows_the_core_rules() {
    let imports = core_imports();
    assert!(
        imports.iter().any(|i| i.from == "pull" && i.to == "manifest"),
        "the scan found no pull -> manifest import"
    );
    assert!(imports.iter().any(|i| i.from == "upkeep" && i.to == "pull"), "the scan found no upkeep -> pull import");
    let bad = core_violations(&imports, &core_modules());
    assert!(bad.is_empty(), "{} import(s) inside core break CORE_RULES:\n{}", bad.len(), bad.join("\n"));
}

#[test]
fn no_import_circle_inside_core() {
    // Beyond the table (which may allow a pair): the code itself has no circle.
    assert_eq!(circle(&core_imports()), None, "an import circle between children of core");
}

#[test]
fn the_core_checks_catch_what_they_are_for() {
    let exports = core_exports("pub use error::{CoreError, SharedOp};\npub use upkeep::housekeeping::{spawn as spawn_housekeeping};\npub use relay::Relay;");
    assert_eq!(exports.get("CoreError").map(String::as_str), Some("error"));
    assert_eq!(exports.get("spawn_housekeeping").map(String::as_str), Some("upkeep"));
    assert_eq!(exports.get("Relay").map(String::as_str), Some("relay"));
    let code = code_only("use super::super::pull::PullThrough;\nuse crate::core::{upkeep::x, error};\n");
    let found: Vec<String> = paths_after(&code, "super::super::").into_iter().map(|(to, _)| to).collect();
    assert_eq!(found, ["pull"]);
    let found: Vec<String> = paths_after(&code, "crate::core::").into_iter().map(|(to, _)| to).collect();
    assert_eq!(found, ["upkeep", "error"]);
    // `super::pull` at the start of `super::super::pull` is not a sibling reference.
    assert_eq!(paths_after(&code, "super::").into_iter().map(|(to, _)| to).collect::<Vec<_>>(), Vec::<String>::new());
    let at = |from: &str, to: &str| Import { from: from.into(), to: to.into(), file: "core/x.rs".into(), line: 1 };
    let bad = core_violations(&[at("manifest", "upkeep"), at("vouch", "mod")], &core_modules());
    assert_eq!(bad.len(), 2, "{bad:#?}");
    assert!(bad[0].contains("may not import `core::upkeep`"), "{}", bad[0]);
    assert!(bad[1].contains("not a child of core"), "{}", bad[1]);
    assert_eq!(
        circle(&[at("manifest", "pull"), at("pull", "manifest")]).as_deref(),
        Some("manifest -> pull -> manifest")
    );
}
