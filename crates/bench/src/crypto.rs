//! Scenario `crypto`: seal+sign and verify+open of 100 B
//! and 64 KiB bodies, beside the bare Ed25519 sign/verify and AES-256-GCM of
//! the same sizes measured in the same run (the physical limits).

use crate::Row;
use aes_gcm::aead::{AeadInOut, KeyInit};
use duokey_crypto::envelope::{self, Header, Limits};
use duokey_crypto::*;
use ed25519_dalek::{Signer, Verifier};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Operations per second of `op`, run for about `budget`.
fn rate(budget: Duration, mut op: impl FnMut(u64)) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..16 {
            op(n);
            n += 1;
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

struct Fixture {
    key: IdentityKey,
    header: Header,
    sender_key: SenderKey,
    table: EpochTable,
}

fn fixture() -> Option<Fixture> {
    let key = IdentityKey::from_seed([1; 32]);
    let header = Header {
        group_id: GroupId([7; 16]),
        epoch: Epoch::new(1, 1),
        sender: UserId::new("alice").ok()?,
        seq: 0,
        sent_at_ms: 0,
        msg_id: MsgId([2; 16]),
    };
    let gk = GroupKey::from_bytes([3; 32]);
    let sender_key = SenderKey::derive(&gk, &header.sender).ok()?;
    let table = EpochTable::for_header(&header, gk, key.public());
    Some(Fixture {
        key,
        header,
        sender_key,
        table,
    })
}

/// Distinct envelopes (seq, msg_id), so the replay guard accepts each.
fn ring(f: &Fixture, body: &[u8], n: u64) -> Vec<Vec<u8>> {
    (0..n)
        .filter_map(|i| {
            let h = Header {
                seq: i,
                msg_id: MsgId((u128::from(i) + 1).to_be_bytes()),
                ..f.header.clone()
            };
            envelope::seal(&f.key, &f.sender_key, &h, ContentType::Text, body).ok()
        })
        .collect()
}

/// Runs the scenario; `quick` shortens each measurement.
pub fn run(quick: bool) -> Vec<Row> {
    let Some(f) = fixture() else {
        return Vec::new();
    };
    let budget = Duration::from_millis(if quick { 100 } else { 1500 });
    let limits = Limits::default();
    let mut rows = Vec::new();
    for size in [100usize, 64 * 1024] {
        let body = vec![b'x'; size];
        let params = format!("body={size}B");
        let seal = rate(budget, |_| {
            black_box(
                envelope::seal(&f.key, &f.sender_key, &f.header, ContentType::Text, &body).ok(),
            );
        });
        let envelopes = ring(&f, &body, 512);
        let mut replay = ReplayGuard::default();
        let open = rate(budget, |i| {
            if i % 512 == 0 {
                replay = ReplayGuard::default();
            }
            let e = &envelopes[(i % 512) as usize];
            black_box(envelope::open(e, &limits, &f.table, &mut replay).ok());
        });
        // The bare primitives over the bytes the envelope signs.
        let message = vec![0u8; envelopes.first().map_or(size, Vec::len)];
        let sig = f.key.signing_key().sign(&message);
        let vk = f.key.public();
        let sign = rate(budget, |_| {
            black_box(f.key.signing_key().sign(black_box(&message)));
        });
        let verify = rate(budget, |_| {
            black_box(vk.verifying_key().verify(black_box(&message), &sig).is_ok());
        });
        let cipher = aes_gcm::Aes256Gcm::new(&[5u8; 32].into());
        let mut buf = vec![0u8; size];
        let aes = rate(budget, |_| {
            black_box(
                cipher
                    .encrypt_inout_detached(&[0u8; 12].into(), b"", buf.as_mut_slice().into())
                    .is_ok(),
            );
        });
        let mb = |r: f64| r * size as f64 / 1e6;
        rows.push(Row::new("crypto", &params, "seal_sign", seal, "msg/s"));
        rows.push(Row::new("crypto", &params, "seal_sign", mb(seal), "MB/s"));
        rows.push(Row::new("crypto", &params, "verify_open", open, "msg/s"));
        rows.push(Row::new("crypto", &params, "verify_open", mb(open), "MB/s"));
        rows.push(Row::new(
            "crypto",
            &params,
            "bare_ed25519_sign",
            sign,
            "op/s",
        ));
        rows.push(Row::new(
            "crypto",
            &params,
            "bare_ed25519_verify",
            verify,
            "op/s",
        ));
        rows.push(Row::new(
            "crypto",
            &params,
            "bare_aes256gcm",
            mb(aes),
            "MB/s",
        ));
        rows.push(Row::new(
            "crypto",
            &params,
            "seal_sign_vs_bare_sign",
            seal / sign,
            "ratio",
        ));
        rows.push(Row::new(
            "crypto",
            &params,
            "verify_open_vs_bare_verify",
            open / verify,
            "ratio",
        ));
    }
    rows
}
