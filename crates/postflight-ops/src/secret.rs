//! Tokens: given on the command line, in the environment, or in a file (a mounted Kubernetes
//! Secret), kept out of `Debug` output and compared in constant time.

use std::fmt;
use std::path::Path;

use ring::digest::{SHA256, digest};

use crate::OpsError;

/// A token. Its `Debug` form is `****`, so it cannot leak through a logged struct.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a token.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The token itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, in constant time.
    pub fn matches(&self, presented: &[u8]) -> bool {
        same_secret(presented, self.0.as_bytes())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

/// The token from `value` (flag or environment) or from the file `file`, whichever is given;
/// giving both is an error (which one would win is a guess an operator should not have to make).
/// A file's surrounding whitespace (the newline editors and `kubectl create secret` leave) is
/// dropped; an empty token is refused, since it would let anyone in who sends an empty one.
pub fn resolve(
    value: Option<&str>,
    file: Option<&Path>,
    flag: &'static str,
    file_flag: &'static str,
) -> Result<Option<Secret>, OpsError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(OpsError::Usage(format!(
            "{flag} and {file_flag} are both set; give the token one way only"
        ))),
        (Some(v), None) if v.trim().is_empty() => Err(OpsError::Usage(format!("{flag} is empty"))),
        (Some(v), None) => Ok(Some(Secret::new(v))),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|source| OpsError::Read {
                flag: file_flag,
                path: path.display().to_string(),
                source,
            })?;
            let token = text.trim();
            if token.is_empty() {
                return Err(OpsError::Content {
                    flag: file_flag,
                    path: path.display().to_string(),
                    problem: "the file is empty".to_owned(),
                });
            }
            Ok(Some(Secret::new(token)))
        }
        (None, None) => Ok(None),
    }
}

/// Whether two secrets are equal, in time that depends on neither their content nor their
/// length: both are hashed first, then every byte of the digests is compared.
pub fn same_secret(presented: &[u8], expected: &[u8]) -> bool {
    let a = digest(&SHA256, presented);
    let b = digest(&SHA256, expected);
    let diff = a
        .as_ref()
        .iter()
        .zip(b.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_whole_secrets() {
        assert!(same_secret(b"s3cret-token", b"s3cret-token"));
        assert!(!same_secret(b"s3cret-toke", b"s3cret-token"));
        assert!(!same_secret(b"", b"s3cret-token"));
        assert!(!same_secret(b"S3cret-token", b"s3cret-token"));
        assert!(Secret::new("abc").matches(b"abc"));
        assert!(!Secret::new("abc").matches(b"abd"));
    }

    #[test]
    fn debug_never_shows_the_token() {
        let shown = format!("{:?}", Some(Secret::new("hunter2")));
        assert_eq!(shown, "Some(****)");
    }

    #[test]
    fn reads_tokens_from_flags_or_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        let got = resolve(None, Some(&file), "--token", "--token-file").unwrap();
        assert_eq!(got.unwrap().expose(), "from-file");
        let got = resolve(Some("flag"), None, "--token", "--token-file").unwrap();
        assert_eq!(got.unwrap().expose(), "flag");
        assert!(
            resolve(None, None, "--token", "--token-file")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn refuses_ambiguous_missing_and_empty_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let both = resolve(Some("a"), Some(&empty), "--token", "--token-file").unwrap_err();
        assert_eq!(
            both.to_string(),
            "--token and --token-file are both set; give the token one way only"
        );
        let e = resolve(None, Some(&empty), "--token", "--token-file").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("--token-file {}: the file is empty", empty.display())
        );
        let missing = dir.path().join("missing");
        let e = resolve(None, Some(&missing), "--token", "--token-file").unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "--token-file {}: cannot read the file",
                missing.display()
            )),
            "{e}"
        );
        let e = resolve(Some(" "), None, "--token", "--token-file").unwrap_err();
        assert_eq!(e.to_string(), "--token is empty");
    }
}
