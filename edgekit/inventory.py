"""The device inventory: which devices exist (files, running emulated devices, this host), how to reach
them, and opening one by name. It sits above `devices` (the transports) and `emulator` (the emulated
devices), which do not import it.

Sources, highest priority first:

1. an explicit file (``--inventory FILE``), else ``./devices.yaml`` in the current directory, else
   ``<edgekit home>/devices.yaml``: the first one that exists is the whole file inventory (a project
   file replaces the user file, it is not merged with it, so a project sees exactly what it declares);
2. emulated devices that are running (``edgekit emulator start``), unless the file names one the same;
3. the embedded ``local`` device (this host, workdir under the edgekit home), unless the file names one
   ``local``. It is the default when no device is named.

File format::

    devices:
      - name: pixel
        transport: adb            # adb | ssh | local
        serial: 1A2B3C4D          # adb only
        workdir: /data/local/tmp/edgekit
        tags: {class: phone, soc: sm8650, labels: [lab-a]}
        power: {source: battery}  # battery | external-meter | emulated | none
      - name: rpi5
        transport: ssh
        address: {host: rpi5.lan, port: 22, user: pi, identity_file: ~/.ssh/id_ed25519,
                  known_hosts: ~/.ssh/known_hosts, ssh_config: ~/.ssh/config}
        tags: {class: board, soc: bcm2712}

Unknown keys are errors naming the key. This module reads configuration and opens devices; it must not
copy files or run workloads.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from edgekit import paths
from edgekit._config_files import display_path, load_mapping, validate
from edgekit.devices.base import Device
from edgekit.errors import ConfigError, UnknownName

if TYPE_CHECKING:
    from edgekit.emulator.manager import EmulatorStatus

INVENTORY_FILE = "devices.yaml"
LOCAL_NAME = "local"
DEFAULT_WORKDIR = {"adb": "/data/local/tmp/edgekit", "ssh": "edgekit"}
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,62}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SshAddress(_Strict):
    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)  # None: from the ssh config, else 22
    user: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    ssh_config: str | None = None


class Tags(_Strict):
    device_class: Literal["phone", "board"] | None = Field(
        default=None, validation_alias="class", serialization_alias="class"
    )
    soc: str | None = None
    labels: list[str] = Field(default_factory=list)


class PowerHints(_Strict):
    source: Literal["battery", "external-meter", "emulated", "none"] = "battery"
    meter: str | None = None


class DeviceEntry(_Strict):
    name: str = Field(pattern=_NAME_PATTERN)
    transport: Literal["adb", "ssh", "local"]
    serial: str | None = None
    address: SshAddress | None = None
    workdir: str | None = None
    tags: Tags = Tags()
    power: PowerHints | None = None
    # The device's Python for the profiling agent (default: python3; emulated devices use the host's).
    python: str | None = None
    _origin: str = PrivateAttr(default="file")

    @model_validator(mode="after")
    def _transport_fields(self) -> DeviceEntry:
        if self.transport == "adb" and not self.serial:
            raise ValueError("transport 'adb' needs serial")
        if self.transport == "ssh" and self.address is None:
            raise ValueError("transport 'ssh' needs address")
        if self.serial and self.transport != "adb":
            raise ValueError(f"serial is only for transport adb, got transport '{self.transport}'")
        if self.address is not None and self.transport != "ssh":
            raise ValueError(f"address is only for transport ssh, got transport '{self.transport}'")
        return self

    @property
    def origin(self) -> str:
        """Where the entry came from: 'file', 'emulator' or 'builtin'."""
        return self._origin

    def resolved_workdir(self) -> str:
        if self.workdir:
            return self.workdir
        if self.transport == "local":
            return str(paths.home() / "local-device")
        return DEFAULT_WORKDIR[self.transport]


class _InventoryFile(_Strict):
    devices: list[dict[str, Any]] = Field(default_factory=list)


def load_file(path: str | Path) -> list[DeviceEntry]:
    """Parse and validate one inventory file; every problem is a ``ConfigError`` naming the key."""
    path = Path(path).expanduser()
    where = display_path(path)
    raw = load_mapping(path, what="inventory", expected="a mapping with a 'devices' list", empty_ok=True)
    top = validate(_InventoryFile, raw, where)
    entries: list[DeviceEntry] = []
    for index, item in enumerate(top.devices):
        label = f"device '{item['name']}'" if isinstance(item.get("name"), str) else f"device #{index + 1}"
        entry = validate(DeviceEntry, item, f"{where}: {label}")
        if any(e.name == entry.name for e in entries):
            raise ConfigError(f"{where}: {label}: name is used by more than one device")
        entries.append(entry)
    return entries


def inventory_path(explicit: str | Path | None = None) -> Path | None:
    """The inventory file in effect: explicit, else ./devices.yaml, else the user file; None if none."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"inventory file {path} does not exist")
        return path
    for candidate in (Path.cwd() / INVENTORY_FILE, paths.home() / INVENTORY_FILE):
        if candidate.is_file():
            return candidate
    return None


