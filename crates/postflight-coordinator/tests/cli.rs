//! The `postflight-coordinator` binary explains itself. (As an integration test it also makes
//! `cargo test` build the binary that the workspace's end-to-end tests start.)
#![allow(clippy::unwrap_used, missing_docs)]

use std::process::Command;

#[test]
fn help_names_every_option() {
    let out = Command::new(env!("CARGO_BIN_EXE_postflight-coordinator"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--listen",
        "127.0.0.1:7700",
        "--database",
        "sqlite://postflight.db",
        "--probe-token",
        "--data-key-file",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
}

#[test]
fn a_bad_duration_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_postflight-coordinator"))
        .args(["--run-timeout", "5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no unit"));
}
