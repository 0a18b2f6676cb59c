//! Token checks.

use ring::digest::{SHA256, digest};

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
    }
}
