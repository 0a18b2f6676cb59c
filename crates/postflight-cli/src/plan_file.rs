//! Reading a plan file with the CLI's variable scope.

use std::io::Read;
use std::path::Path;

use postflight_plan::vars::{Expander, ProcessEnv};
use postflight_plan::{PlanErrors, model::Plan, parse_plan_with_files};

/// Why a plan could not be loaded.
#[derive(Debug)]
pub enum PlanFileError {
    /// The file could not be read.
    Unreadable(String),
    /// The plan is invalid.
    Invalid(PlanErrors),
}

impl PlanFileError {
    /// The text to print on stderr: every error with its position and source line.
    pub fn render(&self) -> String {
        match self {
            PlanFileError::Unreadable(message) => format!("error: {message}\n"),
            PlanFileError::Invalid(errors) => {
                let count = errors.len();
                let mut out = errors.render();
                if count > 1 {
                    out.push_str(&format!("{count} errors in {}\n", errors.origin));
                }
                out
            }
        }
    }
}

/// Reads a plan, refusing one larger than any plan may be before it is all in memory.
fn read_bounded(reader: impl Read, origin: &str) -> Result<String, PlanFileError> {
    let limit = postflight_plan::load::MAX_PLAN_BYTES;
    let mut text = String::new();
    reader
        .take(limit as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| PlanFileError::Unreadable(format!("cannot read plan {origin}: {e}")))?;
    if text.len() > limit {
        return Err(PlanFileError::Unreadable(format!(
            "plan {origin} is larger than {limit} bytes, the most a plan may be"
        )));
    }
    Ok(text)
}

/// Reads and validates a plan. `local` also expands `${probe:…}` from this process's
/// environment, because a local run is its own probe.
pub fn load(path: &Path, local: bool) -> Result<Plan, PlanFileError> {
    let (origin, source) = if path == Path::new("-") {
        let origin = "<stdin>".to_owned();
        let text = read_bounded(std::io::stdin(), &origin)?;
        (origin, text)
    } else {
        let origin = path.display().to_string();
        let file = std::fs::File::open(path)
            .map_err(|e| PlanFileError::Unreadable(format!("cannot read plan {origin}: {e}")))?;
        let source = read_bounded(file, &origin)?;
        (origin, source)
    };
    let expander = if local {
        Expander::both(&ProcessEnv, &ProcessEnv)
    } else {
        Expander::plan(&ProcessEnv)
    };
    // Files a plan names (golden sets) are relative to the plan's folder, as a reader of the
    // plan expects; a plan on stdin names them relative to the current folder.
    let folder = match path.parent() {
        Some(parent) if path != Path::new("-") => parent.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let read = |name: &str| read_named(&folder, name);
    parse_plan_with_files(&source, &origin, expander, Some(&read)).map_err(PlanFileError::Invalid)
}

/// The most a file named by a plan may hold: 8 MiB of golden cases is far more than a
/// check replays.
const MAX_NAMED_FILE_BYTES: u64 = 8 << 20;

fn read_named(folder: &Path, name: &str) -> Result<String, String> {
    let path = folder.join(name);
    let shown = path.display();
    let file = std::fs::File::open(&path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let mut text = String::new();
    file.take(MAX_NAMED_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if text.len() as u64 > MAX_NAMED_FILE_BYTES {
        return Err(format!(
            "{shown} is larger than {MAX_NAMED_FILE_BYTES} bytes, the most a plan's file may be"
        ));
    }
    Ok(text)
}
