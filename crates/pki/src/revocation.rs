//! The revocation list (SPEC §2: a connection with a revoked certificate MUST be
//! refused).
//!
//! The list is a text file with one serial number per line in hex (lowercase
//! written, either case read), `#` starting a comment; an empty file is an
//! empty list, a missing file an error — at start and at every reload, when
//! the previous list stays in force (a deleted file must not unrevoke
//! anything). Servers share one [`RevocationList`] (in an `Arc`) with their TLS
//! client verifier, which consults it on **every** handshake, so
//! [`RevocationList::reload`] (every 10 s, and on SIGHUP, which `duokey-server revoke` sends to
//! the server running on its data directory) takes effect for new connections without a restart.
//!
//! Serial numbers are compared without leading zero bytes, so `00ab…` and `ab…`
//! are the same serial.

use crate::error::{Error, Result};
use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A thread-safe, reloadable set of revoked certificate serial numbers (SPEC §2).
#[derive(Debug, Default)]
pub struct RevocationList {
    path: Option<PathBuf>,
    serials: RwLock<HashSet<Vec<u8>>>,
}

impl RevocationList {
    /// An empty list not backed by a file (nothing is revoked; SPEC §2).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Reads the list from `path`; a missing file is an error (SPEC §2).
    /// [`RevocationList::reload`] reads the same file again.
    pub fn load(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let serials = read_file(&path)?;
        Ok(Self {
            path: Some(path),
            serials: RwLock::new(serials),
        })
    }

    /// Reads the file again and replaces the list; returns how many serials it
    /// holds. On error the previous list stays in force (SPEC §2).
    pub fn reload(&self) -> Result<usize> {
        let Some(path) = &self.path else {
            return Ok(self.len());
        };
        let serials = read_file(path)?;
        let n = serials.len();
        *self.write() = serials;
        Ok(n)
    }

    /// Whether `serial` (raw serial bytes, see [`crate::PeerIdentity::serial`]) is
    /// revoked (SPEC §2).
    pub fn is_revoked(&self, serial: &[u8]) -> bool {
        self.read().contains(normalize(serial))
    }

    /// Revokes `serial` in memory only (it is lost on the next reload unless it
    /// is also in the file; use [`RevocationList::revoke_in_file`] for that; SPEC §2).
    pub fn insert(&self, serial: &[u8]) {
        self.write().insert(normalize(serial).to_vec());
    }

