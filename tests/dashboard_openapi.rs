//! The OpenAPI document at `/api/openapi.json` checked against the real server by schemathesis
//! (PyPI): it generates requests from the document, valid and invalid, and checks every answer's
//! status, content type, headers and body against what the document promises. The store is seeded
//! so the answers carry real data. Reports go to `target/test-artifacts/openapi/`.

use std::path::Path;
use std::process::Command;

use butler_testkit::dashboard::{DashboardProcess, artifacts_dir, seed_demo, write_token};

fn butler_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_butler"))
}

/// `schemathesis run` against the dashboard's own document, with `args`; panics with its report
/// when any check failed.
fn schemathesis(dashboard: &DashboardProcess, report: &str, args: &[&str]) {
    let reports = artifacts_dir("openapi").join(report);
    // Its cache (`.schemathesis/`) goes with the reports, not into the repository.
    let out = Command::new("schemathesis")
        .current_dir(artifacts_dir("openapi"))
        .arg("run")
        .arg(dashboard.url("/api/openapi.json"))
        .args(["--seed", "20261127", "--report", "junit", "--report-dir"])
        .arg(&reports)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run schemathesis (pip install schemathesis; scripts/test installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "schemathesis found responses that do not match the OpenAPI document ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("passed") && !stdout.contains(" 0 passed"),
        "schemathesis tested nothing:\n{stdout}"
    );
}

#[test]
fn every_read_answer_matches_the_openapi_document() {
    let dashboard = DashboardProcess::start(butler_bin(), "", seed_demo);
    schemathesis(
        &dashboard,
        "read",
        &[
            "--include-method",
            "GET",
            "--checks",
            "all",
            "--max-examples",
            "40",
        ],
    );
}

#[test]
fn every_action_answer_matches_the_openapi_document() {
    let dir = tempfile::tempdir().unwrap();
    let token = write_token(dir.path(), "api-token", "schema-token", 0o600);
    let extra = format!(
        "token_file = \"{}\"\naction_timeout = \"1s\"",
        token.display()
    );
    let dashboard = DashboardProcess::start(butler_bin(), &extra, seed_demo);
    // With the token, and without the workers that run actions: the answers are 503 (nobody ran
    // it), which the document lists; so here a 5xx is not a failure in itself.
    schemathesis(
        &dashboard,
        "actions",
        &[
            // The actions, and reading a request back (the documents' links lead there).
            "--include-operation-id-regex",
            "^(proxyUpdate|fix502|restartService|getRequest)$",
            "--checks",
            "all",
            "--exclude-checks",
            "not_a_server_error,ignored_auth",
            "--max-examples",
            "8",
            "-H",
            "Authorization: Bearer schema-token",
        ],
    );
    // And without the token every action is refused, as documented.
    schemathesis(
        &dashboard,
        "actions-no-token",
        &[
            "--include-operation-id-regex",
            "^(proxyUpdate|fix502|restartService|getRequest)$",
            "--checks",
            "all",
            "--max-examples",
            "5",
        ],
    );
}
