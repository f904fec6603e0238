#!/usr/bin/env python3
"""Invite-code test vectors (PROTOCOL §4.10) from a second implementation:
python-spake2 (the magic-wormhole SPAKE2, which the Rust `spake2` crate
interoperates with), and hashlib/hmac for the key confirmation. Not run by
CI (it needs `pip install spake2 cryptography`); its output is committed as
vectors/invite_code.json, which crates/crypto/tests/invite_code_vectors.rs
reproduces.

    python3 scripts/vectors/invite_code.py > vectors/invite_code.json
"""
import hashlib
import hmac
import json
import struct

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives import serialization
from spake2 import SPAKE2_A, SPAKE2_B
from spake2.ed25519_basic import L, scalar_to_bytes

RAW = dict(encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw)


def lp16(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


def chacha20_stream(key: bytes, n: int) -> bytes:
    # ChaCha20Rng::from_seed(key): the ChaCha20 keystream, nonce 0, block 0 on.
    enc = Cipher(algorithms.ChaCha20(key, b"\0" * 16), mode=None).encryptor()
    return enc.update(b"\0" * n)


def hkdf_sha256(ikm: bytes, info: bytes, n: int) -> bytes:
    prk = hmac.new(b"\0" * 32, ikm, hashlib.sha256).digest()
    out, block, i = b"", b"", 1
    while len(out) < n:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:n]


def main():
    invite_id, group_id = b"\x01" * 16, b"\x02" * 16
    inviter, invitee = b"alice", b"bob"
    code = b"31415926"
    seed = b"\x11" * 32
    binding = invite_id + group_id + lp16(inviter) + lp16(invitee)
    id_a = b"duokey/v1 code inviter" + binding
    id_b = b"duokey/v1 code invitee" + binding

    # The inviter: its scalar is Scalar::random over ChaCha20(seed) — 64
    # bytes, little-endian, reduced mod L — put into python-spake2's state.
    x = int.from_bytes(chacha20_stream(seed, 64), "little") % L
    state = SPAKE2_A(code, idA=id_a, idB=id_b)
    d = {
        "hashed_params": state.hash_params(),
        "side": "A",
        "idA": id_a.hex(),
        "idB": id_b.hex(),
        "password": code.hex(),
        "xy_scalar": scalar_to_bytes(x).hex(),
    }
    a = SPAKE2_A.from_serialized(json.dumps(d).encode("ascii"))
    msg_a = b"A" + a.outbound_message

    # The invitee, with fixed entropy so that this file is reproducible.
    counter = [0]

    def entropy(n):
        counter[0] += 1
        return hashlib.sha512(b"invitee entropy %d" % counter[0]).digest()[:n]

    b = SPAKE2_B(code, idA=id_a, idB=id_b, entropy_f=entropy)
    msg_b = b.start()
    key = b.finish(msg_a)
    assert a.finish(msg_b) == key

    pk_a = Ed25519PrivateKey.from_private_bytes(b"\x03" * 32).public_key().public_bytes(**RAW)
    pk_b = Ed25519PrivateKey.from_private_bytes(b"\x04" * 32).public_key().public_bytes(**RAW)
    invite_pub = X25519PrivateKey.from_private_bytes(b"\x05" * 32).public_key().public_bytes(**RAW)
    transcript = hashlib.sha256(binding + msg_a + msg_b + pk_a + pk_b + invite_pub).digest()
    okm = hkdf_sha256(key, b"duokey/v1 code confirm" + transcript, 64)
    tag_a = hmac.new(okm[:32], b"inviter" + transcript, hashlib.sha256).digest()
    tag_b = hmac.new(okm[32:], b"invitee" + transcript, hashlib.sha256).digest()

    print(json.dumps({
        "about": "PROTOCOL §4.10 invite codes; made by scripts/vectors/invite_code.py (python-spake2 %s)" % __import__("spake2").__version__,
        "invite_id": invite_id.hex(),
        "group_id": group_id.hex(),
        "inviter": inviter.decode(),
        "invitee": invitee.decode(),
        "code": code.decode(),
        "inviter_seed": seed.hex(),
        "inviter_identity_seed": (b"\x03" * 32).hex(),
        "invitee_identity_seed": (b"\x04" * 32).hex(),
        "invite_secret": (b"\x05" * 32).hex(),
        "msg_a": msg_a.hex(),
        "msg_b": msg_b.hex(),
        "key": key.hex(),
        "transcript": transcript.hex(),
        "tag_a": tag_a.hex(),
        "tag_b": tag_b.hex(),
    }, indent=2))


if __name__ == "__main__":
    main()
