"""Retention: which snapshots a policy keeps. Pure: it decides, the caller forgets.

restic's `forget` rules (internal/data/snapshot_policy.go), so its users and docs carry over:

- Snapshots are grouped (default: one group per backup source, host and sorted paths)
  and the policy applies to each group on its own.
- Newest first, a snapshot is kept if any rule keeps it. `keep_daily=7` keeps the newest
  snapshot of each of the 7 newest days that have one; hours, days, ISO weeks, months and
  years are those of the local wall clock. ALL (-1, "unlimited") never runs out. While a
  count is left over, the group's oldest snapshot is kept too ("oldest daily ..."), so
  that the history reaches back as far as it can.
- `keep_within` keeps what is newer than the newest snapshot minus a calendar duration;
  `keep_within_daily` etc. keep one per period inside such a span. "Newest" ignores
  snapshots dated after `now`: a device whose clock runs ahead must not make every other
  snapshot look old.
- An empty policy keeps everything; `forget` should refuse when `Policy.is_empty()`.
  A non-empty policy always keeps each group's newest snapshot.

Differences from restic, on purpose: no tags (commits have none); equal times are
ordered by snapshot ID, so that every device decides alike (restic keeps list order);
restic's ApplyPolicy removes everything under an empty policy (its caller refuses);
a duration may not repeat a unit ("1d2d").
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, tzinfo
from typing import Any

from anysync.errors import IntegrityError, UsageError

POLICY_VERSION = 1
ALL = -1  # a count meaning "unlimited"
NS = 1_000_000_000

PERIODS = ("hourly", "daily", "weekly", "monthly", "yearly")
_UNITS = {"y": "years", "m": "months", "d": "days", "h": "hours"}

# The bucket of each period: two snapshots in one bucket are "the same day" (etc.).
# Local wall-clock fields, like restic's ymdh/ymd/yw/ym/y.
_BUCKET: dict[str, Callable[[datetime], str]] = {
    "hourly": lambda t: f"{t:%Y-%m-%d %H}:00",
    "daily": lambda t: f"{t:%Y-%m-%d}",
    "weekly": lambda t: "{}-W{:02d}".format(*t.isocalendar()[:2]),
    "monthly": lambda t: f"{t:%Y-%m}",
    "yearly": lambda t: f"{t:%Y}",
}


@dataclass(frozen=True, slots=True)
class Duration:
    """A calendar span in restic's notation ("1y2m30d12h"). Years, months and days are
    counted on the local calendar (31 March minus 1m is 3 March, as Go's AddDate; 1d
    across a DST change is 23 or 25 hours), hours on the clock."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    @classmethod
    def parse(cls, text: str) -> Duration:
        s, values, i = text.strip(), dict[str, int](), 0
        bad = f"invalid duration {text!r}: "
        if not s:
            raise UsageError(bad + "it is empty (write e.g. 30d, 1y2m or 12h)")
        while i < len(s):
            j = i
            while j < len(s) and s[j] in "0123456789":
                j += 1
            number, unit = s[i:j], s[j : j + 1]
            if s[i] == "-":
                raise UsageError(bad + "durations cannot be negative")
            if not number:
                raise UsageError(bad + f"expected a number at {s[i:]!r}")
            if not unit:
                raise UsageError(bad + f"no unit after {number} (use y, m, d or h)")
            if unit not in _UNITS:
                raise UsageError(bad + f"unknown unit {unit!r} (use y, m, d or h; a week is 7d)")
            if _UNITS[unit] in values:
                raise UsageError(bad + f"the unit {unit!r} is given twice")
            values[_UNITS[unit]] = int(number)
            i = j + 1
        return cls(**values)

    def is_zero(self) -> bool:
        return not (self.years or self.months or self.days or self.hours)

    def __str__(self) -> str:
        shown = [f"{n}{u}" for u, name in _UNITS.items() if (n := getattr(self, name))]
        return "".join(shown) or "0h"


def parse_count(text: str) -> int:
    """A --keep-* count as restic takes it: a whole number, or "unlimited" (ALL)."""
    if text.strip() == "unlimited":
        return ALL
    if not text.strip().isdecimal():
        raise UsageError(f"invalid count {text!r}: give a whole number ≥ 0 or 'unlimited'")
    return int(text)


_COUNTS = ("keep_last", *(f"keep_{p}" for p in PERIODS))
_SPANS = ("keep_within", *(f"keep_within_{p}" for p in PERIODS))


