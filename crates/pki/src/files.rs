//! Writing certificates and private keys to disk (SPEC §2): private keys are
//! created with mode 0600 from the first byte, and every file is replaced
//! atomically (written beside the target, synced, then renamed over it).

use crate::error::{Error, Result};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Permission bits of private key files.
pub(crate) const SECRET_MODE: u32 = 0o600;
/// Permission bits of certificate files.
pub(crate) const PUBLIC_MODE: u32 = 0o644;

/// Creates `dir` (mode 0700 where supported) if it does not exist.
pub(crate) fn ensure_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| Error::io("create directory", dir, e))
}

/// Writes `contents` to `path` atomically; the file has `mode` (Unix) from its
/// creation on, so a private key is never readable by others, even briefly.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut suffix = [0u8; 8];
    crate::random::fill(&mut suffix)?;
    let tmp = dir.join(format!(".{name}.tmp-{}", hex::encode(suffix)));

    let result = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        let mut file = options
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        file.write_all(contents)
            .map_err(|e| Error::io("write", &tmp, e))?;
        file.sync_all().map_err(|e| Error::io("sync", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io("replace", path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a whole text file.
pub(crate) fn read_string(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| Error::io("read", path, e))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn secret_file_mode_and_overwrite() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", Path::new("/tmp"), e))?;
        let path = dir.path().join("k.key");
        write_atomic(&path, b"one", SECRET_MODE)?;
        write_atomic(&path, b"two", SECRET_MODE)?;
        let meta = fs::metadata(&path).map_err(|e| Error::io("stat", &path, e))?;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(read_string(&path)?, "two");
        // No temporary file left behind.
        let entries = fs::read_dir(dir.path())
            .map_err(|e| Error::io("list", dir.path(), e))?
            .count();
        assert_eq!(entries, 1);
        Ok(())
    }
}

/// Writes a secret file (mode 0600 from its creation, replaced atomically).
pub fn write_secret(path: &Path, contents: &[u8]) -> Result<()> {
    write_atomic(path, contents, SECRET_MODE)
}
