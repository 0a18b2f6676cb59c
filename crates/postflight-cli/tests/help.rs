//! The `postflight` binary explains itself: commands, exit codes and flags in `--help`.
//! (Being an integration test, this also makes `cargo test` build the binary that the
//! end-to-end tests in the workspace's `tests/` run.)
#![allow(clippy::unwrap_used, missing_docs)]

use std::process::Command;

fn postflight(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_postflight"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_lists_commands_and_exit_codes() {
    let (code, stdout, _) = postflight(&["--help"]);
    assert_eq!(code, 0);
    for needle in [
        "run",
        "check",
        "demo",
        "0 PASS, 1 FAIL, 2 usage or plan error, 3 WARN",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    let (code, stdout, _) = postflight(&["run", "--help"]);
    assert_eq!(code, 0);
    for needle in [
        "--local",
        "--coordinator",
        "--output",
        "--timeout",
        "--dry-run",
        "--region",
    ] {
        assert!(stdout.contains(needle), "missing {needle} in:\n{stdout}");
    }
}

#[test]
fn version_and_unknown_commands() {
    let (code, stdout, _) = postflight(&["--version"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("postflight "), "{stdout}");
    let (code, _, stderr) = postflight(&["deploy"]);
    assert_eq!(code, 2, "usage errors exit 2");
    assert!(
        stderr.contains("unrecognized subcommand 'deploy'"),
        "{stderr}"
    );
}
