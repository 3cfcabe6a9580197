"""forget (client/forget.py): the decisions on a ref's view, and the edit commits they
write, against an honest server in memory that keeps ref_history like the real one
(every ref update is a row, by_manage as the writer's right then)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import UTC
from pathlib import Path

import pytest

from anysync.client import forget
from anysync.client.forget import Request, Writer
from anysync.client.repo import history, retention
from anysync.client.repo.commit import Commit
from anysync.client.repo.history import Snapshot
from anysync.client.repo.refs import RefBook
from anysync.client.repo.repository import Repository
from anysync.client.statedb import StateDB
from anysync.errors import AppendOnly, Conflict, NeedsManage, NotFound, UsageError
from anysync.types import BlobId, Ref
from tests.unit.fakes import MemoryRemote

DAY = 86_400 * 10**9
NOW = 1_767_023_456 * 10**9  # 2025-12-29 15:50:56 UTC
ME = Writer(7, "desk", "deskhost")
EMPTY = BlobId(b"\0" * 32)  # the first snapshot's tree: never read


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    commit_id: BlobId
    by_manage: bool


class HistoryRemote(MemoryRemote):
    """MemoryRemote plus ref_history; `manage` is the writing device's right."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[Row] = []
        self.manage = True
        self.before_update: Callable[[], None] | None = None  # runs once, then Conflict

    def update_ref(
        self, name: str, expected_version: int, commit_id: BlobId, gc_generation: int | None = None
    ) -> Ref:
        if self.before_update is not None:
            hook, self.before_update = self.before_update, None
            hook()
            raise Conflict("ref changed concurrently")
        ref = super().update_ref(name, expected_version, commit_id, gc_generation)
        self.rows.append(Row(name, commit_id, self.manage))
        return ref

    def list_ref_history(self, name: str = "", after_seq: int = 0) -> tuple[list[Row], int]:
        return [r for r in self.rows if not name or r.name == name], len(self.rows)


@pytest.fixture
def remote() -> HistoryRemote:
    return HistoryRemote()


def backup(refs: RefBook, ref: str, time_ns: int, paths: Sequence[str] = ("/data",)) -> Snapshot:
    def make(h: Snapshot | None) -> Commit:
        return Commit(
            kind="sync" if ref.startswith("s-") else "backup",
            tree=EMPTY if h is None else BlobId(bytes([len(paths)]) * 32),
            parents=(h.id,) if h else (),
            ref=ref,
            counter=h.commit.counter + 1 if h else 1,
            time_ns=time_ns,
            device_id=1,
            device="laptop",
            hostname="host",
            paths=tuple(paths),
        )

    return history.advance(refs, ref, make)


def ids(snaps: Sequence[Snapshot]) -> set[BlobId]:
    return {s.id for s in snaps}


def listed(refs: RefBook, remote: HistoryRemote, kind: str = "backup") -> list[Snapshot]:
    return history.snapshots(refs, kind, pytest.fail, counting=forget.CountingEdits(remote))


def run(
    repo: Repository,
    refs: RefBook,
    remote: HistoryRemote,
    req: Request,
    warn: Callable[[str], None] = pytest.fail,
) -> list[forget.Outcome]:
    return forget.run_forget(repo, refs, remote, req, ME, warn, now_ns=NOW, tz=UTC)


# ---------------------------------------------------------------- the request and the right


def test_an_empty_policy_or_a_mixed_request_is_refused() -> None:
    with pytest.raises(UsageError, match="forget needs snapshot IDs or at least one --keep-"):
        Request(retention.Policy()).check()
    with pytest.raises(UsageError, match="forget needs"):
        Request().check()
    with pytest.raises(UsageError, match="snapshot IDs or --keep-\\* rules, not both"):
        Request(retention.Policy(keep_last=1), ids=("abcd",)).check()
    Request(retention.Policy(keep_last=1)).check()
    Request(ids=("abcd",)).check()


def test_only_effective_manage_may_forget() -> None:
    with pytest.raises(
        NeedsManage,
        match="forget needs the manage right and this device has "
        "write rights: run it on a manage device",
    ) as exc:
        forget.require_manage("forget", "write", 0, 1000.0)
    assert exc.value.exit_code == 5
    with pytest.raises(NeedsManage):
        forget.require_manage("forget", "write", 999, 1000.0)  # elevation ran out
    with pytest.raises(AppendOnly, match="append-only: it may add data, never delete it"):
        forget.require_manage("forget", "append", 2000, 1000.0)  # never, whatever it claims
    forget.require_manage("forget", "write", 1001, 1000.0)  # elevated
    forget.require_manage("forget", "manage", 0, 1000.0)


# ---------------------------------------------------------------- policies


