"""The refs service without a server: compare-and-swap, and the updates a watcher
receives (published from a pool thread, read on the event loop)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from anysync.errors import Conflict, NotFound, UsageError
from anysync.server import notify
from anysync.server.accounts import Caller
from anysync.server.metadata import Metadata
from anysync.server.notify import RefNotifier
from anysync.server.refs import Refs
from anysync.types import BlobId, BlobLocation, PackId, Ref
from tests.unit.test_server_storage import caller as account

COMMIT = b"\7" * 32


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Metadata]:
    db = Metadata.open(tmp_path / "metadata.db")
    yield db
    db.close()


def caller(db: Metadata, email: str = "a@example.org", commit: bytes = COMMIT) -> Caller:
    """An account that holds the blob `commit`."""
    who = account(db, email)
    pack = PackId.random()
    db.add_pack(
        who.user.id, pack, 64, [BlobLocation(BlobId(commit), pack, 0, 64)], 0, 1_800_000_000
    )
    return who


def test_update_ref_is_compare_and_swap(db: Metadata) -> None:
    refs = Refs(db, RefNotifier())
    alice = caller(db)
    ref = refs.update_ref(alice, "sync:docs", 0, COMMIT, 0)
    assert (ref.version, ref.updated_by_device) == (1, alice.device.id)
    with pytest.raises(Conflict, match=r"now at version 1"):
        refs.update_ref(alice, "sync:docs", 0, COMMIT, 0)
    assert refs.update_ref(alice, "sync:docs", 1, COMMIT, 0).version == 2
    with pytest.raises(NotFound, match="not stored"):
        refs.update_ref(alice, "sync:docs", 2, b"\x08" * 32, 0)
    assert refs.get_ref(alice, "sync:docs").version == 2
    listed, seq = refs.list_refs(alice, "sync:")
    assert [r.name for r in listed] == ["sync:docs"]
    assert seq == 2  # two changes
    for bad in ("has space", "", "x" * 201):
        with pytest.raises(UsageError):
            refs.get_ref(alice, bad)
    with pytest.raises(UsageError):
        refs.update_ref(alice, "r", 0, b"short", 0)


def test_refs_are_per_account(db: Metadata) -> None:
    refs = Refs(db, RefNotifier())
    alice, bob = caller(db), caller(db, "b@example.org", b"\x09" * 32)
    refs.update_ref(alice, "home", 0, COMMIT, 0)
    with pytest.raises(NotFound):
        refs.get_ref(bob, "home")
    with pytest.raises(NotFound):  # Alice's commit is not Bob's
        refs.update_ref(bob, "home", 0, COMMIT, 0)


def test_watchers_get_updates_published_from_another_thread(db: Metadata) -> None:
    notifier = RefNotifier()
    refs = Refs(db, notifier)
    alice, bob = caller(db), caller(db, "b@example.org", b"\x09" * 32)

    async def watch() -> list[str]:
        wanted = refs.watch(alice, ["b"])
        everything = refs.watch(alice, [])
        others = refs.watch(bob, [])

        def writer() -> None:  # as the pool does
            refs.update_ref(alice, "a", 0, COMMIT, 0)
            refs.update_ref(alice, "b", 0, COMMIT, 0)

        thread = threading.Thread(target=writer)
        thread.start()
        got = [await everything.next(), await everything.next(), await wanted.next()]
        thread.join()
        notifier.close()  # the server stops: every stream ends
        ends = [await wanted.next(), await everything.next(), await others.next()]
        assert ends == [None, None, None]
        for w in (wanted, everything, others):
            w.close()
        assert notifier.watchers() == 0
        return [r.name for r in got if r is not None]

    assert asyncio.run(watch()) == ["a", "b", "b"]


def test_a_watcher_that_falls_behind_is_ended() -> None:
    notifier = RefNotifier()
    ref = Ref("r", BlobId(COMMIT), 1, 0, 1)

    async def lagging() -> list[Ref | None]:
        sub = notifier.subscribe(1)
        for _ in range(notify.QUEUE_LIMIT + 10):
            notifier.publish(1, ref)
        await asyncio.sleep(0)  # deliveries run on the loop
        got = [await sub.get() for _ in range(notify.QUEUE_LIMIT + 1)]
        notifier.unsubscribe(sub)
        return got

    got = asyncio.run(lagging())
    assert got[:-1] == [ref] * notify.QUEUE_LIMIT
    assert got[-1] is None
