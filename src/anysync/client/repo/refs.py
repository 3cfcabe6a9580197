"""Refs: the one place where they are read, checked and moved.

Three rules hold for every command (docs/design.md §6):

- **Rollback floor.** A ref's head is accepted only if walking its first parents down
  to the counter of the newest commit this device has seen for the ref reaches exactly
  that commit. A server that answers with an older or unrelated head is refused.
- **Seen refs do not vanish.** A ref this device has seen that the server no longer
  has or lists is an error, never "empty": only an authenticated commit can say that
  data is gone. The first listing on a device that has seen no ref says how many refs
  it trusts without being able to check them.
- **One compare-and-swap loop.** `RefBook.advance` re-reads the head, lets the caller
  build a commit on it (or decide there is nothing to commit), stores the commit before
  the ref points at it, and retries a lost race with the new head. Every ref update
  carries the session's garbage-collection generation (the fence of
  docs/prune-design.md §7); a refusal (GcRaced) is not a race it can retry: the caller
  must check again what the server holds (Repository.revalidate) and rebuild.

Refs are named by opaque keyed hashes; messages name them by a label taken from the
decrypted head commit (the backed-up paths and host, or the sync folder), which is kept
in state.db only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from anysync import faults
from anysync.client.repo.commit import Commit
from anysync.errors import Conflict, GcRaced, IntegrityError, NotFound, RollbackError
from anysync.types import BlobId, Ref

CAS_ATTEMPTS = 8


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A commit and its ID: one backup snapshot, or one state of a sync folder."""

    id: BlobId
    commit: Commit


@dataclass(frozen=True)
class RefVersion:
    """One version a ref has had (ListRefHistory)."""

    name: str
    version: int
    commit_id: BlobId
    seq: int  # the account's ref_seq after this change
    device_id: int
    by_manage: bool  # the writer had the manage right (or was elevated) then
    at: int  # unix seconds


class RefStore(Protocol):
    """The server's refs (anysync.client.remote implements it over gRPC)."""

    def get_ref(self, name: str) -> Ref | None: ...

    def list_refs(self, prefix: str) -> list[Ref]: ...

    def update_ref(
        self,
        name: str,
        expected_version: int,
        commit_id: BlobId,
        gc_generation: int | None = None,
    ) -> Ref: ...


class CommitStore(Protocol):
    """Where commit blobs are loaded from and stored (a Repository)."""

    def load_commit(self, bid: BlobId) -> Commit: ...

    def save_commit(self, c: Commit) -> BlobId: ...

    def finish(self) -> None:
        """Every blob saved so far is stored on the server."""

    @property
    def generation(self) -> int | None:
        """The gc_generation this session's view of the server was read at."""


class SeenHeads(Protocol):
    """Per ref, the newest commit this device accepted (anysync.client.statedb)."""

    def seen(self, ref: str) -> tuple[BlobId, int] | None: ...

    def set_seen(
        self, ref: str, commit_id: BlobId, counter: int, label: str | None = None
    ) -> None: ...

    def seen_labels(self) -> dict[str, str]: ...


@dataclass(frozen=True, slots=True)
class Advance:
    """What `RefBook.advance` agreed on: the ref's head now, and the commit this device
    made (None when `make` found nothing to commit; then `head` is the server's)."""

    head: Snapshot | None
    committed: Snapshot | None


@dataclass
class Listing:
    """The rollback-checked head of every ref the server lists, by ref name."""

    heads: dict[str, Snapshot] = field(default_factory=dict)
    first_contact: int | None = None  # number of refs trusted unchecked, on a first listing


def label_of(commit: Commit) -> str:
    """How a person knows the ref of this commit. Local only: it holds paths."""
    kind = commit.kind
    if kind == "edit" and commit.paths:  # forget's record names the ref it edits
        kind = "sync" if commit.ref.startswith("s-") else "backup"
    if kind == "backup":
        return f"backup of {', '.join(commit.paths)} on {commit.hostname}"
    if kind == "sync" and commit.paths:
        return f"sync folder {commit.paths[0]}"
    return f"{commit.kind} ref {commit.ref[:12]}"


def shown(ref: str, label: str) -> str:
    return f"{label} (ref {ref[:12]})" if label else f"ref {ref[:12]}"


