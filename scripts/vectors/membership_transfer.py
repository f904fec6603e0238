#!/usr/bin/env python3
"""Test vectors for the membership change `transfer` (PROTOCOL §4.8), the
project's own, from a second implementation of the member-signed membership
log (SPEC §4.7): Python's cryptography (Ed25519) and hashlib (SHA-256). Not
part of the original set and not run by CI (it needs `pip install
cryptography`); its output is committed as vectors/membership_transfer.json,
which crates/crypto/tests/membership_transfer_vectors.rs reproduces.

    python3 scripts/vectors/membership_transfer.py > vectors/membership_transfer.json

The new rule, beside the eight actions of SPEC §4.7:

| transfer | 64 | actor = the owner; subject a member other than the actor; rights 0, flags 0, body empty. After it the subject is the owner with rights 0x07 (owner, invite, remove), and the former owner stays a member with rights 0x03 (invite, remove). RN1 does not rotate (rn1_version unchanged). |

Everything else is SPEC §4.7 as it stands: the owner can neither leave nor be
removed, only the owner changes the policy or deletes, and a leave's RN1
rotator is the owner (after a transfer, the new one).

Before it trusts itself, the script re-encodes the chain of
vectors/membership.json (the original set's, from another implementation)
from its fields and seeds and compares every byte and hash, and applies its
own rules to that file: every chain entry accepted with the state it gives,
every invalid change rejected. The users and the group id are that file's.
The output is deterministic: fixed seeds, fixed timestamps, and Ed25519
signatures are deterministic. Self-check messages go to stderr, the JSON to
stdout.
"""
import copy
import hashlib
import json
import struct
import sys
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

RAW = dict(encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw)
MEMBERSHIP_JSON = Path(__file__).resolve().parents[2] / "vectors" / "membership.json"

MAGIC = b"DKM1"
SIGNATURE_LABEL = b"duokey/v1 membership"
HASH_LABEL = b"duokey/v1 membership hash"
REKEY_LABEL = b"duokey/v1 rekey"
MAX_CHANGE_LEN = 2048
FLAG_ROTATES_RN1 = 0x01
INVITE, REMOVE, OWNER, ALL = 0x01, 0x02, 0x04, 0x07
ED25519_L = 2**252 + 27742317777372353535851937790883648493

ACTIONS = {
    "create": 1, "add": 2, "remove": 3, "leave": 4, "rotate_rn1": 5,
    "policy": 6, "delete": 7, "rekey": 8, "transfer": 64,
}
NAMES = {code: name for name, code in ACTIONS.items()}

BASE_MS = 1764000000000


# --- encoding (SPEC §3: big-endian integers, lp16 = u16 length || bytes) ----

def u8(x): return struct.pack(">B", x)
def u32(x): return struct.pack(">I", x)
def u64(x): return struct.pack(">Q", x)


def lp16(b: bytes) -> bytes:
    assert len(b) < 1 << 16
    return struct.pack(">H", len(b)) + b


POLICY_FIELDS = ("rotate_rn1_on_remove", "rotate_every_secs", "grace_secs",
                 "retention_secs", "max_members", "rn1_wait_secs")


def encode_policy(p: dict) -> bytes:
    return (u8(1 if p["rotate_rn1_on_remove"] else 0) + u64(p["rotate_every_secs"])
            + u64(p["grace_secs"]) + u64(p["retention_secs"]) + u32(p["max_members"])
            + u64(p["rn1_wait_secs"]))


def create_body(name: str, owner_key: bytes, policy: dict) -> bytes:
    return lp16(name.encode("utf-8")) + owner_key + encode_policy(policy)


def encode_signed(group_id, seq, prev, action_code, actor, subject, rights, flags, body,
                  created_at_ms) -> bytes:
    return (group_id + u64(seq) + prev + u8(action_code) + lp16(actor.encode())
            + lp16(subject.encode()) + u8(rights) + u8(flags) + lp16(body)
            + u64(created_at_ms))


def sign_change(key: Ed25519PrivateKey, signed: bytes) -> bytes:
    return MAGIC + signed + key.sign(SIGNATURE_LABEL + signed)


