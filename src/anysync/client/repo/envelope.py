"""The encrypted envelope every stored blob is wrapped in (docs/design.md §4.2).

Version 2, written (sizes in bytes):

    version     1   0x02
    salt       32   random; makes a fresh key and nonce for this blob alone
    ciphertext  n   AES-256-GCM of the inner plaintext below, 16-byte tag at the end

    inner = kind u8 | flags u8 | body_len u32 | body | zero padding
    len(inner) = padded_size(6 + body_len): at least 512, then Padmé
    key | nonce = HKDF-SHA256(data_key, salt=salt, info=b"anysync v2 blob", 32 + 12)
    AAD         = version | salt | blob ID (32)

The server sees only the version, the salt and a padded length: not the kind, not
whether the body compressed, and not the exact size. Padmé (Nikitin et al., PETS 2019)
rounds a length n to keep only its top floor(log2 floor(log2 n)) + 1 bits, so it adds
at most 6.25 % above the 512-byte floor (3.1 % from 64 KiB) and leaves O(log log n)
bits of size. A blob of any kind opened as the wrong kind is refused after decryption;
the padding must be all zero and body_len must end inside the inner plaintext.

Version 1, still read (blobs written before version 2):

    version 0x01 | kind u8 | flags u8 | salt 32 | AES-256-GCM(body), 16-byte tag
    key | nonce = HKDF-SHA256(data_key, salt=salt, info=b"anysync v1 blob", 32 + 12)
    AAD = version | kind | flags | salt | blob ID (32)

In both, the AAD binds the ciphertext to its ID: a server that returns blob B when
asked for A fails authentication. After decryption the keyed hash of the plaintext must
equal the ID as well. Flags bit 0 means the body is a zstd frame; it is decompressed
only after authentication, with a hard cap on the output size.
"""

from __future__ import annotations

import os
import struct
import threading

import zstandard

from anysync import crypto
from anysync.errors import IntegrityError
from anysync.types import BlobId, BlobKind

V1 = 1
V2 = 2
# The version-1 name, kept because tests/unit/test_trust_layers.py builds v1 envelopes
# by hand with it; the version written is V2.
VERSION = V1
FLAG_ZSTD = 0x01
SALT_SIZE = 32
_V1_HEADER = 3 + SALT_SIZE  # version | kind | flags | salt
_V2_PREFIX = 1 + SALT_SIZE  # version | salt
_INNER = struct.Struct("<BBI")  # kind | flags | body_len
_INFO_V1 = b"anysync v1 blob"
_INFO_V2 = b"anysync v2 blob"
# Smaller inner plaintexts are padded up to this: tiny files all look alike.
MIN_INNER = 512
# The largest plaintext a blob may hold: chunks are at most 8 MiB, trees of huge
# directories a few tens of MiB.
MAX_PLAINTEXT = 128 * 1024 * 1024
ZSTD_LEVEL = 3
# A body longer than PROBE_MIN is compressed only if its first PROBE_SIZE bytes shrink by
# at least PROBE_GAIN at level 1: media and archives then cost AES alone, not a zstd-3
# pass that is thrown away (the D2 benchmark's incompressible half).
PROBE_MIN = 256 * 1024
PROBE_SIZE = 64 * 1024
PROBE_GAIN = 0.10

_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    # zstd contexts are not thread-safe; one per thread, reused.
    c: zstandard.ZstdCompressor | None = getattr(_local, "c", None)
    if c is None:
        c = _local.c = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)
    return c


def _prober() -> zstandard.ZstdCompressor:
    p: zstandard.ZstdCompressor | None = getattr(_local, "p", None)
    if p is None:
        p = _local.p = zstandard.ZstdCompressor(level=1)
    return p


def _decompressor() -> zstandard.ZstdDecompressor:
    d: zstandard.ZstdDecompressor | None = getattr(_local, "d", None)
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor()
    return d


def blob_id(id_key: bytes, plaintext: bytes | memoryview) -> BlobId:
    return BlobId(crypto.keyed_hash(id_key, plaintext))


def padded_size(n: int) -> int:
    """The inner plaintext length stored for n bytes of kind, flags, length and body."""
    if n <= MIN_INNER:
        return MIN_INNER
    exponent = n.bit_length() - 1  # floor(log2 n)
    kept_bits = exponent.bit_length()  # floor(log2 exponent) + 1
    mask = (1 << (exponent - kept_bits)) - 1
    return (n + mask) & ~mask


def sealed_size(body_len: int) -> int:
    """The stored length of a version-2 envelope around a body of body_len bytes."""
    return _V2_PREFIX + padded_size(_INNER.size + body_len) + crypto.TAG_SIZE


def _key_nonce(data_key: bytes, salt: bytes, info: bytes = _INFO_V1) -> tuple[bytes, bytes]:
    material = crypto.hkdf(data_key, info, crypto.KEY_SIZE + crypto.NONCE_SIZE, salt)
    return material[: crypto.KEY_SIZE], material[crypto.KEY_SIZE :]


