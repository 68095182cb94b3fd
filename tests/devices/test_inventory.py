"""The device inventory: validation messages, which file wins, the embedded local device, unknown names."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from edgekit import inventory
from edgekit.errors import ConfigError, UnknownName


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project directory as the current directory."""
    directory = tmp_path / "project"
    directory.mkdir()
    monkeypatch.chdir(directory)
    return directory


def test_valid_file_parses_every_field(project: Path) -> None:
    _write(project / "devices.yaml", """
devices:
  - name: pixel
    transport: adb
    serial: 1A2B3C
    workdir: /data/local/tmp/ek
    tags: {class: phone, soc: sm8650, labels: [lab-a]}
    power: {source: battery}
  - name: rpi5
    transport: ssh
    address: {host: rpi5.lan, port: 2222, user: pi, identity_file: ~/.ssh/id, known_hosts: ~/.ssh/kh,
              ssh_config: ~/.ssh/config}
    tags: {class: board, soc: bcm2712}
    power: {source: external-meter, meter: ina219@0x40}
""")
    entries = {e.name: e for e in inventory.load()}
    assert entries["pixel"].serial == "1A2B3C"
    assert entries["pixel"].tags.device_class == "phone"
    assert entries["pixel"].tags.labels == ["lab-a"]
    assert entries["rpi5"].address is not None and entries["rpi5"].address.port == 2222
    assert entries["rpi5"].resolved_workdir() == "edgekit"
    assert entries["pixel"].origin == "file"
    assert entries["local"].origin == "builtin"


def test_bad_transport_names_key_and_allowed_values(project: Path) -> None:
    _write(project / "devices.yaml", "devices:\n  - {name: pixel, transport: usb, serial: X}\n")
    with pytest.raises(ConfigError) as exc:
        inventory.load()
    assert str(exc.value) == (
        "devices.yaml: device 'pixel': transport must be one of adb, ssh, local, got 'usb'"
    )


def test_unknown_key_is_named_with_allowed_keys(project: Path) -> None:
    _write(project / "devices.yaml", "devices:\n  - {name: pixel, transport: adb, serial: X, serail: Y}\n")
    with pytest.raises(ConfigError, match=r"device 'pixel': unknown key 'serail'; allowed: name, transport"):
        inventory.load()


def test_unknown_nested_key_lists_the_nested_allowed_keys(project: Path) -> None:
    _write(project / "devices.yaml",
           "devices:\n  - {name: b, transport: ssh, address: {host: h, prot: 22}}\n")
    with pytest.raises(ConfigError) as exc:
        inventory.load()
    message = str(exc.value)
    assert "unknown key 'address.prot'" in message
    assert "allowed: host, port, user, identity_file, known_hosts, ssh_config" in message


def test_bad_tag_class_and_top_level_key(project: Path) -> None:
    _write(project / "devices.yaml",
           "devices:\n  - {name: p, transport: adb, serial: X, tags: {class: tv}}\n")
    with pytest.raises(ConfigError, match=r"tags.class must be one of phone, board, got 'tv'"):
        inventory.load()
    _write(project / "devices.yaml", "device: []\n")
    with pytest.raises(ConfigError, match=r"unknown key 'device'; allowed: devices"):
        inventory.load()


def test_cross_field_checks_name_both_fields(project: Path) -> None:
    _write(project / "devices.yaml", "devices:\n  - {name: p, transport: adb}\n")
    with pytest.raises(ConfigError, match=r"device 'p': transport 'adb' needs serial"):
        inventory.load()
    _write(project / "devices.yaml", "devices:\n  - {name: p, transport: local, serial: X}\n")
    with pytest.raises(ConfigError, match=r"serial is only for transport adb, got transport 'local'"):
        inventory.load()


def test_duplicate_names_and_bad_yaml(project: Path) -> None:
    _write(project / "devices.yaml",
           "devices:\n  - {name: a, transport: local}\n  - {name: a, transport: local}\n")
    with pytest.raises(ConfigError, match=r"device 'a': name is used by more than one device"):
        inventory.load()
    _write(project / "devices.yaml", "devices: [\n")
    with pytest.raises(ConfigError, match=r"devices.yaml: not valid YAML"):
        inventory.load()


def test_project_file_overrides_user_file(project: Path, edgekit_home: Path) -> None:
    _write(edgekit_home / "devices.yaml", "devices:\n  - {name: from-user, transport: local}\n")
    assert "from-user" in {e.name for e in inventory.load()}
    _write(project / "devices.yaml", "devices:\n  - {name: from-project, transport: local}\n")
    names = {e.name for e in inventory.load()}
    assert "from-project" in names and "from-user" not in names
    explicit = _write(project / "other.yaml", "devices:\n  - {name: explicit, transport: local}\n")
    names = {e.name for e in inventory.load(explicit)}
    assert "explicit" in names and "from-project" not in names


def test_missing_explicit_file_is_an_error(project: Path) -> None:
    with pytest.raises(ConfigError, match=r"inventory file .*nope.yaml does not exist"):
        inventory.load(project / "nope.yaml")


def test_local_is_the_default_device(project: Path, edgekit_home: Path) -> None:
    entry = inventory.get()
    assert entry.name == "local" and entry.transport == "local"
    assert entry.resolved_workdir().startswith(str(edgekit_home))


def test_file_entry_named_local_replaces_the_builtin(project: Path) -> None:
    _write(project / "devices.yaml", "devices:\n  - {name: local, transport: local, workdir: /tmp/x}\n")
    assert inventory.get("local").resolved_workdir() == "/tmp/x"


def test_unknown_name_lists_known_names(project: Path) -> None:
    _write(project / "devices.yaml", "devices:\n  - {name: pixel, transport: adb, serial: X}\n")
    with pytest.raises(UnknownName) as exc:
        inventory.open_device("pixle")
    assert str(exc.value) == "unknown device 'pixle'; known: local, pixel"
    assert sorted(exc.value.known) == ["local", "pixel"]


def test_running_emulated_devices_join_the_inventory(project: Path, emulators: ModuleType) -> None:
    emulators.start("board", "inv-board")
    entry = inventory.get("inv-board")
    assert entry.origin == "emulator" and entry.transport == "ssh"
    assert entry.tags.device_class == "board" and entry.power is not None
    assert entry.power.source == "emulated"
    assert entry.address is not None and entry.address.ssh_config is not None
    assert Path(entry.address.ssh_config).is_file()
    with inventory.open_device("inv-board") as device:
        assert device.name == "inv-board"
        assert device.run(["hostname"], check=True).text().strip() == "inv-board"
    emulators.stop("inv-board")
    with pytest.raises(UnknownName, match=r"unknown device 'inv-board'; known: local"):
        inventory.get("inv-board")
