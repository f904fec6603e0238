//! The operating system's random generator (SPEC §3.1: "from the OS CSPRNG").

use crate::error::{Error, Result};
use rand::TryRng;

/// Fills `buf` from the operating system's generator.
pub(crate) fn fill(buf: &mut [u8]) -> Result<()> {
    rand::rngs::SysRng
        .try_fill_bytes(buf)
        .map_err(|_| Error::Random)
}

/// The operating system's generator as a `CryptoRng`, for key generation.
pub(crate) fn os_rng() -> rand::rand_core::UnwrapErr<rand::rngs::SysRng> {
    rand::rand_core::UnwrapErr(rand::rngs::SysRng)
}
