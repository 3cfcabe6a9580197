"""Deterministic data sets, made from a seed and this machine's own system files.

D1 "home directory": many small files in nested directories (text, ELF binaries and
incompressible "media"), a few large ones, some symlinks, one big project directory.
D2 "media and archives": a few large files, half incompressible, half text.
D3: edits applied to D1 and D2 between two backups, and reverted after the round.

Text and binary content is cut from a corpus of files under /usr (sorted walk, capped
size), so compressors see real data; every file gets its own slices, so nothing
dedups by accident. Incompressible bytes come from a seeded AES-CTR keystream.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import math
import multiprocessing
import os
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

GENERATOR_VERSION = 3
SEED = 20261127
KiB = 1024
MiB = 1024 * KiB

TEXT_ROOTS = ["/usr/lib/python3", "/usr/share/perl", "/usr/include", "/usr/share/doc"]
BINARY_ROOTS = ["/usr/lib/x86_64-linux-gnu", "/usr/lib", "/usr/bin", "/usr/sbin"]
WORDS = [
    "notes",
    "photos",
    "2019",
    "2020",
    "misc",
    "build",
    "src",
    "lib",
    "docs",
    "old",
    "backup",
    "work",
    "tmp",
    "assets",
    "data",
    "test",
    "music",
    "videos",
    "drafts",
    "archive",
]
TOP_DIRS = ["Documents", "Downloads", "Pictures", "Music", "src", ".config", ".cache", "projects"]
EXT = {
    "text": ["txt", "py", "c", "h", "md", "pl"],
    "binary": ["so", "o", "bin"],
    "media": ["jpg", "mp3", "zip"],
}
MONOREPO = "projects/monorepo"
MONOREPO_RENAMED = "projects/monorepo-v2"


@dataclass(frozen=True)
class Scale:
    name: str
    d1_files: int
    d2_files: dict[str, tuple[str, int]]  # name -> (kind, MiB)
    text_corpus_mib: int
    binary_corpus_mib: int
    append_mib: float


FULL = Scale(
    "full",
    d1_files=100_000,
    d2_files={
        "video.mkv": ("media", 640),
        "photos.tar": ("media", 384),
        "server.log": ("text", 512),
        "dump.sql": ("text", 512),
    },
    text_corpus_mib=96,
    binary_corpus_mib=64,
    append_mib=8,
)
QUICK = Scale(
    "quick",
    d1_files=3_000,
    d2_files={name: (kind, max(1, mib // 20)) for name, (kind, mib) in FULL.d2_files.items()},
    text_corpus_mib=16,
    binary_corpus_mib=8,
    append_mib=0.5,
)
INSERT_FILE = "server.log"  # D3: 1 KiB inserted at the start
APPEND_FILE = "dump.sql"  # D3: appended to


class Corpus:
    """Real bytes from /usr to cut file contents from."""

    def __init__(self, scale: Scale) -> None:
        self.text = _collect(TEXT_ROOTS, scale.text_corpus_mib * MiB, text=True)
        self.binary = _collect(BINARY_ROOTS, scale.binary_corpus_mib * MiB, text=False)
        self.sha256 = hashlib.sha256(self.text + self.binary).hexdigest()

    def content(self, rnd: random.Random, kind: str, size: int) -> bytes:
        if kind == "media":
            return keystream(rnd.randbytes(32), size)
        src = self.text if kind == "text" else self.binary
        if size <= 64 * KiB and size < len(src):
            start = rnd.randrange(len(src) - size + 1)
            return src[start : start + size]
        return b"".join(self._pieces(rnd, src, size))

    @staticmethod
    def _pieces(rnd: random.Random, src: bytes, size: int) -> Iterator[bytes]:
        while size > 0:
            n = min(size, rnd.randint(16 * KiB, 64 * KiB), len(src))
            start = rnd.randrange(len(src) - n + 1)
            yield src[start : start + n]
            size -= n


def _collect(roots: list[str], cap: int, *, text: bool) -> bytes:
    parts: list[bytes] = []
    total = 0
    seen: set[tuple[int, int]] = set()
    for root in roots:
        for path in _walk_sorted(Path(root)):
            try:
                st = path.lstat()
                if not path.is_file() or path.is_symlink() or (st.st_dev, st.st_ino) in seen:
                    continue
                if st.st_size < 256 or st.st_size > 8 * MiB or path.suffix in (".gz", ".xz"):
                    continue
                data = path.read_bytes()
            except OSError:
                continue
            seen.add((st.st_dev, st.st_ino))
            if text and b"\0" in data[:4096]:
                continue
            if not text and not data.startswith(b"\x7fELF"):
                continue
            parts.append(data)
            total += len(data)
            if total >= cap:
                return b"".join(parts)[:cap]
    if total < MiB:
        raise RuntimeError(f"too little corpus data under {roots} ({total} bytes)")
    return b"".join(parts)


def _walk_sorted(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def keystream(key: bytes, size: int) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    return enc.update(bytes(size))


def _size(rnd: random.Random) -> int:
    """Real-world mix: most files under 4 KiB, a few over 1 MiB."""
    r = rnd.random()
    if r < 0.01:
        return 0
    lo, hi = (
        (100, 4 * KiB)
        if r < 0.70
        else (4 * KiB, 32 * KiB)
        if r < 0.95
        else (32 * KiB, 256 * KiB)
        if r < 0.998
        else (1 * MiB, 4 * MiB)
    )
    return int(math.exp(rnd.uniform(math.log(lo), math.log(hi))))


def _kind(rnd: random.Random) -> str:
    r = rnd.random()
    return "text" if r < 0.60 else "binary" if r < 0.85 else "media"


@dataclass
class DataInfo:
    """What the generator made; saved as meta.json beside the data."""

    scale: str
    seed: int
    version: int
    corpus_sha256: str = ""
    d1_files: int = 0
    d1_symlinks: int = 0
    d1_dirs: int = 0
    d1_bytes: int = 0
    d2_bytes: int = 0
    one_file: str = ""  # D1/…: the file of the single-file restore
    state: str = "clean"  # "d3" while D3 edits are applied
    d1_regular: list[str] = field(default_factory=list)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> DataInfo | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


class DataSets:
    """D1 and D2 under `root`, generated once and reused while they are unchanged."""

    def __init__(self, root: Path, scale: Scale) -> None:
        self.root = root
        self.scale = scale
        self.d1 = root / "D1"
        self.d2 = root / "D2"
        self.meta_path = root / "meta.json"
        self.info = DataInfo(scale.name, SEED, GENERATOR_VERSION)
        self._undo: dict[str, bytes] = {}
        self._append_size = 0

    def ensure(self) -> bool:
        """Generate unless an identical clean copy exists. True if generated."""
        old = DataInfo.load(self.meta_path)
        if (
            old is not None
            and (old.scale, old.seed, old.version, old.state)
            == (self.scale.name, SEED, GENERATOR_VERSION, "clean")
            and self.d1.is_dir()
            and self.d2.is_dir()
        ):
            self.info = old
            return False
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        corpus = Corpus(self.scale)
        self.info.corpus_sha256 = corpus.sha256
        self._make_d1(corpus)
        self._make_d2(corpus)
        self.info.save(self.meta_path)
        return True

    # ------------------------------------------------------------------ D1

    def _make_d1(self, corpus: Corpus) -> None:
        rnd = random.Random(SEED)
        n = self.scale.d1_files
        dirs = [Path(d) for d in TOP_DIRS]
        depth = {d: 1 for d in dirs}
        for i in range(max(20, n // 50)):
            parent = rnd.choice(dirs)
            if depth[parent] >= 6:
                parent = rnd.choice(dirs[: len(TOP_DIRS)])
            d = parent / f"{rnd.choice(WORDS)}-{i:04d}"
            dirs.append(d)
            depth[d] = depth[parent] + 1
        mono = [Path(MONOREPO)]
        for i in range(max(5, n // 1000)):
            mono.append(rnd.choice(mono) / f"{rnd.choice(WORDS)}-m{i:03d}")
        for d in dirs + mono:
            (self.d1 / d).mkdir(parents=True, exist_ok=True)
        files: list[tuple[Path, int]] = []
        for i in range(n):
            d = rnd.choice(mono) if rnd.random() < 0.05 else rnd.choice(dirs)
            kind = _kind(rnd)
            size = _size(rnd)
            rel = d / f"{rnd.choice(WORDS)}-{i:06d}.{rnd.choice(EXT[kind])}"
            (self.d1 / rel).write_bytes(corpus.content(rnd, kind, size))
            files.append((rel, size))
        for j in range(n // 100):
            d = rnd.choice(dirs)
            target = "missing/target" if j % 10 == 0 else os.path.relpath(rnd.choice(files)[0], d)
            (self.d1 / d / f"link-{j:04d}").symlink_to(target)
        big = sorted(
            rel
            for rel, size in files
            if size >= MiB and len(rel.parts) >= 3 and not str(rel).startswith(MONOREPO)
        )
        pick = big[0] if big else max(files, key=lambda f: f[1])[0]
        self.info.one_file = str(Path("D1") / pick)
        self.info.d1_files = n
        self.info.d1_symlinks = n // 100
        self.info.d1_dirs = len(set(dirs + mono))
        self.info.d1_bytes = sum(size for _, size in files)
        self.info.d1_regular = sorted(str(rel) for rel, _ in files)

    # ------------------------------------------------------------------ D2

    def _make_d2(self, corpus: Corpus) -> None:
        self.d2.mkdir()
        for i, (name, (kind, mib)) in enumerate(sorted(self.scale.d2_files.items())):
            rnd = random.Random(SEED + 1000 + i)
            with open(self.d2 / name, "wb") as f:
                left = mib * MiB
                while left:
                    n = min(left, 8 * MiB)
                    f.write(corpus.content(rnd, kind, n))
                    left -= n
            self.info.d2_bytes += mib * MiB

    # ------------------------------------------------------------------ D3

    def apply_d3(self) -> dict[str, int]:
        """Insert 1 KiB at the start of one D2 file, append to another, change 1% of D1's
        files, rename a directory with many files. Returns what was done."""
        self.info.state = "d3"
        self.info.save(self.meta_path)
        rnd = random.Random(SEED + 3)
        changed = rnd.sample(self.info.d1_regular, max(1, len(self.info.d1_regular) // 100))
        for rel in changed:
            p = self.d1 / rel
            old = p.read_bytes()
            self._undo[rel] = old
            at = rnd.randrange(len(old)) if old else 0
            patch = f"\n# edited {rnd.getrandbits(64):016x}\n".encode()
            p.write_bytes(old[:at] + patch + old[at + len(patch) :] + b"appended line\n")
        (self.d1 / MONOREPO).rename(self.d1 / MONOREPO_RENAMED)
        head = keystream(rnd.randbytes(32), 512).hex().encode()  # 1 KiB of text
        _rewrite(self.d2 / INSERT_FILE, prefix=head, skip=0)
        append = self.d2 / APPEND_FILE
        self._append_size = append.stat().st_size
        extra = int(self.scale.append_mib * MiB)
        corpus_rnd = random.Random(SEED + 4)
        with open(append, "ab") as f:
            f.write(b"".join(Corpus._pieces(corpus_rnd, _undo_text(self._undo), extra)))
        return {
            "d1_files_changed": len(changed),
            "d1_dir_renamed_files": sum(1 for r in self.info.d1_regular if r.startswith(MONOREPO)),
            "d2_bytes_inserted": len(head),
            "d2_bytes_appended": extra,
        }

    def revert_d3(self) -> None:
        (self.d1 / MONOREPO_RENAMED).rename(self.d1 / MONOREPO)
        for rel, data in self._undo.items():
            (self.d1 / rel).write_bytes(data)
        self._undo.clear()
        _rewrite(self.d2 / INSERT_FILE, prefix=b"", skip=1024)
        os.truncate(self.d2 / APPEND_FILE, self._append_size)
        self.info.state = "clean"
        self.info.save(self.meta_path)


def _undo_text(undo: dict[str, bytes]) -> bytes:
    """Text to append: the D1 files changed (real content), at least 1 MiB of it."""
    text = b"".join(undo.values())
    return text if len(text) >= MiB else text * (MiB // max(1, len(text)) + 1)


def _rewrite(path: Path, prefix: bytes, skip: int) -> None:
    """Replace `path` by prefix + its content from byte `skip` (streamed)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        dst.write(prefix)
        src.seek(skip)
        shutil.copyfileobj(src, dst, 8 * MiB)
    tmp.replace(path)


