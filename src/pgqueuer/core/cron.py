"""Cron expressions: validation and fire times in any IANA time zone.

A small adapter over cronsim (a core dependency with no dependencies of its own) that adds
aliases, errors that say what is wrong, and one set of daylight-saving rules. Nothing else
in pgqueuer imports cronsim, so it could be swapped for another engine here alone.

Syntax: 5 fields (minute hour day-of-month month day-of-week, seconds implicitly 0) or 6
fields with **seconds last** (minute hour day-of-month month day-of-week second), the order
croniter and so pgqueuer 1.x read: ``* * * * * */5`` fires every 5 seconds. cronsim wants
the seconds first, so the field is moved for it here and nowhere else. Aliases:
``@yearly``/``@annually``, ``@monthly``, ``@weekly``, ``@daily``/``@midnight``, ``@hourly``.
Day-of-month and day-of-week follow Vixie cron: when both are restricted (neither starts
with ``*``) a day matches if either matches, otherwise both must. See
docs/explanation/cron.md.

Fire times are found on the schedule's local wall clock and returned as aware UTC
datetimes. An expression is *interval-like* when its minute or hour field starts with
``*`` (``*/15 * * * *``, ``0 * * * *``, ``* * * * * *``); otherwise it is *fixed-time*
(``30 2 * * *``). This is the split Vixie/Debian cron and cronsim make. Then:

* Spring forward (local times that do not exist): a fixed-time expression fires once at
  the first instant after the gap (``30 2 * * *`` fires at 03:00 that day); several
  times inside one gap merge into that one fire. An interval-like expression has no fire
  times in the gap: it keeps its pace in real time (01:30, then 03:00 for ``*/30``).
* Fall back (local times that happen twice): a fixed-time expression fires once, at the
  first occurrence. An interval-like expression fires at both occurrences, so
  ``*/30 * * * *`` still fires every 30 real minutes instead of pausing for an hour.
* Whatever the rules, fire times strictly increase in UTC; no instant is returned twice.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import takewhile
from types import MappingProxyType
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim

from pgqueuer.errors import CronError

__all__ = ["CRON_ALIASES", "CronExpression", "validate_timezone"]

CRON_ALIASES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "@yearly": "0 0 1 1 *",
        "@annually": "0 0 1 1 *",
        "@monthly": "0 0 1 * *",
        "@weekly": "0 0 * * 0",
        "@daily": "0 0 * * *",
        "@midnight": "0 0 * * *",
        "@hourly": "0 * * * *",
    }
)

# Validation searches forward from here. A leap year, so 29 February schedules are found
# at once; cronsim itself gives up after 50 years without a match, which also covers rare
# but real dates such as ``0 0 * 2 MON#5`` (a Monday 29 February, every 28 years or so).
_REFERENCE: Final = datetime(2024, 1, 1)
# (name, lowest, highest) in the order written, seconds last; a 5-field expression has the
# first five.
_FIELDS: Final = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
    ("second", 0, 59),
)
_MONTH: Final = 3  # the month's index in _FIELDS
# Appended to every error about a 6-field expression: a bad one is most often written for
# Quartz, Spring or cronsim, seconds first, so say which order is read here.
_SIX_FIELD_ORDER: Final = (
    " (6 fields are minute hour day-of-month month day-of-week second: seconds come last, "
    "as in croniter and pgqueuer 1.x)"
)
_STEPPED_RANGE: Final = re.compile(r"(?P<first>\w+)-(?P<last>\w+)/(?P<step>[0-9]+)")
_ZONE_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]*(?:/[A-Za-z0-9_+\-]+)*")
# Real files in the tz database whose meaning depends on the machine, not on the name.
_MACHINE_ZONES: Final = frozenset({"localtime", "posixrules", "Factory"})


def validate_timezone(name: str) -> ZoneInfo:
    """The ``ZoneInfo`` for an IANA name such as ``Europe/Oslo``, or :class:`CronError`."""
    if not isinstance(name, str):
        raise CronError(f"time zone must be a string such as 'UTC', got {type(name).__name__}")
    if not _ZONE_NAME.fullmatch(name) or name in _MACHINE_ZONES:
        raise CronError(f"time zone {name!r} is not an IANA name such as 'Europe/Oslo'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise CronError(f"unknown time zone {name!r} (use an IANA name such as 'UTC')") from exc


def _cronsim(expression: str, start: datetime) -> CronSim:
    """A cronsim iterator over local wall-clock times strictly after naive ``start``.

    ``expression`` is in cronsim's order: see :func:`_cronsim_order`.
    """
    return CronSim(expression, start)


def _cronsim_order(text: str) -> str:
    """A normalised expression (seconds last, if any) in cronsim's order, seconds first."""
    parts = text.split(" ")
    return " ".join([parts[5], *parts[:5]]) if len(parts) == 6 else text


