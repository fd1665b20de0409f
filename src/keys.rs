//! The injector's Ed25519 key file.
//!
//! A key file is one line of text, `nordlys-ed25519-secret <64 hex digits>`, so that it can be
//! checked by eye and copied between machines without binary mangling.

use std::path::Path;

use anyhow::{Context, bail};
use ed25519_dalek::{SigningKey, VerifyingKey};

const PREFIX: &str = "nordlys-ed25519-secret ";

/// Makes a new random signing key from the operating system's RNG.
pub fn generate() -> anyhow::Result<SigningKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Writes the key with mode 0600; refuses to overwrite an existing file.
pub fn write(path: &Path, key: &SigningKey) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create key file {}", path.display()))?;
    writeln!(file, "{PREFIX}{}", hex::encode(key.to_bytes()))?;
    Ok(())
}

pub fn read(path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read key file {}", path.display()))?;
    parse(&text).with_context(|| format!("bad key file {}", path.display()))
}

pub fn parse(text: &str) -> anyhow::Result<SigningKey> {
    let Some(hex_part) = text.trim().strip_prefix(PREFIX) else {
        bail!("expected a line starting with `{}`", PREFIX.trim());
    };
    let bytes = hex::decode(hex_part.trim()).context("secret is not hex")?;
    let Ok(seed) = <[u8; 32]>::try_from(bytes.as_slice()) else {
        bail!("secret must be 32 bytes, found {}", bytes.len());
    };
    Ok(SigningKey::from_bytes(&seed))
}

pub fn public_hex(key: &VerifyingKey) -> String {
    hex::encode(key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let key = generate().unwrap();
        write(&path, &key).unwrap();
        assert_eq!(read(&path).unwrap().to_bytes(), key.to_bytes());
        assert!(write(&path, &key).is_err());
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("hello").is_err());
        assert!(parse("nordlys-ed25519-secret zz").is_err());
        assert!(parse("nordlys-ed25519-secret 0011").is_err());
    }
}
