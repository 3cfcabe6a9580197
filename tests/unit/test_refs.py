"""refs.py on its own: hidden refs, first contact, labels, the general compare-and-swap
loop (nothing to commit, fault point, give-up message) and unreadable commits; and
history's lazy listing on top of it. Against MemoryRemote (tests/unit/test_history.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from anysync import faults
from anysync.client.repo import history, refs
from anysync.client.repo.commit import Commit
from anysync.client.repo.refs import RefBook, Snapshot
from anysync.client.repo.repository import Repository
from anysync.client.statedb import StateDB
from anysync.errors import Conflict, IntegrityError, NotFound, RollbackError
from anysync.types import BlobId
from tests.unit.fakes import MemoryRemote
from tests.unit.test_history import TREE, chain, commit


@pytest.fixture
def book(repo: Repository, remote: MemoryRemote, state: StateDB) -> RefBook:
    return RefBook(remote, repo, state)


def backup(
    ref: str, parent: Snapshot | None, paths: tuple[str, ...] = ("/home/me/Docs",)
) -> Commit:
    c = commit(ref, parent)
    return Commit(**{**_fields(c), "paths": paths, "hostname": "laptop"})


def _fields(c: Commit) -> dict[str, object]:
    return {f: getattr(c, f) for f in Commit.__dataclass_fields__}


def lose(remote: MemoryRemote, bid: BlobId) -> None:
    """The server lost the pack holding this blob (its index still names it)."""
    del remote.packs[remote.index[bid].pack_id]


# ---------------------------------------------------------------- labels


def test_labels_name_what_the_user_knows() -> None:
    b = Commit("backup", TREE, (), "r-x", 1, 1, 1, "dev", "laptop", ("/a", "/b"))
    assert refs.label_of(b) == "backup of /a, /b on laptop"
    s = Commit("sync", TREE, (), "s-x", 1, 1, 1, "dev", "laptop", ("Photos",))
    assert refs.label_of(s) == "sync folder Photos"
    other = Commit("sync", TREE, (), "s-0123456789abcdef", 1, 1, 1, "dev", "laptop")
    assert refs.label_of(other) == "sync ref s-0123456789"
    assert refs.shown("r-0123456789abcdef", "backup of /a on h") == (
        "backup of /a on h (ref r-0123456789)"
    )
    assert refs.shown("r-0123456789abcdef", "") == "ref r-0123456789"


def test_the_label_is_stored_with_the_floor_and_kept_when_not_given(
    book: RefBook, state: StateDB
) -> None:
    made = book.advance("r-a", lambda h: backup("r-a", h)).committed
    assert made is not None
    assert state.seen_labels() == {"r-a": "backup of /home/me/Docs on laptop"}
    state.set_seen("r-a", made.id, 1)  # as the sync engine does: no label
    assert state.seen_labels() == {"r-a": "backup of /home/me/Docs on laptop"}
    state.set_seen("r-new", made.id, 1)
    assert state.seen_labels()["r-new"] == ""
    assert state.seen("r-a") == (made.id, 1)


# ---------------------------------------------------------------- hidden refs, first contact


def test_a_seen_ref_the_server_stops_listing_is_named(
    book: RefBook, remote: MemoryRemote, state: StateDB
) -> None:
    book.advance("r-a", lambda h: backup("r-a", h, ("/old",)))
    book.advance("r-b", lambda h: backup("r-b", h, ("/new",)))
    book.advance("r-c", lambda h: backup("r-c", h, ("/other",)))
    assert set(book.listing().heads) == {"r-a", "r-b", "r-c"}
    del remote.refs["r-b"]
    with pytest.raises(
        RollbackError,
        match=r"^the server no longer lists backup of /new on laptop \(ref r-b\), which this "
        r"device has seen; refusing to treat it as deleted \(the server may be hiding or have "
        r"lost it; ask its operator\)$",
    ):
        book.listing()
    del remote.refs["r-c"]
    with pytest.raises(RollbackError, match=r"\(ref r-b\) and 1 other ref\(s\), which"):
        book.listing()
    # a listing of another prefix does not need them
    assert book.listing(prefix="r-a").heads.keys() == {"r-a"}
    assert state.seen("r-b") is not None  # the floor stays


def test_first_contact_counts_the_refs_trusted_unchecked(
    repo: Repository, remote: MemoryRemote, tmp_path: Path
) -> None:
    writer = StateDB(tmp_path / "writer.db")
    reader = StateDB(tmp_path / "reader.db")
    try:
        assert RefBook(remote, repo, reader).listing().first_contact is None  # nothing to trust
        chain(RefBook(remote, repo, writer), "r-a", 2)
        chain(RefBook(remote, repo, writer), "r-b", 1)
        first = RefBook(remote, repo, reader).listing()
        assert first.first_contact == 2
        assert RefBook(remote, repo, reader).listing().first_contact is None
        assert RefBook(remote, repo, writer).listing().first_contact is None
        # the labels come from the heads this device checked, not from its own commits
        assert reader.seen_labels() == {"r-a": "backup of  on host", "r-b": "backup of  on host"}
        notes: list[str] = []
        history.snapshots(RefBook(remote, repo, StateDB(tmp_path / "third.db")), warn=notes.append)
        assert notes == [
            "first contact with this account on this device: trusting the server's 2 refs as "
            "they are (from now on this device notices if one goes back or vanishes)"
        ]
        notes.clear()
        history.resolve(
            RefBook(remote, repo, StateDB(tmp_path / "fourth.db")), "latest", warn=notes.append
        )
        # Once, not twice; beside it, the note that 'latest' chose among 2 sources.
        assert sum("trusting the server's 2 refs" in n for n in notes) == 1
        assert sum("newest of 2 backup sources" in n for n in notes) == 1
    finally:
        writer.close()
        reader.close()


def test_listing_applies_the_rollback_check_to_each_ref(
    book: RefBook, remote: MemoryRemote, state: StateDB
) -> None:
    a = book.advance("r-a", lambda h: commit("r-a", h)).committed
    b = book.advance("r-a", lambda h: commit("r-a", h)).committed
    assert a is not None and b is not None
    assert book.listing().heads == {"r-a": b}
    remote.force("r-a", a.id)
    with pytest.raises(RollbackError, match="refusing a rollback"):
        book.listing()


# ---------------------------------------------------------------- advance


def test_advance_with_nothing_to_commit_moves_nothing(
    book: RefBook, remote: MemoryRemote, state: StateDB
) -> None:
    assert book.advance("r-a", lambda h: None) == refs.Advance(None, None)
    assert "r-a" not in remote.refs and state.seen("r-a") is None
    advanced = book.advance("r-a", lambda h: commit("r-a", h))
    made = advanced.committed
    assert made is not None and advanced == refs.Advance(made, made)
    heads: list[Snapshot | None] = []

    def nothing(h: Snapshot | None) -> Commit | None:
        heads.append(h)
        return None

    assert book.advance("r-a", nothing) == refs.Advance(made, None)
    assert heads == [made] and remote.update_calls == 1


def test_advance_names_its_fault_point_and_what_kept_changing(
    book: RefBook, remote: MemoryRemote, monkeypatch: pytest.MonkeyPatch
) -> None:
    points: list[str] = []
    monkeypatch.setattr(
        faults, "point", lambda name: points.append(name) if "commit" in name else None
    )
    book.advance("s-x", lambda h: commit("s-x", h, kind="sync"), fault="sync.commit-stored")
    assert points == ["sync.commit-stored"]
    book.advance("r-x", lambda h: commit("r-x", h))
    assert points[-1] == "history.commit-stored"
    remote.conflicts_left = refs.CAS_ATTEMPTS
    with pytest.raises(Conflict, match=r"^folder Photos kept changing under this device; try"):
        book.advance("s-x", lambda h: commit("s-x", h), what="folder Photos")
    assert len(points) == 2 + refs.CAS_ATTEMPTS


# ---------------------------------------------------------------- unreadable commits


def test_an_unreadable_head_is_named_by_its_label(book: RefBook, remote: MemoryRemote) -> None:
    made = book.advance("r-a", lambda h: backup("r-a", h)).committed
    assert made is not None
    lose(remote, made.id)
    with pytest.raises(
        NotFound,
        match=rf"^the newest snapshot of backup of /home/me/Docs on laptop \(ref r-a\) cannot be "
        rf"read \(commit {made.id.short()}\): pack .* is missing",
    ):
        book.listing()


def test_an_unreadable_head_never_seen_is_named_by_its_ref(
    book: RefBook, remote: MemoryRemote, repo: Repository, tmp_path: Path
) -> None:
    made = book.advance("r-a", lambda h: backup("r-a", h)).committed
    assert made is not None
    lose(remote, made.id)
    fresh = StateDB(tmp_path / "fresh.db")
    try:
        with pytest.raises(NotFound, match=r"^the newest snapshot of ref r-a cannot be read"):
            RefBook(remote, repo, fresh).head("r-a")
        assert fresh.seen_labels() == {}
    finally:
        fresh.close()


def test_an_unreadable_commit_on_the_way_to_the_floor_fails_the_check(
    repo: Repository, remote: MemoryRemote, state: StateDB, tmp_path: Path
) -> None:
    a, b, _c = chain(RefBook(remote, repo, state), "r-a", 3)
    behind = StateDB(tmp_path / "behind.db")
    try:
        behind.set_seen("r-a", a.id, 1)
        lose(remote, b.id)
        with pytest.raises(
            NotFound, match=r"a commit needed to check it of ref r-a cannot be read"
        ):
            RefBook(remote, repo, behind).head("r-a")
        assert behind.seen("r-a") == (a.id, 1)
    finally:
        behind.close()


def test_a_tampered_head_stays_an_integrity_error(
    book: RefBook, remote: MemoryRemote, repo: Repository
) -> None:
    made = book.advance("r-a", lambda h: commit("r-a", h)).committed
    assert made is not None
    loc = remote.index[made.id]
    data = bytearray(remote.packs[loc.pack_id])
    data[loc.offset + loc.length // 2] ^= 1
    remote.packs[loc.pack_id] = bytes(data)
    with pytest.raises(IntegrityError, match=r"^the newest snapshot of .* cannot be read"):
        book.head("r-a")


def test_listing_and_latest_need_no_older_commit(
    repo: Repository, remote: MemoryRemote, state: StateDB
) -> None:
    a, b, c = chain(RefBook(remote, repo, state), "r-a", 3, t0=10)
    (x,) = chain(RefBook(remote, repo, state), "r-x", 1, t0=5)
    lose(remote, b.id)
    notes: list[str] = []
    assert history.snapshots(RefBook(remote, repo, state), warn=notes.append) == [x, c]
    assert notes == [
        f"older snapshots of backup of  on host cannot be read (the parent of snapshot "
        f"{c.id.short()}: pack {remote.index[b.id].pack_id.hex()[:8]} is missing or damaged on "
        "the server); listing the newer ones"
    ]
    assert history.resolve(RefBook(remote, repo, state), "latest", warn=notes.append) == c
    assert history.resolve(RefBook(remote, repo, state), c.id.hex()[:8], warn=notes.append) == c
    with pytest.raises(NotFound, match="no snapshot matches"):
        history.resolve(RefBook(remote, repo, state), a.id.hex()[:8], warn=notes.append)
    with pytest.raises(NotFound):
        history.history(repo, c)  # the whole chain, for callers that need all of it
    assert [s.id for s in history.chain(repo, a)] == [a.id]


def test_latest_is_the_newest_head_of_a_backup_ref(
    repo: Repository, remote: MemoryRemote, state: StateDB
) -> None:
    chain(RefBook(remote, repo, state), "r-a", 2, t0=10)
    (b,) = chain(RefBook(remote, repo, state), "r-b", 1, t0=50)
    history.advance(
        RefBook(remote, repo, state), "s-x", lambda h: commit("s-x", h, kind="sync", time_ns=99)
    )
    assert history.resolve(RefBook(remote, repo, state), "latest", warn=lambda m: None) == b


def test_a_prefix_with_no_snapshots_at_all_says_what_to_do(
    repo: Repository, remote: MemoryRemote, state: StateDB
) -> None:
    with pytest.raises(
        NotFound, match=r"^there are no snapshots yet; run `anysync backup PATH` first$"
    ):
        history.resolve(RefBook(remote, repo, state), "abcd", warn=lambda m: None)
