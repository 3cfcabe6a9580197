"""Physical limits of this machine, measured on the benchmark's own data.

Single-core compression (zstd -1/-3, lz4) on D2's text, AES-256-GCM, SHA-256, BLAKE3,
disk read (cold via posix_fadvise(DONTNEED), and warm), the scrypt KDF AnySync runs
once per command, and a no-dedup floor: tar | zstd -3 -T2 | openssl enc > file.

Run as a script (`python limits.py lz4 FILE NBYTES`) it measures lz4 only; the harness
does that with the peers' venv, where the `lz4` package lives. Keep the top-level
imports to the standard library for that reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.measure import Measurement, Runner

MiB = 1024 * 1024
PIECE = MiB


def _pieces(data: bytes) -> list[memoryview]:
    view = memoryview(data)
    return [view[i : i + PIECE] for i in range(0, len(data), PIECE)]


def _rate(data: bytes, fn: Callable[[memoryview], object], rounds: int = 2) -> float:
    """Best MiB/s over `rounds` passes of fn over 1 MiB pieces of data."""
    best = float("inf")
    pieces = _pieces(data)
    for _ in range(rounds):
        t0 = time.perf_counter()
        for p in pieces:
            fn(p)
        best = min(best, time.perf_counter() - t0)
    return len(data) / MiB / best


def _compress(data: bytes, fn: Callable[[memoryview], bytes]) -> tuple[float, float]:
    out = 0
    t0 = time.perf_counter()
    for p in _pieces(data):
        out += len(fn(p))
    elapsed = time.perf_counter() - t0
    return len(data) / MiB / elapsed, len(data) / max(1, out)


def lz4_rate(path: Path, nbytes: int) -> tuple[float, float]:
    import lz4.frame  # type: ignore[import-not-found]

    with open(path, "rb") as f:
        data = f.read(nbytes)
    return _compress(data, lambda p: bytes(lz4.frame.compress(p)))


def _row(name: str, value: float, unit: str, note: str = "") -> dict[str, Any]:
    return {"name": name, "value": round(value, 2), "unit": unit, "note": note}


def cpu_limits(
    text_file: Path, media_file: Path, nbytes: int, aux_python: str | None
) -> list[dict[str, Any]]:
    import blake3  # type: ignore[import-untyped]
    import zstandard  # type: ignore[import-untyped]
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    with open(text_file, "rb") as f:
        text = f.read(nbytes)
    size = f"{len(text) // MiB} MiB of D2 text in 1 MiB pieces, one core"
    rows = []
    for level in (1, 3):
        cctx = zstandard.ZstdCompressor(level=level)
        rate, ratio = _compress(text, cctx.compress)
        rows.append(_row(f"zstd -{level} compress", rate, "MiB/s", f"ratio {ratio:.2f}; {size}"))
    if aux_python:
        lz4 = subprocess.run(
            [aux_python, __file__, "lz4", str(text_file), str(nbytes)],
            capture_output=True,
            text=True,
        )
        if lz4.returncode == 0:
            rate, ratio = json.loads(lz4.stdout)
            rows.append(_row("lz4 compress", rate, "MiB/s", f"ratio {ratio:.2f}; {size}"))
        else:
            rows.append(_row("lz4 compress", 0, "MiB/s", "skipped: python lz4 not available"))
    else:
        rows.append(_row("lz4 compress", 0, "MiB/s", "skipped: no venv with python lz4"))
    dctx = zstandard.ZstdDecompressor()
    blobs = [zstandard.ZstdCompressor(level=3).compress(p) for p in _pieces(text)]
    t0 = time.perf_counter()
    for b in blobs:
        dctx.decompress(b)
    rows.append(
        _row(
            "zstd -3 decompress",
            len(text) / MiB / (time.perf_counter() - t0),
            "MiB/s",
            "output bytes; one core",
        )
    )
    aes = AESGCM(os.urandom(32))
    nonce = os.urandom(12)
    rows.append(
        _row(
            "AES-256-GCM encrypt",
            _rate(text, lambda p: aes.encrypt(nonce, p, None)),
            "MiB/s",
            "cryptography, 1 MiB pieces, one core",
        )
    )
    rows.append(
        _row(
            "SHA-256",
            _rate(text, lambda p: hashlib.sha256(p).digest()),
            "MiB/s",
            "hashlib, one core",
        )
    )
    rows.append(
        _row(
            "BLAKE3",
            _rate(text, lambda p: blake3.blake3(p).digest()),
            "MiB/s",
            "blake3 package, one thread",
        )
    )
    rows.append(_disk_read(media_file, nbytes * 4))
    with open(media_file, "rb") as f:
        warm = f.read(nbytes)
    t0 = time.perf_counter()
    with open(media_file, "rb") as f:
        while f.read(8 * MiB):
            pass
    rows.append(
        _row(
            "disk read (warm, page cache)",
            media_file.stat().st_size / MiB / (time.perf_counter() - t0),
            "MiB/s",
            media_file.name,
        )
    )
    del warm
    t0 = time.perf_counter()
    hashlib.scrypt(b"password", salt=b"s" * 16, n=2**17, r=8, p=1, maxmem=256 * MiB, dklen=32)
    rows.append(
        _row(
            "scrypt N=2^17 r=8 p=1",
            (time.perf_counter() - t0) * 1000,
            "ms",
            "AnySync's KDF; every CLI command pays it once",
        )
    )
    return rows


def _disk_read(path: Path, limit: int) -> dict[str, Any]:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        n = 0
        t0 = time.perf_counter()
        while n < limit:
            got = os.read(fd, 8 * MiB)
            if not got:
                break
            n += len(got)
        elapsed = time.perf_counter() - t0
    finally:
        os.close(fd)
    return _row(
        "disk read (cold, fadvise DONTNEED)",
        n / MiB / elapsed,
        "MiB/s",
        f"{n // MiB} MiB of {path.name}",
    )


FLOOR_BACKUP = (
    "set -o pipefail; tar -cf - -C {root} {name} | zstd -3 -T2 -q "
    "| openssl enc -aes-256-ctr -pbkdf2 -pass pass:x > {out}"
)
FLOOR_RESTORE = (
    "set -o pipefail; openssl enc -d -aes-256-ctr -pbkdf2 -pass pass:x < {out} "
    "| zstd -d -q | tar -xf - -C {target}"
)


def floor(runner: Runner, root: Path, name: str, work: Path) -> dict[str, Measurement | int]:
    """The no-dedup floor: one stream through tar, zstd -3 (2 threads) and AES-CTR."""
    work.mkdir(parents=True, exist_ok=True)
    out, target = work / f"{name}.tar.zst.enc", work / f"{name}-restored"
    target.mkdir()
    env = dict(os.environ)
    with runner.measure([]) as backup:
        script = FLOOR_BACKUP.format(
            root=shlex.quote(str(root)), name=shlex.quote(name), out=shlex.quote(str(out))
        )
        runner.run(["bash", "-c", script], env, label=f"floor-backup-{name}")
    size = out.stat().st_size
    with runner.measure([]) as restore:
        script = FLOOR_RESTORE.format(out=shlex.quote(str(out)), target=shlex.quote(str(target)))
        runner.run(["bash", "-c", script], env, label=f"floor-restore-{name}")
    return {"backup": backup, "restore": restore, "bytes": size}


if __name__ == "__main__":
    if sys.argv[1:2] == ["lz4"]:
        print(json.dumps(lz4_rate(Path(sys.argv[2]), int(sys.argv[3]))))
