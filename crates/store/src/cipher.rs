//! Encryption at rest for Secret values: ChaCha20-Poly1305 with a key kept in the data
//! directory (mode 0600). Anyone who can read the data directory can read the key; what this
//! buys is that the database file, backups of it and archives of the store hold no plain-text
//! secrets.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

const MAGIC: &[u8] = b"FSEC1";
const NONCE_LEN: usize = 12;
const KEY_LEN: usize = 32;

/// Why the cipher could not be set up or a value not be decrypted.
#[derive(Debug, thiserror::Error)]
pub enum CipherError {
    /// Key file unreadable or unwritable.
    #[error("secret key file {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Key file of the wrong size.
    #[error(
        "secret key file {0} is not a {KEY_LEN}-byte key; restore it from a backup (secrets cannot be read without it)"
    )]
    BadKey(PathBuf),
    /// Ciphertext that does not authenticate under this key.
    #[error("a stored secret cannot be decrypted with the key in the data directory")]
    Undecryptable,
}

/// Seals and opens secret objects.
pub struct SecretCipher {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for SecretCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretCipher(..)")
    }
}

impl SecretCipher {
    /// Load the key at `path`, creating a fresh random one (0600) if there is none.
    pub fn load_or_create(path: &Path) -> Result<Self, CipherError> {
        let io = |source| CipherError::Io {
            path: path.to_owned(),
            source,
        };
        let key = match fs::read(path) {
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = ChaCha20Poly1305::generate_key(&mut OsRng);
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                f.write_all(&key).map_err(io)?;
                f.sync_all().map_err(io)?;
                key.to_vec()
            }
            Err(e) => return Err(io(e)),
        };
        if key.len() != KEY_LEN {
            return Err(CipherError::BadKey(path.to_owned()));
        }
        // Tighten permissions of a key copied in by hand.
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o600));
        Ok(Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        })
    }

    /// Encrypt `plaintext`; the result starts with a marker so plain rows stay readable.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        // Encryption with a valid key and nonce cannot fail for in-memory buffers.
        let ct = self.cipher.encrypt(&nonce, plaintext).unwrap_or_default();
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + ct.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypt what [`seal`](Self::seal) produced; bytes without the marker are returned as is.
    pub fn open(&self, bytes: &[u8]) -> Result<Vec<u8>, CipherError> {
        let Some(rest) = bytes.strip_prefix(MAGIC) else {
            return Ok(bytes.to_vec());
        };
        if rest.len() < NONCE_LEN {
            return Err(CipherError::Undecryptable);
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), ct)
            .map_err(|_| CipherError::Undecryptable)
    }

    /// Whether `bytes` were sealed.
    pub fn is_sealed(bytes: &[u8]) -> bool {
        bytes.starts_with(MAGIC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_with_a_persistent_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret.key");
        let c = SecretCipher::load_or_create(&path).expect("create");
        let sealed = c.seal(b"password=hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        let again = SecretCipher::load_or_create(&path).expect("load");
        assert_eq!(again.open(&sealed).expect("open"), b"password=hunter2");
        assert_eq!(
            fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn refuses_ciphertext_from_another_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = SecretCipher::load_or_create(&dir.path().join("a")).expect("a");
        let b = SecretCipher::load_or_create(&dir.path().join("b")).expect("b");
        assert!(matches!(
            b.open(&a.seal(b"x")),
            Err(CipherError::Undecryptable)
        ));
    }
}