def _body_and_flags(
    plaintext: bytes | memoryview, compress: bool
) -> tuple[bytes | memoryview, int]:
    """zstd output if asked for and it saves more than 3 %, else the plaintext. A large
    body whose start does not compress (PROBE_GAIN) is not tried."""
    if compress and len(plaintext) > PROBE_MIN:
        head = plaintext[:PROBE_SIZE]
        compress = len(_prober().compress(head)) <= len(head) * (1 - PROBE_GAIN)
    if compress and len(plaintext) > 64:
        packed = _compressor().compress(plaintext)
        if len(packed) < len(plaintext) * 0.97:
            return packed, FLAG_ZSTD
    return plaintext, 0


def seal(
    data_key: bytes,
    kind: BlobKind,
    bid: BlobId,
    plaintext: bytes | memoryview,
    compress: bool = True,
) -> bytes:
    """Compress (when it pays), pad, then encrypt. Returns the whole version-2 envelope."""
    body, flags = _body_and_flags(plaintext, compress)
    header = _INNER.pack(kind, flags, len(body))
    padding = padded_size(len(header) + len(body)) - len(header) - len(body)
    inner = b"".join((header, body, bytes(padding)))
    salt = os.urandom(SALT_SIZE)
    prefix = bytes([V2]) + salt
    key, nonce = _key_nonce(data_key, salt, _INFO_V2)
    return prefix + crypto.aead_encrypt(key, nonce, inner, prefix + bid.raw)


def _decrypt(
    data_key: bytes, bid: BlobId, aad: bytes, salt: bytes, info: bytes, rest: bytes | memoryview
) -> bytes:
    key, nonce = _key_nonce(data_key, salt, info)
    try:
        return crypto.aead_decrypt(key, nonce, rest, aad + bid.raw)
    except IntegrityError:
        raise IntegrityError(
            f"blob {bid.short()} failed authentication (tampered or corrupt)"
        ) from None


def _open_v1(data_key: bytes, bid: BlobId, envelope: bytes | memoryview) -> tuple[int, int, bytes]:
    """(kind, flags, body) of an authentic version-1 envelope."""
    if len(envelope) < _V1_HEADER + crypto.TAG_SIZE:
        raise IntegrityError(f"blob {bid.short()} is truncated")
    header = bytes(envelope[:_V1_HEADER])
    body = _decrypt(data_key, bid, header, header[3:], _INFO_V1, envelope[_V1_HEADER:])
    return header[1], header[2], body


def _open_v2(data_key: bytes, bid: BlobId, envelope: bytes | memoryview) -> tuple[int, int, bytes]:
    """(kind, flags, body) of an authentic version-2 envelope with a well-formed inner."""
    if len(envelope) < _V2_PREFIX + _INNER.size + crypto.TAG_SIZE:
        raise IntegrityError(f"blob {bid.short()} is truncated")
    prefix = bytes(envelope[:_V2_PREFIX])
    inner = _decrypt(data_key, bid, prefix, prefix[1:], _INFO_V2, envelope[_V2_PREFIX:])
    kind, flags, body_len = _INNER.unpack_from(inner)
    if flags & ~FLAG_ZSTD:
        raise IntegrityError(f"blob {bid.short()} has unknown flags {flags:#04x}")
    end = _INNER.size + body_len
    if end > len(inner):
        raise IntegrityError(f"blob {bid.short()} has a length past its end")
    if inner.count(0, end) != len(inner) - end:
        raise IntegrityError(f"blob {bid.short()} has non-zero padding")
    return kind, flags, inner[_INNER.size : end]


def _decompress(bid: BlobId, body: bytes) -> bytes:
    try:
        if zstandard.frame_content_size(body) > MAX_PLAINTEXT:
            raise IntegrityError(f"blob {bid.short()} claims an oversized plaintext")
        return _decompressor().decompress(body, max_output_size=MAX_PLAINTEXT)
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"blob {bid.short()} does not decompress: {exc}") from None


def open_(
    data_key: bytes, id_key: bytes, kind: BlobKind, bid: BlobId, envelope: bytes | memoryview
) -> bytes:
    """Authenticate, decrypt, check the kind, decompress and check the ID, for either
    version. Raises IntegrityError."""
    if not envelope:
        raise IntegrityError(f"blob {bid.short()} is truncated")
    version = envelope[0]
    if version == V2:
        found, flags, body = _open_v2(data_key, bid, envelope)
    elif version == V1:
        found, flags, body = _open_v1(data_key, bid, envelope)
    else:
        raise IntegrityError(f"blob {bid.short()} has unknown envelope version {version}")
    if found != kind:
        raise IntegrityError(f"blob {bid.short()} is not a {kind.name.lower()} blob")
    if flags & FLAG_ZSTD:
        body = _decompress(bid, body)
    if crypto.keyed_hash(id_key, body) != bid.raw:
        raise IntegrityError(f"blob {bid.short()} does not match its ID")
    return body