# ---------------------------------------------------------------------- D4

# D4 "a million files" (#15): many small files in a tree shaped like a home directory
# with projects, for the client's memory and per-file cost at scale. Separate from D1/D2
# (which it does not touch): its own seed, its own version, cheap synthetic content
# (no /usr corpus), so that a million files are made in minutes.
D4_VERSION = 1
D4_SEED = SEED + 400
D4_FILES = (100_000, 300_000, 1_000_000)
D4_QUICK_FILES = 20_000
D4_BUFFER = 32 * MiB  # each of the text and random buffers that contents are cut from
D4_MAX_DEPTH = 10
D4_VOCAB = (  # split into words when the text buffer is made
    "the of and to in is for that with on as by this be are from at or an it not "
    "file data value return self int char struct if else while def import class "
    "error buffer size count index list map key name path node time user config test "
    "build src lib include static const void case break new object string number"
)


@dataclass(frozen=True)
class D4Dir:
    """One directory of D4: its path, and the files [first, first + count) it holds."""

    index: int
    rel: str
    first: int
    count: int


def d4_plan(files: int) -> list[D4Dir]:
    """D4's directories for `files` files, in creation order.

    Each directory draws its parent, name and file count from its own seed, so the tree
    for N files is a prefix of the tree for any larger N (only the last directory of the
    smaller tree holds fewer files): 100k, 300k and 1M are the same shape, growing.
    """
    tops = ["Documents", "Downloads", "Pictures", "Music", "src", ".config", ".cache", "projects"]
    rels = list(tops)
    depth = [1] * len(tops)
    plan = [D4Dir(i, rel, 0, 0) for i, rel in enumerate(tops)]
    total = 0
    d = len(tops)
    while total < files:
        rnd = random.Random(D4_SEED * 1_000_003 + d)
        # Mostly near recent directories (a project's directories are made together).
        parent = rnd.randrange(max(0, d - 64), d) if rnd.random() < 0.7 else rnd.randrange(d)
        if depth[parent] >= D4_MAX_DEPTH:
            parent = rnd.randrange(len(tops))
        rel = f"{rels[parent]}/{rnd.choice(WORDS)}-{d:06d}"
        r = rnd.random()
        # 15% hold only directories; a few are huge (a mail folder, node_modules/.bin).
        count = (
            0
            if r < 0.15
            else rnd.randint(2_000, 8_000)
            if r > 0.999
            else int(math.exp(rnd.uniform(0, math.log(400))))
        )
        count = min(count, files - total)
        rels.append(rel)
        depth.append(depth[parent] + 1)
        plan.append(D4Dir(d, rel, total, count))
        total += count
        d += 1
    return plan