def test_a_policy_applies_to_each_backup_source_and_writes_one_edit_per_ref(
    repo: Repository, remote: HistoryRemote, state: StateDB, refs: RefBook
) -> None:
    a = [backup(refs, "r-a", NOW - (5 - i) * DAY) for i in range(5)]
    b = [backup(refs, "r-b", NOW - (3 - i) * DAY, paths=("/b", "/c")) for i in range(3)]
    out = run(repo, refs, remote, Request(retention.Policy(keep_last=2)))
    assert [o.plan.ref for o in out] == ["r-a", "r-b"]
    assert [s for s, _ in out[0].plan.keep] == [a[4], a[3]]
    assert out[0].plan.forget == (a[2], a[1], a[0])
    assert out[0].plan.keep[0][1] == ("last 1",)
    assert out[1].plan.forget == (b[0],)
    for o, newest in ((out[0], a[4]), (out[1], b[2])):
        assert o.edit is not None
        c = o.edit.commit
        assert c.kind == "edit"
        assert c.parents == (newest.id,) and c.counter == newest.commit.counter + 1
        assert c.tree == newest.commit.tree  # the newest kept snapshot's
        assert c.device == "desk" and c.paths == newest.commit.paths
        assert c.edit is not None and not c.edit.retired
        assert set(c.edit.forget) == ids(o.plan.forget)
        assert c.edit.policy == "keep 2 last"
        assert remote.refs[o.plan.ref].commit_id == o.edit.id
    assert listed(refs, remote) == sorted([a[3], a[4], b[1], b[2]], key=history._age)
    # applying it again forgets nothing and writes nothing
    again = run(repo, refs, remote, Request(retention.Policy(keep_last=2)))
    assert all(o.edit is None and not o.plan.forget for o in again)


def test_group_by_host_applies_the_policy_across_the_sources_of_a_host(
    repo: Repository, remote: HistoryRemote, state: StateDB, refs: RefBook
) -> None:
    """restic's --group-by host: one group for both sources of the host, so keep-last 2
    keeps the two newest snapshots of the host, whichever source they belong to."""
    a = [backup(refs, "r-a", NOW - (10 - 2 * i) * DAY) for i in range(3)]  # days -10 -8 -6
    b = [backup(refs, "r-b", NOW - (9 - 2 * i) * DAY, paths=("/b",)) for i in range(3)]
    out = run(repo, refs, remote, Request(retention.Policy(keep_last=2), group_by="host"))
    assert [o.plan.ref for o in out] == ["r-a", "r-b"]
    # The host's two newest: b[2] (day -5) and a[2] (day -6); per source it would be 4.
    assert [s for s, _ in out[0].plan.keep] == [a[2]]
    assert [s for s, _ in out[1].plan.keep] == [b[2]]
    assert listed(refs, remote) == [a[2], b[2]]
    assert "grouped by host" in out[0].plan.policy
    with pytest.raises(UsageError, match="--group-by"):
        Request(ids=("abcd",), group_by="host").check()
    with pytest.raises(UsageError, match="unknown option"):
        run(repo, refs, remote, Request(retention.Policy(keep_last=2), group_by="colour"))


def test_a_dry_run_decides_and_writes_nothing(
    repo: Repository, remote: HistoryRemote, state: StateDB, refs: RefBook
) -> None:
    for i in range(3):
        backup(refs, "r-a", NOW - i * DAY)
    before = dict(remote.refs)
    (o,) = run(repo, refs, remote, Request(retention.Policy(keep_last=1), dry_run=True))
    assert len(o.plan.forget) == 2 and o.edit is None
    assert remote.refs == before


def test_path_and_device_restrict_the_backup_sources_and_leave_sync_folders_alone(
    repo: Repository, remote: HistoryRemote, state: StateDB, refs: RefBook
) -> None:
    for i in range(2):
        backup(refs, "r-a", NOW - i * DAY, paths=("/data",))
        backup(refs, "r-b", NOW - i * DAY, paths=("/other",))
        backup(refs, "s-x", NOW - 400 * DAY * (1 - i))  # the older one is past the default
    policy = retention.Policy(keep_last=1)
    (o,) = run(repo, refs, remote, Request(policy, paths=("/data",)))
    assert o.plan.ref == "r-a" and len(o.plan.forget) == 1
    assert run(repo, refs, remote, Request(policy, devices=("elsewhere",))) == []
    out = run(repo, refs, remote, Request(policy, devices=("host",)))
    assert [(o.plan.ref, len(o.plan.forget)) for o in out] == [("r-a", 0), ("r-b", 1)]
    assert len(listed(refs, remote, "sync")) == 2  # no restriction would have touched s-x


