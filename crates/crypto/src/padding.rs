//! The padded plaintext of SPEC §3.3:
//! `u8 content_type || u32 len(body) || body || zeros to a multiple of 32`.

use crate::codec::wire_enum;
use crate::error::{Error, Result};

/// Plaintexts are padded to a multiple of this many bytes.
pub const PAD_BLOCK: usize = 32;
/// `u8 content_type || u32 len`.
const PREFIX: usize = 5;

wire_enum! {
    /// What an envelope carries (SPEC §3.3 `content_type`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum ContentType {
        /// 1: a UTF-8 text message.
        Text = 1,
        /// 2: UTF-8 JSON for in-group notices.
        Control = 2,
    }
    else Error::UnknownContentType
}

/// Length of the padded plaintext of a body of `body_len` bytes.
pub fn padded_len(body_len: usize) -> usize {
    (PREFIX + body_len).div_ceil(PAD_BLOCK) * PAD_BLOCK
}

/// Appends the padded plaintext of `body` to `out`.
pub(crate) fn pad_into(out: &mut Vec<u8>, content_type: ContentType, body: &[u8]) -> Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| Error::TooLarge {
        what: "body",
        len: body.len(),
        max: u32::MAX as usize,
    })?;
    let total = padded_len(body.len());
    out.reserve(total);
    out.push(content_type as u8);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out.resize(out.len() + total - PREFIX - body.len(), 0);
    Ok(())
}

/// Checks a decrypted plaintext in SPEC §3.3 order — V10 `len(body)` fits,
/// V11 padding zeros and minimal, V12 known content type — and returns the
/// content type and the body's range. V13 (UTF-8) is the caller's, done once
/// when the body becomes a `String`.
pub(crate) fn unpad(plaintext: &[u8]) -> Result<(ContentType, std::ops::Range<usize>)> {
    let (prefix, rest) = plaintext
        .split_at_checked(PREFIX)
        .ok_or(Error::BadBodyLength)?;
    let mut len_bytes = [0u8; 4];
    len_bytes.copy_from_slice(prefix.get(1..).ok_or(Error::BadBodyLength)?);
    let len = usize::try_from(u32::from_be_bytes(len_bytes)).map_err(|_| Error::BadBodyLength)?;
    let (body, pad) = rest.split_at_checked(len).ok_or(Error::BadBodyLength)?;
    if plaintext.len() != padded_len(len) || pad.iter().any(|&b| b != 0) {
        return Err(Error::BadPadding);
    }
    let content_type = ContentType::try_from(prefix.first().copied().unwrap_or(0))?;
    Ok((content_type, PREFIX..PREFIX + body.len()))
}

/// V10–V13 on an owned plaintext, turned into the body in place.
pub(crate) fn into_body(mut plaintext: Vec<u8>) -> Result<(ContentType, String)> {
    let (content_type, range) = unpad(&plaintext)?;
    plaintext.truncate(range.end);
    plaintext.drain(..range.start);
    let body = String::from_utf8(plaintext).map_err(|_| Error::InvalidUtf8)?;
    Ok((content_type, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn padded(ct: ContentType, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        pad_into(&mut v, ct, body).unwrap();
        v
    }

    #[test]
    fn padding_is_minimal_multiple_of_32() {
        for (len, total) in [(0, 32), (27, 32), (28, 64), (59, 64), (60, 96)] {
            let p = padded(ContentType::Text, &vec![b'a'; len]);
            assert_eq!(p.len(), total, "body {len}");
            assert_eq!(into_body(p).unwrap(), (ContentType::Text, "a".repeat(len)));
        }
    }

    #[test]
    fn each_plaintext_check_has_its_own_error() {
        let good = padded(ContentType::Text, b"hi");
        let mut long_len = good.clone();
        long_len[4] = 200;
        assert_eq!(unpad(&long_len).unwrap_err(), Error::BadBodyLength);
        assert_eq!(unpad(&good[..4]).unwrap_err(), Error::BadBodyLength);
        let mut nonzero = good.clone();
        nonzero[31] = 1;
        assert_eq!(unpad(&nonzero).unwrap_err(), Error::BadPadding);
        let mut extra = good.clone();
        extra.extend_from_slice(&[0; 32]);
        assert_eq!(unpad(&extra).unwrap_err(), Error::BadPadding);
        let mut reserved = good.clone();
        reserved[0] = 3;
        assert_eq!(unpad(&reserved).unwrap_err(), Error::UnknownContentType(3));
        let bad_utf8 = padded(ContentType::Text, &[0xff, 0xfe]);
        assert_eq!(into_body(bad_utf8), Err(Error::InvalidUtf8));
    }
}