@dataclass(frozen=True, slots=True)
class Policy:
    """restic's ExpirePolicy without tags. Counts: 0 = rule off, ALL = unlimited."""

    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_within: Duration | None = None
    keep_within_hourly: Duration | None = None
    keep_within_daily: Duration | None = None
    keep_within_weekly: Duration | None = None
    keep_within_monthly: Duration | None = None
    keep_within_yearly: Duration | None = None

    def __post_init__(self) -> None:
        for name in _COUNTS:
            n = getattr(self, name)
            if isinstance(n, bool) or not isinstance(n, int) or n < ALL:
                option = "--" + name.replace("_", "-")
                raise UsageError(f"{option} takes a count ≥ 0 or unlimited, not {n!r}")
        for name in _SPANS:
            span = getattr(self, name)
            if span is not None and span.is_zero():  # "0d" is no rule, as in restic
                object.__setattr__(self, name, None)

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) in (0, None) for f in fields(self))

    def __str__(self) -> str:
        counts = [
            f"{'all' if n == ALL else n} {name[5:]}"
            for name in _COUNTS
            if (n := getattr(self, name))
        ]
        spans = [f"{name[12:]} within {d}" for name in _SPANS[1:] if (d := getattr(self, name))]
        parts = ([", ".join(counts)] if counts else []) + spans
        if self.keep_within:
            parts.append(f"all within {self.keep_within} of the newest")
        return "keep " + "; ".join(parts) if parts else "keep everything (no policy)"

    def to_bytes(self) -> bytes:
        """Canonical JSON with a version, e.g. {"keep_within":"30d","v":1}; rules that are
        off are left out."""
        doc: dict[str, object] = {"v": POLICY_VERSION}
        for name in _COUNTS + _SPANS:
            if value := getattr(self, name):
                doc[name] = str(value) if isinstance(value, Duration) else value
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Policy:
        """Refuses an unknown version and any unknown key: a policy from a newer AnySync
        may hold a rule this one does not know, and ignoring it would delete snapshots
        that the rule keeps."""
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            version = doc.pop("v", None)
            if version != POLICY_VERSION:
                raise IntegrityError(
                    f"retention policy version {version!r} is unknown to this AnySync "
                    f"(it reads version {POLICY_VERSION}); upgrade AnySync to apply it"
                )
            if unknown := sorted(set(doc) - set(_COUNTS) - set(_SPANS)):
                raise ValueError(f"unknown rules {unknown}")
            rules: dict[str, Any] = {
                k: Duration.parse(v) if k in _SPANS else v for k, v in doc.items()
            }
            return cls(**rules)
        except (ValueError, TypeError, AttributeError, UsageError) as exc:
            raise IntegrityError(f"retention policy is malformed: {exc}") from None


# Sync folders: every version for 30 days, then one a day for a year (issue #13).
SYNC_DEFAULT = Policy(keep_within=Duration(days=30), keep_within_daily=Duration(years=1))


@dataclass(frozen=True, slots=True)
class Item:
    """What retention needs of a snapshot, e.g. Item(s.id.hex(), s.commit.time_ns,
    s.commit.hostname, s.commit.paths). The caller maps IDs back to snapshots."""

    id: str
    time_ns: int
    host: str = ""
    paths: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Kept:
    item: Item
    reasons: tuple[str, ...]  # e.g. ("within 30d", "daily 2026-11-29", "last 1")


@dataclass(frozen=True, slots=True)
class Group:
    host: str | None  # None: not grouped by host
    paths: tuple[str, ...] | None  # sorted; None: not grouped by paths
    keep: tuple[Kept, ...]  # newest first
    remove: tuple[Item, ...]  # newest first


@dataclass(frozen=True, slots=True)
class Decision:
    groups: tuple[Group, ...]

    @property
    def keep(self) -> list[Kept]:
        return [k for g in self.groups for k in g.keep]

    @property
    def remove(self) -> list[Item]:
        return [r for g in self.groups for r in g.remove]


def decide(
    items: Sequence[Item],
    policy: Policy,
    *,
    group_by: str = "host,paths",
    tz: tzinfo | None = None,
    now_ns: int | None = None,
) -> Decision:
    """Which snapshots `policy` keeps, per group. `group_by` as restic's --group-by
    ("host,paths", "host", "paths" or "" for one group); `tz` the zone of the periods
    (None: this machine's); `now_ns` the time that counts as now (default: the clock)."""
    by_host, by_paths = group_by_words(group_by)
    now = time.time_ns() if now_ns is None else now_ns
    groups: dict[_Key, list[Item]] = {}
    for it in items:
        key = (it.host if by_host else None, tuple(sorted(it.paths)) if by_paths else None)
        groups.setdefault(key, []).append(it)
    order = sorted(groups, key=lambda k: (k[0] or "", k[1] or ()))
    return Decision(tuple(_decide_group(k, groups[k], policy, tz, now) for k in order))


