"""Refs and their commit history: rollback-checked heads, compare-and-swap, snapshots.

A ref's head is accepted only if it descends from the newest commit this device has
seen for that ref (walking first parents down to the seen counter). A server that
answers with an older or unrelated head is refused; an empty answer never deletes
anything, because only an authenticated commit can.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from anysync import faults
from anysync.client.repo.commit import Commit
from anysync.client.repo.repository import Repository
from anysync.client.statedb import StateDB
from anysync.errors import Conflict, NotFound, RollbackError, UsageError
from anysync.types import BlobId

CAS_ATTEMPTS = 8


@dataclass(frozen=True, slots=True)
class Snapshot:
    id: BlobId
    commit: Commit


def verified_head(repo: Repository, state: StateDB, ref: str) -> tuple[int, Snapshot | None]:
    """(version, head) of a ref after the rollback check; (0, None) if it does not exist."""
    r = repo.remote.get_ref(ref)
    seen = state.seen(ref)
    if r is None:
        if seen is not None:
            raise RollbackError(
                f"the server no longer has ref {ref[:12]} that this device saw at commit "
                f"{seen[0].short()}; refusing to treat it as empty"
            )
        return 0, None
    head = Snapshot(r.commit_id, repo.load_commit(r.commit_id))
    if head.commit.ref != ref:
        raise RollbackError(f"ref {ref[:12]} points at a commit of another ref")
    _check_descends(repo, head, seen)
    state.set_seen(ref, head.id, head.commit.counter)
    return r.version, head


def _check_descends(repo: Repository, head: Snapshot, seen: tuple[BlobId, int] | None) -> None:
    if seen is None:
        return
    seen_id, seen_counter = seen
    node = head
    while node.commit.counter > seen_counter and node.commit.parents:
        parent = node.commit.parents[0]
        node = Snapshot(parent, repo.load_commit(parent))
    if node.id != seen_id:
        raise RollbackError(
            f"the server offered commit {head.id.short()} (counter {head.commit.counter}) which "
            f"does not descend from commit {seen_id.short()} seen earlier; refusing a rollback"
        )


def advance(
    repo: Repository, state: StateDB, ref: str, make: Callable[[Snapshot | None], Commit]
) -> Snapshot:
    """Store make(head) as the ref's new head by compare-and-swap, retrying on races."""
    for _ in range(CAS_ATTEMPTS):
        version, head = verified_head(repo, state, ref)
        commit = make(head)
        commit_id = repo.save_commit(commit)
        repo.finish()  # the commit must be stored before the ref points at it
        faults.point("history.commit-stored")
        try:
            repo.remote.update_ref(ref, version, commit_id)
        except Conflict:
            continue
        state.set_seen(ref, commit_id, commit.counter)
        return Snapshot(commit_id, commit)
    raise Conflict(f"ref {ref[:12]} kept changing under this device; try again")


def history(repo: Repository, head: Snapshot) -> list[Snapshot]:
    """The head and its first-parent ancestors, newest first."""
    out = [head]
    while out[-1].commit.parents:
        parent = out[-1].commit.parents[0]
        out.append(Snapshot(parent, repo.load_commit(parent)))
    return out


def snapshots(repo: Repository, state: StateDB, kind: str = "backup") -> list[Snapshot]:
    """Every snapshot of every ref of this kind, oldest first."""
    out: list[Snapshot] = []
    for r in repo.remote.list_refs():
        _, head = verified_head(repo, state, r.name)
        if head is not None and head.commit.kind == kind:
            out.extend(history(repo, head))
    return sorted(out, key=lambda s: (s.commit.time_ns, s.id))


def resolve(repo: Repository, state: StateDB, spec: str) -> Snapshot:
    """'latest', a full commit ID or a unique prefix of one (at least 4 hex digits)."""
    snaps = snapshots(repo, state)
    if not snaps:
        raise NotFound("there are no snapshots yet; run `anysync backup PATH` first")
    if spec == "latest":
        return snaps[-1]
    spec = spec.lower()
    if len(spec) < 4:
        raise UsageError("give at least 4 hex digits of a snapshot ID, or 'latest'")
    matches = [s for s in snaps if s.id.hex().startswith(spec)]
    if not matches:
        raise NotFound(f"no snapshot matches {spec!r}; see `anysync snapshots`")
    if len(matches) > 1:
        raise UsageError(f"{spec!r} matches {len(matches)} snapshots; give more digits")
    return matches[0]