def _d4_size(rnd: random.Random) -> int:
    """Most files 100 B - 8 KiB, a few up to 1 MiB; mean ~3 KiB."""
    r = rnd.random()
    if r < 0.01:
        return 0
    lo, hi = (100, 8 * KiB) if r < 0.97 else (8 * KiB, 64 * KiB) if r < 0.999 else (64 * KiB, MiB)
    return int(math.exp(rnd.uniform(math.log(lo), math.log(hi))))


def _d4_buffers() -> tuple[bytes, bytes]:
    """Seeded pseudo-text (compresses ~3x) and a seeded AES-CTR keystream."""
    rnd = random.Random(D4_SEED)
    words = rnd.choices(D4_VOCAB.split(), k=D4_BUFFER // 5)
    text = " ".join(words).encode()
    lines = bytearray(text[:D4_BUFFER])
    for at in range(0, len(lines), 73):  # lines of ~72 characters
        lines[at] = 0x0A
    return bytes(lines), keystream(rnd.randbytes(32), D4_BUFFER)


_D4_BUFS: tuple[bytes, bytes] | None = None


def _d4_write_dirs(root: str, dirs: list[D4Dir]) -> tuple[int, int]:
    """Write the files of `dirs` under root; returns (files, bytes). Runs in a worker."""
    global _D4_BUFS
    if _D4_BUFS is None:
        _D4_BUFS = _d4_buffers()
    text, noise = _D4_BUFS
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    n = size_total = 0
    for d in dirs:
        rnd = random.Random(D4_SEED * 7_000_003 + d.index)
        base = f"{root}/{d.rel}/"
        for i in range(d.first, d.first + d.count):
            kind = 0 if rnd.random() < 0.7 else 1
            size = _d4_size(rnd)
            ext = rnd.choice(EXT["text"] if kind == 0 else EXT["binary"] + EXT["media"])
            name = f"{rnd.choice(WORDS)}-{i:07d}.{ext}"
            src = text if kind == 0 else noise
            # A unique first line: no two files dedup, even if their slices collide.
            head = b"%d\n" % i
            body = max(0, size - len(head))
            start = rnd.randrange(len(src) - body + 1)
            fd = os.open(base + name, flags, 0o644)
            try:
                if size:
                    os.write(fd, (head + src[start : start + body])[:size])
            finally:
                os.close(fd)
            n += 1
            size_total += size
    return n, size_total


@dataclass
class D4Info:
    """What the D4 generator made; saved as meta.json beside the tree."""

    files: int
    seed: int = D4_SEED
    version: int = D4_VERSION
    dirs: int = 0
    bytes: int = 0
    seconds: float = 0.0  # generation time
    workers: int = 0


def make_d4(root: Path, files: int, workers: int = 2) -> tuple[Path, D4Info, bool]:
    """D4 with `files` files under root/D4 (reused if an identical one exists).

    Returns the tree, what it holds, and whether it was generated now. The files are
    written by `workers` processes; each takes whole directories, so the output does not
    depend on their number.
    """
    tree, meta = root / "D4", root / "meta.json"
    try:
        old = D4Info(**json.loads(meta.read_text()))
        if (old.files, old.seed, old.version) == (files, D4_SEED, D4_VERSION) and tree.is_dir():
            return tree, old, False
    except (OSError, ValueError, TypeError):
        pass
    t0 = time.perf_counter()
    if root.exists():
        shutil.rmtree(root)
    plan = d4_plan(files)
    tree.mkdir(parents=True)
    for d in plan:  # a parent comes before its children in the plan
        os.mkdir(f"{tree}/{d.rel}")
    # Batches of whole directories, ~5,000 files each, interleaved between workers.
    batches: list[list[D4Dir]] = [[]]
    filled = 0
    for d in plan:
        if d.count == 0:
            continue
        batches[-1].append(d)
        filled += d.count
        if filled >= 5_000:
            batches.append([])
            filled = 0
    info = D4Info(files=files, dirs=len(plan), workers=workers)
    # Spawned, not forked: a fork of a process with threads (pytest under coverage)
    # can copy a lock held by another thread, and the worker then waits for ever (it
    # hung CI once). Each worker makes its buffers once (_d4_write_dirs).
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        written = 0
        for n, size in pool.map(_d4_write_dirs, [str(tree)] * len(batches), batches):
            written += n
            info.bytes += size
    if written != files:
        raise RuntimeError(f"D4: wrote {written} files, planned {files}")
    info.seconds = time.perf_counter() - t0
    meta.write_text(json.dumps(asdict(info)))
    return tree, info, True