def group_by_words(text: str) -> tuple[bool, bool]:
    """(group by host, group by paths) for restic's --group-by text."""
    words = {w.strip() for w in text.split(",")} - {""}
    if words & {"tag", "tags"}:
        raise UsageError("--group-by tags: AnySync snapshots have no tags")
    if unknown := sorted(words - {"host", "hosts", "path", "paths"}):
        raise UsageError(
            f"--group-by: unknown option {unknown[0]!r} (use host, paths, both, or '')"
        )
    return bool(words & {"host", "hosts"}), bool(words & {"path", "paths"})


@dataclass(slots=True)
class _Rule:
    """One counted or within-span rule, walking the group newest first."""

    name: str  # "last", "daily", or "daily within 1y"
    period: str | None  # None: every snapshot is its own bucket (keep_last)
    left: int  # periods still to keep; ALL = no limit
    after: int | None  # only snapshots newer than this (ns); None = all
    seen: str | None = None  # the bucket of the last snapshot this rule kept

    def offer(self, it: Item, wall: datetime, nr: int, *, oldest: bool) -> str | None:
        if self.left == 0 or not _after(it, self.after):
            return None
        label = str(nr + 1) if self.period is None else _BUCKET[self.period](wall)
        if label == self.seen and not oldest:
            return None
        reason = f"{'oldest ' if label == self.seen else ''}{self.name} {label}"
        self.seen = label
        if self.left > 0:
            self.left -= 1
        return reason


_Key = tuple[str | None, tuple[str, ...] | None]  # (host, sorted paths); None: not grouped by it


def _decide_group(key: _Key, members: list[Item], p: Policy, tz: tzinfo | None, now: int) -> Group:
    items = sorted(members, key=lambda i: (i.time_ns, i.id), reverse=True)
    if p.is_empty():
        return Group(*key, tuple(Kept(i, ("no policy: keep everything",)) for i in items), ())
    newest = max((i.time_ns for i in items if i.time_ns < now), default=None)

    def since(span: Duration) -> int | None:
        return None if newest is None else _cutoff(newest, span, tz)

    # In restic's order, which is the order of the reasons.
    rules = [_Rule("last", None, p.keep_last, None)] if p.keep_last else []
    rules += [_Rule(x, x, n, None) for x in PERIODS if (n := getattr(p, f"keep_{x}"))]
    rules += [
        _Rule(f"{x} within {d}", x, ALL, since(d))
        for x in PERIODS
        if (d := getattr(p, f"keep_within_{x}"))
    ]
    within = since(p.keep_within) if p.keep_within else None
    keep: list[Kept] = []
    remove: list[Item] = []
    for nr, it in enumerate(items):
        wall = datetime.fromtimestamp(it.time_ns // NS, tz)
        reasons = [f"within {p.keep_within}"] if p.keep_within and _after(it, within) else []
        for rule in rules:
            if reason := rule.offer(it, wall, nr, oldest=nr == len(items) - 1):
                reasons.append(reason)
        if reasons:
            keep.append(Kept(it, tuple(reasons)))
        else:
            remove.append(it)
    return Group(*key, tuple(keep), tuple(remove))


def _after(it: Item, cutoff: int | None) -> bool:
    return cutoff is None or it.time_ns > cutoff


def _cutoff(newest_ns: int, span: Duration, tz: tzinfo | None) -> int | None:
    """newest − span, as restic's latest.AddDate(-y, -m, -d).Add(-h): calendar fields on
    the local wall clock, then hours. None if that is before year 1 (nothing is older)."""
    sec, frac = divmod(newest_ns, NS)
    wall = datetime.fromtimestamp(sec, tz)
    year, month0 = divmod(wall.year * 12 + wall.month - 1 - span.years * 12 - span.months, 12)
    try:
        # Counting days from the 1st normalises an overflowing day as Go does
        # ("31 February" is 3 March).
        first = wall.replace(year=year, month=month0 + 1, day=1)
        day = first + timedelta(days=wall.day - 1 - span.days)
        return int(day.timestamp()) * NS + frac - span.hours * 3600 * NS
    except (ValueError, OverflowError, OSError):
        return None
