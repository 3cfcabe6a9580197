"""Refs and their history: the rollback floor, compare-and-swap, listing and resolving
snapshots. Against an honest server in memory (MemoryRemote), so each rule is checked
on its own, without gRPC."""

from __future__ import annotations

import dataclasses

import pytest

from anysync import faults
from anysync.client.repo import commit as commit_codec
from anysync.client.repo import history
from anysync.client.repo.commit import Commit, Edit
from anysync.client.repo.refs import RefBook
from anysync.client.repo.repository import Repository
from anysync.client.statedb import StateDB
from anysync.errors import Conflict, NotFound, RollbackError, UsageError
from anysync.types import BlobId
from tests.unit.fakes import MemoryRemote

TREE = BlobId(b"\x07" * 32)


def commit(
    ref: str,
    parent: history.Snapshot | None,
    *,
    time_ns: int = 1,
    kind: str = "backup",
    message: str = "",
) -> Commit:
    return Commit(
        kind=kind,
        tree=TREE,
        parents=(parent.id,) if parent else (),
        ref=ref,
        counter=parent.commit.counter + 1 if parent else 1,
        time_ns=time_ns,
        device_id=1,
        device="laptop",
        hostname="host",
        message=message,
    )


def chain(refs: RefBook, ref: str, n: int, t0: int = 0) -> list[history.Snapshot]:
    out = []
    for i in range(n):
        out.append(history.advance(refs, ref, lambda h, i=i: commit(ref, h, time_ns=t0 + i)))
    return out


def stored(repo: Repository, c: Commit) -> BlobId:
    """A commit stored on the server without moving any ref."""
    bid = repo.save_commit(c)
    repo.finish()
    return bid


# ---------------------------------------------------------------- RefBook.head


def test_a_missing_ref_never_seen_is_empty(repo: Repository, state: StateDB, refs: RefBook) -> None:
    assert refs.head("r-new") == (0, None)
    assert state.seen("r-new") is None


def test_a_ref_that_vanished_after_being_seen_is_a_rollback(
    repo: Repository, remote: MemoryRemote, state: StateDB, refs: RefBook
) -> None:
    (snap,) = chain(refs, "r-a", 1)
    del remote.refs["r-a"]
    with pytest.raises(
        RollbackError,
        match=rf"^the server no longer has .* \(ref r-a\) that this device saw "
        rf"at commit {snap.id.short()}; refusing to treat it as empty$",
    ):
        refs.head("r-a")


def test_head_returns_the_version_and_raises_the_floor(
    repo: Repository, remote: MemoryRemote, state: StateDB, refs: RefBook
) -> None:
    a, b = chain(refs, "r-a", 2)
    state.set_seen("r-a", a.id, a.commit.counter)  # as if this device saw only a
    version, head = refs.head("r-a")
    assert version == remote.refs["r-a"].version == 2
    assert head == b
    assert state.seen("r-a") == (b.id, 2)
    # the same head again is fine: equal counters, equal IDs
    assert refs.head("r-a") == (2, b)


def test_a_ref_pointing_at_a_commit_of_another_ref_is_refused(
    repo: Repository, remote: MemoryRemote, state: StateDB, refs: RefBook
) -> None:
    (other,) = chain(refs, "r-other", 1)
    remote.force("r-a", other.id)
    with pytest.raises(RollbackError, match="ref r-a points at a commit of another ref"):
        refs.head("r-a")
    assert state.seen("r-a") is None


def test_an_older_head_is_a_rollback(
    repo: Repository, remote: MemoryRemote, state: StateDB, refs: RefBook
) -> None:
    a, _b, c = chain(refs, "r-a", 3)
    remote.force("r-a", a.id)
    with pytest.raises(RollbackError, match=f"does not descend from commit {c.id.short()}"):
        refs.head("r-a")
    assert state.seen("r-a") == (c.id, 3)  # the floor stays where it was


def test_a_fork_at_the_same_counter_is_a_rollback(
    repo: Repository, remote: MemoryRemote, state: StateDB, refs: RefBook
) -> None:
    a, b = chain(refs, "r-a", 2)
    fork = stored(repo, commit("r-a", a, message="fork"))  # counter 2, like b
    remote.force("r-a", fork)
    with pytest.raises(RollbackError, match=rf"offered commit {fork.short()} \(counter 2\)"):
        refs.head("r-a")
    assert state.seen("r-a") == (b.id, 2)


def test_a_newer_head_descending_from_the_floor_is_accepted(
    repo: Repository, remote: MemoryRemote, state: StateDB, refs: RefBook
) -> None:
    a, b, c, d = chain(refs, "r-a", 4)
    state.set_seen("r-a", b.id, 2)  # this device last saw b: d descends from it
    assert refs.head("r-a") == (4, d)
    # a fork built on a newer base that skips the seen commit is refused
    state.set_seen("r-a", c.id, 3)
    fork = stored(repo, commit("r-a", stored_snapshot(repo, a), message="x"))
    fork2 = stored(repo, commit("r-a", stored_snapshot(repo, fork), message="y"))
    remote.force("r-a", fork2)
    with pytest.raises(RollbackError):
        refs.head("r-a")


