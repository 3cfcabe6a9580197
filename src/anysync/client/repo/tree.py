"""Trees: one directory each, encoded deterministically so equal directories share an ID.

Tree plaintext, version 2 (little-endian):

    magic     4    b"ASTR"
    version   1    0x02
    count     u32
    count × entry, sorted by name bytes, names unique:
      entry_length u32   bytes of the entry after this field (room for new fields)
      type         u8    1 file, 2 directory, 3 symlink
      mode         u32   permission bits (mode & 0o7777)
      mtime_ns     i64
      size         u64   file size; 0 for directories and symlinks
      name_length  u16, name bytes   (as on disk; never contains "/" or NUL)
      file:      chunk_count u32, chunk_count × blob ID (32),
                 sizes_count u32, sizes_count × u32: the plaintext bytes of each chunk,
                 in chunk order (sizes_count = chunk_count; 0 when not known)
      directory: subtree blob ID (32)
      symlink:   target_length u16, target bytes

Version 1 is the same without sizes_count and the sizes: a file entry ends after its
chunk IDs. Version 1 trees still decode (with chunk_sizes = ()); only version 2 is
written. The sizes let a reader find the chunk holding a byte offset without fetching
the chunks before it (the drive reads files that way).

Names and sizes come out of the repository as hostile input: decode() rejects empty
names, "." and "..", "/" and NUL, and duplicates, before anything is written to disk;
and chunk sizes unless there is one per chunk, each above 0, adding up to the file size.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from anysync.errors import HostilePath, IntegrityError
from anysync.types import BLOB_ID_SIZE, BlobId

MAGIC = b"ASTR"
VERSION = 2
VERSIONS = (1, 2)  # what decode() reads
_HEAD = struct.Struct("<4sBI")
_FIXED = struct.Struct("<BIqQH")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")


class EntryType(enum.IntEnum):
    FILE = 1
    DIR = 2
    SYMLINK = 3


@dataclass(frozen=True, slots=True)
class TreeEntry:
    name: bytes
    type: EntryType
    mode: int
    mtime_ns: int
    size: int = 0
    chunks: tuple[BlobId, ...] = ()  # files
    subtree: BlobId | None = None  # directories
    target: bytes = b""  # symlinks
    # Files: the plaintext size of each chunk, in the order of `chunks`; () = not known
    # (a version 1 tree). Last, so that positional construction stays as it was.
    chunk_sizes: tuple[int, ...] = ()

    @property
    def display_name(self) -> str:
        return self.name.decode("utf-8", "surrogateescape")


def check_name(name: bytes) -> None:
    """Raise HostilePath unless `name` is a single, ordinary path component."""
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name or len(name) > 1024:
        raise HostilePath(f"refusing hostile file name from the repository: {name[:80]!r}")


def sizes_problem(e: TreeEntry) -> str | None:
    """Why a file entry's chunk sizes cannot be right (None: they can, or are not known)."""
    if not e.chunk_sizes:
        return None
    if len(e.chunk_sizes) != len(e.chunks):
        return f"{len(e.chunk_sizes)} chunk sizes for {len(e.chunks)} chunks"
    if min(e.chunk_sizes) <= 0:
        return "a chunk size of 0"
    if sum(e.chunk_sizes) != e.size:
        return f"chunk sizes add up to {sum(e.chunk_sizes)}, not the file size {e.size}"
    return None


def encode(entries: list[TreeEntry]) -> bytes:
    entries = sorted(entries, key=lambda e: e.name)
    parts = [_HEAD.pack(MAGIC, VERSION, len(entries))]
    previous: bytes | None = None
    for e in entries:
        check_name(e.name)
        if e.name == previous:
            raise ValueError(f"duplicate name in tree: {e.name!r}")
        previous = e.name
        body = [_FIXED.pack(e.type, e.mode & 0o7777, e.mtime_ns, e.size, len(e.name)), e.name]
        if e.type is EntryType.FILE:
            body.append(_U32.pack(len(e.chunks)))
            body.extend(c.raw for c in e.chunks)
            if problem := sizes_problem(e):
                raise ValueError(f"{e.name!r}: {problem}")
            body.append(_U32.pack(len(e.chunk_sizes)))
            body.extend(_U32.pack(n) for n in e.chunk_sizes)
        elif e.type is EntryType.DIR:
            assert e.subtree is not None
            body.append(e.subtree.raw)
        else:
            body.append(_U16.pack(len(e.target)))
            body.append(e.target)
        raw = b"".join(body)
        parts.append(_U32.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)