def change_hash(change: bytes) -> bytes:
    return hashlib.sha256(HASH_LABEL + change).digest()


# --- strict decoding and the rules (an independent checker) -----------------

class Reject(Exception):
    pass


def valid_user_id(b: bytes) -> bool:
    ok = set(b"abcdefghijklmnopqrstuvwxyz0123456789._@-")
    return 1 <= len(b) <= 255 and (b[0] in b"abcdefghijklmnopqrstuvwxyz0123456789") \
        and all(c in ok for c in b)


class Reader:
    def __init__(self, b: bytes):
        self.b, self.i = b, 0

    def take(self, n):
        if self.i + n > len(self.b):
            raise Reject("truncated")
        v = self.b[self.i:self.i + n]
        self.i += n
        return v

    def int(self, n):
        return int.from_bytes(self.take(n), "big")

    def lp16(self):
        return self.take(self.int(2))

    def finish(self):
        if self.i != len(self.b):
            raise Reject("trailing bytes")


def decode_change(b: bytes, transfer: bool) -> dict:
    """Strict decoding (PROTOCOL §4.8 'Decoding'); raises Reject."""
    if len(b) > MAX_CHANGE_LEN:
        raise Reject("too large")
    r = Reader(b)
    if r.take(4) != MAGIC:
        raise Reject("magic")
    c = {"group_id": r.take(16), "seq": r.int(8), "prev": r.take(32)}
    code = r.int(1)
    if code not in NAMES or (code == 64 and not transfer):
        raise Reject("unknown action")
    c["action"] = NAMES[code]
    actor, subject = r.lp16(), r.lp16()
    if not (valid_user_id(actor) and valid_user_id(subject)):
        raise Reject("invalid user id")
    c["actor"], c["subject"] = actor.decode(), subject.decode()
    c["rights"] = r.int(1)
    if c["rights"] & ~ALL:
        raise Reject("unknown rights bits")
    c["flags"] = r.int(1)
    c["body"] = r.lp16()
    c["created_at_ms"] = r.int(8)
    c["signature"] = r.take(64)
    r.finish()
    if c["flags"] & ~FLAG_ROTATES_RN1:
        raise Reject("unknown flag bits")
    c["signed"] = b[4:-64]
    return c


def verify(public: bytes, message: bytes, sig: bytes) -> bool:
    # OpenSSL's Ed25519 verification (RFC 8032), with S < L checked here too;
    # the keys in these vectors are all honest, so small-order points do not
    # arise (the Rust side uses verify_strict).
    if int.from_bytes(sig[32:], "little") >= ED25519_L:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(sig, message)
        return True
    except (InvalidSignature, ValueError):
        return False


def decode_policy(b: bytes):
    """(policy, violations)."""
    if len(b) != 37 or b[0] not in (0, 1):
        return None, ["policy encoding"]
    r = Reader(b)
    p = {"rotate_rn1_on_remove": r.int(1) == 1, "rotate_every_secs": r.int(8),
         "grace_secs": r.int(8), "retention_secs": r.int(8), "max_members": r.int(4),
         "rn1_wait_secs": r.int(8)}
    ok = (p["rotate_every_secs"] >= 60 and 1 <= p["max_members"] <= 100000
          and p["rn1_wait_secs"] >= 1 and p["retention_secs"] >= p["rotate_every_secs"])
    return p, ([] if ok else ["policy range"])