def stored_snapshot(repo: Repository, bid: BlobId | history.Snapshot) -> history.Snapshot:
    if isinstance(bid, history.Snapshot):
        return bid
    return history.Snapshot(bid, repo.load_commit(bid))


# ---------------------------------------------------------------- advance


def test_advance_links_each_commit_to_the_head(
    repo: Repository, remote: MemoryRemote, state: StateDB, refs: RefBook
) -> None:
    a, b = chain(refs, "r-a", 2)
    assert a.commit.parents == () and a.commit.counter == 1
    assert b.commit.parents == (a.id,) and b.commit.counter == 2
    assert remote.refs["r-a"].commit_id == b.id
    assert repo.load_commit(b.id) == b.commit
    assert state.seen("r-a") == (b.id, 2)


def test_advance_retries_a_lost_race_with_the_new_head(
    repo: Repository, remote: MemoryRemote, state: StateDB, refs: RefBook
) -> None:
    (a,) = chain(refs, "r-a", 1)
    remote.conflicts_left = history.CAS_ATTEMPTS - 1
    heads: list[history.Snapshot | None] = []

    def make(h: history.Snapshot | None) -> Commit:
        heads.append(h)
        return commit("r-a", h)

    snap = history.advance(refs, "r-a", make)
    assert heads == [a] * history.CAS_ATTEMPTS
    assert remote.refs["r-a"].commit_id == snap.id
    assert state.seen("r-a") == (snap.id, 2)


def test_advance_gives_up_after_its_attempts(
    repo: Repository, remote: MemoryRemote, state: StateDB, refs: RefBook
) -> None:
    remote.conflicts_left = history.CAS_ATTEMPTS
    with pytest.raises(Conflict, match="ref r-a kept changing under this device"):
        history.advance(refs, "r-a", lambda h: commit("r-a", h))
    assert remote.update_calls == history.CAS_ATTEMPTS
    assert "r-a" not in remote.refs
    assert state.seen("r-a") is None


# ---------------------------------------------------------------- listing and resolving


def test_history_is_newest_first(repo: Repository, state: StateDB, refs: RefBook) -> None:
    a, b, c = chain(refs, "r-a", 3)
    assert history.history(repo, c) == [c, b, a]
    assert history.history(repo, a) == [a]


def test_snapshots_of_every_ref_of_the_kind_oldest_first(
    repo: Repository, state: StateDB, refs: RefBook
) -> None:
    a1, a2 = chain(refs, "r-a", 2, t0=10)  # times 10, 11
    (b1,) = chain(refs, "r-b", 1, t0=5)
    # equal times are ordered by ID
    (c1,) = chain(refs, "r-c", 1, t0=11)
    history.advance(refs, "s-x", lambda h: commit("s-x", h, kind="sync"))
    snaps = history.snapshots(refs)
    tail = sorted([a2, c1], key=lambda s: s.id)
    assert snaps == [b1, a1, *tail]
    assert [s.commit.kind for s in history.snapshots(refs, "sync")] == ["sync"]


def test_resolve(repo: Repository, state: StateDB, refs: RefBook) -> None:
    with pytest.raises(NotFound, match="there are no snapshots yet"):
        history.resolve(refs, "latest")
    snaps = chain(refs, "r-a", 3)
    assert history.resolve(refs, "latest") == snaps[-1]
    for s in snaps:
        assert history.resolve(refs, s.id.hex()) == s
        assert history.resolve(refs, s.id.hex()[:12].upper()) == s
    with pytest.raises(UsageError, match="at least 4 hex digits"):
        history.resolve(refs, snaps[0].id.hex()[:3])
    missing = "0123456789" if not any(s.id.hex().startswith("0123") for s in snaps) else "fedc"
    with pytest.raises(NotFound, match=f"no snapshot matches '{missing}'"):
        history.resolve(refs, missing)


def test_resolve_refuses_an_ambiguous_prefix(
    repo: Repository, state: StateDB, monkeypatch: pytest.MonkeyPatch, refs: RefBook
) -> None:
    (real,) = chain(refs, "r-a", 1)
    twins = [
        history.Snapshot(BlobId(bytes.fromhex("abcd01") + b"\0" * 29), real.commit),
        history.Snapshot(BlobId(bytes.fromhex("abcd02") + b"\0" * 29), real.commit),
    ]
    view = history.RefView("r-a", "backup", real, snapshots=twins)
    monkeypatch.setattr(history, "views", lambda book, counting, warn: [view])
    with pytest.raises(UsageError, match="'abcd' matches 2 snapshots; give more digits"):
        history.resolve(refs, "abcd")
    assert history.resolve(refs, "abcd02") == twins[1]
    assert history.resolve(refs, "ABCD01") == twins[0]


