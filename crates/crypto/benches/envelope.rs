//! Micro-benchmark: seal+sign and verify+open of 100 B and 64 KiB
//! bodies beside the bare Ed25519 sign/verify and AES-256-GCM of the same
//! sizes (the physical limits), and the RN1 ratchet step.
//!
//! `cargo bench -p duokey-crypto --bench envelope`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::indexing_slicing, missing_docs)]
// A test fails by panicking: its casts of vector numbers need no checks.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
#![allow(clippy::cast_possible_wrap)]

use aes_gcm::aead::{AeadInOut, KeyInit};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use duokey_crypto::envelope::{self, Header, Limits};
use duokey_crypto::*;
use ed25519_dalek::{Signer, Verifier};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Envelopes opened in one replay stream before it is reset.
const RING: u64 = 512;

fn setup() -> (IdentityKey, Header, GroupKey, EpochTable) {
    let key = IdentityKey::from_seed([1; 32]);
    let header = Header {
        group_id: GroupId([7; 16]),
        epoch: Epoch::new(1, 1),
        sender: UserId::new("alice@example.org").unwrap(),
        seq: 0,
        sent_at_ms: 0,
        msg_id: MsgId([2; 16]),
    };
    let gk = GroupKey::from_bytes([3; 32]);
    let table = EpochTable::for_header(&header, gk.clone(), key.public());
    (key, header, gk, table)
}

fn envelopes(c: &mut Criterion) {
    let (key, header, gk, table) = setup();
    let sender_key = SenderKey::derive(&gk, &header.sender).unwrap();
    let limits = Limits::default();
    for size in [100usize, 64 * 1024] {
        let body = "x".repeat(size);
        let sealed = envelope::seal(
            &key,
            &sender_key,
            &header,
            ContentType::Text,
            body.as_bytes(),
        )
        .unwrap();
        let signed_len = sealed.len() - 4 - 64 + "duokey/v1 envelope".len();
        let message = vec![0u8; signed_len];
        let sig = key.signing_key().sign(&message);
        let vk = key.public();

        let mut g = c.benchmark_group(format!("envelope_{size}B"));
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::new("seal_sign", size), |b| {
            b.iter(|| {
                envelope::seal(
                    &key,
                    &sender_key,
                    &header,
                    ContentType::Text,
                    black_box(body.as_bytes()),
                )
                .unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("bare_ed25519_sign", size), |b| {
            b.iter(|| key.signing_key().sign(black_box(&message)))
        });
        // Distinct envelopes (seq, msg_id) so the replay guard accepts each:
        // the steady state of a receiver following one sender.
        let ring: Vec<Vec<u8>> = (0..RING)
            .map(|i| {
                let h = Header {
                    seq: i,
                    msg_id: MsgId((u128::from(i) + 1).to_be_bytes()),
                    ..header.clone()
                };
                envelope::seal(&key, &sender_key, &h, ContentType::Text, body.as_bytes()).unwrap()
            })
            .collect();
        g.bench_function(BenchmarkId::new("verify_open", size), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let mut replay = ReplayGuard::default();
                    let n = (iters - done).min(RING);
                    let start = Instant::now();
                    for e in &ring[..n as usize] {
                        black_box(
                            envelope::open(black_box(e), &limits, &table, &mut replay).unwrap(),
                        );
                    }
                    total += start.elapsed();
                    done += n;
                }
                total
            })
        });
        g.bench_function(BenchmarkId::new("bare_ed25519_verify", size), |b| {
            b.iter(|| {
                vk.verifying_key()
                    .verify(black_box(&message), &sig)
                    .unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("bare_sha512", size), |b| {
            use sha2::Digest;
            b.iter(|| sha2::Sha512::digest(black_box(&message)))
        });
        let cipher = aes_gcm::Aes256Gcm::new(&[5u8; 32].into());
        let mut buf = vec![0u8; size];
        g.bench_function(BenchmarkId::new("bare_aes256gcm_seal", size), |b| {
            b.iter(|| {
                cipher
                    .encrypt_inout_detached(&[0u8; 12].into(), b"", buf.as_mut_slice().into())
                    .unwrap()
            })
        });
        g.finish();
    }
}

fn ratchet(c: &mut Criterion) {
    let r1 = R1::from_bytes([9; 32], 1);
    c.bench_function("rn1_ratchet_step", |b| {
        b.iter(|| black_box(&r1).ratchet_to(2).unwrap())
    });
    let rn2 = Rn2::from_bytes([8; 32]);
    let name = GroupName::new("proj").unwrap();
    c.bench_function("group_key_derive", |b| {
        b.iter(|| {
            GroupKey::derive(
                black_box(&r1),
                &rn2,
                &GroupId([1; 16]),
                &name,
                Epoch::new(1, 1),
            )
            .unwrap()
        })
    });
}

criterion_group!(benches, envelopes, ratchet);
criterion_main!(benches);
