//! The layout ARCHITECTURE.md promises, checked on the source itself: the top-level modules
//! import each other without a circle, and bollard is used only inside `src/docker/`. Test-only
//! code (`#[cfg(test)]` modules and files) is left out: a test may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every non-test source file, as (path relative to src/, its text without test code).
fn sources() -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut skipped = BTreeSet::new();
    let mut stack = vec![src_dir()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(src_dir()).unwrap();
                let text = std::fs::read_to_string(&path).unwrap();
                skipped.extend(test_only_children(relative, &text));
                files.push((relative.to_string_lossy().into_owned(), text));
            }
        }
    }
    files
        .into_iter()
        .filter(|(path, _)| !skipped.contains(path))
        .map(|(path, text)| (path, without_tests_and_comments(&text)))
        .collect()
}

/// The files of the modules `file` declares under `#[cfg(test)]` (`mod fake;` → `fake.rs`).
fn test_only_children(file: &Path, text: &str) -> Vec<String> {
    let dir = match file.file_name().and_then(|n| n.to_str()) {
        Some("mod.rs" | "lib.rs" | "main.rs") => file.parent().unwrap().to_path_buf(),
        _ => file.with_extension(""),
    };
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    lines
        .windows(2)
        .filter(|w| w[0] == "#[cfg(test)]")
        .filter_map(|w| {
            let name = w[1]
                .trim_start_matches("pub ")
                .strip_prefix("mod ")?
                .strip_suffix(';')?;
            Some(vec![
                dir.join(format!("{name}.rs"))
                    .to_string_lossy()
                    .into_owned(),
                dir.join(name).join("mod.rs").to_string_lossy().into_owned(),
            ])
        })
        .flatten()
        .collect()
}

/// The text up to its first `#[cfg(test)]` module, without `//` comments.
fn without_tests_and_comments(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod "))
        {
            break;
        }
        let code = line.split("//").next().unwrap_or_default();
        out.push_str(code);
        out.push('\n');
    }
    out
}

fn top_module(path: &str) -> &str {
    let first = path.split('/').next().unwrap();
    first.strip_suffix(".rs").unwrap_or(first)
}

/// Top-level module → the top-level modules its files name through `crate::`.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in sources() {
        let from = top_module(&path);
        if matches!(from, "lib" | "main") {
            continue;
        }
        for (at, _) in text.match_indices("crate::") {
            let target: String = text[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !target.is_empty() && target != from {
                graph.entry(from.to_owned()).or_default().insert(target);
            }
        }
        // `use crate::{a, b::c}` names several at once.
        for (at, _) in text.match_indices("crate::{") {
            let group = &text[at + "crate::{".len()..];
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for part in group.split(',') {
                let target = part.trim().split("::").next().unwrap_or_default();
                if !target.is_empty() && target != from {
                    graph
                        .entry(from.to_owned())
                        .or_default()
                        .insert(target.to_owned());
                }
            }
        }
    }
    graph
}

/// One circle of the graph, if it has any (depth-first search for a back edge).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_top_level_modules_import_each_other_without_a_circle() {
    let graph = import_graph();
    assert!(
        graph.len() > 10,
        "the scan found too few modules to mean anything: {graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import circle among src/ modules: {} (see ARCHITECTURE.md for which way each may import)",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn the_check_finds_a_circle_when_there_is_one() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    let cycle = find_cycle(&graph).expect("a -> b -> c -> a");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4);
}

#[test]
fn only_the_docker_module_uses_bollard() {
    let users: Vec<String> = sources()
        .into_iter()
        .filter(|(path, text)| !path.starts_with("docker/") && text.contains("bollard"))
        .map(|(path, _)| path)
        .collect();
    assert!(
        users.is_empty(),
        "bollard used outside src/docker/ (put the call behind docker::Engine): {users:?}"
    );
}
