"""A run that holds the device's lock first stops what earlier runs left on the device (their host was
SIGKILLed, dropped them or gave up on them): the new run is never measured beside an old agent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgekit.errors import ArtifactError


def test_a_profile_first_stops_an_agent_an_earlier_host_left_on_the_device(tmp_path: Path) -> None:
    from edgekit.profile.run import ProfileRequest, profile

    workdir = tmp_path / "here"
    inventory = tmp_path / "devices.yaml"
    inventory.write_text(yaml.safe_dump({"devices": [{"name": "here", "transport": "local",
                                                      "workdir": str(workdir)}]}))
    # What a SIGKILLed farm driver leaves: an agent of its run, in a process group of its own, still going.
    stale = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "edgekit_agent.py", "--out",
                              f"{workdir}/runs/20260101T000000Z-here-dead00/attempt-1"], start_new_session=True)
    try:
        with pytest.raises(ArtifactError):  # the new run itself is refused later (no artifact): not the point
            profile(ProfileRequest(tmp_path / "no-artifact"), "here", inventory=inventory)
        assert stale.wait(timeout=10) in (-15, -9), "the stale agent was not stopped"
    finally:
        if stale.poll() is None:
            stale.kill()
            stale.wait(timeout=10)
