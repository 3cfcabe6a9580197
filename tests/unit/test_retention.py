"""Retention rules (client/repo/retention.py), in the spirit of restic's policy tests: each
rule alone, then together, at period boundaries, across DST changes, per group. Times are
fixed and so is the zone (passed as `tz`), so nothing depends on the machine's clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

import pytest

from anysync.client.repo.retention import (
    ALL,
    SYNC_DEFAULT,
    Decision,
    Duration,
    Item,
    Policy,
    decide,
    parse_count,
)
from anysync.errors import IntegrityError, UsageError

BERLIN = ZoneInfo("Europe/Berlin")
NS = 1_000_000_000
NOW = "2030-01-01 00:00"  # after every snapshot below unless a test says otherwise


def at(text: str, tz: tzinfo = UTC) -> int:
    """'2026-11-29 10:20[:30]' on the wall clock of tz, as ns since the epoch."""
    return int(datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()) * NS


def items(
    *times: str, tz: tzinfo = UTC, host: str = "h", paths: tuple[str, ...] = ("/a",)
) -> list[Item]:
    return [Item(f"id-{t}", at(t, tz), host, paths) for t in times]


def run(snaps: list[Item], policy: Policy, tz: tzinfo = UTC, now: str = NOW, **kw: str) -> Decision:
    return decide(snaps, policy, tz=tz, now_ns=at(now, tz), **kw)


def kept(d: Decision) -> list[str]:
    """IDs kept, minus the "id-" prefix: the wall-clock times of the snapshots."""
    return [k.item.id[3:] for k in d.keep]


def reasons(d: Decision) -> dict[str, tuple[str, ...]]:
    return {k.item.id[3:]: k.reasons for k in d.keep}


def daily(first: str, days: int, hour: str = "10:00") -> list[Item]:
    start = datetime.fromisoformat(first)
    return items(*(f"{(start + timedelta(days=n)).date()} {hour}" for n in range(days)))


# --- the empty policy ---------------------------------------------------------------------


def test_empty_policy_keeps_everything_and_says_so() -> None:
    snaps = items("2026-11-01 10:00", "2026-11-02 10:00")
    d = run(snaps, Policy())
    assert Policy().is_empty()
    assert kept(d) == ["2026-11-02 10:00", "2026-11-01 10:00"]
    assert d.remove == []
    assert {r for k in d.keep for r in k.reasons} == {"no policy: keep everything"}


def test_a_zero_duration_is_no_rule() -> None:
    assert Policy(keep_within=Duration.parse("0d")).is_empty()
    assert Policy(keep_within=Duration()) == Policy()
    assert not Policy(keep_last=1).is_empty()
    assert not Policy(keep_within_daily=Duration(hours=1)).is_empty()


def test_no_snapshots_no_groups() -> None:
    assert run([], Policy(keep_last=3)) == Decision(())


# --- each rule alone ----------------------------------------------------------------------


def test_keep_last() -> None:
    snaps = items("2026-11-01 10:00", "2026-11-01 11:00", "2026-11-02 10:00", "2026-11-03 10:00")
    d = run(snaps, Policy(keep_last=3))
    assert kept(d) == ["2026-11-03 10:00", "2026-11-02 10:00", "2026-11-01 11:00"]
    assert [k.reasons for k in d.keep] == [("last 1",), ("last 2",), ("last 3",)]
    assert [r.id for r in d.remove] == ["id-2026-11-01 10:00"]


def test_keep_last_more_than_there_are_or_unlimited_keeps_all() -> None:
    snaps = items("2026-11-01 10:00", "2026-11-02 10:00")
    assert len(run(snaps, Policy(keep_last=10)).keep) == 2
    assert len(run(snaps, Policy(keep_last=ALL)).keep) == 2


def test_keep_daily_keeps_the_newest_of_each_day() -> None:
    snaps = items("2026-11-01 09:00", "2026-11-01 18:00", "2026-11-02 08:00", "2026-11-02 20:00")
    d = run(snaps, Policy(keep_daily=2))
    assert reasons(d) == {
        "2026-11-02 20:00": ("daily 2026-11-02",),
        "2026-11-01 18:00": ("daily 2026-11-01",),
    }


def test_unlimited_never_runs_out_so_the_oldest_is_always_kept() -> None:
    # As restic: "unlimited" is a count that is always left over.
    snaps = items("2026-11-01 09:00", "2026-11-01 18:00", "2026-11-02 08:00", "2026-11-02 20:00")
    assert reasons(run(snaps, Policy(keep_daily=ALL))) == {
        "2026-11-02 20:00": ("daily 2026-11-02",),
        "2026-11-01 18:00": ("daily 2026-11-01",),
        "2026-11-01 09:00": ("oldest daily 2026-11-01",),
    }


def test_keep_daily_counts_only_days_with_snapshots() -> None:
    # A gap of a week does not use up the count: the 3 newest days that have one.
    snaps = items("2026-10-01 10:00", "2026-10-02 10:00", "2026-10-20 10:00", "2026-10-30 10:00")
    assert kept(run(snaps, Policy(keep_daily=3))) == [
        "2026-10-30 10:00",
        "2026-10-20 10:00",
        "2026-10-02 10:00",
    ]


def test_oldest_is_kept_while_a_count_is_left() -> None:
    # Two days, three daily slots: the oldest snapshot is kept too, marked "oldest".
    snaps = items("2026-11-01 09:00", "2026-11-01 18:00", "2026-11-02 10:00")
    d = run(snaps, Policy(keep_daily=3))
    assert reasons(d) == {
        "2026-11-02 10:00": ("daily 2026-11-02",),
        "2026-11-01 18:00": ("daily 2026-11-01",),
        "2026-11-01 09:00": ("oldest daily 2026-11-01",),
    }


def test_oldest_is_not_kept_once_the_count_is_used_up() -> None:
    snaps = items("2026-11-01 09:00", "2026-11-01 18:00", "2026-11-02 10:00")
    assert kept(run(snaps, Policy(keep_daily=2))) == ["2026-11-02 10:00", "2026-11-01 18:00"]


def test_keep_hourly() -> None:
    snaps = items("2026-11-01 10:05", "2026-11-01 10:55", "2026-11-01 11:00", "2026-11-01 13:30")
    d = run(snaps, Policy(keep_hourly=2))
    assert reasons(d) == {
        "2026-11-01 13:30": ("hourly 2026-11-01 13:00",),
        "2026-11-01 11:00": ("hourly 2026-11-01 11:00",),
    }


def test_keep_weekly_uses_iso_weeks_monday_to_sunday() -> None:
    # 2026-11-29 is a Sunday, 2026-11-30 the Monday after: two weeks.
    snaps = items("2026-11-23 10:00", "2026-11-29 23:59", "2026-11-30 00:00")
    d = run(snaps, Policy(keep_weekly=2))
    assert reasons(d) == {
        "2026-11-30 00:00": ("weekly 2026-W49",),
        "2026-11-29 23:59": ("weekly 2026-W48",),
    }


def test_keep_weekly_across_new_year_is_one_iso_week() -> None:
    # 2026-12-31 (Thursday) and 2027-01-01 (Friday) are both in ISO week 2026-W53.
    snaps = items("2026-12-20 10:00", "2026-12-31 10:00", "2027-01-01 10:00")
    assert reasons(run(snaps, Policy(keep_weekly=1))) == {"2027-01-01 10:00": ("weekly 2026-W53",)}


def test_keep_monthly_and_yearly() -> None:
    snaps = items("2024-06-01 10:00", "2025-03-01 10:00", "2025-03-20 10:00", "2025-12-31 23:00")
    assert reasons(run(snaps, Policy(keep_monthly=2))) == {
        "2025-12-31 23:00": ("monthly 2025-12",),
        "2025-03-20 10:00": ("monthly 2025-03",),
    }
    assert reasons(run(snaps, Policy(keep_yearly=ALL))) == {
        "2025-12-31 23:00": ("yearly 2025",),
        "2024-06-01 10:00": ("yearly 2024",),
    }


# --- ties and boundaries ------------------------------------------------------------------


def test_last_nanosecond_of_a_day_and_first_of_the_next_are_two_days() -> None:
    late = Item("late", at("2026-11-01 00:00") - 1)
    early = Item("early", at("2026-11-01 00:00"))
    d = run([late, early], Policy(keep_daily=ALL))
    assert [(k.item.id, k.reasons) for k in d.keep] == [
        ("early", ("daily 2026-11-01",)),
        ("late", ("daily 2026-10-31",)),
    ]


def test_equal_times_are_ordered_by_id_the_same_for_every_input_order() -> None:
    t = at("2026-11-01 10:00")
    snaps = [Item(i, t, "h", ("/a",)) for i in ("b", "d", "a", "c")] + [Item("old", t - NS)]
    for _ in range(10):
        random.shuffle(snaps)
        d = run(snaps, Policy(keep_daily=1), group_by="")
        assert [k.item.id for k in d.keep] == ["d"]  # the highest ID counts as the newest
        assert [r.id for r in d.remove] == ["c", "b", "a", "old"]


# --- local time and DST -------------------------------------------------------------------


def test_days_and_months_are_those_of_the_given_zone() -> None:
    # 22:30 UTC on 30 June is 00:30 on 1 July in Berlin (CEST, UTC+2).
    snaps = [Item("x", at("2026-06-30 22:30"))]
    assert run(snaps, Policy(keep_monthly=1), tz=UTC).keep[0].reasons == ("monthly 2026-06",)
    assert run(snaps, Policy(keep_monthly=1), tz=BERLIN).keep[0].reasons == ("monthly 2026-07",)
    assert run(snaps, Policy(keep_daily=1), tz=BERLIN).keep[0].reasons == ("daily 2026-07-01",)


def test_the_repeated_hour_when_clocks_go_back_is_one_hourly_period() -> None:
    # Berlin, 25 Oct 2026: 03:00 CEST becomes 02:00 CET, so 02:30 happens twice, one
    # real hour apart. Periods are wall-clock periods (as restic's): one hourly period.
    first = Item("cest", at("2026-10-25 00:30"))  # 02:30 CEST
    second = Item("cet", at("2026-10-25 01:30"))  # 02:30 CET
    before = Item("before", at("2026-10-24 23:30"))  # 01:30 CEST, an hour of its own
    d = run([before, first, second], Policy(keep_hourly=2), tz=BERLIN)
    assert [(k.item.id, k.reasons) for k in d.keep] == [
        ("cet", ("hourly 2026-10-25 02:00",)),
        ("before", ("hourly 2026-10-25 01:00",)),
    ]
    assert [r.id for r in d.remove] == ["cest"]


def test_the_short_day_in_spring_is_still_one_day() -> None:
    # Berlin, 29 March 2026 has 23 hours; 00:30 and 23:30 local are both that day.
    snaps = items("2026-03-28 12:00", "2026-03-29 00:30", "2026-03-29 23:30", tz=BERLIN)
    d = run(snaps, Policy(keep_daily=2), tz=BERLIN, now="2026-04-01 00:00")
    assert reasons(d) == {
        "2026-03-29 23:30": ("daily 2026-03-29",),
        "2026-03-28 12:00": ("daily 2026-03-28",),
    }


def test_keep_within_1d_is_a_calendar_day_across_dst() -> None:
    # Clocks went forward on 29 March 2026 at 02:00: from 12:00 on 28 March to 12:00 on
    # 29 March is 23 hours. "1d" follows the calendar (restic's AddDate); "24h" the clock.
    newest = datetime(2026, 3, 29, 12, 0, tzinfo=BERLIN)
    n, hour = int(newest.timestamp()) * NS, 3600 * NS
    snaps = [Item("newest", n), Item("22h", n - 22 * hour), Item("23h30", n - 47 * hour // 2)]
    day = run(snaps, Policy(keep_within=Duration(days=1)), tz=BERLIN)
    assert [k.item.id for k in day.keep] == ["newest", "22h"]
    hours = run(snaps, Policy(keep_within=Duration(hours=24)), tz=BERLIN)
    assert [k.item.id for k in hours.keep] == ["newest", "22h", "23h30"]


# --- keep-within --------------------------------------------------------------------------


def test_keep_within_counts_back_from_the_newest_snapshot_not_from_now() -> None:
    # The newest snapshot is months old: keep-within still keeps the 30 days before it,
    # so a source that stopped backing up does not lose its last month.
    snaps = items("2026-03-01 10:00", "2026-04-30 10:00", "2026-05-20 10:00", "2026-05-31 10:00")
    d = run(snaps, Policy(keep_within=Duration(days=30)), now="2026-11-30 00:00")
    assert reasons(d) == {
        "2026-05-31 10:00": ("within 30d",),
        "2026-05-20 10:00": ("within 30d",),
    }


def test_keep_within_boundary_is_exclusive() -> None:
    newest = at("2026-11-30 10:00")
    cutoff = at("2026-11-20 10:00")
    snaps = [Item("newest", newest), Item("edge", cutoff), Item("inside", cutoff + 1)]
    d = run(snaps, Policy(keep_within=Duration(days=10)))
    assert [k.item.id for k in d.keep] == ["newest", "inside"]
    assert [r.id for r in d.remove] == ["edge"]


def test_keep_within_months_normalise_like_go() -> None:
    # 31 March minus one month is "31 February", which Go (and so restic) reads as 3 March.
    snaps = items("2026-03-31 12:00", "2026-03-03 12:00", "2026-03-03 12:01", "2026-02-28 12:00")
    d = run(snaps, Policy(keep_within=Duration(months=1)))
    assert kept(d) == ["2026-03-31 12:00", "2026-03-03 12:01"]


def test_keep_within_ignores_snapshots_dated_in_the_future() -> None:
    # A device whose clock runs a year ahead must not make every other snapshot look old.
    snaps = items("2027-11-30 10:00", "2026-11-29 10:00", "2026-11-25 10:00", "2026-10-01 10:00")
    d = run(snaps, Policy(keep_within=Duration(days=7)), now="2026-11-30 12:00")
    assert kept(d) == ["2027-11-30 10:00", "2026-11-29 10:00", "2026-11-25 10:00"]


def test_keep_within_when_every_snapshot_is_in_the_future_keeps_them_all() -> None:
    snaps = items("2027-01-01 10:00", "2026-12-01 10:00")
    d = run(snaps, Policy(keep_within=Duration(days=1)), now="2026-11-30 12:00")
    assert len(d.keep) == 2


def test_keep_within_longer_than_the_calendar_keeps_everything() -> None:
    snaps = items("0002-01-01 10:00", "2026-11-29 10:00")
    assert len(run(snaps, Policy(keep_within=Duration(years=5000))).keep) == 2
    assert len(run(snaps, Policy(keep_within=Duration(days=999_999_999))).keep) == 2


def test_keep_within_daily_keeps_one_per_day_inside_the_span() -> None:
    snaps = items(
        "2026-11-20 10:00",  # outside 7d of the newest
        "2026-11-25 09:00",
        "2026-11-25 18:00",
        "2026-11-29 08:00",
        "2026-11-29 21:00",
    )
    d = run(snaps, Policy(keep_within_daily=Duration(days=7)))
    assert reasons(d) == {
        "2026-11-29 21:00": ("daily within 7d 2026-11-29",),
        "2026-11-25 18:00": ("daily within 7d 2026-11-25",),
    }


def test_keep_within_daily_keeps_the_oldest_if_it_is_inside() -> None:
    snaps = items("2026-11-25 09:00", "2026-11-25 18:00", "2026-11-29 08:00")
    d = run(snaps, Policy(keep_within_daily=Duration(days=7)))
    assert reasons(d)["2026-11-25 09:00"] == ("oldest daily within 7d 2026-11-25",)


def test_keep_within_hourly_weekly_monthly_yearly() -> None:
    snaps = items("2024-05-01 10:00", "2025-05-01 10:00", "2026-10-01 10:00", "2026-11-29 10:00")
    y = run(snaps, Policy(keep_within_yearly=Duration(years=2)))
    assert kept(y) == ["2026-11-29 10:00", "2025-05-01 10:00"]
    m = run(snaps, Policy(keep_within_monthly=Duration(months=3)))
    assert kept(m) == ["2026-11-29 10:00", "2026-10-01 10:00"]
    w = run(snaps, Policy(keep_within_weekly=Duration(days=7)))
    assert kept(w) == ["2026-11-29 10:00"]
    h = run(snaps, Policy(keep_within_hourly=Duration(hours=1)))
    assert reasons(h) == {"2026-11-29 10:00": ("hourly within 1h 2026-11-29 10:00",)}


# --- combinations -------------------------------------------------------------------------


def test_daily_weekly_monthly_together_keep_the_union() -> None:
    # A snapshot every day at 10:00 from 1 Jan to 29 Nov 2026 (a Sunday).
    snaps = daily("2026-01-01", 333)
    d = run(snaps, Policy(keep_daily=7, keep_weekly=4, keep_monthly=12))
    days = [t[:10] for t in kept(d)]
    assert days == [
        *(f"2026-11-{n}" for n in range(29, 22, -1)),  # 7 daily
        "2026-11-22", "2026-11-15", "2026-11-08",  # weekly: W47, W46, W45
        "2026-10-31", "2026-09-30", "2026-08-31", "2026-07-31", "2026-06-30",  # monthly
        "2026-05-31", "2026-04-30", "2026-03-31", "2026-02-28", "2026-01-31",
        "2026-01-01",  # the twelfth monthly slot was left: the oldest
    ]  # fmt: skip
    r = reasons(d)
    assert r["2026-11-29 10:00"] == ("daily 2026-11-29", "weekly 2026-W48", "monthly 2026-11")
    assert r["2026-01-01 10:00"] == ("oldest monthly 2026-01",)
    assert len(d.remove) == 333 - len(days)


def test_any_rule_keeps_a_snapshot() -> None:
    snaps = items("2020-01-01 10:00", "2026-11-01 10:00", "2026-11-28 10:00", "2026-11-29 10:00")
    d = run(snaps, Policy(keep_last=1, keep_yearly=2, keep_within=Duration(days=2)))
    assert reasons(d) == {
        "2026-11-29 10:00": ("within 2d", "last 1", "yearly 2026"),
        "2026-11-28 10:00": ("within 2d",),
        "2020-01-01 10:00": ("yearly 2020",),
    }


def test_sync_default_every_version_for_30_days_then_daily_for_a_year() -> None:
    spelled = Policy(keep_within=Duration.parse("30d"), keep_within_daily=Duration.parse("1y"))
    assert spelled == SYNC_DEFAULT
    start = datetime(2024, 11, 1, 0, 0, tzinfo=UTC)
    snaps = [
        Item(f"{n:05}", int((start + timedelta(hours=6 * n)).timestamp()) * NS)
        for n in range(4 * 760)
    ]
    d = run(snaps, SYNC_DEFAULT, now="2026-12-01 00:00")
    newest = datetime.fromtimestamp(snaps[-1].time_ns // NS, UTC)
    month_ago, year_ago = newest - timedelta(days=30), newest.replace(year=newest.year - 1)
    for k in d.keep:
        t = datetime.fromtimestamp(k.item.time_ns // NS, UTC)
        assert t > year_ago
        if t <= month_ago:
            assert k.reasons == (f"daily within 1y {t.date()}",)
            assert t.hour == 18  # the newest of its day
    recent = [i for i in snaps if datetime.fromtimestamp(i.time_ns // NS, UTC) > month_ago]
    assert len(recent) == 4 * 30 and all(i in [k.item for k in d.keep] for i in recent)
    older_days = {k.reasons[0][-10:] for k in d.keep if k.reasons[0].startswith("daily")}
    assert len(older_days) == len(d.keep) - len(recent) == 365 - 30


def test_every_non_empty_policy_keeps_the_newest_of_each_group() -> None:
    snaps = daily("2026-01-01", 40) + items("2026-03-01 10:00", host="other")
    for policy in [
        Policy(keep_last=1),
        Policy(keep_hourly=1),
        Policy(keep_yearly=1),
        Policy(keep_within=Duration(hours=1)),
        Policy(keep_within_monthly=Duration(hours=1)),
    ]:
        d = run(snaps, policy)
        assert [g.keep[0].item.id for g in d.groups] == [
            "id-2026-02-09 10:00",
            "id-2026-03-01 10:00",
        ]


# --- groups -------------------------------------------------------------------------------


def _three_sources() -> list[Item]:
    return [
        Item("a1", at("2026-11-01 10:00"), "laptop", ("/home", "/etc")),
        Item("a2", at("2026-11-02 10:00"), "laptop", ("/etc", "/home")),  # same set, other order
        Item("b1", at("2026-11-03 10:00"), "laptop", ("/srv",)),
        Item("c1", at("2026-11-04 10:00"), "pi", ("/srv",)),
    ]


def test_by_default_each_backup_source_is_a_group() -> None:
    d = run(_three_sources(), Policy(keep_last=1))
    assert [(g.host, g.paths, [k.item.id for k in g.keep]) for g in d.groups] == [
        ("laptop", ("/etc", "/home"), ["a2"]),
        ("laptop", ("/srv",), ["b1"]),
        ("pi", ("/srv",), ["c1"]),
    ]
    assert [r.id for r in d.remove] == ["a1"]


@pytest.mark.parametrize(
    ("group_by", "keys", "keep"),
    [
        ("paths,host", [("laptop", ("/etc", "/home")), ("laptop", ("/srv",)), ("pi", ("/srv",))],
         ["a2", "b1", "c1"]),
        ("host", [("laptop", None), ("pi", None)], ["b1", "c1"]),
        ("hosts", [("laptop", None), ("pi", None)], ["b1", "c1"]),
        ("paths", [(None, ("/etc", "/home")), (None, ("/srv",))], ["a2", "c1"]),
        ("path", [(None, ("/etc", "/home")), (None, ("/srv",))], ["a2", "c1"]),
        ("", [(None, None)], ["c1"]),
    ],
)  # fmt: skip
def test_group_by(
    group_by: str, keys: list[tuple[str | None, tuple[str, ...] | None]], keep: list[str]
) -> None:
    d = run(_three_sources(), Policy(keep_last=1), group_by=group_by)
    assert [(g.host, g.paths) for g in d.groups] == keys
    assert [k.item.id for k in d.keep] == keep


def test_keep_within_is_relative_to_the_newest_of_each_group() -> None:
    snaps = [
        Item("old-newest", at("2025-01-10 10:00"), "old", ("/a",)),
        Item("old-inside", at("2025-01-05 10:00"), "old", ("/a",)),
        Item("new-newest", at("2026-11-29 10:00"), "new", ("/a",)),
        Item("new-outside", at("2026-11-01 10:00"), "new", ("/a",)),
    ]
    d = run(snaps, Policy(keep_within=Duration(days=7)))
    assert [k.item.id for k in d.keep] == ["new-newest", "old-newest", "old-inside"]


@pytest.mark.parametrize(
    ("group_by", "message"),
    [
        ("tags", "--group-by tags: AnySync snapshots have no tags"),
        ("host,device", "--group-by: unknown option 'device' (use host, paths, both, or '')"),
    ],
)
def test_group_by_errors(group_by: str, message: str) -> None:
    with pytest.raises(UsageError) as err:
        run(_three_sources(), Policy(keep_last=1), group_by=group_by)
    assert err.value.message == message


def test_every_snapshot_is_kept_or_removed_exactly_once() -> None:
    snaps = daily("2025-06-01", 300) + _three_sources()
    d = run(snaps, Policy(keep_daily=10, keep_monthly=6, keep_within=Duration(days=3)))
    ids = [k.item.id for k in d.keep] + [r.id for r in d.remove]
    assert sorted(ids) == sorted(i.id for i in snaps)


def test_default_zone_is_the_machines() -> None:
    # Smoke test: tz=None uses the local zone (whatever it is here) and the real clock.
    d = decide(items("2026-11-01 10:00", "2026-11-02 10:00"), Policy(keep_daily=1))
    assert len(d.keep) == 1


# --- durations and counts -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "duration", "shown"),
    [
        ("30d", Duration(days=30), "30d"),
        ("1y2m", Duration(years=1, months=2), "1y2m"),
        ("12h", Duration(hours=12), "12h"),
        ("2h1y", Duration(years=1, hours=2), "1y2h"),
        (" 6y5m234d37h ", Duration(6, 5, 234, 37), "6y5m234d37h"),
        ("0d", Duration(), "0h"),
    ],
)
def test_duration_parse(text: str, duration: Duration, shown: str) -> None:
    assert Duration.parse(text) == duration
    assert str(duration) == shown
    assert Duration.parse(str(duration)) == duration


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "it is empty (write e.g. 30d, 1y2m or 12h)"),
        ("30", "no unit after 30 (use y, m, d or h)"),
        ("d", "expected a number at 'd'"),
        ("1d h", "expected a number at ' h'"),
        ("1w", "unknown unit 'w' (use y, m, d or h; a week is 7d)"),
        ("30D", "unknown unit 'D' (use y, m, d or h; a week is 7d)"),
        ("1.5d", "unknown unit '.' (use y, m, d or h; a week is 7d)"),
        ("-1d", "durations cannot be negative"),
        ("1d-2h", "durations cannot be negative"),
        ("1d2d", "the unit 'd' is given twice"),
    ],
)
def test_duration_errors_are_one_clear_line(text: str, why: str) -> None:
    with pytest.raises(UsageError) as err:
        Duration.parse(text)
    assert err.value.message == f"invalid duration {text!r}: {why}"
    assert "\n" not in err.value.message


def test_parse_count() -> None:
    assert parse_count("7") == 7
    assert parse_count("0") == 0
    assert parse_count("unlimited") == ALL
    for bad in ("-1", "-2", "x", "", "1.5"):
        with pytest.raises(UsageError, match="give a whole number ≥ 0 or 'unlimited'"):
            parse_count(bad)


@pytest.mark.parametrize("count", [-2, True, 1.5, "3"])
def test_policy_refuses_bad_counts(count: object) -> None:
    with pytest.raises(UsageError, match="--keep-daily takes a count ≥ 0 or unlimited"):
        Policy(keep_daily=count)  # type: ignore[arg-type]


def test_policy_describes_itself() -> None:
    assert str(Policy()) == "keep everything (no policy)"
    assert str(SYNC_DEFAULT) == "keep daily within 1y; all within 30d of the newest"
    assert (
        str(Policy(keep_last=3, keep_daily=7, keep_yearly=ALL))
        == "keep 3 last, 7 daily, all yearly"
    )


# --- serialisation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "policy",
    [
        Policy(),
        SYNC_DEFAULT,
        Policy(
            keep_last=3,
            keep_hourly=ALL,
            keep_daily=7,
            keep_weekly=5,
            keep_monthly=12,
            keep_yearly=1,
        ),
        Policy(
            keep_within=Duration(1, 2, 3, 4),
            keep_within_hourly=Duration(hours=48),
            keep_within_daily=Duration(days=90),
            keep_within_weekly=Duration(months=6),
            keep_within_monthly=Duration(years=2),
            keep_within_yearly=Duration(years=75),
        ),
    ],
)
def test_policy_round_trips(policy: Policy) -> None:
    assert Policy.from_bytes(policy.to_bytes()) == policy


def test_policy_bytes_are_canonical_json_with_a_version() -> None:
    assert SYNC_DEFAULT.to_bytes() == b'{"keep_within":"30d","keep_within_daily":"1y","v":1}'
    assert Policy().to_bytes() == b'{"v":1}'


@pytest.mark.parametrize("data", [b'{"v":2,"keep_daily":7}', b'{"keep_daily":7}', b'{"v":"1"}'])
def test_unknown_policy_version_is_refused(data: bytes) -> None:
    with pytest.raises(IntegrityError, match=r"is unknown to this AnySync .* upgrade AnySync"):
        Policy.from_bytes(data)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"not json", "Expecting value"),
        (b"[1]", "not a JSON object"),
        (b'{"v":1,"keep_tags":["x"]}', "unknown rules \\['keep_tags'\\]"),
        (b'{"v":1,"keep_daily":"7"}', "--keep-daily takes a count"),
        (b'{"v":1,"keep_daily":true}', "--keep-daily takes a count"),
        (b'{"v":1,"keep_daily":-5}', "--keep-daily takes a count"),
        (b'{"v":1,"keep_within":30}', "retention policy is malformed"),
        (b'{"v":1,"keep_within":"30x"}', "invalid duration '30x'"),
        (b"\xff", "retention policy is malformed"),
    ],
)
def test_malformed_policy_is_refused(data: bytes, why: str) -> None:
    with pytest.raises(IntegrityError, match=why) as err:
        Policy.from_bytes(data)
    assert err.value.message.startswith("retention policy is malformed: ")
