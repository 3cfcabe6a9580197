"""The server's scrub (docs/prune-design.md §8): missing packs, orphans and their age,
half-deleted packs, the races with uploads and the reaper, what it remembers for the
metrics, and `anysync-server scrub`. A real Metadata on a temporary SQLite file and a
real LocalStore; nothing is mocked."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from anysync.server import packs
from anysync.server.accounts import Caller
from anysync.server.cli import main
from anysync.server.config import ServerConfig
from anysync.server.gc import Reaper
from anysync.server.home import Home
from anysync.server.metadata import CONDEMNED, LIVE, Metadata
from anysync.server.metrics import Metrics
from anysync.server.scrub import Scrubber, ScrubThread, Stopped, last_run, log_report
from anysync.server.storage import Storage
from anysync.store import LocalStore
from anysync.types import PackId
from tests.unit.test_server_gc import SECRET, blob, counters, make, object_path, upload
from tests.unit.test_server_storage import caller as new_account

HOUR = 3600


@pytest.fixture(autouse=True)
def _weak_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYSYNC_TESTONLY_WEAKEN_KDF", "1")


class HookedStore(LocalStore):
    """A LocalStore that runs `before_list` when a listing starts: what an upload or the
    reaper of the server does while a scrub runs."""

    before_list: Callable[[], object] = staticmethod(lambda: None)

    def list(self, prefix: str = "") -> Iterator[str]:
        self.before_list()
        return super().list(prefix)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Metadata]:
    db = Metadata.open(tmp_path / "metadata.db")
    yield db
    db.close()


@pytest.fixture
def store(tmp_path: Path) -> HookedStore:
    return HookedStore(tmp_path / "objects")


@pytest.fixture
def storage(db: Metadata, store: HookedStore, tmp_path: Path) -> Storage:
    return make(db, store, tmp_path, grace=HOUR)


def scrubber(db: Metadata, store: LocalStore, orphan_age: int = HOUR) -> Scrubber:
    return Scrubber(db, store, SECRET, Reaper(db, store, SECRET, HOUR), orphan_age)


def put_object(store: LocalStore, key: str, size: int) -> None:
    tmp = store.temp_path()
    tmp.write_bytes(os.urandom(size))
    store.adopt(key, tmp, size)


def unrecorded_key(c: Caller) -> str:
    """Where a pack of `c`'s account would be stored, but no row says so."""
    return packs.pack_key(SECRET, c.user.user_id, PackId.random())


def age_orphans(db: Metadata, seconds: int) -> None:
    with db.transaction() as conn:
        conn.execute("UPDATE scrub_orphans SET first_seen = first_seen - ?", (seconds,))


def test_a_store_that_matches_is_clean(db: Metadata, store: HookedStore, storage: Storage) -> None:
    alice = new_account(db)
    for n in range(3):
        upload(storage, alice, blob(n))
    report = scrubber(db, store).run()
    assert report.clean
    assert (report.objects, report.packs, report.reaped, report.young_orphans) == (3, 3, 0, 0)
    assert last_run(db) == report.at


