//! The `postflight-probe` binary explains itself. (As an integration test it also makes
//! `cargo test` build the binary that the workspace's end-to-end tests start.)
#![allow(clippy::unwrap_used, missing_docs)]

use std::process::Command;

#[test]
fn help_names_every_option() {
    let out = Command::new(env!("CARGO_BIN_EXE_postflight-probe"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--coordinator",
        "--region",
        "--name",
        "--label",
        "--token",
        "POSTFLIGHT_TOKEN",
        "${probe:VAR}",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
}

#[test]
fn labels_must_be_key_value() {
    let out = Command::new(env!("CARGO_BIN_EXE_postflight-probe"))
        .args([
            "--coordinator",
            "http://127.0.0.1:1",
            "--region",
            "r",
            "--label",
            "novalue",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected KEY=VALUE"));
}