def violations(state, raw: bytes, transfer: bool = True):
    """Every rule the change breaks on top of `state` (None: the first change),
    not only the first; [] means it is valid. A decoding failure is the only
    violation reported (nothing else can be read)."""
    try:
        c = decode_change(raw, transfer)
    except Reject as e:
        return [str(e)], None
    v = []
    if state is None:
        if c["action"] != "create" or c["seq"] != 1 or c["prev"] != bytes(32):
            v.append("first change")
        if c["actor"] != c["subject"] or c["rights"] != ALL or c["flags"] != 0:
            v.append("create fields")
        r = Reader(c["body"])
        try:
            name = r.lp16()
            owner_key = r.take(32)
            policy, pv = decode_policy(r.b[r.i:])
        except Reject:
            return v + ["create body"], c
        v += pv
        try:
            name = name.decode("utf-8")
            if not 1 <= len(name.encode()) <= 128:
                v.append("group name length")
        except UnicodeDecodeError:
            v.append("group name not UTF-8")
        if not verify(owner_key, SIGNATURE_LABEL + c["signed"], c["signature"]):
            v.append("signature")
        c["_create"] = (name, owner_key, policy)
        return v, c
    if state["deleted"]:
        v.append("group deleted")
    if c["action"] == "create":
        v.append("create only once")
    if c["group_id"] != state["group_id"]:
        v.append("group id")
    if c["seq"] != state["seq"] + 1:
        v.append("seq")
    if c["prev"] != state["head"]:
        v.append("prev")
    if c["created_at_ms"] < state["last_created_at_ms"]:
        v.append("created_at_ms")
    members, owner = state["members"], state["owner"]
    a = members.get(c["actor"])
    if a is None:
        v.append("actor is not a member")
    elif not verify(a["key"], SIGNATURE_LABEL + c["signed"], c["signature"]):
        v.append("signature")
    rights = a["rights"] if a else 0
    act, s = c["action"], c["subject"]
    plain = c["rights"] == 0 and c["body"] == b""
    rn1_flag = (c["flags"] == FLAG_ROTATES_RN1) == state["policy"]["rotate_rn1_on_remove"]
    if act == "add":
        if not rights & INVITE: v.append("lacks invite")
        if s in members: v.append("already a member")
        if c["rights"] & OWNER: v.append("owner right")
        if c["rights"] & ~rights: v.append("rights not held")
        if c["flags"] != 0 or len(c["body"]) != 32: v.append("add fields")
        if len(members) >= state["policy"]["max_members"]: v.append("group full")
    elif act == "remove":
        if not rights & REMOVE: v.append("lacks remove")
        if s == c["actor"]: v.append("remove self")
        if s not in members: v.append("subject not a member")
        if s == owner: v.append("owner cannot be removed")
        if not plain: v.append("remove fields")
        if not rn1_flag: v.append("rn1 flag")
    elif act == "leave":
        if s != c["actor"]: v.append("actor must be subject")
        if c["actor"] == owner: v.append("owner cannot leave")
        if not plain: v.append("leave fields")
        if not rn1_flag: v.append("rn1 flag")
    elif act == "rotate_rn1":
        if s != c["actor"]: v.append("actor must be subject")
        if not plain or c["flags"] != FLAG_ROTATES_RN1: v.append("rotate_rn1 fields")
    elif act == "policy":
        if c["actor"] != owner: v.append("only the owner")
        if s != c["actor"]: v.append("actor must be subject")
        if c["rights"] != 0 or c["flags"] != 0: v.append("policy fields")
        c["_policy"], pv = decode_policy(c["body"])
        v += pv
    elif act == "delete":
        if c["actor"] != owner: v.append("only the owner")
        if s != c["actor"]: v.append("actor must be subject")
        if not plain or c["flags"] != 0: v.append("delete fields")
    elif act == "rekey":
        if s != c["actor"]: v.append("actor must be subject")
        if c["rights"] != 0 or c["flags"] != 0: v.append("rekey fields")
        body = c["body"]
        if len(body) != 96 or not verify(
                body[:32], REKEY_LABEL + c["group_id"] + lp16(c["actor"].encode()) + body[:32],
                body[32:]):
            v.append("rekey proof")
    elif act == "transfer":
        # The new rule (see the header).
        if c["actor"] != owner: v.append("transfer: only the owner")
        if s == c["actor"]: v.append("transfer: to oneself")
        if s not in members: v.append("transfer: subject not a member")
        if c["rights"] != 0: v.append("transfer fields: rights")
        if c["flags"] != 0: v.append("transfer fields: flags")
        if c["body"] != b"": v.append("transfer fields: body")
    return v, c


