//! The generated code in `src/generated/` is committed (no build script, no protoc); this test
//! regenerates it from `proto/` with protox and fails when the committed copy is stale.
//! `POSTFLIGHT_BLESS=1 cargo test -p postflight-proto` rewrites it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "postflight/v1/report.proto",
    "postflight/v1/probe.proto",
    "postflight/v1/validation.proto",
];

fn generate(out: &Path) {
    let proto_root = manifest_dir().join("../../proto");
    let fds = protox::compile(PROTOS, [&proto_root]).unwrap_or_else(|e| panic!("{e:?}"));
    std::fs::write(out.join("postflight_descriptor.bin"), fds.encode_to_vec()).unwrap();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The transport helper `connect()` would clash with the `Connect` RPC of the contract;
        // clients are built from a `Channel` instead.
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .out_dir(out)
        .compile_fds(fds)
        .unwrap();
}

fn committed() -> PathBuf {
    manifest_dir().join("src/generated")
}

#[test]
fn generated_code_is_up_to_date() {
    let fresh = tempfile::tempdir().unwrap();
    generate(fresh.path());
    let bless = std::env::var_os("POSTFLIGHT_BLESS").is_some();
    let mut stale = Vec::new();
    for entry in std::fs::read_dir(fresh.path()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let new = std::fs::read(entry.path()).unwrap();
        let old_path = committed().join(&name);
        if std::fs::read(&old_path).ok().as_deref() != Some(new.as_slice()) {
            if bless {
                std::fs::write(&old_path, &new).unwrap();
            } else {
                stale.push(name.to_string_lossy().into_owned());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "generated code is stale: {stale:?}; run `POSTFLIGHT_BLESS=1 cargo test -p postflight-proto` and commit src/generated"
    );
}

/// This crate's directory, read when the test runs: a test binary built in another clone that
/// shares the target directory carries that clone's compile-time path.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        std::path::PathBuf::from,
    )
}
