//! Plans at rest are sealed: a canonical plan can hold secrets (a header token expanded by the
//! CLI, a database password), and secrets never sit in the database in clear. The coordinator
//! keeps a 256-bit data key in a file (created on first start, mode 0600) and seals each plan
//! with ChaCha20-Poly1305 before storing it. Coordinators that share a PostgreSQL share the key
//! file.

use std::path::{Path, PathBuf};

use ring::aead::{CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

const VERSION: u8 = 1;
const KEY_LEN: usize = 32;

/// Why a key could not be loaded or a plan not unsealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The key file could not be read or written.
    #[error("data key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The sealed bytes are damaged or were sealed with another key.
    #[error("cannot unseal a stored plan: wrong data key or damaged data")]
    Unseal,
}

/// The data key.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(****)")
    }
}

impl Sealer {
    /// A sealer from raw key bytes.
    pub fn from_key(bytes: &[u8; KEY_LEN]) -> Self {
        // A 32-byte key is always valid for ChaCha20-Poly1305.
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes)
            .unwrap_or_else(|_| unreachable!("32-byte ChaCha20 key"));
        Self {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        }
    }

    /// Loads the key from `path` (64 hex characters), creating the file with a fresh random
    /// key, readable by its owner only, when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, SealError> {
        let fail = |reason: String| SealError::KeyFile {
            path: path.to_owned(),
            reason,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = decode_hex(text.trim())
                    .ok_or_else(|| fail("expected 64 hexadecimal characters".to_owned()))?;
                Ok(Self::from_key(&bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; KEY_LEN];
                SystemRandom::new()
                    .fill(&mut key)
                    .map_err(|_| fail("no system randomness".to_owned()))?;
                match write_private(path, &encode_hex(&key)) {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "created a new data key");
                        Ok(Self::from_key(&key))
                    }
                    // Another coordinator sharing the file created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::load_or_create(path)
                    }
                    Err(e) => Err(fail(e.to_string())),
                }
            }
            Err(e) => Err(fail(e.to_string())),
        }
    }

    /// Seals `plain`: version, random nonce, ciphertext and tag.
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        // SystemRandom only fails without an OS random source, where nothing would work.
        let _ = self.rng.fill(&mut nonce);
        let mut data = plain.to_vec();
        let sealed = self.key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            ring::aead::Aad::from([VERSION]),
            &mut data,
        );
        if sealed.is_err() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(1 + NONCE_LEN + data.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&data);
        out
    }

    /// Opens what [`Sealer::seal`] produced with the same key.
    pub fn unseal(&self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != VERSION {
            return Err(SealError::Unseal);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[1..1 + NONCE_LEN]);
        let mut data = sealed[1 + NONCE_LEN..].to_vec();
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from([VERSION]),
                &mut data,
            )
            .map_err(|_| SealError::Unseal)?;
        Ok(plain.to_vec())
    }
}

/// Writes a new key file, readable by its owner only, so that it is either absent or
/// complete and on disk: plans sealed with a key that a crash lost could never be read
/// again. The key goes to a temporary file, is synced, then linked to its name (which fails
/// rather than replace a key someone else created meanwhile), and the directory is synced.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique even between coordinators that are each PID 1 in their container and share
    // the key's volume.
    let mut nonce = [0u8; 8];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| std::io::Error::other("no system randomness"))?;
    let temp = dir.join(format!(".{name}.{}.tmp", encode_hex(&nonce)));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = (|| {
        // Only the link's `AlreadyExists` means "someone else created the key".
        let other = |e: std::io::Error| std::io::Error::other(e.to_string());
        let mut file = options.open(&temp).map_err(other)?;
        file.write_all(text.as_bytes()).map_err(other)?;
        file.write_all(b"\n").map_err(other)?;
        file.sync_all().map_err(other)?;
        std::fs::hard_link(&temp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    let _ = std::fs::remove_file(&temp);
    written
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<[u8; KEY_LEN]> {
    if text.len() != KEY_LEN * 2 {
        return None;
    }
    let mut out = [0u8; KEY_LEN];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_unseal_with_the_same_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.key");
        let sealer = Sealer::load_or_create(&path).unwrap();
        let plain = b"headers: {Authorization: Bearer s3cret}";
        let sealed = sealer.seal(plain);
        assert!(
            !sealed.windows(6).any(|w| w == b"s3cret"),
            "no secret in clear"
        );
        assert_eq!(sealer.unseal(&sealed).unwrap(), plain);
        assert_ne!(sealer.seal(plain), sealed, "a fresh nonce every time");
        let again = Sealer::load_or_create(&path).unwrap();
        assert_eq!(
            again.unseal(&sealed).unwrap(),
            plain,
            "the key file is reused"
        );
        let other = Sealer::from_key(&[7; KEY_LEN]);
        assert!(matches!(other.unseal(&sealed), Err(SealError::Unseal)));
        let mut damaged = sealed.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(sealer.unseal(&damaged).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_bad_key_file_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.key");
        std::fs::write(&path, "not hex").unwrap();
        let err = Sealer::load_or_create(&path).unwrap_err().to_string();
        assert!(
            err.contains("bad.key") && err.contains("64 hexadecimal"),
            "{err}"
        );
    }

    #[test]
    fn a_new_key_is_written_whole_and_never_replaces_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.key");
        write_private(&path, "first").unwrap();
        let err = write_private(&path, "second").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first\n");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["data.key"], "no temporary file stays");
    }
}