def apply(state, raw: bytes, transfer: bool = True):
    """The state after `raw`, or Reject with every violation."""
    v, c = violations(state, raw, transfer)
    if v:
        raise Reject(", ".join(v))
    h = change_hash(raw)
    if state is None:
        name, owner_key, policy = c["_create"]
        return {
            "group_id": c["group_id"], "name": name, "owner": c["actor"],
            "members": {c["actor"]: {"rights": ALL, "key": owner_key}},
            "policy": policy, "rn1_version": 1,
            "rn1_rotators": [{"rn1_version": 1, "rotator": c["actor"], "seq": 1}],
            "deleted": False, "seq": 1, "head": h, "last_created_at_ms": c["created_at_ms"],
        }
    st = copy.deepcopy(state)
    act, actor, s = c["action"], c["actor"], c["subject"]

    def rotate(rotator):
        st["rn1_version"] += 1
        st["rn1_rotators"].append({"rn1_version": st["rn1_version"], "rotator": rotator,
                                   "seq": c["seq"]})

    if act == "add":
        st["members"][s] = {"rights": c["rights"], "key": c["body"]}
    elif act in ("remove", "leave"):
        del st["members"][s]
        if c["flags"] & FLAG_ROTATES_RN1:
            rotate(actor if act == "remove" else st["owner"])
    elif act == "rotate_rn1":
        rotate(actor)
    elif act == "policy":
        st["policy"] = c["_policy"]
    elif act == "delete":
        st["deleted"] = True
    elif act == "rekey":
        st["members"][actor]["key"] = c["body"][:32]
    elif act == "transfer":
        st["members"][s]["rights"] = ALL
        st["members"][actor]["rights"] = INVITE | REMOVE
        st["owner"] = s
    st["seq"], st["head"], st["last_created_at_ms"] = c["seq"], h, c["created_at_ms"]
    return st


def state_json(st) -> dict:
    """The state_after shape of vectors/membership.json (members sorted by id)."""
    return {
        "members": [{"user": u, "rights": m["rights"], "key": m["key"].hex()}
                    for u, m in sorted(st["members"].items())],
        "owner": st["owner"],
        "name": st["name"],
        "policy": {f: st["policy"][f] for f in POLICY_FIELDS},
        "rn1_version": st["rn1_version"],
        "rn1_rotators": [dict(r) for r in st["rn1_rotators"]],
        "deleted": st["deleted"],
        "seq": st["seq"],
        "head": st["head"].hex(),
    }


# --- self-check against the original set's vectors/membership.json ---------

def log(msg):
    print("self-check: " + msg, file=sys.stderr)


def keys_of(users) -> dict:
    keys = {}
    for u in users:
        k = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(u["ed25519_seed"]))
        assert k.public_key().public_bytes(**RAW).hex() == u["ed25519_public"], u["user"]
        keys[u["user"]] = k
    return keys


def self_check(m: dict):
    keys = keys_of(m["users"])
    group = bytes.fromhex(m["group_id"])
    signer_of_bob = "bob@example.org"
    # 1. Every chain entry re-encoded from its fields and its actor's seed.
    for i, e in enumerate(m["chain"]):
        assert ACTIONS[e["action"]] == e["action_code"]
        signed = encode_signed(group, e["seq"], bytes.fromhex(e["prev"]), e["action_code"],
                               e["actor"], e["subject"], e["rights"], e["flags"],
                               bytes.fromhex(e["body"]), e["created_at_ms"])
        signer = signer_of_bob if e["actor"] == "bob@example.org" else e["actor"]
        change = sign_change(keys[signer], signed)
        assert change.hex() == e["change"], "chain[%d] (%s) differs" % (i, e["action"])
        assert change_hash(change).hex() == e["hash"], "chain[%d] hash" % i
        if e["action"] == "rekey":
            signer_of_bob = "bob@example.org (after rekey)"
    # The create body, with the policy, encoded from the state's fields.
    c0 = m["chain"][0]
    users = {u["user"]: u for u in m["users"]}
    body = create_body(c0["state_after"]["name"],
                       bytes.fromhex(users[c0["actor"]]["ed25519_public"]),
                       c0["state_after"]["policy"])
    assert body.hex() == c0["body"], "create body"
    log("membership.json chain entries 0..3 (%s) re-encoded byte for byte"
        % ", ".join(e["action"] for e in m["chain"][:4]))
    log("membership.json chain entries 0..%d re-encoded byte for byte, hashes equal"
        % (len(m["chain"]) - 1))
    # 2. Our rules accept both chains, with the state_after of every entry.
    st = None
    for e in m["chain"]:
        st = apply(st, bytes.fromhex(e["change"]))
        assert state_json(st) == e["state_after"], "state after seq %d" % e["seq"]
    small = None
    for e in m["small_chain"]:
        small = apply(small, bytes.fromhex(e["change"]))
        assert change_hash(bytes.fromhex(e["change"])).hex() == e["hash"]
    log("membership.json chain applied: state_after equal at all %d entries"
        % len(m["chain"]))
    # 3. Our rules reject every invalid change where it stands, without and
    # with transfer known. Transfer takes code 64, outside the spec's range
    # (1-8 and whatever it adds next), so the original set's "unknown action
    # 9" stays unknown either way.
    chains = {"main": m["chain"], "small": m["small_chain"]}
    for transfer in (False, True):
        for case in m["invalid"]:
            st = None
            for e in chains[case["chain"]][:case["after_seq"]]:
                st = apply(st, bytes.fromhex(e["change"]), transfer)
            v, _ = violations(st, bytes.fromhex(case["change"]), transfer)
            assert v, "accepted: %s" % case["case"]
            if case["case"] == "unknown action 9":
                assert v == ["unknown action"], v
    log("membership.json: all %d invalid changes rejected, without and with transfer "
        "('unknown action 9' stays unknown: transfer is code 64)" % len(m["invalid"]))


