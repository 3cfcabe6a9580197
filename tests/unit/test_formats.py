"""Envelope, pack, tree and commit formats: round trips, tampering, AAD binding."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest

from anysync.client import keys
from anysync.client.keys import MasterKeys
from anysync.client.repo import commit, envelope, pack, tree
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.errors import HostilePath, IntegrityError
from anysync.types import BlobId, BlobKind

KEYS = MasterKeys.generate()


def seal(kind: BlobKind, data: bytes) -> tuple[BlobId, bytes]:
    bid = envelope.blob_id(KEYS.id_key, data)
    return bid, envelope.seal(KEYS.data_key, kind, bid, data)


def open_(kind: BlobKind, bid: BlobId, sealed: bytes) -> bytes:
    return envelope.open_(KEYS.data_key, KEYS.id_key, kind, bid, sealed)


@pytest.mark.parametrize("data", [b"", b"x", b"hello " * 10_000, os.urandom(100_000)])
def test_envelope_round_trip(data: bytes) -> None:
    bid, sealed = seal(BlobKind.DATA, data)
    assert open_(BlobKind.DATA, bid, sealed) == data


def test_envelope_compresses_text_not_noise() -> None:
    text, noise = b"abc" * 100_000, os.urandom(300_000)
    assert len(seal(BlobKind.DATA, text)[1]) < len(text) // 10
    assert len(seal(BlobKind.DATA, noise)[1]) == envelope.sealed_size(len(noise))


def test_envelope_fresh_salt_each_time() -> None:
    _, a = seal(BlobKind.DATA, b"same")
    _, b = seal(BlobKind.DATA, b"same")
    assert a != b


@pytest.mark.parametrize("position", [0, 1, 2, 10, 40, -1])
def test_envelope_any_flipped_byte_is_refused(position: int) -> None:
    bid, sealed = seal(BlobKind.DATA, b"secret data" * 100)
    bad = bytearray(sealed)
    bad[position] ^= 0x40
    with pytest.raises(IntegrityError):
        open_(BlobKind.DATA, bid, bytes(bad))


def test_envelope_bound_to_kind_and_id() -> None:
    bid, sealed = seal(BlobKind.DATA, b"chunk")
    with pytest.raises(IntegrityError):
        open_(BlobKind.TREE, bid, sealed)
    other, _ = seal(BlobKind.DATA, b"other")
    with pytest.raises(IntegrityError):
        open_(BlobKind.DATA, other, sealed)


def test_envelope_wrong_key_refused() -> None:
    bid, sealed = seal(BlobKind.DATA, b"chunk")
    other = MasterKeys.generate()
    with pytest.raises(IntegrityError):
        envelope.open_(other.data_key, KEYS.id_key, BlobKind.DATA, bid, sealed)


def test_pack_layout_and_header_round_trip() -> None:
    builder = pack.PackBuilder(KEYS.data_key, KEYS.id_key)
    plain = {}
    for i in range(50):
        data = os.urandom(100 + i)
        bid, sealed = seal(BlobKind.DATA, data)
        plain[bid] = data
        builder.add(bid, BlobKind.DATA, sealed)
    finished = builder.finish()
    assert len(finished.blobs) == 50
    header = pack.read_header(KEYS.data_key, KEYS.id_key, finished.data)
    assert {b.blob_id for b in header} == set(plain)
    for b in finished.blobs:
        sealed = finished.data[b.offset : b.offset + b.length]
        assert open_(BlobKind.DATA, b.blob_id, sealed) == plain[b.blob_id]
    # random order: not simply the insertion order (50! permutations, fails ~never)
    assert [b.blob_id for b in finished.blobs] != list(plain)


def test_pack_header_tamper_detected() -> None:
    builder = pack.PackBuilder(KEYS.data_key, KEYS.id_key)
    bid, sealed = seal(BlobKind.DATA, b"x" * 1000)
    builder.add(bid, BlobKind.DATA, sealed)
    data = bytearray(builder.finish().data)
    data[-pack.TRAILER.size - 5] ^= 1
    with pytest.raises(IntegrityError):
        pack.read_header(KEYS.data_key, KEYS.id_key, bytes(data))


def _sample_entries() -> list[TreeEntry]:
    some = BlobId(os.urandom(32))
    return [
        TreeEntry(
            "żółw ☃.txt".encode(), EntryType.FILE, 0o644, 1_700_000_000_123_456_789, 5, (some, some)
        ),
        TreeEntry(b"dir", EntryType.DIR, 0o755, 1, subtree=BlobId(os.urandom(32))),
        TreeEntry(b"link", EntryType.SYMLINK, 0o777, 2, target=b"../somewhere"),
        TreeEntry(b"\xff\xfenot-utf8", EntryType.FILE, 0o600, -5, 0, ()),
    ]


def test_tree_round_trip_sorted_and_deterministic() -> None:
    entries = _sample_entries()
    encoded = tree.encode(entries)
    assert encoded == tree.encode(list(reversed(entries)))
    decoded = tree.decode(encoded)
    assert decoded == sorted(entries, key=lambda e: e.name)


@pytest.mark.parametrize("name", [b"", b".", b"..", b"a/b", b"/etc", b"a\0b"])
def test_tree_refuses_hostile_names(name: bytes) -> None:
    with pytest.raises(HostilePath):
        tree.check_name(name)
    # Build a tree by hand that contains the hostile name and check decode refuses it.
    good = tree.encode([TreeEntry(b"x" * max(len(name), 1), EntryType.FILE, 0o644, 0)])
    if len(name) >= 1:
        bad = good.replace(b"x" * len(name), name)
        with pytest.raises(IntegrityError):
            tree.decode(bad)


def test_tree_refuses_truncated_and_duplicate() -> None:
    encoded = tree.encode(_sample_entries())
    for cut in (3, 10, len(encoded) - 1):
        with pytest.raises(IntegrityError):
            tree.decode(encoded[:cut])
    dup = tree.encode(
        [TreeEntry(b"aa", EntryType.FILE, 0o644, 0), TreeEntry(b"ab", EntryType.FILE, 0o644, 0)]
    )
    with pytest.raises(IntegrityError):
        tree.decode(dup.replace(b"ab", b"aa"))


def test_commit_round_trip() -> None:
    c = commit.Commit(
        kind="backup",
        tree=BlobId(os.urandom(32)),
        parents=(BlobId(os.urandom(32)),),
        ref="r-abc",
        counter=3,
        time_ns=123,
        device_id=2,
        device="laptop",
        hostname="laptop",
        paths=("/home/me/Documents", "/tmp/\udcff"),
        message="ünïcode",
        stats={"files": 3},
    )
    assert commit.decode(commit.encode(c)) == c
    assert json.loads(commit.encode(c))["v"] == 1  # readable by every client
    with pytest.raises(IntegrityError):
        commit.decode(b'{"v": 99}')

    # Tags make it version 3 (sorted, unique); a version-2 reader would refuse it, so an
    # untagged commit is never written as 3.
    tagged = replace(c, tags=("work", "before-upgrade", "work"))
    doc = json.loads(commit.encode(tagged))
    assert doc["v"] == 3 and doc["tags"] == ["before-upgrade", "work"]
    assert commit.decode(commit.encode(tagged)).tags == ("before-upgrade", "work")
    # A version 1 or 2 commit carrying a "tags" key (not written by anyone) has none.
    assert commit.decode(json.dumps({**doc, "v": 2}).encode()).tags == ()


# master.keys test vectors (docs/design.md §3): kek = bytes 0..31, nonce = bytes 100..111,
# data_key = 32 × 0x01, id_key = 32 × 0x02, box_secret = 32 × 0x03. Version 1 has no
# counter; version 2 carries counter 7, which is part of the AAD.
MASTER_KEYS_USER = "0123456789abcdef0123456789abcdef"
MASTER_KEYS_V1 = bytes.fromhex(
    "41534d4b016465666768696a6b6c6d6e6f491adf6778e8579f3f635ee9db646bfc43c3070b8a6df273a6d0"
    "ad49faa2a44996eb42c24e109906fff17a3dff40c8cd19599ae52248432af8f3aed4ed83a7880b8fd80dd548"
    "3806886cee40128932e5677b1c37a4c68ec5dcf235c778104d5245d0fc7865f6e7cdf0572adc73ea1e74"
)
MASTER_KEYS_V2 = bytes.fromhex(
    "41534d4b02070000006465666768696a6b6c6d6e6f491adf6778e8579f3f635ee9db646bfc43c3070b8a6d"
    "f273a6d0ad49faa2a44996eb42c24e109906fff17a3dff40c8cd19599ae52248432af8f3aed4ed83a7880b"
    "8fd80dd5483806886cee40128932e5677b1c37a4c68ec5dcf235c778104d52a6e1c1c86dea8479d6ad54a0"
    "68e4c013"
)


@pytest.mark.parametrize(("blob", "counter"), [(MASTER_KEYS_V1, 0), (MASTER_KEYS_V2, 7)])
def test_master_keys_vectors_still_open(blob: bytes, counter: int) -> None:
    opened = keys.unwrap(blob, bytes(range(32)), MASTER_KEYS_USER)
    assert opened == MasterKeys(b"\x01" * 32, b"\x02" * 32, b"\x03" * 32)
    assert keys.claimed_counter(blob) == counter