    /// Every revoked serial (without leading zero bytes), sorted (SPEC §2).
    pub fn serials(&self) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = self.read().iter().cloned().collect();
        out.sort();
        out
    }

    /// Number of revoked serials (SPEC §2).
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether nothing is revoked (SPEC §2).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file behind this list, if any (SPEC §2).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Appends `serial` as a lowercase hex line to the list file at `path`
    /// (created if missing). Running servers see it after their next
    /// [`RevocationList::reload`] (SPEC §2).
    pub fn revoke_in_file(path: &Path, serial: &[u8]) -> Result<()> {
        let serial = normalize(serial);
        if serial.is_empty() {
            return Err(Error::InvalidSerial("empty"));
        }
        let needs_newline = match fs::read(path) {
            Ok(bytes) => bytes.last().is_some_and(|&b| b != b'\n'),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io("read", path, e)),
        };
        let mut file = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| Error::io("open", path, e))?;
        let line = format!(
            "{}{}\n",
            if needs_newline { "\n" } else { "" },
            hex::encode(serial)
        );
        file.write_all(line.as_bytes())
            .map_err(|e| Error::io("write", path, e))?;
        file.sync_all().map_err(|e| Error::io("sync", path, e))
    }

    fn read(&self) -> RwLockReadGuard<'_, HashSet<Vec<u8>>> {
        // The set is always valid even if a writer panicked: ignore poisoning.
        self.serials
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashSet<Vec<u8>>> {
        self.serials
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The serial without leading zero bytes.
fn normalize(serial: &[u8]) -> &[u8] {
    let start = serial.iter().position(|&b| b != 0).unwrap_or(serial.len());
    serial.get(start..).unwrap_or_default()
}

fn read_file(path: &Path) -> Result<HashSet<Vec<u8>>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::MissingRevocationList(path.to_path_buf()));
        }
        Err(e) => return Err(Error::io("read", path, e)),
    };
    let mut set = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let content = line.split('#').next().unwrap_or_default().trim();
        if content.is_empty() {
            continue;
        }
        let bad = |detail: String| Error::RevocationList {
            path: path.to_path_buf(),
            line: i + 1,
            detail,
        };
        let bytes = hex::decode(content)
            .map_err(|e| bad(format!("{content:?} is not a hex serial number: {e}")))?;
        let serial = normalize(&bytes);
        if serial.is_empty() {
            return Err(bad("a serial number cannot be zero".into()));
        }
        if serial.len() > 20 {
            return Err(bad("a serial number has at most 20 bytes".into()));
        }
        set.insert(serial.to_vec());
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The path of a revocation file not written yet, in a directory that
    /// lives as long as the returned guard.
    fn list_path() -> (tempfile::TempDir, PathBuf) {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("tempdir: {e}"),
        };
        let path = dir.path().join("revoked.txt");
        (dir, path)
    }

    fn write(path: &Path, text: &str) -> Result<()> {
        fs::write(path, text).map_err(|e| Error::io("write", path, e))
    }

    /// A list loaded from a file holding `text`.
    fn loaded(text: &str) -> Result<(tempfile::TempDir, PathBuf, RevocationList)> {
        let (dir, path) = list_path();
        write(&path, text)?;
        let list = RevocationList::load(&path)?;
        Ok((dir, path, list))
    }

    #[test]
    fn a_missing_file_is_an_error_and_never_unrevokes() -> Result<()> {
        let (_dir, path) = list_path();
        assert!(matches!(
            RevocationList::load(&path),
            Err(Error::MissingRevocationList(_))
        ));
        write(&path, "")?;
        let list = RevocationList::load(&path)?;
        assert!(list.is_empty(), "an empty file is an empty list");
        RevocationList::revoke_in_file(&path, &[0x42])?;
        assert_eq!(list.reload()?, 1);
        fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
        assert!(matches!(
            list.reload(),
            Err(Error::MissingRevocationList(_))
        ));
        assert!(list.is_revoked(&[0x42]), "the previous list stays in force");
        Ok(())
    }

    #[test]
    fn parse_comments_case_and_leading_zeros() -> Result<()> {
        let (_dir, _, list) = loaded("# revoked by admin\n\n0a0B0c   # laptop stolen\n  00ff\n")?;
        assert_eq!(list.len(), 2);
        assert!(list.is_revoked(&[0x0a, 0x0b, 0x0c]));
        assert!(list.is_revoked(&[0x00, 0x0a, 0x0b, 0x0c]));
        assert!(list.is_revoked(&[0xff]));
        assert!(!list.is_revoked(&[0x0a, 0x0b]));
        Ok(())
    }

    #[test]
    fn revoke_in_file_then_reload() -> Result<()> {
        // A file without final newline must still get one line per serial.
        let (_dir, path, list) = loaded("01")?;
        assert_eq!(list.len(), 1);
        RevocationList::revoke_in_file(&path, &[0x7f, 0x10])?;
        RevocationList::revoke_in_file(&path, &[0x00, 0x22])?;
        assert!(!list.is_revoked(&[0x7f, 0x10]), "not before reload");
        assert_eq!(list.reload()?, 3);
        assert!(list.is_revoked(&[0x7f, 0x10]));
        assert!(list.is_revoked(&[0x22]));
        let text = fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
        assert_eq!(text, "01\n7f10\n22\n");
        Ok(())
    }

    #[test]
    fn bad_line_keeps_old_list() -> Result<()> {
        let (_dir, path, list) = loaded("abcd\n")?;
        write(&path, "abcd\nnot-hex\n")?;
        match list.reload() {
            Err(Error::RevocationList { line: 2, .. }) => {}
            other => panic!("expected a line-2 error, got {other:?}"),
        }
        assert!(list.is_revoked(&[0xab, 0xcd]));
        assert!(RevocationList::revoke_in_file(&path, &[0, 0]).is_err());
        Ok(())
    }

    #[test]
    fn in_memory_insert() {
        let list = RevocationList::empty();
        list.insert(&[0, 5]);
        assert!(list.is_revoked(&[5]));
        assert_eq!(list.path(), None);
    }
}
