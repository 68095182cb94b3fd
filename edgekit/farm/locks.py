"""The farm's device locks are the devices' own (``edgekit.devices.lock``): one lock per device that the farm,
``edgekit profile``, ``run``, ``push`` and the study all take. Kept here for the farm's imports."""

from __future__ import annotations

from edgekit.devices.lock import DeviceBusy, device_lock, lock_path

__all__ = ["DeviceBusy", "device_lock", "lock_path"]