def test_a_missing_pack_is_reported_live_or_condemned(
    db: Metadata,
    store: HookedStore,
    storage: Storage,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    alice = new_account(db)
    bob = new_account(db, "b@example.org")
    kept = upload(storage, alice, blob(1))
    lost = upload(storage, alice, blob(2))
    doomed = upload(storage, bob, blob(3))
    storage.condemn_packs(bob, [doomed.raw], *counters(db, bob))
    object_path(store, alice, lost).unlink()
    object_path(store, bob, doomed).unlink()

    report = scrubber(db, store).run()
    assert not report.clean
    found = {(m.user_id, m.pack_id, m.state) for m in report.missing}
    assert found == {(alice.user.user_id, lost, LIVE), (bob.user.user_id, doomed, CONDEMNED)}
    assert (report.objects, report.packs, report.orphans) == (1, 3, [])
    assert object_path(store, alice, kept).exists()

    with caplog.at_level(logging.INFO, logger="anysync.server.scrub"):
        log_report(report)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert sorted(errors) == sorted(
        [
            f"scrub: pack {lost.hex()[:8]} of account {alice.user.user_id} is recorded (live)"
            " but missing from the store",
            f"scrub: pack {doomed.hex()[:8]} of account {bob.user.user_id} is recorded"
            " (condemned) but missing from the store",
        ]
    )
    assert SECRET.hex() not in caplog.text and alice.user.email not in caplog.text
    metrics = Metrics(tmp_path / "metadata.db").render()
    assert "anysync_scrub_missing_packs 2\n" in metrics
    assert f"anysync_scrub_last_run_timestamp_seconds {report.at}\n" in metrics


def test_orphans_are_remembered_and_reported_once_old_enough(
    db: Metadata, store: HookedStore, storage: Storage, tmp_path: Path
) -> None:
    alice = new_account(db)
    upload(storage, alice, blob(1))
    stray = unrecorded_key(alice)
    put_object(store, stray, 700)
    put_object(store, "elsewhere/notes", 50)  # not even a pack key
    (store.root / "README.txt").write_text("put there by hand")  # not even a store key

    first = scrubber(db, store).run()
    assert first.clean and first.young_orphans == 3  # known for less than an hour
    age_orphans(db, HOUR)
    report = scrubber(db, store).run()
    assert [(o.key, o.size, o.user_id) for o in report.orphans] == sorted(
        [("README.txt", 0, None), ("elsewhere/notes", 50, None), (stray, 700, alice.user.user_id)]
    )
    assert report.orphans[0].first_seen == first.at - HOUR
    assert (report.young_orphans, report.orphan_bytes, report.objects) == (0, 750, 4)
    assert (store.root / stray).exists()  # reported, never deleted
    metrics = Metrics(tmp_path / "metadata.db").render()
    assert "anysync_scrub_orphan_packs 3\n" in metrics
    assert "anysync_scrub_orphan_bytes 750\n" in metrics

    # An orphan that goes away is forgotten; one that comes back starts young again.
    store.delete(stray)
    store.delete("elsewhere/notes")
    (store.root / "README.txt").unlink()
    assert scrubber(db, store).run().clean
    put_object(store, stray, 700)
    again = scrubber(db, store).run()
    assert again.clean and again.young_orphans == 1
    assert scrubber(db, store, orphan_age=0).run().orphans[0].key == stray


def test_half_deleted_packs_are_finished_not_reported(
    db: Metadata, store: HookedStore, storage: Storage
) -> None:
    alice = new_account(db)
    upload(storage, alice, blob(1))
    doomed = upload(storage, alice, blob(2))
    storage.condemn_packs(alice, [doomed.raw], *counters(db, alice))
    db.start_reaping(int(time.time()) + 1)  # a reaper that crashed after step 1

    report = scrubber(db, store).run()
    assert report.clean and report.reaped == 1
    assert not object_path(store, alice, doomed).exists()
    assert db.user_by_id(alice.user.id).condemned_bytes == 0


def test_an_upload_during_the_scrub_is_no_orphan(
    db: Metadata, store: HookedStore, storage: Storage
) -> None:
    alice = new_account(db)
    upload(storage, alice, blob(1))
    uploaded: list[PackId] = []
    # Recorded after the scrub read the rows, stored before it listed the objects.
    store.before_list = lambda: uploaded.append(upload(storage, alice, blob(2)))

    report = scrubber(db, store, orphan_age=0).run()
    assert report.clean and report.objects == 2 and uploaded
    assert db.connection().execute("SELECT count(*) FROM scrub_orphans").fetchone()[0] == 0


def test_a_pack_reaped_during_the_scrub_is_not_missing(
    db: Metadata, store: HookedStore, tmp_path: Path
) -> None:
    storage = make(db, store, tmp_path, grace=0)
    alice = new_account(db)
    upload(storage, alice, blob(1))
    doomed = upload(storage, alice, blob(2))
    # Condemned and deleted (grace 0) after the scrub read the rows, before it listed.
    store.before_list = lambda: storage.condemn_packs(alice, [doomed.raw], *counters(db, alice))

    report = scrubber(db, store).run()
    assert report.clean and report.objects == 1
    assert db.pack_size(alice.user.id, doomed) is None


def test_a_stopped_scrub_writes_nothing(db: Metadata, store: HookedStore, storage: Storage) -> None:
    alice = new_account(db)
    upload(storage, alice, blob(1))
    put_object(store, unrecorded_key(alice), 10)
    with pytest.raises(Stopped):
        scrubber(db, store).run(should_stop=lambda: True)
    assert last_run(db) is None
    assert db.connection().execute("SELECT count(*) FROM scrub_orphans").fetchone()[0] == 0


def test_the_scheduled_scrub_runs_when_due(db: Metadata, store: HookedStore) -> None:
    thread = ScrubThread(scrubber(db, store), every=24 * HOUR)
    try:
        deadline = time.monotonic() + 10
        while last_run(db) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        first = last_run(db)
        assert first is not None  # never ran before: runs at start
    finally:
        thread.close()
    thread = ScrubThread(scrubber(db, store), every=24 * HOUR)
    thread.close()  # ran a day ago at most: not due, so nothing ran
    assert last_run(db) == first


# ---------------------------------------------------------------- the command


def test_the_scrub_command_reports_and_exits_6_on_findings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "home"
    assert main(["--home", str(root), "init"]) == 0
    home = Home(root)
    db = Metadata.open(home.metadata_db)
    try:
        store = LocalStore(root / "objects")
        storage = Storage(ServerConfig(), db, store, home.secret(), tmp_path / "spool")
        alice = new_account(db)
        lost = upload(storage, alice, blob(1))
        upload(storage, alice, blob(2))
    finally:
        db.close()
    capsys.readouterr()

    assert main(["--home", str(root), "scrub"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 objects, 2 packs; 0 missing, 0 orphans")

    store.delete(packs.pack_key(home.secret(), alice.user.user_id, lost))
    stray = packs.pack_key(home.secret(), alice.user.user_id, PackId.random())
    put_object(store, stray, 100)
    assert main(["--home", str(root), "scrub", "--orphan-age", "0s"]) == 6
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert lines[:2] == [
        "2 objects, 2 packs; 1 missing, 1 orphans (100 B), 0 younger orphans not reported yet;"
        " 0 half-deleted packs finished",
        f"missing: pack {lost} (live) of account {alice.user.user_id}",
    ]
    assert lines[2].startswith(f"orphan: {stray} (100 B, account {alice.user.user_id}, since ")
    assert lines[2].endswith("); left in place")

    assert main(["--home", str(root), "scrub", "--json"]) == 6  # orphan_age 24h: young
    report = json.loads(capsys.readouterr().out)
    assert report["missing"] == [
        {"user_id": alice.user.user_id, "pack_id": lost.hex(), "state": "live"}
    ]
    assert (report["orphans"], report["young_orphans"]) == ([], 1)
    assert main(["--home", str(root), "scrub", "--orphan-age", "soon"]) == 2
