"""The files of an emulated board: its state directory layout, keys, sshd config and sandbox view.

Everything a board owns lives under its state directory, so a stop/start keeps its identity (host key,
client key) and its files (the workdir). This module only creates files and builds the ``bwrap`` argv
that turns the state directory into the board's root filesystem; it starts no process (``board.py``
does) and writes nothing outside the state directory.

Layout of a state directory::

    client_key, client_key.pub      key pair a client logs in with (key auth only)
    board.json                      name, model, login user, workdir
    etc/ssh/                        the board's /etc/ssh: sshd_config, host key, authorized_keys
    etc/passwd                      the board's /etc/passwd (the login user's home is the workdir)
    rootfs/home/edgekit             the workdir, read-write and persistent
    rootfs/tmp                      the board's /tmp, emptied at every start (a reboot)
    rootfs/sys                      the board's /sys: hwmon, thermal, cpufreq, device-tree model
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from edgekit.errors import EmulatorError

WORKDIR = "/home/edgekit"
DEFAULT_MODEL = "Raspberry Pi 5 Model B Rev 1.0"
HOST_KEY = "etc/ssh/ssh_host_ed25519_key"
_BOARD_FILE = "board.json"
# Host directories a board sees read-only, so host binaries and libraries run inside it.
_HOST_RO_DIRS = ("usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32")


@dataclass
class BoardIdentity:
    name: str
    model: str
    login_user: str
    workdir: str = WORKDIR


def client_key(state_dir: Path) -> Path:
    return Path(state_dir) / "client_key"


def host_public_key(state_dir: Path) -> str:
    """The board's host key as ``'<type> <base64>'`` (the form a known_hosts line ends with)."""
    path = Path(state_dir) / (HOST_KEY + ".pub")
    try:
        kind, blob = path.read_text().split()[:2]
    except (OSError, ValueError) as exc:
        raise EmulatorError(f"board host key {path} is missing or unreadable (start the board once)") \
            from exc
    return f"{kind} {blob}"


def login_user(state_dir: Path) -> str:
    """The user a client logs in as: the user that serves the board."""
    path = Path(state_dir) / _BOARD_FILE
    if path.is_file():
        return str(json.loads(path.read_text())["login_user"])
    return getpass.getuser()


def rootfs(state_dir: Path) -> Path:
    return Path(state_dir) / "rootfs"


def _keygen(path: Path, comment: str) -> None:
    if path.is_file() and path.with_name(path.name + ".pub").is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (path, path.with_name(path.name + ".pub")):
        stale.unlink(missing_ok=True)
    try:
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True, capture_output=True, timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise EmulatorError(f"ssh-keygen could not create {path}: {exc}") from exc


def prepare(state_dir: Path, *, name: str, model: str | None, port: int) -> BoardIdentity:
    """Create (first start) or refresh (later starts) everything the board needs in ``state_dir``."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    board_file = state_dir / _BOARD_FILE
    if board_file.is_file():
        known = BoardIdentity(**json.loads(board_file.read_text()))
        identity = BoardIdentity(name=name, model=model or known.model, login_user=known.login_user)
    else:
        identity = BoardIdentity(name=name, model=model or DEFAULT_MODEL, login_user=getpass.getuser())
    board_file.write_text(json.dumps(asdict(identity), indent=2) + "\n")

    _keygen(state_dir / HOST_KEY, f"host@{name}")
    _keygen(client_key(state_dir), f"edgekit@{name}")
    etc_ssh = state_dir / "etc" / "ssh"
    etc_ssh.chmod(0o755)
    shutil.copyfile(client_key(state_dir).with_suffix(".pub"), etc_ssh / "authorized_keys")
    (etc_ssh / "authorized_keys").chmod(0o600)
    (etc_ssh / "sshd_config").write_text(_sshd_config(port, identity.login_user, _board_path()))
    (state_dir / "etc" / "passwd").write_text(_passwd(identity.login_user, identity.workdir))
    (state_dir / "etc" / "hostname").write_text(name + "\n")

    root = rootfs(state_dir)
    (root / identity.workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
    shutil.rmtree(root / "tmp", ignore_errors=True)
    (root / "tmp").mkdir(parents=True)
    (root / "tmp").chmod(0o1777)
    return identity


def _board_path() -> str:
    """PATH inside the board: the host Python's bin first, so ``python3`` has its packages."""
    return ":".join([os.path.join(sys.prefix, "bin"), "/usr/local/bin", "/usr/bin", "/bin"])