def test_forgetting_every_snapshot_retires_the_source_with_the_empty_tree(
    repo: Repository, remote: HistoryRemote, state: StateDB, refs: RefBook
) -> None:
    a, b = backup(refs, "r-a", NOW - DAY), backup(refs, "r-a", NOW)
    (o,) = run(repo, refs, remote, Request(ids=(a.id.hex()[:8], b.id.hex())))
    assert o.edit is not None and o.edit.commit.edit is not None
    assert o.edit.commit.edit.retired
    assert o.edit.commit.tree == repo.save_tree([])
    assert repo.load_tree(o.edit.commit.tree) == []  # it is stored
    assert listed(refs, remote) == []
    assert refs.head("r-a")[1] == o.edit  # the ref stays: a seen ref must not vanish
    with pytest.raises(NotFound, match=f"^snapshot {a.id.short()} was forgotten on .* by desk$"):
        history.resolve(refs, a.id.hex(), counting=forget.CountingEdits(remote))


def test_named_snapshots(
    repo: Repository, remote: HistoryRemote, state: StateDB, refs: RefBook
) -> None:
    a, b, c = (backup(refs, "r-a", NOW - i * DAY) for i in (2, 1, 0))
    s1, s2 = backup(refs, "s-x", NOW - DAY), backup(refs, "s-x", NOW)
    (o,) = run(repo, refs, remote, Request(ids=(b.id.hex(),)))
    assert o.plan.forget == (b,) and o.edit is not None
    assert o.edit.commit.tree == c.commit.tree
    warnings: list[str] = []
    assert run(repo, refs, remote, Request(ids=(b.id.hex(),)), warnings.append) == []
    assert warnings == [
        f"snapshot {b.id.short()} was forgotten on {_when(o)} by desk; nothing to do"
    ]
    with pytest.raises(NotFound, match="no snapshot matches 'ffffffffff'"):
        run(repo, refs, remote, Request(ids=("ffffffffff",)))
    with pytest.raises(UsageError, match="at least 4 hex digits"):
        run(repo, refs, remote, Request(ids=("abc",)))
    with pytest.raises(UsageError, match=f"^{s2.id.short()} is the current state of sync folder"):
        run(repo, refs, remote, Request(ids=(s2.id.hex(),)))
    (o,) = run(repo, refs, remote, Request(ids=(s1.id.hex(),)))  # an older version may go
    assert o.plan.forget == (s1,) and o.edit is not None
    assert o.edit.commit.tree == s2.commit.tree  # a sync folder's state does not change
    assert [s.id for s in listed(refs, remote)] == [a.id, c.id]


def _when(o: forget.Outcome) -> str:
    assert o.edit is not None
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(o.edit.commit.time_ns / 1e9))


def test_a_lost_race_decides_again_on_the_new_head(
    repo: Repository, remote: HistoryRemote, state: StateDB, refs: RefBook
) -> None:
    old = [backup(refs, "r-a", NOW - i * DAY) for i in (2, 1)]
    other = RefBook(remote, repo, state)
    landed: list[Snapshot] = []
    remote.before_update = lambda: landed.append(backup(other, "r-a", NOW))
    (o,) = run(repo, refs, remote, Request(retention.Policy(keep_last=1)))
    assert o.edit is not None
    assert o.edit.commit.parents == (landed[0].id,)
    assert [s for s, _ in o.plan.keep] == landed
    assert ids(o.plan.forget) == ids(old)
    assert listed(refs, remote) == landed


def test_edits_written_without_manage_do_not_count(
    repo: Repository, remote: HistoryRemote, state: StateDB, refs: RefBook
) -> None:
    snaps = [backup(refs, "r-a", NOW - i * DAY) for i in (2, 1, 0)]
    remote.manage = False  # e.g. an append-only device that skipped the client's check
    (o,) = run(repo, refs, remote, Request(retention.Policy(keep_last=1)))
    assert o.edit is not None
    warnings: list[str] = []
    shown = history.snapshots(refs, warn=warnings.append, counting=forget.CountingEdits(remote))
    assert shown == snaps
    assert warnings == ["forget record by device desk ignored: desk had no manage right"]


# ---------------------------------------------------------------- sync folders


