"""Snapshots: listing and resolving them, on top of the checked refs of refs.py.

Listing and resolving need the heads only; older commits are loaded one at a time and
an unreadable one (its pack lost or damaged on the server) ends that ref's history with
a warning instead of failing the command: the newer snapshots need nothing from it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from anysync.client.repo.commit import Commit
from anysync.client.repo.refs import CAS_ATTEMPTS as CAS_ATTEMPTS
from anysync.client.repo.refs import CommitStore, RefBook, label_of
from anysync.client.repo.refs import Snapshot as Snapshot
from anysync.errors import IntegrityError, NotFound, RollbackError, UsageError

log = logging.getLogger(__name__)

Warn = Callable[[str], None]


def advance(book: RefBook, ref: str, make: Callable[[Snapshot | None], Commit]) -> Snapshot:
    """Store make(head) as the ref's new head by compare-and-swap, retrying on races."""
    made = book.advance(ref, make).committed
    assert made is not None  # make never declines
    return made


def chain(commits: CommitStore, head: Snapshot) -> Iterator[Snapshot]:
    """The head and its first-parent ancestors, newest first, loaded as they are asked for."""
    node = head
    yield node
    while node.commit.parents:
        parent = node.commit.parents[0]
        node = Snapshot(parent, commits.load_commit(parent))
        yield node


def history(commits: CommitStore, head: Snapshot) -> list[Snapshot]:
    """The whole chain; fails if any ancestor cannot be read."""
    return list(chain(commits, head))


def readable_chain(commits: CommitStore, head: Snapshot, warn: Warn) -> list[Snapshot]:
    """The chain down to the first commit that cannot be read, which is warned about."""
    out: list[Snapshot] = []
    try:
        for snap in chain(commits, head):
            out.append(snap)
    except RollbackError:
        raise
    except (NotFound, IntegrityError) as exc:
        warn(
            f"older snapshots of {label_of(head.commit)} cannot be read (the parent of "
            f"snapshot {out[-1].id.short()}: {exc.message}); listing the newer ones"
        )
    return out


def _first_contact(n: int | None, warn: Warn) -> None:
    if n:
        warn(
            f"first contact with this account on this device: trusting the server's {n} "
            "refs as they are (from now on this device notices if one goes back or vanishes)"
        )


def snapshots(book: RefBook, kind: str = "backup", warn: Warn = log.warning) -> list[Snapshot]:
    """Every readable snapshot of every ref of this kind, oldest first."""
    listing = book.listing()
    _first_contact(listing.first_contact, warn)
    out: list[Snapshot] = []
    for head in listing.heads.values():
        if head.commit.kind == kind:
            out.extend(readable_chain(book.commits, head, warn))
    return sorted(out, key=_age)


def _age(s: Snapshot) -> tuple[int, bytes]:
    """Oldest first; equal times by ID, so that the order is the same on every device."""
    return (s.commit.time_ns, s.id.raw)


def resolve(book: RefBook, spec: str, warn: Warn = log.warning) -> Snapshot:
    """'latest' (the newest head; no older commit is read), a full commit ID or a unique
    prefix of one (at least 4 hex digits)."""
    if spec == "latest":
        listing = book.listing()
        _first_contact(listing.first_contact, warn)
        heads = [h for h in listing.heads.values() if h.commit.kind == "backup"]
        if not heads:
            raise NotFound("there are no snapshots yet; run `anysync backup PATH` first")
        return max(heads, key=_age)
    spec = spec.lower()
    if len(spec) < 4:
        raise UsageError("give at least 4 hex digits of a snapshot ID, or 'latest'")
    snaps = snapshots(book, warn=warn)
    if not snaps:
        raise NotFound("there are no snapshots yet; run `anysync backup PATH` first")
    matches = [s for s in snaps if s.id.hex().startswith(spec)]
    if not matches:
        raise NotFound(f"no snapshot matches {spec!r}; see `anysync snapshots`")
    if len(matches) > 1:
        raise UsageError(f"{spec!r} matches {len(matches)} snapshots; give more digits")
    return matches[0]
