//! Strict big-endian encoding of SPEC §3 ("Encoding"): `u16`/`u32`/`u64`,
//! `lp16(x) = u16(len(x)) || x`, `lp32(x) = u32(len(x)) || x`.
//!
//! The [`Reader`] never panics: every read checks the remaining length, and
//! [`Reader::finish`] rejects trailing bytes.

use crate::error::{Error, Result};
use crate::identity::{IdentityKey, SIGNATURE_LEN};

/// Appends SPEC §3 encodings to a byte vector.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
        }
    }
    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }
    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }
    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }
    /// `lp16(x)`; the caller's types guarantee `len(x) ≤ 65535`, checked again here.
    pub(crate) fn lp16(&mut self, x: &[u8]) -> Result<&mut Self> {
        let n = u16::try_from(x.len()).map_err(|_| Error::TooLarge {
            what: "lp16 field",
            len: x.len(),
            max: usize::from(u16::MAX),
        })?;
        Ok(self.u16(n).bytes(x))
    }
    /// `lp32(x)`.
    pub(crate) fn lp32(&mut self, x: &[u8]) -> Result<&mut Self> {
        let n = u32::try_from(x.len()).map_err(|_| Error::TooLarge {
            what: "lp32 field",
            len: x.len(),
            max: u32::MAX as usize,
        })?;
        Ok(self.u32(n).bytes(x))
    }
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }
    pub(crate) fn into_vec(self) -> Vec<u8> {
        self.buf
    }
    pub(crate) fn as_mut_vec(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
    /// Appends `key`'s signature over `label` and what was written from
    /// offset `from` on: the signed records of SPEC §3.3 and §4 are
    /// `magic || signed || signature[64]`, the magic left out of `signed`.
    pub(crate) fn sign_from(
        &mut self,
        from: usize,
        label: &[u8],
        key: &IdentityKey,
    ) -> Result<&mut Self> {
        let signed = self.buf.get(from..).ok_or(SIGNED_RANGE)?;
        let sig = key.sign_parts(&[label, signed])?;
        Ok(self.bytes(&sig))
    }
}

/// Defines a `#[repr(u8)]` enum whose discriminants are its wire codes, with
/// the strict `TryFrom<u8>` its decoder uses: a code the enum does not list
/// is refused with `$unknown(code)`. Each code is written once, so the
/// encoder (`v as u8`) and the decoder cannot disagree.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident = $code:literal,)+
        }
        else $unknown:expr
    ) => {
        $(#[$meta])*
        #[repr(u8)]
        $vis enum $name {
            $($(#[$variant_meta])* $variant = $code,)+
        }

        impl TryFrom<u8> for $name {
            type Error = $crate::Error;
            fn try_from(v: u8) -> $crate::Result<Self> {
                let unknown: fn(u8) -> $crate::Error = $unknown;
                match v {
                    $($code => Ok($name::$variant),)+
                    other => Err(unknown(other)),
                }
            }
        }
    };
}
pub(crate) use wire_enum;

/// A signed range outside the bytes written or read: a bug in this crate.
const SIGNED_RANGE: Error = Error::Internal("signed range");

/// Reads SPEC §3 encodings from a byte slice; every failure is [`Error::Malformed`].
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    input: &'a [u8],
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// `what` names the structure being decoded, for error messages.
    pub(crate) fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self {
            input: bytes,
            rest: bytes,
            what,
        }
    }
    fn malformed(&self) -> Error {
        Error::Malformed { what: self.what }
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.rest.len() < n {
            return Err(self.malformed());
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let s = self.take(N)?;
        <[u8; N]>::try_from(s).map_err(|_| self.malformed())
    }
    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub(crate) fn lp16(&mut self) -> Result<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
    pub(crate) fn lp32(&mut self) -> Result<&'a [u8]> {
        let n = usize::try_from(self.u32()?).map_err(|_| self.malformed())?;
        self.take(n)
    }
    /// Expects `magic` next.
    pub(crate) fn magic(&mut self, magic: &[u8]) -> Result<()> {
        if self.take(magic.len())? == magic {
            Ok(())
        } else {
            Err(Error::BadMagic { what: self.what })
        }
    }
    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }
    /// Ends decoding: trailing bytes are an error (SPEC §4 "Decoders reject …
    /// trailing bytes").
    pub(crate) fn finish(self) -> Result<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.malformed())
        }
    }
    /// Ends decoding of a signed record (see [`Writer::sign_from`]): reads
    /// the final signature, rejects trailing bytes, and returns the bytes
    /// the signature covers, from offset `from` of the input up to it.
    pub(crate) fn finish_signed(mut self, from: usize) -> Result<(&'a [u8], [u8; SIGNATURE_LEN])> {
        let signed_end = self.input.len() - self.rest.len();
        let signature = self.array::<SIGNATURE_LEN>()?;
        let input = self.input;
        self.finish()?;
        let signed = input.get(from..signed_end).ok_or(SIGNED_RANGE)?;
        Ok((signed, signature))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_of_every_encoding() {
        let mut w = Writer::default();
        w.u8(1).u16(2).u32(3).u64(4);
        w.lp16(b"ab").unwrap().lp32(b"cde").unwrap();
        let bytes = w.into_vec();
        let mut r = Reader::new(&bytes, "test");
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(r.u16().unwrap(), 2);
        assert_eq!(r.u32().unwrap(), 3);
        assert_eq!(r.u64().unwrap(), 4);
        assert_eq!(r.lp16().unwrap(), b"ab");
        assert_eq!(r.lp32().unwrap(), b"cde");
        r.finish().unwrap();
    }

    #[test]
    fn short_input_and_trailing_bytes_are_rejected() {
        let mut r = Reader::new(&[0, 5, 1, 2], "test");
        assert!(matches!(r.lp16(), Err(Error::Malformed { .. })));
        let mut r = Reader::new(&[0, 1, 9, 9], "test");
        assert_eq!(r.lp16().unwrap(), &[9]);
        assert!(matches!(r.finish(), Err(Error::Malformed { .. })));
    }

    #[test]
    fn oversized_lp16_is_refused() {
        let mut w = Writer::default();
        assert!(matches!(
            w.lp16(&vec![0; 70_000]),
            Err(Error::TooLarge { .. })
        ));
    }
}