def test_sync_folders_follow_their_own_retention_and_keep_their_state(
    repo: Repository, remote: HistoryRemote, state: StateDB, refs: RefBook
) -> None:
    ages = [400, 41, 40.5, 40, 10, 0]  # days before NOW
    v = [backup(refs, "s-x", NOW - int(d * DAY)) for d in ages]
    (b,) = [backup(refs, "r-a", NOW - 500 * DAY)]
    # the default: every version for 30 days, then one a day for a year
    out = run(repo, refs, remote, Request(retention.Policy(keep_last=1)))
    sync = next(o for o in out if o.plan.ref == "s-x")
    assert sync.plan.policy.startswith("sync folder: keep")
    assert ids(sync.plan.forget) == ids([v[0], v[2]])  # past the year; the older of one day
    assert [s for s, _ in sync.plan.keep] == [v[5], v[4], v[3], v[1]]
    assert sync.edit is not None and sync.edit.commit.tree == v[5].commit.tree
    assert listed(refs, remote, "sync") == [v[1], v[3], v[4], v[5]]
    assert listed(refs, remote) == [b]  # one backup snapshot: keep-last 1 keeps it

    # a stricter policy, set by an edit that forgets nothing
    keep_last = retention.Policy(keep_last=1)
    e = forget.set_sync_retention(repo, refs, "s-x", keep_last, ME, now_ns=lambda: NOW)
    assert e.commit.kind == "edit" and e.commit.edit is not None and not e.commit.edit.forget
    assert e.commit.tree == v[5].commit.tree
    assert retention.Policy.from_bytes(e.commit.retention.encode()) == keep_last
    o = forget.apply_sync_retention(repo, refs, remote, "s-x", ME, pytest.fail, now_ns=NOW, tz=UTC)
    assert ids(o.plan.forget) == ids([v[1], v[3], v[4]])
    assert listed(refs, remote, "sync") == [v[5]]
    assert o.edit is not None and o.edit.commit.retention == e.commit.retention  # carried on


def test_the_current_state_of_a_sync_folder_is_never_forgotten(
    repo: Repository, remote: HistoryRemote, state: StateDB, refs: RefBook
) -> None:
    # A policy whose rules keep nothing of this folder (every version is "in the
    # future" for keep_within's newest) still leaves its current state.
    v = [backup(refs, "s-x", NOW + i * DAY) for i in (1, 2)]
    view = history.view_of(repo, refs.head("s-x")[1] or pytest.fail(), set(), pytest.fail)
    hourly = retention.Policy(keep_within_hourly=retention.Duration(hours=1))
    plan = forget._decide(view, hourly, "x", view.latest, now_ns=NOW - 10 * DAY, tz=UTC)
    assert v[1] in [s for s, _ in plan.keep]
    assert v[1] not in plan.forget


def test_a_sync_policy_this_version_cannot_read_leaves_the_folder_alone(
    repo: Repository, remote: HistoryRemote, state: StateDB, refs: RefBook
) -> None:
    backup(refs, "s-x", NOW - 400 * DAY)
    backup(refs, "s-x", NOW)
    e = forget.set_sync_retention(repo, refs, "s-x", retention.Policy(keep_last=1), ME)
    newer = dataclasses.replace(
        e.commit,
        parents=(e.id,),
        counter=e.commit.counter + 1,
        retention='{"keep_fortnightly":1,"v":2}',
    )
    history.advance(refs, "s-x", lambda h: newer)
    warnings: list[str] = []
    assert run(repo, refs, remote, Request(retention.Policy(keep_last=1)), warnings.append) == []
    assert len(warnings) == 1 and "retention policy version 2 is unknown" in warnings[0]
    assert "left alone" in warnings[0]


def test_setting_retention_needs_a_folder_and_a_rule(
    repo: Repository, remote: HistoryRemote, state: StateDB, refs: RefBook, tmp_path: Path
) -> None:
    with pytest.raises(NotFound, match="no versions yet"):
        forget.set_sync_retention(repo, refs, "s-none", retention.Policy(keep_last=1), ME)
    with pytest.raises(UsageError, match="at least one --keep-"):
        forget.set_sync_retention(repo, refs, "s-none", retention.Policy(), ME)


def test_the_command_line_policy_options() -> None:
    import argparse

    from anysync.cli import cmd_forget

    parser = argparse.ArgumentParser()
    cmd_forget.register(parser.add_subparsers())

    def policy(*argv: str) -> retention.Policy:
        return cmd_forget.policy_from(parser.parse_args(["forget", *argv]))

    assert policy().is_empty()
    assert policy("--keep-last", "3", "--keep-daily", "unlimited") == retention.Policy(
        keep_last=3, keep_daily=retention.ALL
    )
    assert policy("--keep-within", "1y2m", "--keep-within-weekly", "30d") == retention.Policy(
        keep_within=retention.Duration(years=1, months=2),
        keep_within_weekly=retention.Duration(days=30),
    )
    with pytest.raises(UsageError, match="invalid count 'x'"):
        policy("--keep-hourly", "x")
    with pytest.raises(UsageError, match="invalid duration '5w'"):
        policy("--keep-within-daily", "5w")
