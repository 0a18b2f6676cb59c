//! Where the CLI keeps what outlives one command (the rollback ledger, baselines), and how it
//! writes files there without ever leaving half of one.
//!
//! Location: `$POSTFLIGHT_STATE_DIR`, else `$XDG_STATE_HOME/postflight/`, else
//! `~/.local/state/postflight/`, else `./.postflight`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The CLI's state folder.
pub fn dir() -> PathBuf {
    std::env::var_os("POSTFLIGHT_STATE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_STATE_HOME").map(|d| PathBuf::from(d).join("postflight")))
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state/postflight"))
        })
        .unwrap_or_else(|| PathBuf::from(".postflight"))
}

/// Writes `bytes` to a new file beside `path`, flushes it to disk, renames it over `path`
/// and flushes the directory, so `path` is always either the old or the new content.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "ledger".into(), |n| n.to_string_lossy().into_owned());
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, path)?;
    File::open(dir)?.sync_all()
}