def decode(data: bytes) -> list[TreeEntry]:
    try:
        return _decode(memoryview(data))
    except (struct.error, ValueError) as exc:
        raise IntegrityError(f"tree is malformed: {exc}") from None


def _decode(data: memoryview) -> list[TreeEntry]:
    magic, version, count = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise ValueError("bad magic")
    if version not in VERSIONS:
        raise ValueError(f"unsupported tree version {version}")
    pos = _HEAD.size
    entries: list[TreeEntry] = []
    for _ in range(count):
        (length,) = _U32.unpack_from(data, pos)
        pos += _U32.size
        end = pos + length
        if end > len(data):
            raise ValueError("entry runs past the end")
        kind, mode, mtime_ns, size, name_len = _FIXED.unpack_from(data, pos)
        p = pos + _FIXED.size
        name = bytes(data[p : p + name_len])
        p += name_len
        check_name(name)
        if entries and name <= entries[-1].name:
            raise ValueError("entries are not sorted and unique")
        etype = EntryType(kind)
        if etype is EntryType.FILE:
            (n,) = _U32.unpack_from(data, p)
            p += _U32.size
            if p + n * BLOB_ID_SIZE > end:
                raise ValueError("chunk list runs past the entry")
            chunks = tuple(
                BlobId(bytes(data[p + i * BLOB_ID_SIZE : p + (i + 1) * BLOB_ID_SIZE]))
                for i in range(n)
            )
            p += n * BLOB_ID_SIZE
            sizes = _chunk_sizes(data, p, end) if version >= 2 else ()
            e = TreeEntry(name, etype, mode, mtime_ns, size, chunks=chunks, chunk_sizes=sizes)
            if problem := sizes_problem(e):
                raise ValueError(f"{e.display_name!r}: {problem}")
            entries.append(e)
        elif etype is EntryType.DIR:
            if p + BLOB_ID_SIZE > end:
                raise ValueError("subtree ID runs past the entry")
            subtree = BlobId(bytes(data[p : p + BLOB_ID_SIZE]))
            entries.append(TreeEntry(name, etype, mode, mtime_ns, 0, subtree=subtree))
        else:
            (tlen,) = _U16.unpack_from(data, p)
            p += _U16.size
            if p + tlen > end:
                raise ValueError("symlink target runs past the entry")
            target = bytes(data[p : p + tlen])
            entries.append(TreeEntry(name, etype, mode, mtime_ns, 0, target=target))
        pos = end
    if pos != len(data):
        raise ValueError("trailing bytes after the last entry")
    return entries


def _chunk_sizes(data: memoryview, p: int, end: int) -> tuple[int, ...]:
    """The chunk sizes of a version 2 file entry whose sizes_count is at `p`."""
    if p + _U32.size > end:
        raise ValueError("chunk sizes run past the entry")
    (n,) = _U32.unpack_from(data, p)
    p += _U32.size
    if p + n * _U32.size > end:
        raise ValueError("chunk sizes run past the entry")
    return struct.unpack_from(f"<{n}I", data, p)


class TreeLoader(Protocol):
    """Where trees are loaded from (a Repository)."""

    def load_tree(self, bid: BlobId) -> list[TreeEntry]: ...


def trail(trees: TreeLoader, entries: list[TreeEntry], parts: Sequence[bytes]) -> list[TreeEntry]:
    """The entries along the path `parts`, starting in the directory `entries`: one per
    part found, loading only the trees on the way. The path is in the tree when the
    trail is as long as `parts`; a shorter one ends before the first missing part, or
    at an entry that is not a directory but has parts below it."""
    out: list[TreeEntry] = []
    for i, part in enumerate(parts):
        match = next((e for e in entries if e.name == part), None)
        if match is None:
            break
        out.append(match)
        if i == len(parts) - 1:
            break
        if match.type is not EntryType.DIR or match.subtree is None:
            break
        entries = trees.load_tree(match.subtree)
    return out
