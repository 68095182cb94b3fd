"""Cool-down and battery facts read from the emulated board and phone."""

from __future__ import annotations

from edgekit.devices.base import Device
from edgekit.profile.conditioning import cool_down, read_state


def test_cool_down_waits_for_the_threshold_or_the_bound(board_dev: Device) -> None:
    state = read_state(board_dev)
    assert state.hottest_c is not None and 0 < state.hottest_c < 150
    assert state.battery_pct is None and state.charging is None  # a board has no battery

    cool = cool_down(board_dev, max_wait_s=5.0, threshold_c=state.hottest_c + 50, poll_s=0.2)
    assert cool.reached_threshold and cool.waited_s < 2.0

    hot = cool_down(board_dev, max_wait_s=1.0, threshold_c=state.hottest_c - 20, poll_s=0.2)
    assert not hot.reached_threshold and hot.waited_s >= 1.0
    assert hot.end.hottest_c is not None and hot.end.hottest_c >= hot.threshold_c


def test_phone_battery_level_and_charging_state_are_recorded(phone_dev: Device) -> None:
    cond = cool_down(phone_dev, max_wait_s=0.0)
    assert cond.start.battery_pct is not None and 0 <= cond.start.battery_pct <= 100
    assert cond.start.battery_status == "Discharging" and cond.start.charging is False
    assert cond.to_dict()["end"]["battery_pct"] == cond.end.battery_pct
