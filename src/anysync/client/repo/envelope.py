"""The encrypted envelope every stored blob is wrapped in.

Version 1 (sizes in bytes):

    version     1   0x01
    kind        1   types.BlobKind
    flags       1   bit 0: plaintext was zstd-compressed before encryption
    salt       32   random; makes a fresh key and nonce for this blob alone
    ciphertext  n   AES-256-GCM, 16-byte tag at the end

    key | nonce = HKDF-SHA256(data_key, salt=salt, info=b"anysync v1 blob", 32 + 12)
    AAD         = version | kind | flags | salt | blob ID (32)

The AAD binds the ciphertext to its kind and ID: a server that returns blob B when
asked for A, or a tree where a chunk was expected, fails authentication. After
decryption the keyed hash of the plaintext must equal the ID as well. Decompression
happens only after authentication, with a hard cap on the output size.
"""

from __future__ import annotations

import os
import threading

import zstandard

from anysync import crypto
from anysync.errors import IntegrityError
from anysync.types import BlobId, BlobKind

VERSION = 1
FLAG_ZSTD = 0x01
SALT_SIZE = 32
HEADER_SIZE = 3 + SALT_SIZE
OVERHEAD = HEADER_SIZE + crypto.TAG_SIZE
# The largest plaintext a blob may hold: chunks are at most 8 MiB, trees of huge
# directories a few tens of MiB.
MAX_PLAINTEXT = 128 * 1024 * 1024
ZSTD_LEVEL = 3

_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    # zstd contexts are not thread-safe; one per thread, reused.
    c: zstandard.ZstdCompressor | None = getattr(_local, "c", None)
    if c is None:
        c = _local.c = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d: zstandard.ZstdDecompressor | None = getattr(_local, "d", None)
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor()
    return d


def blob_id(id_key: bytes, plaintext: bytes | memoryview) -> BlobId:
    return BlobId(crypto.keyed_hash(id_key, plaintext))


def _key_nonce(data_key: bytes, salt: bytes) -> tuple[bytes, bytes]:
    material = crypto.hkdf(data_key, b"anysync v1 blob", crypto.KEY_SIZE + crypto.NONCE_SIZE, salt)
    return material[: crypto.KEY_SIZE], material[crypto.KEY_SIZE :]


def seal(
    data_key: bytes,
    kind: BlobKind,
    bid: BlobId,
    plaintext: bytes | memoryview,
    compress: bool = True,
) -> bytes:
    """Compress (when it pays), then encrypt. Returns the whole envelope."""
    flags = 0
    body: bytes | memoryview = plaintext
    if compress and len(plaintext) > 64:
        packed = _compressor().compress(plaintext)
        if len(packed) < len(plaintext) * 0.97:
            body, flags = packed, FLAG_ZSTD
    salt = os.urandom(SALT_SIZE)
    header = bytes([VERSION, kind, flags]) + salt
    key, nonce = _key_nonce(data_key, salt)
    return header + crypto.aead_encrypt(key, nonce, body, header + bid.raw)


def open_(
    data_key: bytes, id_key: bytes, kind: BlobKind, bid: BlobId, envelope: bytes | memoryview
) -> bytes:
    """Authenticate, decrypt, decompress and check the ID. Raises IntegrityError."""
    if len(envelope) < OVERHEAD:
        raise IntegrityError(f"blob {bid.short()} is truncated")
    header = bytes(envelope[:HEADER_SIZE])
    if header[0] != VERSION:
        raise IntegrityError(f"blob {bid.short()} has unknown envelope version {header[0]}")
    if header[1] != kind:
        raise IntegrityError(f"blob {bid.short()} is not a {kind.name.lower()} blob")
    key, nonce = _key_nonce(data_key, header[3:])
    try:
        body = crypto.aead_decrypt(key, nonce, envelope[HEADER_SIZE:], header + bid.raw)
    except IntegrityError:
        raise IntegrityError(
            f"blob {bid.short()} failed authentication (tampered or corrupt)"
        ) from None
    if header[2] & FLAG_ZSTD:
        try:
            if zstandard.frame_content_size(body) > MAX_PLAINTEXT:
                raise IntegrityError(f"blob {bid.short()} claims an oversized plaintext")
            body = _decompressor().decompress(body, max_output_size=MAX_PLAINTEXT)
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"blob {bid.short()} does not decompress: {exc}") from None
    if crypto.keyed_hash(id_key, body) != bid.raw:
        raise IntegrityError(f"blob {bid.short()} does not match its ID")
    return body
