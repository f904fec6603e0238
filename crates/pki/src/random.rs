//! The operating system's random generator, for serial numbers and file names.

use crate::error::{Error, Result};
use rand::TryRng;

/// Fills `buf` from the operating system's generator.
pub(crate) fn fill(buf: &mut [u8]) -> Result<()> {
    rand::rngs::SysRng
        .try_fill_bytes(buf)
        .map_err(|_| Error::Random)
}
