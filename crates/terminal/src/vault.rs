//! Secrets at rest (SPEC §6): every secret the profile stores is sealed with
//! AES-256-GCM under a key derived from the passphrase with Argon2id, unless
//! the user chose `--no-passphrase`.

use crate::error::{Error, Result};
use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use zeroize::Zeroizing;

/// Argon2id cost: 64 MiB, 3 passes, 1 lane (RFC 9106's second recommendation).
const M_COST_KIB: u32 = 64 * 1024;
const T_COST: u32 = 3;
/// What the passphrase check seals.
const CHECK: &[u8] = b"duokey profile v1";

/// The profile's sealing key. Zeroized on drop.
pub struct Vault {
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault(<redacted>)")
    }
}

pub(crate) fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, &mut b).map_err(|_| Error::Random)?;
    Ok(b)
}

impl Vault {
    /// Derives the key from `passphrase` and `salt` with Argon2id.
    pub fn derive(passphrase: &[u8], salt: &[u8]) -> Result<Vault> {
        let params = argon2::Params::new(M_COST_KIB, T_COST, 1, Some(32))
            .map_err(|_| Error::Internal("argon2 params"))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(passphrase, salt, key.as_mut_slice())
            .map_err(|_| Error::Internal("argon2"))?;
        Ok(Vault { key })
    }

    /// A vault whose key is stored in the clear (`--no-passphrase`).
    pub fn from_plain_key(key: [u8; 32]) -> Vault {
        Vault {
            key: Zeroizing::new(key),
        }
    }

    /// A fresh random key.
    pub fn random_key() -> Result<Zeroizing<[u8; 32]>> {
        Ok(Zeroizing::new(random()?))
    }

    /// A copy of the key, for the agent of an unlocked session only
    /// ([`crate::agent`]).
    pub(crate) fn key_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(*self.key)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&(*self.key).into())
    }

    /// `nonce || AES-256-GCM(key, nonce, plaintext, aad = label)`.
    pub fn seal(&self, label: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let nonce: [u8; 12] = random()?;
        let ct = self
            .cipher()
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: plaintext,
                    aad: label.as_bytes(),
                },
            )
            .map_err(|_| Error::Internal("seal"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens what [`Vault::seal`] made with the same label.
    pub fn open(&self, label: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let (nonce, ct) = sealed
            .split_at_checked(12)
            .ok_or(Error::Corrupt("sealed value"))?;
        let nonce: [u8; 12] = nonce
            .try_into()
            .map_err(|_| Error::Corrupt("sealed value"))?;
        self.cipher()
            .decrypt(
                &nonce.into(),
                Payload {
                    msg: ct,
                    aad: label.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| Error::Corrupt("sealed value (wrong key or damaged profile)"))
    }

    /// Opens a 32-byte secret.
    pub fn open32(&self, label: &str, sealed: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        let v = self.open(label, sealed)?;
        let mut out = Zeroizing::new([0u8; 32]);
        if v.len() != 32 {
            return Err(Error::Corrupt("sealed secret length"));
        }
        out.copy_from_slice(&v);
        Ok(out)
    }

    /// The value stored to recognise a wrong passphrase.
    pub fn check_value(&self) -> Result<Vec<u8>> {
        self.seal("check", CHECK)
    }

    /// `Err(WrongPassphrase)` unless `check` was sealed by this key.
    pub fn verify_check(&self, check: &[u8]) -> Result<()> {
        match self.open("check", check) {
            Ok(v) if v.as_slice() == CHECK => Ok(()),
            _ => Err(Error::WrongPassphrase),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_need_the_key_and_the_label() {
        let v = Vault::from_plain_key([1; 32]);
        let s = v.seal("a", b"secret").unwrap();
        assert_eq!(v.open("a", &s).unwrap().as_slice(), b"secret");
        assert!(v.open("b", &s).is_err());
        assert!(Vault::from_plain_key([2; 32]).open("a", &s).is_err());
        assert!(!s.windows(6).any(|w| w == b"secret"));
    }

    #[test]
    fn wrong_passphrase_is_recognised() {
        let salt = [7u8; 16];
        let v = Vault::derive(b"correct horse", &salt).unwrap();
        let check = v.check_value().unwrap();
        v.verify_check(&check).unwrap();
        let wrong = Vault::derive(b"battery staple", &salt).unwrap();
        assert!(matches!(
            wrong.verify_check(&check),
            Err(Error::WrongPassphrase)
        ));
    }
}
