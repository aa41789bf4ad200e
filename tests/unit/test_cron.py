"""Cron expressions: parsing, errors, fire times, daylight saving, and a brute-force check."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgqueuer.core.cron import CRON_ALIASES, CronExpression, validate_timezone
from pgqueuer.errors import ConfigurationError, CronError

OSLO = ZoneInfo("Europe/Oslo")
NEW_YORK = ZoneInfo("America/New_York")


def at(
    zone: ZoneInfo,
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    *,
    fold: int = 0,
) -> datetime:
    """A local wall-clock time in ``zone`` as an aware UTC datetime."""
    return datetime(year, month, day, hour, minute, tzinfo=zone, fold=fold).astimezone(UTC)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# ---- parsing ---------------------------------------------------------------------------------


def test_five_field_expression() -> None:
    cron = CronExpression.parse("  */5   9-17  * *   MON-fri ")
    assert cron.expression == "*/5 9-17 * * MON-FRI"
    assert cron.timezone == "UTC"
    assert not cron.has_seconds
    assert cron == CronExpression.parse("*/5 9-17 * * mon-FRI")
    assert hash(cron) == hash(CronExpression("*/5 9-17 * * mon-fri"))


def test_six_field_expression_has_seconds_last() -> None:
    cron = CronExpression.parse("* * * * * */10", "Europe/Oslo")
    assert cron.has_seconds
    assert cron.expression == "* * * * * */10"  # stored as written, seconds last
    assert cron.timezone == "Europe/Oslo"
    assert cron.next_after(utc(2026, 5, 4, 10, 7, 5)) == utc(2026, 5, 4, 10, 7, 10)


def test_the_1x_every_five_seconds_example() -> None:
    # pgqueuer 1.x (croniter): @pgq.schedule("s", "* * * * * */5") runs every 5 seconds.
    cron = CronExpression.parse("* * * * * */5")
    start = utc(2026, 5, 4, 10, 7, 0) - timedelta(microseconds=1)
    times = list(cron.fire_times(start, utc(2026, 5, 4, 10, 9, 0)))
    assert [(t.minute, t.second) for t in times] == [
        (minute, second) for minute in (7, 8) for second in range(0, 60, 5)
    ] + [(9, 0)]
    assert "fifth second" in cron.explain()


def test_a_fixed_time_of_day_with_seconds() -> None:
    cron = CronExpression.parse("30 2 * * * 15")  # 02:30:15 every day
    assert not cron.interval_like
    assert cron.next_after(utc(2026, 5, 4)) == utc(2026, 5, 4, 2, 30, 15)
    assert cron.next_after(utc(2026, 5, 4, 2, 30, 15)) == utc(2026, 5, 5, 2, 30, 15)
    assert "02:30:15" in cron.explain()


def test_an_expression_in_the_seconds_first_order_means_something_else() -> None:
    # Quartz/cronsim's "30 0 2 * * *" is 02:00:30 daily; read seconds last it is every
    # second of 00:30 on the 2nd of each month.
    cron = CronExpression.parse("30 0 2 * * *")
    times = list(cron.fire_times(utc(2026, 5, 1), utc(2026, 6, 2, 0, 30)))
    assert times == [utc(2026, 5, 2, 0, 30, s) for s in range(60)] + [utc(2026, 6, 2, 0, 30)]


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        # Seconds first these were 02:30:00, 23:59:59 and noon on Mondays.
        ("0 30 2 * * *", "hour field '30': 30 is out of range 0-23"),
        ("59 59 23 * * *", "hour field '59': 59 is out of range 0-23"),
        ("0 0 12 * * MON", "second field 'MON' is not valid"),
        ("* * * * * 60", "second field '60': 60 is out of range 0-59"),
        ("0 0 30 2 * 0", "never fires: day-of-month '30' does not occur in month '2'"),
    ],
)
def test_six_field_errors_say_seconds_come_last(expression: str, problem: str) -> None:
    with pytest.raises(CronError) as caught:
        CronExpression.parse(expression)
    message = str(caught.value)
    assert problem in message
    assert "minute hour day-of-month month day-of-week second" in message
    assert "seconds come last, as in croniter and pgqueuer 1.x" in message


def test_five_field_errors_do_not_mention_seconds() -> None:
    with pytest.raises(CronError) as caught:
        CronExpression.parse("0 24 * * *")
    assert "second" not in str(caught.value)


@pytest.mark.parametrize(
    ("expression", "start", "expected"),
    [
        # What croniter(expression, start).get_next(datetime) gives, worked out by hand from
        # croniter's 6-field form (minute hour day-of-month month day-of-week second).
        (
            "* * * * * */5",
            utc(2026, 5, 4, 10, 7, 58),
            [utc(2026, 5, 4, 10, 8, 0), utc(2026, 5, 4, 10, 8, 5), utc(2026, 5, 4, 10, 8, 10)],
        ),
        (
            "*/15 9-17 * * MON-FRI 30",  # Friday 17:45:30, then Monday morning
            utc(2026, 5, 8, 17, 45, 30),
            [utc(2026, 5, 11, 9, 0, 30), utc(2026, 5, 11, 9, 15, 30)],
        ),
        (
            "0 0 1 1 * 10,20",
            utc(2026, 1, 1, 0, 0, 10),
            [utc(2026, 1, 1, 0, 0, 20), utc(2027, 1, 1, 0, 0, 10), utc(2027, 1, 1, 0, 0, 20)],
        ),
        (
            "59 23 31 12 * 59",
            utc(2026, 6, 1),
            [utc(2026, 12, 31, 23, 59, 59), utc(2027, 12, 31, 23, 59, 59)],
        ),
        (
            "0 12 * * * 0-10/5",
            utc(2026, 5, 4, 11, 59, 59),
            [
                utc(2026, 5, 4, 12, 0, 0),
                utc(2026, 5, 4, 12, 0, 5),
                utc(2026, 5, 4, 12, 0, 10),
                utc(2026, 5, 5, 12, 0, 0),
            ],
        ),
        (
            "*/20 * * * * 0",  # like "*/20 * * * *": second 0 of every 20th minute
            utc(2026, 5, 4, 10, 7, 5),
            [utc(2026, 5, 4, 10, 20), utc(2026, 5, 4, 10, 40), utc(2026, 5, 4, 11, 0)],
        ),
    ],
)
def test_six_fields_give_croniters_next_times(
    expression: str, start: datetime, expected: list[datetime]
) -> None:
    cron = CronExpression.parse(expression)
    got, cursor = [], start
    for _ in expected:
        cursor = cron.next_after(cursor)
        got.append(cursor)
    assert got == expected


@pytest.mark.parametrize("alias", sorted(CRON_ALIASES))
def test_every_alias_expands_to_five_fields(alias: str) -> None:
    cron = CronExpression.parse(alias)
    assert cron.expression == CRON_ALIASES[alias]
    assert len(cron.expression.split(" ")) == 5
    assert CronExpression.parse(alias.upper()) == cron


def test_alias_table() -> None:
    assert set(CRON_ALIASES) == {
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
    }
    assert CRON_ALIASES["@weekly"] == "0 0 * * 0"


@pytest.mark.parametrize(
    ("expression", "interval_like"),
    [
        ("30 2 * * *", False),
        ("0,30 1-3 * * *", False),
        ("30 2 * * * 0", False),
        ("*/15 * * * *", True),
        ("0 * * * *", True),
        ("0 */2 * * *", True),
        ("* 2 * * *", True),
        ("* * * * * *", True),
    ],
)
def test_interval_like_means_minute_or_hour_starts_with_a_star(
    expression: str, interval_like: bool
) -> None:
    assert CronExpression.parse(expression).interval_like is interval_like


@pytest.mark.parametrize(
    ("expression", "problems"),
    [
        ("* * *", ["'* * *'", "3 fields", "expected 5", "then second"]),
        ("* * * * * * *", ["7 fields"]),
        ("", ["0 fields"]),
        ("61 * * * *", ["'61 * * * *'", "minute", "61 is out of range 0-59"]),
        ("0 24 * * *", ["hour", "24 is out of range 0-23"]),
        ("0 0 32 * *", ["day-of-month", "32 is out of range 1-31"]),
        ("0 0 * 13 *", ["month", "13 is out of range 1-12"]),
        ("0 0 * * 8", ["day-of-week", "8 is out of range 0-7"]),
        ("60 * * * * *", ["minute field '60'", "60 is out of range 0-59"]),
        ("*/0 * * * *", ["'*/0 * * * *'", "minute", "step of 0"]),
        ("0 1-5/0 * * *", ["hour", "step of 0"]),
        ("5-1 * * * *", ["minute", "runs backwards"]),
        ("x * * * *", ["minute field 'x' is not valid"]),
        ("0 0 30 2 *", ["'0 0 30 2 *'", "never fires", "'30'", "'2'"]),
        ("0 0 31 4 *", ["'0 0 31 4 *'", "never fires", "'31'", "'4'"]),
        ("0 0 31 2,4,6 *", ["never fires"]),
        ("@reboot", ["'@reboot'", "unsupported alias"]),
        ("@every_minute", ["unsupported alias"]),
    ],
)
def test_bad_expressions_name_the_problem(expression: str, problems: list[str]) -> None:
    with pytest.raises(CronError) as caught:
        CronExpression.parse(expression)
    for problem in problems:
        assert problem in str(caught.value)


def test_cron_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="never fires"):
        CronExpression.parse("0 0 30 2 *")
    assert issubclass(CronError, ConfigurationError)


@pytest.mark.parametrize("expression", [5, None, b"* * * * *", ["*"] * 5])
def test_non_string_expression(expression: object) -> None:
    with pytest.raises(CronError, match="must be a string"):
        CronExpression.parse(expression)  # type: ignore[arg-type]


def test_a_one_value_range_with_a_step_is_that_one_value() -> None:
    # cron reads 5-5/2 as {5}; cronsim alone would read it as 5/2 (5, 7, 9, ...).
    cron = CronExpression.parse("5-5/2 * * * 0-0/1")
    assert cron.expression == "5 * * * 0"
    assert cron.next_after(utc(2026, 5, 3, 10, 5)) == utc(2026, 5, 3, 11, 5)  # a Sunday
    assert CronExpression.parse("5-7/2 * * * *").expression == "5-7/2 * * * *"
    with pytest.raises(CronError, match="step of 0"):
        CronExpression.parse("5-5/0 * * * *")


def test_rare_but_real_dates_are_accepted() -> None:
    assert CronExpression.parse("0 0 29 2 *").next_after(utc(2025, 1, 1)) == utc(2028, 2, 29)
    # A Monday 29 February: 2016, then 2044.
    assert CronExpression.parse("0 0 * 2 MON#5").next_after(utc(2017, 1, 1)) == utc(2044, 2, 29)


@pytest.mark.parametrize(
    ("zone", "problem"),
    [
        ("Mars/Base", "unknown time zone 'Mars/Base'"),
        ("utc", "unknown time zone 'utc'"),
        ("", "not an IANA name"),
        (" UTC", "not an IANA name"),
        ("Europe/Oslo ", "not an IANA name"),
        ("/etc/localtime", "not an IANA name"),
        ("../zoneinfo/UTC", "not an IANA name"),
        ("Europe//Oslo", "not an IANA name"),
        ("localtime", "not an IANA name"),
    ],
)
def test_bad_time_zones(zone: str, problem: str) -> None:
    with pytest.raises(CronError, match="time zone") as caught:
        CronExpression.parse("* * * * *", zone)
    assert problem in str(caught.value)
    with pytest.raises(CronError):
        validate_timezone(zone)


def test_time_zone_must_be_a_string() -> None:
    with pytest.raises(CronError, match="must be a string"):
        validate_timezone(1)  # type: ignore[arg-type]


def test_validate_timezone_returns_the_zone() -> None:
    assert validate_timezone("Europe/Oslo") == OSLO
    assert validate_timezone("Etc/GMT+5").key == "Etc/GMT+5"


def test_explain() -> None:
    text = CronExpression.parse("0 9 * * 1-5", "Europe/Oslo").explain()
    assert "09:00" in text
    assert "Monday" in text
    assert text.endswith("(Europe/Oslo)")


def test_explain_falls_back_to_the_expression(monkeypatch: pytest.MonkeyPatch) -> None:
    import cronsim

    def broken(self: object) -> str:
        raise RuntimeError("no explanation")

    monkeypatch.setattr(cronsim.CronSim, "explain", broken)
    assert CronExpression.parse("0 9 * * 1-5").explain() == "0 9 * * 1-5 (UTC)"


# ---- fire times ------------------------------------------------------------------------------


def test_every_quarter_hour() -> None:
    cron = CronExpression.parse("*/15 * * * *")
    fired = cron.next_after(utc(2026, 5, 4, 10, 7))
    assert fired == utc(2026, 5, 4, 10, 15)
    assert fired.tzinfo is UTC
    # Strictly after: a fire time equal to `after` is not returned again.
    assert cron.next_after(fired) == utc(2026, 5, 4, 10, 30)
    assert cron.next_after(fired - timedelta(microseconds=1)) == fired


def test_weekdays_at_nine_in_oslo() -> None:
    cron = CronExpression.parse("0 9 * * 1-5", "Europe/Oslo")
    friday = at(OSLO, 2026, 5, 8, 9)
    assert friday == utc(2026, 5, 8, 7)  # summer time, UTC+2
    assert cron.next_after(friday) == at(OSLO, 2026, 5, 11, 9) == utc(2026, 5, 11, 7)
    assert cron.next_after(utc(2026, 1, 9, 12)) == utc(2026, 1, 12, 8)  # winter, UTC+1


def test_daily_in_new_york() -> None:
    cron = CronExpression.parse("@daily", "America/New_York")
    assert cron.next_after(utc(2026, 5, 4, 10, 7)) == utc(2026, 5, 5, 4)  # EDT
    assert cron.next_after(utc(2026, 1, 4, 10, 7)) == utc(2026, 1, 5, 5)  # EST
    # `after` may be in any zone; the answer is always UTC.
    assert cron.next_after(datetime(2026, 1, 4, 23, 59, tzinfo=NEW_YORK)) == utc(2026, 1, 5, 5)


def test_six_fields_every_ten_seconds() -> None:
    cron = CronExpression.parse("* * * * * */10")
    start = utc(2026, 5, 4, 10, 7, 55)
    times = list(cron.fire_times(start, start + timedelta(seconds=30)))
    assert times == [start + timedelta(seconds=s) for s in (5, 15, 25)]


def test_fire_times_window_is_open_closed() -> None:
    cron = CronExpression.parse("0 * * * *")
    times = list(cron.fire_times(utc(2026, 1, 1, 1), utc(2026, 1, 1, 4)))
    assert times == [utc(2026, 1, 1, 2), utc(2026, 1, 1, 3), utc(2026, 1, 1, 4)]
    assert list(cron.fire_times(utc(2026, 1, 1, 4), utc(2026, 1, 1, 4))) == []


def test_naive_datetimes_are_refused() -> None:
    cron = CronExpression.parse("* * * * *")
    with pytest.raises(CronError, match="timezone-aware"):
        cron.next_after(datetime(2026, 1, 1))
    with pytest.raises(CronError, match="timezone-aware"):
        cron.fire_times(utc(2026, 1, 1), datetime(2026, 1, 2))  # refused at the call
    with pytest.raises(TypeError, match="datetime"):
        cron.next_after("2026-01-01")  # type: ignore[arg-type]


# ---- daylight saving -------------------------------------------------------------------------


def fires_by_local_day(
    cron: CronExpression, zone: ZoneInfo, first: date, last: date
) -> dict[date, list[datetime]]:
    """Fire times grouped by local calendar day, for local days first..last inclusive."""
    start = at(zone, first.year, first.month, first.day) - timedelta(microseconds=1)
    end_day = last + timedelta(days=1)
    end = at(zone, end_day.year, end_day.month, end_day.day) - timedelta(microseconds=1)
    days: dict[date, list[datetime]] = {}
    for fired in cron.fire_times(start, end):
        days.setdefault(fired.astimezone(zone).date(), []).append(fired)
    return days


def assert_strictly_increasing(times: list[datetime]) -> None:
    assert all(a < b for a, b in pairwise(times)), times
    assert len(set(times)) == len(times)


@pytest.mark.parametrize(
    ("expression", "zone", "day", "expected"),
    [
        # Spring forward: 02:30 does not exist; it fires once at the end of the gap, 03:00.
        ("30 2 * * *", OSLO, date(2026, 3, 29), at(OSLO, 2026, 3, 29, 3)),
        ("30 2 * * *", NEW_YORK, date(2026, 3, 8), at(NEW_YORK, 2026, 3, 8, 3)),
        # Fall back: 02:30 (Oslo) and 01:30 (New York) happen twice; it fires at the first.
        ("30 2 * * *", OSLO, date(2026, 10, 25), at(OSLO, 2026, 10, 25, 2, 30, fold=0)),
        ("30 1 * * *", NEW_YORK, date(2026, 11, 1), at(NEW_YORK, 2026, 11, 1, 1, 30, fold=0)),
    ],
)
def test_fixed_time_fires_once_per_day_across_a_change(
    expression: str, zone: ZoneInfo, day: date, expected: datetime
) -> None:
    cron = CronExpression.parse(expression, zone.key)
    days = fires_by_local_day(cron, zone, day - timedelta(days=3), day + timedelta(days=3))
    assert sorted(days) == [day + timedelta(days=n) for n in range(-3, 4)]
    assert all(len(times) == 1 for times in days.values()), days
    assert days[day] == [expected]
    times = [t for day_times in days.values() for t in day_times]
    assert_strictly_increasing(times)
    # Every other day fires at the written wall-clock time.
    hour, minute = int(expression.split(" ")[1]), int(expression.split(" ")[0])
    for other, (fired,) in days.items():
        if other != day:
            assert fired.astimezone(zone).timetuple()[3:5] == (hour, minute)


def test_the_documented_instants_in_utc() -> None:
    assert at(OSLO, 2026, 3, 29, 3) == utc(2026, 3, 29, 1)
    assert at(NEW_YORK, 2026, 3, 8, 3) == utc(2026, 3, 8, 7)
    assert at(OSLO, 2026, 10, 25, 2, 30) == utc(2026, 10, 25, 0, 30)  # CEST, not CET
    assert at(NEW_YORK, 2026, 11, 1, 1, 30) == utc(2026, 11, 1, 5, 30)  # EDT, not EST


@pytest.mark.parametrize(
    ("zone", "spring", "autumn"),
    [
        (OSLO, date(2026, 3, 29), date(2026, 10, 25)),
        (NEW_YORK, date(2026, 3, 8), date(2026, 11, 1)),
    ],
)
def test_interval_like_keeps_real_time_pace(zone: ZoneInfo, spring: date, autumn: date) -> None:
    cron = CronExpression.parse("*/30 * * * *", zone.key)
    for change, hours in ((spring, 23), (autumn, 25)):
        days = fires_by_local_day(
            cron, zone, change - timedelta(days=1), change + timedelta(days=1)
        )
        # Every 30 real minutes: 46 fires on the 23-hour day, 50 on the 25-hour day.
        assert {d: len(t) for d, t in days.items()} == {
            change - timedelta(days=1): 48,
            change: hours * 2,
            change + timedelta(days=1): 48,
        }
        times = [t for day_times in days.values() for t in day_times]
        assert_strictly_increasing(times)
        assert {b - a for a, b in pairwise(times)} == {timedelta(minutes=30)}


def test_interval_like_fires_in_both_passes_of_the_repeated_hour() -> None:
    cron = CronExpression.parse("*/30 * * * *", "America/New_York")
    times = list(cron.fire_times(utc(2026, 11, 1, 4), utc(2026, 11, 1, 8)))
    assert [t.astimezone(NEW_YORK).strftime("%H:%M%z") for t in times] == [
        "00:30-0400",
        "01:00-0400",
        "01:30-0400",
        "01:00-0500",
        "01:30-0500",
        "02:00-0500",
        "02:30-0500",
        "03:00-0500",
    ]


def test_interval_like_has_no_fire_times_inside_the_gap() -> None:
    # Minute starts with a star: interval-like, so 02:xx simply does not happen that day.
    cron = CronExpression.parse("*/15 2 * * *", "America/New_York")
    days = fires_by_local_day(cron, NEW_YORK, date(2026, 3, 7), date(2026, 3, 9))
    assert {d: len(t) for d, t in days.items()} == {date(2026, 3, 7): 4, date(2026, 3, 9): 4}


def test_several_times_in_one_gap_merge_into_one_fire() -> None:
    cron = CronExpression.parse("0,30 2,3 * * *", "America/New_York")
    times = list(cron.fire_times(utc(2026, 3, 8, 5), utc(2026, 3, 8, 9)))
    assert times == [at(NEW_YORK, 2026, 3, 8, 3), at(NEW_YORK, 2026, 3, 8, 3, 30)]


def test_six_field_fixed_time_also_moves_out_of_the_gap() -> None:
    # cronsim alone skips this day for 6-field expressions; we treat them like 5-field ones.
    cron = CronExpression.parse("30 2 * * * 0", "America/New_York")
    days = fires_by_local_day(cron, NEW_YORK, date(2026, 3, 7), date(2026, 3, 9))
    assert days[date(2026, 3, 8)] == [at(NEW_YORK, 2026, 3, 8, 3)]
    assert len(days) == 3


def test_starting_inside_the_second_pass() -> None:
    second_pass = at(NEW_YORK, 2026, 11, 1, 1, 40, fold=1)
    assert second_pass == utc(2026, 11, 1, 6, 40)
    # Fixed time: 01:45 already fired in the first pass, so the next one is tomorrow.
    fixed = CronExpression.parse("45 1 * * *", "America/New_York")
    assert fixed.next_after(second_pass) == at(NEW_YORK, 2026, 11, 2, 1, 45)
    # Interval-like: 01:45 of the second pass is still ahead.
    interval = CronExpression.parse("15,45 * * * *", "America/New_York")
    assert interval.next_after(second_pass) == utc(2026, 11, 1, 6, 45)
    # Starting in the first pass, the second pass is found although it is "earlier".
    first_pass = at(NEW_YORK, 2026, 11, 1, 1, 50)
    assert interval.next_after(first_pass) == at(NEW_YORK, 2026, 11, 1, 1, 15, fold=1)


@pytest.mark.parametrize(
    "expression", ["30 2 * * *", "30 1 * * *", "*/30 * * * *", "30 * * * * 0", "15 */2 * * *"]
)
@pytest.mark.parametrize("zone", [OSLO, NEW_YORK])
def test_next_after_chain_equals_fire_times(expression: str, zone: ZoneInfo) -> None:
    cron = CronExpression.parse(expression, zone.key)
    for start, end in ((utc(2026, 3, 6), utc(2026, 3, 31)), (utc(2026, 10, 23), utc(2026, 11, 3))):
        window = list(cron.fire_times(start, end))
        chained, cursor = [], start
        while (cursor := cron.next_after(cursor)) <= end:
            chained.append(cursor)
        assert chained == window
        assert_strictly_increasing(window)


# ---- property test against an independent brute-force matcher --------------------------------

# Values the generator writes (days 1-28, so every expression fires in every month) ...
WRITTEN = {"minute": (0, 59), "hour": (0, 23), "dom": (1, 28), "month": (1, 12), "dow": (0, 6)}
# ... and what a star stands for.
STAR = {"minute": (0, 59), "hour": (0, 23), "dom": (1, 31), "month": (1, 12), "dow": (0, 6)}
ZONES = ["UTC", "Europe/Oslo", "America/New_York"]


def expand(text: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        body, _, step = item.partition("/")
        if body == "*":
            first, last = low, high
        elif "-" in body:
            first, last = (int(n) for n in body.split("-"))
        else:
            first = last = int(body)
        values.update(range(first, last + 1, int(step or "1")))
    return values


@dataclass(frozen=True)
class Matcher:
    """Does a local wall-clock minute match a 5-field expression? Written from the spec."""

    sets: dict[str, set[int]]
    either_day: bool  # Vixie: both day fields restricted, so either may match
    fixed_time: bool  # neither minute nor hour starts with a star

    @classmethod
    def of(cls, expression: str) -> Matcher:
        texts = dict(zip(STAR, expression.split(" "), strict=True))
        sets = {name: expand(text, *STAR[name]) for name, text in texts.items()}
        either = not texts["dom"].startswith("*") and not texts["dow"].startswith("*")
        fixed = not texts["minute"].startswith("*") and not texts["hour"].startswith("*")
        return cls(sets, either, fixed)

    def __call__(self, wall: datetime) -> bool:
        if wall.second or wall.microsecond:
            return False
        dom = wall.day in self.sets["dom"]
        dow = wall.isoweekday() % 7 in self.sets["dow"]  # cron: Sunday is 0
        return (
            wall.minute in self.sets["minute"]
            and wall.hour in self.sets["hour"]
            and wall.month in self.sets["month"]
            and ((dom or dow) if self.either_day else (dom and dow))
        )

    def gap_ends_at(self, instant: datetime, zone: ZoneInfo) -> bool:
        """Is ``instant`` the end of a spring-forward gap holding a matching wall time?"""
        before = (instant - timedelta(seconds=1)).astimezone(zone).utcoffset()
        after = instant.astimezone(zone).utcoffset()
        if before is None or after is None or after <= before:
            return False
        wall = instant.astimezone(zone).replace(tzinfo=None)
        minutes = int((after - before).total_seconds() // 60)
        return any(self(wall - timedelta(minutes=m)) for m in range(1, minutes + 1))

    def fires_at(self, instant: datetime, zone: ZoneInfo) -> bool:
        """The documented rule, brute force: should the schedule fire at ``instant``?"""
        local = instant.astimezone(zone)
        if self(local.replace(tzinfo=None)):
            # A repeated wall time: fixed-time fires only at its first occurrence.
            return not (self.fixed_time and local.fold == 1)
        return self.fixed_time and self.gap_ends_at(instant, zone)


def transition_days(zone: ZoneInfo) -> list[datetime]:
    """UTC midnights just before each UTC offset change in 2000-2040."""
    days = []
    day = utc(2000, 1, 1)
    while day.year <= 2040:
        following = day + timedelta(days=1)
        if day.astimezone(zone).utcoffset() != following.astimezone(zone).utcoffset():
            days.append(day)
        day = following
    return days


TRANSITIONS = {name: transition_days(ZoneInfo(name)) for name in ZONES}


def field(name: str) -> st.SearchStrategy[str]:
    return field_between(*WRITTEN[name])


def field_between(low: int, high: int) -> st.SearchStrategy[str]:
    number = st.integers(low, high).map(str)
    span = st.tuples(st.integers(low, high), st.integers(low, high)).map(
        lambda pair: f"{min(pair)}-{max(pair)}"
    )
    stepped = st.tuples(span, st.integers(1, 10)).map(lambda pair: f"{pair[0]}/{pair[1]}")
    listed = st.lists(st.one_of(number, span, stepped), min_size=1, max_size=4).map(",".join)
    star_step = st.integers(1, max(2, (high - low) // 2)).map(lambda n: f"*/{n}")
    return st.one_of(st.just("*"), star_step, number, listed)


EXPRESSIONS = st.tuples(*(field(name) for name in WRITTEN)).map(" ".join)


@st.composite
def starts(draw: st.DrawFn, zone: str) -> datetime:
    """Anywhere in 2000-2040, or within a day or two of an offset change in ``zone``."""
    anywhere = st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2040, 12, 31),
        timezones=st.sampled_from([UTC, OSLO, NEW_YORK]),
    )
    if not TRANSITIONS[zone] or draw(st.booleans()):
        return draw(anywhere)
    day = draw(st.sampled_from(TRANSITIONS[zone]))
    return day + timedelta(microseconds=draw(st.integers(-86_400 * 10**6, 2 * 86_400 * 10**6)))


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, str, datetime]:
    zone = draw(st.sampled_from(ZONES))
    return draw(EXPRESSIONS), zone, draw(starts(zone))


@settings(max_examples=150, deadline=None)
@given(cases())
def test_fire_times_match_brute_force(case: tuple[str, str, datetime]) -> None:
    expression, zone_name, start = case
    cron = CronExpression.parse(expression, zone_name)
    zone = ZoneInfo(zone_name)
    matcher = Matcher.of(expression)
    budget = 6_000  # minutes of brute-force scanning per example, to keep the test quick
    previous = start
    fired: list[datetime] = []
    for _ in range(20):
        current = cron.next_after(previous)
        assert current.tzinfo is UTC
        assert current > previous
        assert matcher.fires_at(current, zone), (expression, zone_name, current)
        # Nothing that should fire lies strictly between two consecutive results.
        if current - previous <= timedelta(days=3) and budget > 0:
            probe = previous.astimezone(UTC).replace(second=0, microsecond=0)
            probe += timedelta(minutes=1)
            while probe < current:
                assert not matcher.fires_at(probe, zone), ("skipped", expression, probe)
                probe += timedelta(minutes=1)
                budget -= 1
        fired.append(current)
        previous = current
    assert list(cron.fire_times(start, fired[-1])) == fired
    assert Counter(fired).most_common(1)[0][1] == 1


# ---- any string at all (reliability plan I4: 10,000 random strings) ---------------------------

CRON_ALPHABET = st.sampled_from(list("0123456789*/,-LW#? @abcdefghijklmnopqrstuvwxyzJANFEBMONSU"))


@settings(max_examples=10_000, deadline=None)
@given(
    st.one_of(
        st.text(max_size=40),
        st.text(CRON_ALPHABET, max_size=40),
        st.lists(st.text(CRON_ALPHABET, min_size=1, max_size=6), min_size=1, max_size=7).map(
            " ".join
        ),
    ),
    st.sampled_from(["UTC", "Europe/Oslo", "America/New_York"]),
)
def test_any_string_parses_or_raises_cron_error(expression: str, zone: str) -> None:
    """Only CronError ever escapes; what parses has strictly increasing fire times."""
    try:
        cron = CronExpression.parse(expression, zone)
    except CronError:
        return
    start = utc(2026, 3, 28)
    first = cron.next_after(start)
    second = cron.next_after(first)
    assert start < first < second


# ---- six fields (seconds last), brute force per second -----------------------------------------


@dataclass(frozen=True)
class SecondsMatcher:
    """The documented rule for 6-field expressions: a second set on top of the 5 fields."""

    seconds: set[int]
    rest: Matcher

    @classmethod
    def of(cls, expression: str) -> SecondsMatcher:
        rest, second = expression.rsplit(" ", 1)
        return cls(expand(second, 0, 59), Matcher.of(rest))

    def __call__(self, wall: datetime) -> bool:
        return (
            not wall.microsecond
            and wall.second in self.seconds
            and self.rest(wall.replace(second=0))
        )

    def gap_ends_at(self, instant: datetime, zone: ZoneInfo) -> bool:
        before = (instant - timedelta(seconds=1)).astimezone(zone).utcoffset()
        after = instant.astimezone(zone).utcoffset()
        if before is None or after is None or after <= before:
            return False
        wall = instant.astimezone(zone).replace(tzinfo=None)
        gap = int((after - before).total_seconds())
        return any(self(wall - timedelta(seconds=s)) for s in range(1, gap + 1))

    def fires_at(self, instant: datetime, zone: ZoneInfo) -> bool:
        local = instant.astimezone(zone)
        if self(local.replace(tzinfo=None)):
            return not (self.rest.fixed_time and local.fold == 1)
        return self.rest.fixed_time and self.gap_ends_at(instant, zone)


# Half of them restrict only the time of day, so the per-second scan crosses minute and hour
# boundaries (and the daylight-saving changes near the start times) often.
TIME_OF_DAY = st.tuples(field("minute"), field("hour")).map(lambda mh: f"{mh[0]} {mh[1]} * * *")
SIX_FIELDS = st.tuples(st.one_of(EXPRESSIONS, TIME_OF_DAY), field_between(0, 59)).map(" ".join)


@st.composite
def six_field_cases(draw: st.DrawFn) -> tuple[str, str, datetime]:
    zone = draw(st.sampled_from(ZONES))
    return draw(SIX_FIELDS), zone, draw(starts(zone))


@settings(max_examples=100, deadline=None)
@given(six_field_cases())
def test_six_field_fire_times_match_brute_force(case: tuple[str, str, datetime]) -> None:
    expression, zone_name, start = case
    cron = CronExpression.parse(expression, zone_name)
    assert cron.has_seconds
    zone = ZoneInfo(zone_name)
    matcher = SecondsMatcher.of(expression)
    budget = 20_000  # seconds of brute-force scanning per example
    previous = start
    for _ in range(15):
        current = cron.next_after(previous)
        assert current > previous
        assert matcher.fires_at(current, zone), (expression, zone_name, current)
        if current - previous <= timedelta(hours=2) and budget > 0:
            probe = previous.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
            while probe < current:
                assert not matcher.fires_at(probe, zone), ("skipped", expression, probe)
                probe += timedelta(seconds=1)
                budget -= 1
        previous = current