@dataclass(frozen=True, slots=True)
class CronExpression:
    """A validated cron expression and the time zone its wall-clock times are read in.

    Build one with :meth:`parse` (or the constructor, which does the same): ``expression``
    is stored normalised (whitespace collapsed, upper case, aliases expanded, seconds last
    as written), so equal schedules compare equal.
    """

    expression: str
    timezone: str = "UTC"
    has_seconds: bool = field(init=False)
    interval_like: bool = field(init=False, compare=False)
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)
    _cronsim_text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        text = _normalise(self.expression)
        zone = validate_timezone(self.timezone)
        _check_fires(self.expression, text)
        parts = text.split(" ")
        minute, hour = parts[0], parts[1]
        object.__setattr__(self, "expression", text)
        object.__setattr__(self, "has_seconds", len(parts) == 6)
        object.__setattr__(self, "interval_like", minute[0] == "*" or hour[0] == "*")
        object.__setattr__(self, "_zone", zone)
        object.__setattr__(self, "_cronsim_text", _cronsim_order(text))

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC") -> CronExpression:
        """Validate and normalise; raise :class:`CronError` saying what is wrong."""
        return cls(expression, timezone)

    def next_after(self, after: datetime) -> datetime:
        """The first fire time strictly after ``after`` (aware), as an aware UTC datetime."""
        try:
            return next(self._times_after(after))
        except StopIteration:
            raise CronError(
                f"cron expression {self.expression!r} has no fire time after {after}"
            ) from None

    def fire_times(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """Every fire time in ``(after, until]``, ascending, as aware UTC datetimes."""
        start, end = _as_utc(after, "after"), _as_utc(until, "until")  # checked now, not lazily
        return takewhile(lambda instant: instant <= end, self._times_after(start))

    def explain(self) -> str:
        """A sentence such as "At 09:00 on Monday through Friday (Europe/Oslo)"."""
        try:
            text = _cronsim(self._cronsim_text, _REFERENCE).explain()
        except Exception:  # explain() is best effort; the expression itself is always valid
            text = self.expression
        return f"{text} ({self.timezone})"

    def _times_after(self, after: datetime) -> Iterator[datetime]:
        """Fire times strictly after ``after``, for ever (or until cronsim gives up)."""
        start = _as_utc(after, "after")
        zone = self._zone
        # Search local wall-clock times from `start`'s own, except when a fall back is near:
        # then the repeated times (01:00-02:00 in New York) may still lie ahead in their
        # second occurrence although their first is past, so search from where it begins.
        local = start.astimezone(zone)
        first_wall = local.replace(tzinfo=None)
        tomorrow = start + timedelta(days=1)
        if _offset(tomorrow, zone) < _offset(start, zone):
            change = _offset_change(start.replace(microsecond=0), tomorrow, zone)
            repeat = change.astimezone(zone).replace(tzinfo=None)
            first_wall = min(first_wall, repeat - timedelta(seconds=1))
        # cronsim yields wall times strictly after `first_wall` (microseconds dropped).
        walls = _cronsim(self._cronsim_text, first_wall)
        # Wall-clock order is not UTC order inside a fall back (01:30 first pass, 01:00
        # second pass), so instants wait in a heap until no later wall can come before them.
        pending: list[datetime] = []
        last = start
        for wall in walls:
            horizon, instants = self._instants(wall)
            for instant in instants:
                heapq.heappush(pending, instant)
            while pending and pending[0] <= horizon:
                instant = heapq.heappop(pending)
                if instant > last:  # also drops merged gap fires and times before `after`
                    last = instant
                    yield instant
        for instant in sorted(pending):
            if instant > last:
                last = instant
                yield instant

    def _instants(self, wall: datetime) -> tuple[datetime, list[datetime]]:
        """When local time ``wall`` fires, in UTC, and a bound no later wall can undercut.

        The bound is the wall's first occurrence (or, inside a gap, the end of the gap):
        that mapping never decreases as wall-clock time goes forward.
        """
        zone = self._zone
        first = wall.replace(tzinfo=zone).astimezone(UTC)  # fold=0: the earlier reading
        if first.astimezone(zone).replace(tzinfo=None) != wall:  # does not exist: a gap
            end = _gap_end(wall, zone)
            return end, [] if self.interval_like else [end]
        second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
        if self.interval_like and second != first:  # repeated, and we fire at both
            return first, [first, second]
        return first, [first]


def _normalise(expression: object) -> str:
    if not isinstance(expression, str):
        raise CronError(f"cron expression must be a string, got {type(expression).__name__}")
    text = " ".join(expression.split()).upper()
    if text.startswith("@"):
        alias = CRON_ALIASES.get(text.lower())
        if alias is None:
            known = ", ".join(CRON_ALIASES)
            raise CronError(
                f"cron expression {expression!r}: unknown or unsupported alias (known: {known})"
            )
        return alias
    count = len(text.split(" ")) if text else 0
    if count not in (5, 6):
        raise CronError(
            f"cron expression {expression!r} has {count} fields; expected 5 (minute hour "
            "day-of-month month day-of-week) or 6 (those five, then second: seconds come "
            "last, as in croniter and pgqueuer 1.x)"
        )
    return " ".join(",".join(map(_one_value_step, part.split(","))) for part in text.split(" "))


def _one_value_step(item: str) -> str:
    """Write ``5-5/2`` as ``5``: cron means just 5, but cronsim reads it as ``5/2``.

    cronsim extends a one-value range with a step to the end of the field (5, 7, 9, ...).
    """
    match = _STEPPED_RANGE.fullmatch(item)
    if match is None or int(match["step"]) == 0:  # a zero step is reported by cronsim
        return item
    first, last = match["first"], match["last"]
    same = first == last or (first.isdigit() and last.isdigit() and int(first) == int(last))
    return first if same else item


def _check_fires(original: object, text: str) -> None:
    """Raise :class:`CronError` unless cronsim accepts ``text`` and it fires some day."""
    order = _SIX_FIELD_ORDER if len(text.split(" ")) == 6 else ""
    try:
        iterator = _cronsim(_cronsim_order(text), _REFERENCE)
    except Exception as exc:  # CronSimError, or anything else cronsim trips over
        written = " ".join(str(original).split()).split(" ")
        shown = written if len(written) == len(text.split(" ")) else text.split(" ")
        problem = _diagnose(text, shown, str(exc))
        raise CronError(f"cron expression {original!r}: {problem}{order}") from None
    try:
        next(iterator)
    except StopIteration:
        raise CronError(f"cron expression {original!r} never fires (no such date){order}") from None


def _diagnose(text: str, shown: list[str], message: str) -> str:
    """Turn cronsim's "Bad minute" into which field, which value (as written), and why.

    ``text`` and ``shown`` are in the written order (seconds last); cronsim names the field.
    """
    parts = text.split(" ")
    fields = _FIELDS[: len(parts)]
    index = next((i for i, (name, _, _) in enumerate(fields) if message == f"Bad {name}"), None)
    if index is None:
        return message
    name, low, high = fields[index]
    value = shown[index]
    if name == "day-of-month":
        # cronsim says "Bad day-of-month" for both 32 and 30 February: tell them apart.
        any_month = " ".join("*" if i == _MONTH else p for i, p in enumerate(parts))
        try:
            _cronsim(_cronsim_order(any_month), _REFERENCE)
        except Exception:  # noqa: S110 - the day itself is bad; described below
            pass
        else:
            month = shown[_MONTH]
            return f"never fires: day-of-month {value!r} does not occur in month {month!r}"
    for term in value.split(","):
        body, slash, step = term.partition("/")
        if slash and step.isdigit() and int(step) == 0:
            return f"{name} field {value!r}: a step of 0 is not allowed"
        numbers = [int(n) for n in body.split("-") if n.isdigit()]
        for number in numbers:
            if not low <= number <= high:
                return f"{name} field {value!r}: {number} is out of range {low}-{high}"
        if len(numbers) == 2 and numbers[0] > numbers[1]:
            return f"{name} field {value!r}: range {body} runs backwards"
    return f"{name} field {value!r} is not valid"


def _gap_end(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant a spring-forward gap containing local time ``wall`` ends.

    Inside a gap fold=1 reads ``wall`` with the new offset, an instant before the change,
    and fold=0 with the old one, an instant after it.
    """
    before = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    after = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    return _offset_change(before, after, zone)


def _offset_change(low: datetime, high: datetime, zone: ZoneInfo) -> datetime:
    """The first whole second after ``low`` (a whole second) with ``high``'s UTC offset.

    Bisection; assumes one offset change between them. Changes fall on whole seconds.
    """
    target = _offset(high, zone)
    span = int((high - low).total_seconds())
    while span > 1:
        middle = low + timedelta(seconds=span // 2)
        if _offset(middle, zone) == target:
            high = middle
        else:
            low = middle
        span = int((high - low).total_seconds())
    return high


def _offset(instant: datetime, zone: ZoneInfo) -> timedelta:
    return instant.astimezone(zone).utcoffset() or timedelta(0)


def _as_utc(moment: datetime, name: str) -> datetime:
    if not isinstance(moment, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(moment).__name__}")
    if moment.utcoffset() is None:
        raise CronError(f"{name} must be a timezone-aware datetime, got naive {moment}")
    return moment.astimezone(UTC)