# --- the transfer vectors ----------------------------------------------------

def main():
    m = json.loads(MEMBERSHIP_JSON.read_text(encoding="utf-8"))
    self_check(m)

    alice, bob, carol, dave = ("%s@example.org" % n for n in ("alice", "bob", "carol", "dave"))
    users = [u for u in m["users"] if u["user"] in (alice, bob, carol, dave)]
    assert [u["user"] for u in users] == [alice, bob, carol, dave]
    keys = keys_of(users)
    pub = {u["user"]: bytes.fromhex(u["ed25519_public"]) for u in users}
    group = bytes.fromhex(m["group_id"])
    policy = dict(m["chain"][0]["state_after"]["policy"])
    assert policy["rotate_rn1_on_remove"] is True

    def make(state, action, actor, subject, rights=0, flags=0, body=b"", code=None,
             signer=None, at=None):
        """A change on top of `state` (seq, prev, time from its head)."""
        seq = state["seq"] + 1 if state else 1
        prev = state["head"] if state else bytes(32)
        code = ACTIONS[action] if code is None else code
        at = BASE_MS + seq if at is None else at
        signed = encode_signed(group, seq, prev, code, actor, subject, rights, flags, body, at)
        fields = {"action": action, "action_code": code, "seq": seq, "actor": actor,
                  "subject": subject, "rights": rights, "flags": flags, "body": body.hex(),
                  "created_at_ms": at, "prev": prev.hex()}
        return sign_change(keys[signer or actor], signed), fields

    new_policy = dict(policy, rotate_every_secs=7200)
    steps = [
        ("create", alice, alice, ALL, 0, create_body("transfer", pub[alice], policy)),
        ("add", alice, bob, INVITE | REMOVE, 0, pub[bob]),
        ("add", alice, carol, 0, 0, pub[carol]),
        ("transfer", alice, bob, 0, 0, b""),
        ("leave", alice, alice, 0, FLAG_ROTATES_RN1, b""),
        ("policy", bob, bob, 0, 0, encode_policy(new_policy)),
    ]
    chain, states, st = [], [None], None
    for action, actor, subject, rights, flags, body in steps:
        raw, fields = make(st, action, actor, subject, rights, flags, body)
        st = apply(st, raw)
        states.append(st)
        chain.append(dict(fields, change=raw.hex(), hash=change_hash(raw).hex(),
                          state_after=state_json(st)))

    # What the transfer did, checked against the rule as written.
    s3, s4, s5 = states[3], states[4], states[5]
    assert s3["owner"] == alice and s4["owner"] == bob
    assert s4["members"][bob]["rights"] == ALL and s4["members"][alice]["rights"] == 0x03
    assert s4["members"][carol]["rights"] == 0
    assert s4["rn1_version"] == s3["rn1_version"] == 1 and s4["rn1_rotators"] == s3["rn1_rotators"]
    assert s5["rn1_version"] == 2 and s5["rn1_rotators"][-1] == {
        "rn1_version": 2, "rotator": bob, "seq": 5}
    assert alice not in s5["members"]
    assert states[6]["policy"]["rotate_every_secs"] == 7200 and states[6]["owner"] == bob

    # (after_seq, case, rule, action, actor, subject, rights, flags, body, code, signer,
    #  the one violation our checker must find)
    T = "transfer"
    specs = [
        (3, "transfer by a non-owner (bob to carol)", "only the owner transfers",
         T, bob, carol, 0, 0, b"", None, None, "transfer: only the owner"),
        (3, "transfer to a non-member (dave)", "transfer subject is not a member",
         T, alice, dave, 0, 0, b"", None, None, "transfer: subject not a member"),
        (3, "transfer to oneself", "transfer to oneself",
         T, alice, alice, 0, 0, b"", None, None, "transfer: to oneself"),
        (3, "transfer with rights 7", "transfer fields",
         T, alice, bob, ALL, 0, b"", None, None, "transfer fields: rights"),
        (3, "transfer with the RN1 flag", "transfer fields",
         T, alice, bob, 0, FLAG_ROTATES_RN1, b"", None, None, "transfer fields: flags"),
        (3, "transfer with a body (the subject's key)", "transfer fields",
         T, alice, bob, 0, 0, pub[bob], None, None, "transfer fields: body"),
        (3, "transfer by alice signed with bob's key", "signature",
         T, alice, bob, 0, 0, b"", None, bob, "signature"),
        (4, "leave by the new owner (bob)", "the owner cannot leave (delete instead)",
         "leave", bob, bob, 0, FLAG_ROTATES_RN1, b"", None, None, "owner cannot leave"),
        (4, "policy by the former owner (alice)", "only the owner changes the policy",
         "policy", alice, alice, 0, 0, encode_policy(new_policy), None, None, "only the owner"),
        (4, "delete by the former owner (alice)", "only the owner deletes",
         "delete", alice, alice, 0, 0, b"", None, None, "only the owner"),
        (4, "remove of the new owner (bob) by alice, who holds the remove right",
         "the owner cannot be removed",
         "remove", alice, bob, 0, FLAG_ROTATES_RN1, b"", None, None, "owner cannot be removed"),
        (3, "unknown action 10 (otherwise a transfer from alice to bob)", "unknown action",
         "unknown", alice, bob, 0, 0, b"", 10, None, "unknown action"),
    ]
    invalid = []
    for (after, case, rule, action, actor, subject, rights, flags, body, code, signer,
         only) in specs:
        raw, _ = make(states[after], action, actor, subject, rights, flags, body, code, signer)
        v, _ = violations(states[after], raw)
        assert v == [only], (case, v)
        invalid.append({"chain": "main", "after_seq": after, "case": case, "rule": rule,
                        "change": raw.hex(), "expect": "reject"})

    raw, _ = make(states[4], "delete", bob, bob)
    assert apply(states[4], raw)["deleted"]
    valid_extra = [{"chain": "main", "after_seq": 4, "case": "delete_after_transfer",
                    "rule": "the new owner (bob) deletes the group", "change": raw.hex(),
                    "expect": "accept"}]
    # The transfer itself, unmodified, is what each after_seq 3 case departs from.
    assert violations(states[3], bytes.fromhex(chain[3]["change"]))[0] == []
    log("transfer chain of %d changes applied; %d invalid cases each break exactly "
        "their one rule; %d valid extra accepted" % (len(chain), len(invalid), len(valid_extra)))

    print(json.dumps({
        "description": "Duokey membership change transfer (action 64): the project's own "
                       "vectors for the transfer change, PROTOCOL \u00a74.8, made by "
                       "scripts/vectors/membership_transfer.py with Python's cryptography "
                       "and hashlib, not part of the original set. Check accept/reject "
                       "and state_after; 'rule' is a human-readable reason.",
        "users": users,
        "group_id": group.hex(),
        "chain": chain,
        "invalid": invalid,
        "valid_extra": valid_extra,
    }, indent=2))


if __name__ == "__main__":
    main()
