//! Certificate chains as stored (PROTOCOL §2): `lp32(der)` per certificate,
//! leaf first — one framing for the terminal's profile, the CS directory
//! and the GMS's membership log.

use crate::codec::{Reader, Writer};
use crate::error::Result;

/// Frames `chain` (DER certificates, leaf first).
pub fn encode_chain<C: AsRef<[u8]>>(chain: &[C]) -> Result<Vec<u8>> {
    let mut w = Writer::with_capacity(chain.iter().map(|c| c.as_ref().len() + 4).sum());
    for der in chain {
        w.lp32(der.as_ref())?;
    }
    Ok(w.into_vec())
}

/// Reads what [`encode_chain`] wrote.
pub fn decode_chain(bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut r = Reader::new(bytes, "certificate chain");
    let mut chain = Vec::new();
    while r.remaining() > 0 {
        chain.push(r.lp32()?.to_vec());
    }
    r.finish()?;
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_round_trips_and_a_cut_one_is_refused() {
        let chain = vec![vec![1u8; 300], vec![], vec![2u8; 5]];
        let bytes = encode_chain(&chain).unwrap();
        assert_eq!(&bytes[..4], &300u32.to_be_bytes());
        assert_eq!(decode_chain(&bytes).unwrap(), chain);
        assert!(decode_chain(&[]).unwrap().is_empty());
        assert!(decode_chain(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_chain(&[0, 0, 1]).is_err());
    }
}
