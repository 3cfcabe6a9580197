"""Refs of an account: list, read, compare-and-swap, and the updates watchers see.

No gRPC here (anysync.server.service converts the wire). The methods that touch SQLite
block and run in the pool; `watch` is on the event loop (anysync.server.notify).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable

from anysync.errors import NotFound, UsageError
from anysync.server.accounts import Caller
from anysync.server.metadata import Metadata, RefVersion, RefWrite
from anysync.server.notify import RefNotifier, Subscription
from anysync.server.storage import blob_id
from anysync.types import Ref

_REF_NAME = re.compile(r"[A-Za-z0-9._:-]{1,200}")
MAX_HISTORY = 10_000  # versions per ListRefHistory call


class Refs:
    def __init__(self, db: Metadata, notifier: RefNotifier) -> None:
        self.db = db
        self.notifier = notifier

    def list_refs(self, caller: Caller, prefix: str) -> tuple[list[Ref], int]:
        """The refs, and the account's ref_seq of the same moment."""
        if prefix and not _REF_NAME.fullmatch(prefix):
            raise UsageError("a ref prefix is up to 200 characters of [A-Za-z0-9._:-]")
        return self.db.refs_and_seq(caller.user.id, prefix)

    def history(
        self, caller: Caller, name: str, after_seq: int, limit: int
    ) -> tuple[list[RefVersion], int]:
        """Versions of ref `name` ("" = every ref) after `after_seq`, by seq (limit 0 =
        MAX_HISTORY), and the account's ref_seq."""
        if limit > MAX_HISTORY:
            raise UsageError(f"at most {MAX_HISTORY:,} ref versions per ListRefHistory call")
        if name:
            ref_name(name)
        return self.db.ref_history(caller.user.id, name, after_seq, limit or MAX_HISTORY)

    def get_ref(self, caller: Caller, name: str) -> Ref:
        ref = self.db.get_ref(caller.user.id, ref_name(name))
        if ref is None:
            raise NotFound(f"no ref {name}")
        return ref

    def update_ref(
        self,
        caller: Caller,
        name: str,
        expected_version: int,
        commit_id: bytes,
        gc_generation: int | None,
    ) -> Ref:
        """Compare-and-swap (docs/protocol.md §7.6), fenced by `gc_generation` (None:
        a client that does not send one); watchers of the account hear of it."""
        writer = RefWrite(
            device_id=caller.device.id,
            by_manage=caller.manages(),
            append_only=caller.device.rights == "append",
            gc_generation=gc_generation,
        )
        ref = self.db.update_ref(
            caller.user.id,
            ref_name(name),
            expected_version,
            blob_id(commit_id, "commit_id"),
            writer,
            int(time.time()),
        )
        self.notifier.publish(caller.user.id, ref)
        return ref

    def watch(self, caller: Caller, names: Iterable[str]) -> Watch:
        """Start watching; on the event loop. Close the Watch when done."""
        wanted = frozenset(ref_name(n) for n in names)
        return Watch(self.notifier, self.notifier.subscribe(caller.user.id), wanted)


class Watch:
    """The updates of one WatchRefs stream: `next` waits for one it wants."""

    def __init__(self, notifier: RefNotifier, sub: Subscription, names: frozenset[str]) -> None:
        self._notifier = notifier
        self._sub = sub
        self.names = names

    async def next(self) -> Ref | None:
        """The next update of a wanted ref; None when the stream should end."""
        while True:
            ref = await self._sub.get()
            if ref is None or not self.names or ref.name in self.names:
                return ref

    def close(self) -> None:
        self._notifier.unsubscribe(self._sub)


def ref_name(name: str) -> str:
    if not _REF_NAME.fullmatch(name):
        raise UsageError("a ref name is 1 to 200 characters of [A-Za-z0-9._:-]")
    return name