def _sshd_config(port: int, user: str, path: str) -> str:
    # Paths are as the board sees them: sshd runs inside the board's view, where /etc/ssh is the
    # state directory's etc/ssh.
    return "\n".join([
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        "HostKey /etc/ssh/ssh_host_ed25519_key",
        "AuthorizedKeysFile /etc/ssh/authorized_keys",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        f"AllowUsers {user}",
        "UsePAM no",
        "PidFile none",
        "PrintMotd no",
        "PrintLastLog no",
        "UseDNS no",
        "AcceptEnv LANG LC_*",
        f"SetEnv PATH={path}",
        # Connection multiplexing opens many sessions on one connection.
        "MaxSessions 64",
        "MaxStartups 64:30:128",
        "Subsystem sftp internal-sftp",
        "",
    ])


def _passwd(user: str, home: str) -> str:
    """The host's /etc/passwd with the login user's home moved to the board's workdir."""
    lines = []
    for line in Path("/etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if len(fields) == 7 and fields[0] == user:
            fields[5] = home
            line = ":".join(fields)
        lines.append(line)
    return "\n".join(lines) + "\n"


def _python_prefixes() -> list[str]:
    """The host interpreter's prefixes (base install and virtualenv) that must be visible inside."""
    prefixes: list[str] = []
    for prefix in (sys.base_prefix, sys.prefix):
        resolved = os.path.realpath(prefix)
        if not any(resolved == p or resolved.startswith(p.rstrip("/") + "/") for p in prefixes):
            prefixes.append(resolved)
    return [p for p in prefixes if not any(p == f"/{d}" or p.startswith(f"/{d}/") for d in _HOST_RO_DIRS)]


def sandbox_argv(state_dir: Path, identity: BoardIdentity, info_fd: int | None = None) -> list[str]:
    """The ``bwrap`` argv (up to ``--``) that builds the board's view of the world.

    Host /usr, /etc, /bin, /lib* and the host Python are read-only; /etc/ssh, /etc/passwd and
    /etc/hostname are the board's own; the workdir and /tmp are the board's read-write directories;
    /sys is the board's sensor tree. The board gets its own pid, UTS and IPC namespaces (``ps`` shows
    only its processes) and dies with the process that started it.
    """
    if shutil.which("bwrap") is None:
        raise EmulatorError("bubblewrap ('bwrap') is not installed; the emulated board needs it")
    state_dir = Path(state_dir).resolve()
    root = rootfs(state_dir)
    argv = ["bwrap", "--die-with-parent", "--unshare-pid", "--unshare-uts", "--unshare-ipc",
            "--hostname", identity.name]
    for name in _HOST_RO_DIRS:
        host = Path("/") / name
        if host.is_symlink():
            argv += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            argv += ["--ro-bind", str(host), str(host)]
    argv += ["--ro-bind", str(state_dir / "etc" / "ssh"), "/etc/ssh",
             "--ro-bind", str(state_dir / "etc" / "passwd"), "/etc/passwd",
             "--ro-bind", str(state_dir / "etc" / "hostname"), "/etc/hostname"]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/run", "--dir", "/run/sshd",
             "--tmpfs", "/var/tmp",
             "--bind", str(root / identity.workdir.lstrip("/")), identity.workdir,
             "--bind", str(root / "tmp"), "/tmp",
             "--ro-bind", str(root / "sys"), "/sys"]
    # After /tmp and /var/tmp: a project checked out under /tmp keeps its virtualenv visible on the board.
    for prefix in _python_prefixes():
        argv += ["--ro-bind", prefix, prefix]
    argv += ["--chdir", identity.workdir,
             "--setenv", "HOME", identity.workdir]
    if info_fd is not None:
        argv += ["--info-fd", str(info_fd)]
    return argv