def _emulated_entries() -> list[DeviceEntry]:
    from edgekit.emulator import manager

    return [emulated_entry(st) for st in manager.list() if st.running]


def emulated_entry(st: EmulatorStatus) -> DeviceEntry:
    """The inventory entry of a running emulated device: the same one every stop/start."""
    from edgekit.emulator import manager

    directory = Path(st.state_dir)
    if st.kind == "phone":
        entry = DeviceEntry(name=st.name, transport="adb", serial=st.address,
                            workdir=DEFAULT_WORKDIR["adb"], tags=Tags(device_class="phone"),
                            power=PowerHints(source="emulated"))
    else:
        from edgekit.emulator import _board_files

        # The host is the alias of the snippet the manager wrote: port, user, key and the pinned host
        # key all come from there, exactly as ``ssh -F <snippet> <name>`` sees them.
        entry = DeviceEntry(
            name=st.name, transport="ssh", workdir=_board_files.WORKDIR,
            address=SshAddress(host=st.name, ssh_config=str(directory / manager.SSH_CONFIG_FILE)),
            tags=Tags(device_class="board"), power=PowerHints(source="emulated"),
        )
    entry._origin = "emulator"
    return entry


def _local_entry() -> DeviceEntry:
    entry = DeviceEntry(name=LOCAL_NAME, transport="local", power=PowerHints(source="none"))
    entry._origin = "builtin"
    return entry


def load(explicit: str | Path | None = None) -> list[DeviceEntry]:
    """Every device edgekit knows about, in the priority order of the module docstring."""
    path = inventory_path(explicit)
    entries = load_file(path) if path is not None else []
    names = {e.name for e in entries}
    for entry in [*_emulated_entries(), _local_entry()]:
        if entry.name not in names:
            entries.append(entry)
            names.add(entry.name)
    return entries


def get(name: str | None = None, explicit: str | Path | None = None) -> DeviceEntry:
    """The entry called ``name`` (``local`` when None); an unknown name lists the known ones."""
    name = name or LOCAL_NAME
    entries = load(explicit)
    for entry in entries:
        if entry.name == name:
            return entry
    raise UnknownName("device", name, [e.name for e in entries])


def connect(entry: DeviceEntry, *, timeout_s: float = 20.0) -> Device:
    """A connected ``Device`` for ``entry`` (AdbDevice, SshDevice or LocalDevice), named as the entry.

    ``timeout_s`` bounds how long the transport waits for an absent device to (re)appear.
    """
    workdir = entry.resolved_workdir()
    device: Device
    if entry.transport == "adb":
        from edgekit.devices.adb import AdbDevice

        assert entry.serial is not None  # checked by the model
        device = AdbDevice(entry.serial, workdir=workdir, online_timeout_s=timeout_s)
    elif entry.transport == "ssh":
        from edgekit.devices.ssh import SshDevice

        address = entry.address
        assert address is not None  # checked by the model
        ssh = SshDevice(address.host, name=entry.name, port=address.port, user=address.user,
                        identity_file=address.identity_file, ssh_config=address.ssh_config,
                        known_hosts=address.known_hosts, workdir=workdir, connect_timeout_s=timeout_s)
        try:
            ssh.connect()
        except BaseException:
            ssh.close()
            raise
        device = ssh
    else:
        from edgekit.devices.local import LocalDevice

        # LocalDevice runs commands in its workdir, so it has to exist before the first command.
        try:
            Path(workdir).expanduser().mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"device '{entry.name}': cannot create workdir {workdir}: {exc.strerror}"
            ) from exc
        device = LocalDevice(name=entry.name, workdir=workdir)
    device.name = entry.name
    return device


def open_device(
    name: str | None = None, explicit: str | Path | None = None, *, timeout_s: float = 20.0
) -> Device:
    """Look ``name`` up (``local`` when None) and return a connected device."""
    return connect(get(name, explicit), timeout_s=timeout_s)