LONG = "r-0123456789abcdef0123456789abcdef"


def test_messages_name_a_long_ref_by_its_first_12_characters(
    repo: Repository, remote: MemoryRemote, state: StateDB, refs: RefBook
) -> None:
    (snap,) = chain(refs, LONG, 1)
    (other,) = chain(refs, "r-other", 1)
    remote.force(LONG, other.id)
    with pytest.raises(
        RollbackError, match=r"^ref r-0123456789 points at a commit of another ref$"
    ):
        refs.head(LONG)
    del remote.refs[LONG]
    with pytest.raises(
        RollbackError, match=r"^the server no longer has .*\(ref r-0123456789\) that"
    ):
        refs.head(LONG)
    remote.force(LONG, snap.id)
    remote.conflicts_left = history.CAS_ATTEMPTS
    with pytest.raises(Conflict, match=r"^ref r-0123456789 kept changing under this device"):
        history.advance(refs, LONG, lambda h: commit(LONG, h))


def test_resolve_messages_say_what_to_do(repo: Repository, state: StateDB, refs: RefBook) -> None:
    with pytest.raises(
        NotFound, match=r"^there are no snapshots yet; run `anysync backup PATH` first$"
    ):
        history.resolve(refs, "latest")
    chain(refs, "r-a", 1)
    with pytest.raises(
        UsageError, match=r"^give at least 4 hex digits of a snapshot ID, or 'latest'$"
    ):
        history.resolve(refs, "abc")


class Crashed(Exception):
    pass


def test_a_crash_after_the_commit_is_stored_leaves_the_ref_alone(
    repo: Repository,
    remote: MemoryRemote,
    state: StateDB,
    monkeypatch: pytest.MonkeyPatch,
    refs: RefBook,
) -> None:
    """The fault point history.commit-stored (anysync/faults.py) sits between storing
    the commit and moving the ref; tests/integration/test_kills.py kills a real process
    there. Here the kill is replaced by an exception, to see where it is reached."""
    (a,) = chain(refs, "r-a", 1)

    def kill(pid: int, sig: int) -> None:
        raise Crashed

    monkeypatch.setattr(faults, "_armed_name", "history.commit-stored")
    monkeypatch.setattr(faults, "_armed_count", 1)
    monkeypatch.setattr(faults, "_hits", 0)
    monkeypatch.setattr(faults.os, "kill", kill)
    made: list[Commit] = []

    def make(h: history.Snapshot | None) -> Commit:
        made.append(commit("r-a", h, message="new"))
        return made[-1]

    with pytest.raises(Crashed):
        history.advance(refs, "r-a", make)
    new_id = repo.blob_id(commit_codec.encode(made[0]))
    assert new_id in remote.index  # the commit is stored
    assert remote.refs["r-a"].commit_id == a.id  # the ref did not move
    assert state.seen("r-a") == (a.id, 1)


# ---------------------------------------------------------------- edits and views


def edit(
    refs: RefBook,
    ref: str,
    *,
    forget: tuple[history.Snapshot, ...] = (),
    replace: tuple[tuple[history.Snapshot, BlobId], ...] = (),
    retired: bool = False,
    retention: str = "",
    device: str = "phone",
    time_ns: int = 100,
) -> history.Snapshot:
    """An edit commit on top of the ref's head, as forget writes it."""

    def make(h: history.Snapshot | None) -> Commit:
        assert h is not None
        e = Edit(tuple(s.id for s in forget), tuple((o.id, n) for o, n in replace), retired)
        return dataclasses.replace(
            commit(ref, h, time_ns=time_ns, kind="edit"), device=device, edit=e, retention=retention
        )

    return history.advance(refs, ref, make)


def test_a_counting_edit_forgets_and_a_non_counting_one_is_ignored_with_a_warning(
    repo: Repository, state: StateDB, refs: RefBook
) -> None:
    a, b, c = chain(refs, "r-a", 3, t0=10)
    e1 = edit(refs, "r-a", forget=(a,), device="desk")
    e2 = edit(refs, "r-a", forget=(b, c), device="stolen")
    warnings: list[str] = []
    view = history.view_of(repo, e2, {e1.id}, warnings.append)
    assert view.kind == "backup"
    assert view.snapshots == [c, b]
    assert set(view.forgotten) == {a.id}
    assert view.forgotten[a.id].by == e1
    assert view.ignored == [e2]
    assert warnings == ["forget record by device stolen ignored: stolen had no manage right"]
    assert history.snapshots(refs, counting={e1.id}, warn=lambda _: None) == [b, c]
    # with both counting, nothing is left, yet the ref is not retired (no edit said so)
    both = history.view_of(repo, e2, {e1.id, e2.id}, pytest.fail)
    assert both.snapshots == [] and not both.retired


