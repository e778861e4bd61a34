//! Every Dockerfile in the repository (the image's, the examples') passes
//! hadolint with its default rules and failure threshold (any finding,
//! down to `info`, fails); an exception is a `# hadolint ignore=` comment
//! on the line, with the reason beside it. hadolint comes from its PyPI
//! wheel (scripts/test-requirements.txt) into .tools/bin.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Files named `Dockerfile` under `dir`, leaving out build output, vendored
/// crates, test tools and venvs.
fn dockerfiles(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() && !matches!(name.as_str(), "target" | "vendor" | ".git" | ".tools" | ".venv" | "node_modules")
        {
            dockerfiles(&path, found);
        } else if kind.is_file() && name == "Dockerfile" {
            found.push(path);
        }
    }
}

#[test]
#[cfg_attr(not(have_hadolint), ignore = "needs hadolint in .tools/bin: run bash scripts/test-deps.sh")]
fn every_dockerfile_passes_hadolint() {
    let mut found = Vec::new();
    dockerfiles(Path::new(ROOT), &mut found);
    found.sort();
    for want in ["Dockerfile", "examples/flask/Dockerfile", "examples/django/Dockerfile", "examples/fastapi/Dockerfile"]
    {
        assert!(found.contains(&Path::new(ROOT).join(want)), "{want} not found in {found:?}");
    }
    for file in &found {
        let out = Command::new(tool("hadolint")).arg("--no-color").arg(file).output().expect("run .tools/bin/hadolint");
        assert!(
            out.status.success(),
            "hadolint {}:\n{}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The check above fails on a finding: a Dockerfile with a classic mistake
/// (an unpinned `apt-get install` without `--no-install-recommends`, no
/// list cleanup) is refused, so a passing run means something.
#[test]
#[cfg_attr(not(have_hadolint), ignore = "needs hadolint in .tools/bin: run bash scripts/test-deps.sh")]
fn hadolint_refuses_a_careless_dockerfile() {
    let dir = TempDir::new("hadolint");
    let bad = dir.write("Dockerfile", "FROM debian:trixie\nRUN apt-get update && apt-get install -y curl\n");
    let out = Command::new(tool("hadolint")).arg("--no-color").arg(&bad).output().expect("run .tools/bin/hadolint");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{report}");
    assert!(report.contains("DL3015") && report.contains("DL3009"), "{report}");
}
