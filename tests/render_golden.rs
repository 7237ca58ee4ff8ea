//! Golden files for the proxy's pure core: each `tests/golden/<case>/input.json` (containers and
//! settings) is planned and rendered, and the plan (`plan.json`) and every rendered file
//! (`expected/...`) must match byte for byte. `UPDATE_GOLDEN=1 cargo test --test render_golden`
//! rewrites them; review the diff before committing it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use devops_butler::docker::ContainerSnapshot;
use devops_butler::proxy::{self, PlanSettings, RenderSettings, Templates};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    plan_settings: PlanSettings,
    render_settings: RenderSettings,
    containers: Vec<ContainerSnapshot>,
    /// Strings that must not appear in any rendered file (hostile values, excluded apps).
    #[serde(default)]
    absent_from_files: Vec<String>,
}

fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Every file under `dir`, by path relative to it, '/'-separated.
fn read_tree(dir: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path.strip_prefix(base).unwrap();
                let rel = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.insert(rel, fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn first_difference(want: &str, got: &str) -> String {
    for (i, (w, g)) in want.lines().zip(got.lines()).enumerate() {
        if w != g {
            return format!("line {}: expected {w:?}, got {g:?}", i + 1);
        }
    }
    format!(
        "expected {} lines, got {} lines (or a trailing newline differs)",
        want.lines().count(),
        got.lines().count()
    )
}

/// Plans and renders one case: the files a case directory should hold besides input.json.
fn run_case(input: &Input, templates: &Templates) -> (BTreeMap<String, String>, String) {
    let plan = proxy::plan(&input.containers, &input.plan_settings);
    let rendered = proxy::render(&plan, &input.render_settings, templates)
        .unwrap_or_else(|e| panic!("render failed: {e}"));
    let mut files: BTreeMap<String, String> = rendered
        .files
        .into_iter()
        .map(|(path, text)| (format!("expected/{path}"), text))
        .collect();
    // The data path's Lua code is the shipped file, verbatim: checked here, not copied per case.
    if let Some(lua) = files.remove("expected/lua/butler.lua") {
        assert_eq!(
            lua,
            include_str!("../templates/butler.lua"),
            "lua/butler.lua"
        );
    }
    let plan_json = serde_json::to_string_pretty(&plan).unwrap() + "\n";
    files.insert("plan.json".into(), plan_json);
    (files, rendered.hash)
}

#[test]
fn golden_cases() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let templates = Templates::load(None).expect("shipped templates parse");
    let mut cases: Vec<PathBuf> = fs::read_dir(golden_root())
        .expect("tests/golden exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("input.json").is_file())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 7,
        "expected at least 7 golden cases, found {}",
        cases.len()
    );

    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let input: Input =
            serde_json::from_str(&fs::read_to_string(case.join("input.json")).unwrap())
                .unwrap_or_else(|e| panic!("{name}/input.json: {e}"));
        let (actual, hash) = run_case(&input, &templates);

        // Docker lists containers in no particular order; the output must not depend on it.
        let mut reversed = input.containers.clone();
        reversed.reverse();
        let (again, again_hash) = run_case(
            &Input {
                containers: reversed,
                plan_settings: input.plan_settings.clone(),
                render_settings: input.render_settings.clone(),
                absent_from_files: vec![],
            },
            &templates,
        );
        if again != actual || again_hash != hash {
            failures.push(format!(
                "{name}: reversed input gives a different plan or config"
            ));
        }

        for needle in &input.absent_from_files {
            for (path, text) in actual.iter().filter(|(p, _)| p.starts_with("expected/")) {
                if text.contains(needle.as_str()) {
                    failures.push(format!("{name}/{path} contains {needle:?}"));
                }
            }
        }

        if update {
            let _ = fs::remove_dir_all(case.join("expected"));
            for (path, text) in &actual {
                let dest = case.join(path);
                fs::create_dir_all(dest.parent().unwrap()).unwrap();
                fs::write(dest, text).unwrap();
            }
            continue;
        }

        let mut expected = read_tree(&case.join("expected"))
            .into_iter()
            .map(|(p, t)| (format!("expected/{p}"), t))
            .collect::<BTreeMap<_, _>>();
        if let Ok(plan) = fs::read_to_string(case.join("plan.json")) {
            expected.insert("plan.json".into(), plan);
        }
        for (path, want) in &expected {
            match actual.get(path) {
                None => failures.push(format!("{name}/{path}: expected, but not rendered")),
                Some(got) if got != want => failures.push(format!(
                    "{name}/{path}: differs, {}",
                    first_difference(want, got)
                )),
                Some(_) => {}
            }
        }
        for path in actual.keys().filter(|p| !expected.contains_key(*p)) {
            failures.push(format!("{name}/{path}: rendered, but no golden file"));
        }
    }
    assert!(
        failures.is_empty(),
        "golden files differ (run with UPDATE_GOLDEN=1 to accept, then review the diff):\n{}",
        failures.join("\n")
    );
}