def test_latest_skips_edits_and_forgotten_snapshots(
    repo: Repository, state: StateDB, refs: RefBook
) -> None:
    a, b = chain(refs, "r-a", 2, t0=10)
    (other,) = chain(refs, "r-b", 1, t0=5)
    e = edit(refs, "r-a", forget=(b,), time_ns=1000)  # the newest commit of all is the edit
    assert history.resolve(refs, "latest", counting={e.id}) == a
    assert history.resolve(refs, "latest", counting=set(), warn=lambda _: None) == b
    edit(refs, "r-a", forget=(a,), retired=True, time_ns=1001)
    assert history.resolve(refs, "latest", counting=history_ids(refs)) == other


def history_ids(refs: RefBook) -> set[BlobId]:
    """Every commit on every chain, as if a manage device wrote them all."""
    out: set[BlobId] = set()
    for head in refs.listing().heads.values():
        out |= {s.id for s in history.history(refs.commits, head)}
    return out


def test_resolving_a_forgotten_snapshot_says_when_and_by_whom(
    repo: Repository, state: StateDB, refs: RefBook, utc: None
) -> None:
    a, b = chain(refs, "r-a", 2)
    e = edit(refs, "r-a", forget=(a,), device="desk", time_ns=1_767_023_456 * 10**9)
    with pytest.raises(
        NotFound,
        match=rf"^snapshot {a.id.short()} was forgotten on 2025-12-29 15:50 by desk$",
    ):
        history.resolve(refs, a.id.hex()[:10], counting={e.id})
    assert history.resolve(refs, b.id.hex(), counting={e.id}) == b
    # a non-counting edit forgets nothing
    assert history.resolve(refs, a.id.hex(), counting=set(), warn=lambda _: None) == a


def test_a_replaced_snapshot_is_shown_through_its_replacement(
    repo: Repository, state: StateDB, refs: RefBook
) -> None:
    a, b = chain(refs, "r-a", 2, t0=10)
    repaired = dataclasses.replace(a.commit, parents=(), message="repaired: 1 files lost")
    new = stored(repo, repaired)
    e = edit(refs, "r-a", replace=((a, new),))
    view = history.view_of(repo, e, {e.id}, pytest.fail)
    assert view.snapshots == [b, history.Snapshot(new, repaired)]
    assert view.replaced == {a.id: history.Snapshot(new, repaired)}
    assert history.resolve(refs, a.id.hex(), counting={e.id}).id == new  # the old ID leads there
    assert history.resolve(refs, new.hex(), counting={e.id}).id == new
    # forgetting the replacement forgets the snapshot under either name
    e2 = edit(refs, "r-a", forget=(history.Snapshot(new, repaired),))
    view = history.view_of(repo, e2, {e.id, e2.id}, pytest.fail)
    assert view.snapshots == [b]
    assert {a.id, new} <= view.forgotten.keys()


def test_retired_only_while_no_snapshot_came_after_the_edit(
    repo: Repository, state: StateDB, refs: RefBook
) -> None:
    (a,) = chain(refs, "r-a", 1)
    e = edit(refs, "r-a", forget=(a,), retired=True)
    assert history.view_of(repo, e, {e.id}, pytest.fail).retired
    assert not history.view_of(repo, e, set(), lambda _: None).retired  # it does not count
    b = history.advance(refs, "r-a", lambda h: commit("r-a", h, time_ns=200))
    view = history.view_of(repo, b, {e.id}, pytest.fail)
    assert not view.retired and view.snapshots == [b]


def test_the_newest_counting_edit_sets_a_sync_folders_retention(
    repo: Repository, state: StateDB, refs: RefBook
) -> None:
    history.advance(refs, "s-x", lambda h: commit("s-x", h, kind="sync"))
    e1 = edit(refs, "s-x", retention='{"keep_last":5,"v":1}')
    s2 = history.advance(refs, "s-x", lambda h: commit("s-x", h, kind="sync", time_ns=300))
    e2 = edit(refs, "s-x", retention='{"keep_last":1,"v":1}', device="stolen")
    warnings: list[str] = []
    view = history.view_of(repo, e2, {e1.id}, warnings.append)
    assert view.kind == "sync" and view.latest == s2
    assert view.retention == '{"keep_last":5,"v":1}'
    assert warnings == ["retention setting by device stolen ignored: stolen had no manage right"]
    assert history.view_of(repo, e2, {e1.id, e2.id}, pytest.fail).retention.startswith(
        '{"keep_last":1'
    )
    # sync folders are not backups: neither listed nor resolved as snapshots
    assert history.snapshots(refs, counting={e1.id, e2.id}) == []
