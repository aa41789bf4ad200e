"""The xmin-horizon watch: one warning per episode, its end reported, lower-bound ages."""

from __future__ import annotations

import pytest

from pgqueuer.config import WorkerSettings
from pgqueuer.core.horizon import HorizonWatch
from pgqueuer.errors import ConfigurationError
from pgqueuer.models import XminHorizon


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def session(seconds: float | None, xmin: str = "750") -> XminHorizon:
    return XminHorizon("session", 40, seconds, xmin, pid=42, name="psql", state="idle")


def test_one_warning_per_episode_then_its_end_then_a_new_episode() -> None:
    clock = Clock()
    watch = HorizonWatch(60, clock)
    assert watch.observe(None) is None
    assert watch.observe(session(59)) is None
    warned = watch.observe(session(61))
    assert warned is not None and (warned.kind, warned.seconds) == ("warn", 61)
    assert warned.horizon is not None and warned.horizon.pid == 42
    for age in (90, 120, 500):  # still held: nothing more to say
        assert watch.observe(session(age)) is None
    assert watch.warning
    cleared = watch.observe(None)
    assert cleared is not None and (cleared.kind, cleared.seconds) == ("clear", 500)
    assert not watch.warning
    assert watch.observe(None) is None
    again = watch.observe(session(70, xmin="900"))
    assert again is not None and again.kind == "warn"


def test_a_young_horizon_ends_an_episode_too() -> None:
    watch = HorizonWatch(60, Clock())
    assert watch.observe(session(100)) is not None
    cleared = watch.observe(session(1, xmin="990"))
    assert cleared is not None and cleared.kind == "clear"


def test_unknown_start_time_counts_from_first_sight_of_the_same_xmin() -> None:
    clock = Clock()
    watch = HorizonWatch(60, clock)
    slot = XminHorizon("replication slot", 10, None, "500", name="old_slot")
    assert watch.observe(slot) is None
    assert watch.latest_age == 0
    clock.now += 59
    assert watch.observe(slot) is None
    clock.now += 2
    warned = watch.observe(slot)
    assert warned is not None and warned.seconds == pytest.approx(61)
    # A new xmin at the horizon is a new holder: its age starts again.
    clock.now += 10
    cleared = watch.observe(XminHorizon("replication slot", 10, None, "600", name="old_slot"))
    assert cleared is not None and cleared.kind == "clear"
    assert watch.latest_age == 0


def test_a_reported_age_below_the_observed_one_is_raised_to_it() -> None:
    clock = Clock()
    watch = HorizonWatch(60, clock)
    watch.observe(session(5))
    clock.now += 100
    assert watch.age(session(5)) == pytest.approx(100)


def test_describe_names_the_holder() -> None:
    text = session(12.4).describe()
    assert text == "session pid 42 ('psql'), idle (open 12s, xmin 750, 40 transactions old)"
    prepared = XminHorizon("prepared", 3, 1.0, "77", name="tx1").describe()
    assert prepared.startswith("prepared transaction 'tx1'")
    assert "open" not in XminHorizon("replication slot", 3, None, "77", name="s").describe()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("xmin_warning_age", 0),
        ("xmin_warning_age", -1.0),
        ("xmin_warning_age", "300"),
        ("xmin_warning_age", True),
        ("horizon_check_interval", 0),
        ("horizon_check_interval", None),
    ],
)
def test_horizon_settings_are_validated(field: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=field):
        WorkerSettings(**{field: value})  # type: ignore[arg-type]


def test_horizon_check_can_be_turned_off() -> None:
    assert WorkerSettings(xmin_warning_age=None).xmin_warning_age is None
    assert WorkerSettings().xmin_warning_age == 300.0