class RefBook:
    def __init__(self, refs: RefStore, commits: CommitStore, seen: SeenHeads) -> None:
        self.refs = refs
        self.commits = commits
        self.seen = seen

    def head(self, ref: str) -> tuple[int, Snapshot | None]:
        """(version, head) of a ref after the rollback check; (0, None) if it does not
        exist and this device never saw it."""
        return self._accept(ref, self.refs.get_ref(ref))

    def listing(self, prefix: str = "") -> Listing:
        """Every ref the server lists, rollback-checked; a seen ref it hides is an error."""
        listed = {r.name: r for r in self.refs.list_refs(prefix)}
        labels = self.seen.seen_labels()
        hidden = sorted(n for n in labels if n.startswith(prefix) and n not in listed)
        if hidden:
            others = f" and {len(hidden) - 1} other ref(s)" if len(hidden) > 1 else ""
            raise RollbackError(
                f"the server no longer lists {shown(hidden[0], labels[hidden[0]])}{others}, "
                "which this device has seen; refusing to treat it as deleted (the server "
                "may be hiding or have lost it; ask its operator)"
            )
        out = Listing(first_contact=len(listed) if not labels and listed else None)
        for name, r in sorted(listed.items()):
            _, head = self._accept(name, r)
            assert head is not None  # a listed ref has a head
            out.heads[name] = head
        return out

    def advance(
        self,
        ref: str,
        make: Callable[[Snapshot | None], Commit | None],
        *,
        fault: str = "history.commit-stored",
        what: str = "",
        stored: Callable[[BlobId, Commit], None] | None = None,
    ) -> Advance:
        """Make `make(head)` the ref's new head by compare-and-swap.

        `make` gets the rollback-checked head (None: the ref does not exist yet) and
        returns the commit to put on top of it, or None for "nothing to commit". A lost
        race calls it again with the new head, up to CAS_ATTEMPTS times. `stored` runs
        after the commit is stored and before the ref moves (sync journals there what
        the commit makes true). `fault` names the fault point right before the ref
        moves; `what` names the ref in the give-up message.
        """
        for _ in range(CAS_ATTEMPTS):
            version, head = self.head(ref)
            commit = make(head)
            if commit is None:
                # Nothing to commit, but blobs may be queued (a sync pass that read
                # files again to heal data the server lost): they must be stored.
                self.commits.finish()
                return Advance(head, None)
            commit_id = self.commits.save_commit(commit)
            self.commits.finish()  # the commit must be stored before the ref points at it
            if stored is not None:
                stored(commit_id, commit)
            faults.point(fault)
            try:
                self.refs.update_ref(ref, version, commit_id, self.commits.generation)
            except GcRaced:
                raise  # not a race on the ref: the commit may name pruned blobs
            except Conflict:
                continue
            self.seen.set_seen(ref, commit_id, commit.counter, label_of(commit))
            made = Snapshot(commit_id, commit)
            return Advance(made, made)
        raise Conflict(f"{what or 'ref ' + ref[:12]} kept changing under this device; try again")

    # ------------------------------------------------------------------ checks

    def _accept(self, ref: str, r: Ref | None) -> tuple[int, Snapshot | None]:
        seen = self.seen.seen(ref)
        if r is None:
            if seen is not None:
                raise RollbackError(
                    f"the server no longer has {self._shown(ref)} that this device saw at "
                    f"commit {seen[0].short()}; refusing to treat it as empty"
                )
            return 0, None
        head = Snapshot(r.commit_id, self._load(ref, r.commit_id, "the newest snapshot"))
        if head.commit.ref != ref:
            raise RollbackError(f"ref {ref[:12]} points at a commit of another ref")
        self._check_descends(ref, head, seen)
        self.seen.set_seen(ref, head.id, head.commit.counter, label_of(head.commit))
        return r.version, head

    def _check_descends(self, ref: str, head: Snapshot, seen: tuple[BlobId, int] | None) -> None:
        if seen is None:
            return
        seen_id, seen_counter = seen
        node = head
        while node.commit.counter > seen_counter and node.commit.parents:
            parent = node.commit.parents[0]
            node = Snapshot(parent, self._load(ref, parent, "a commit needed to check it"))
        if node.id != seen_id:
            raise RollbackError(
                f"the server offered commit {head.id.short()} (counter {head.commit.counter}) "
                f"which does not descend from commit {seen_id.short()} seen earlier; refusing "
                "a rollback"
            )

    def _load(self, ref: str, bid: BlobId, what: str) -> Commit:
        """A commit of `ref`; an unreadable one is named by the ref's label."""
        try:
            return self.commits.load_commit(bid)
        except RollbackError:
            raise
        except (NotFound, IntegrityError) as exc:
            raise type(exc)(
                f"{what} of {self._shown(ref)} cannot be read (commit {bid.short()}): {exc.message}"
            ) from None

    def _shown(self, ref: str) -> str:
        return shown(ref, self.seen.seen_labels().get(ref, ""))
