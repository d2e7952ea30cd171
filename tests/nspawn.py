"""A real systemd, booted in a throw-away container, for the system test (tests/test_systemd.py).

PID 1 on the test machines is not systemd, so the units are tested where they would run: systemd
booted by ``systemd-nspawn`` on a copy-on-write overlay of the host's own root filesystem (no
download, boots in about a second; see /work/shared/SYSTEMD-TESTING.md). The overlay lives on a
tmpfs mounted in a private mount namespace (``unshare --mount``) that dies with the container: a
killed test run leaves no mount behind, and the host's files are never written.

Inside, the container is a whole machine: it boots to ``basic.target`` (sockets, timers, journald;
not the host's multi-user services), has its own network namespace (``--private-network``: the
daemon gets CAP_NET_ADMIN and nothing can reach the outside), and reboots for real (``systemctl
reboot`` makes systemd-nspawn exit with 133; the boot script then boots the same root again).

There is no network inside, so the project's dependencies come as wheels from a wheelhouse built on
the host once and cached (:func:`ensure_wheelhouse`); the install itself builds from the checkout.
"""

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SRC_MOUNT = "/var/lib/sockd-test/src"
"""Where the checkout appears (read-only) in the container."""
WHEELS_MOUNT = "/var/lib/sockd-test/wheels"
"""Where the wheelhouse appears (read-only) in the container."""
_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
}
"""The whole environment of commands run in the container (nothing of the host's leaks in)."""
SYSTEM_PYTHON = "/usr/bin/python3"
"""The interpreter `make install` builds the venv with; the wheelhouse must match its ABI."""

# Runs as root in a private mount namespace. Arguments: scratch dir, checkout, wheelhouse, machine
# name, and where the checkout and the wheelhouse appear in the container.
_BOOT_SCRIPT = r"""#!/bin/bash
set -euo pipefail
top=$1 src=$2 wheels=$3 machine=$4 src_mount=$5 wheels_mount=$6
# nspawn needs a cgroup hierarchy; mount one privately if the host has none at /sys/fs/cgroup.
findmnt /sys/fs/cgroup >/dev/null || mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs -o mode=0755 sockd-test "$top"
mkdir "$top/upper" "$top/work" "$top/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$top/upper,workdir=$top/work" "$top/root"
root=$top/root
systemd-id128 new > "$root/etc/machine-id"
# A clean slate: nothing of a sockd installed on the host may leak into the container.
rm -rf "$root/opt/sockd" "$root/etc/sockd" "$root/run/sockd" \
    "$root"/usr/local/lib/systemd/system/sockd.* "$root"/etc/systemd/system/sockd.* \
    "$root"/etc/systemd/system/*.wants/sockd.* \
    "$root/usr/local/lib/sysusers.d/sockd.conf" "$root/usr/local/lib/tmpfiles.d/sockd.conf" \
    "$root/usr/local/bin/sockctl" "$root/usr/local/sbin/sockd"
for group in sockd sockd-monitor; do
    if grep -q "^$group:" "$root/etc/group"; then groupdel --root "$root" "$group"; fi
done
# Boot to basic.target only: sockets and timers, not the host's multi-user services.
ln -sf /lib/systemd/system/basic.target "$root/etc/systemd/system/default.target"
while :; do
    rc=0
    systemd-nspawn --quiet --directory="$root" --boot --machine="$machine" \
        --register=no --keep-unit --private-network --console=read-only \
        --bind-ro="$src:$src_mount" --bind-ro="$wheels:$wheels_mount" \
        || rc=$?
    # 133: the container asked for a reboot (as systemd-nspawn@.service's RestartForceExitStatus=).
    [ "$rc" -eq 133 ] || exit "$rc"
done
"""


class ContainerError(AssertionError):
    """The container could not be built, booted or driven; the message says why and what to do."""


@dataclass(frozen=True)
class Run:
    """One finished command in the container."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (
            f"$ {' '.join(self.argv)}\n[exit {self.returncode}]\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


@dataclass
class Container:
    """A booted container; ``run`` executes commands inside, as root or as a user of the container."""

    scratch: Path
    boot: subprocess.Popen[bytes]
    init_pid: int = 0
    boots: int = 0
    _console: Path = field(init=False)

    def __post_init__(self) -> None:
        self._console = self.scratch / "console.log"

    def console(self, tail: int = 40) -> str:
        try:
            lines = self._console.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no console output)"
        return "\n".join(lines[-tail:])

    # Commands ------------------------------------------------------------------------------------

    def run(
        self,
        *argv: str,
        user: str | None = None,
        env: dict[str, str] | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> Run:
        """Run ``argv`` in every namespace of the container; as ``user`` (with their groups) if given.

        Commands get a clean environment (the host's must not leak in, e.g. SOCKD_SOCKET).
        """
        command = self._command(argv, user)
        try:
            proc = subprocess.run(
                command,
                capture_output=True,
                text=True,
                env={**_ENV, **(env or {})},
                timeout=timeout,
                check=False,
                cwd="/",
            )
        except subprocess.TimeoutExpired as exc:
            raise ContainerError(f"{' '.join(argv)} did not finish in {timeout:g} s") from exc
        result = Run(tuple(command[4:]), proc.returncode, proc.stdout, proc.stderr)
        if check and result.returncode != 0:
            raise ContainerError(f"command failed in the container:\n{result}")
        return result

    def spawn(self, *argv: str, user: str | None = None) -> subprocess.Popen[str]:
        """Start ``argv`` in the container without waiting (for a request that will hang)."""
        return subprocess.Popen(
            self._command(argv, user),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_ENV,
            cwd="/",
        )

    def _command(self, argv: Sequence[str], user: str | None) -> list[str]:
        as_user = ["runuser", "-u", user, "--"] if user is not None else []
        return ["nsenter", f"--target={self.init_pid}", "--all", "--", *as_user, *argv]

    def systemctl_show(self, unit: str, prop: str) -> str:
        return self.run("systemctl", "show", "--property", prop, "--value", unit).stdout.strip()

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise ContainerError(f"timed out after {timeout:g} s waiting for {what}")
            time.sleep(0.05)

    # Life cycle -----------------------------------------------------------------------------------

    def _nspawn_pid(self) -> int | None:
        return _child(self.boot.pid, "systemd-nspawn")

    def wait_booted(self, timeout: float = 60.0) -> None:
        """Wait for a new boot's systemd to reach ``running`` (or ``degraded``)."""
        deadline = time.monotonic() + timeout
        previous = self.init_pid
        state = "not started"
        while time.monotonic() < deadline:
            if self.boot.poll() is not None:
                raise ContainerError(
                    f"systemd-nspawn exited with {self.boot.returncode} while booting "
                    f"(boot {self.boots + 1}); console:\n{self.console()}"
                )
            nspawn = self._nspawn_pid()
            init = _child(nspawn, "systemd") if nspawn else None
            if init and init != previous:
                self.init_pid = init
                state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
                if state in ("running", "degraded"):
                    self.boots += 1
                    return
            time.sleep(0.05)
        raise ContainerError(
            f"the container's systemd did not finish booting in {timeout:g} s (state: {state}); "
            f"console:\n{self.console()}"
        )

    def reboot(self) -> None:
        old = self.init_pid
        self.run("systemctl", "reboot", check=False)
        self.wait_for("the old boot to end", lambda: not Path(f"/proc/{old}").exists(), 60)
        self.wait_booted()

    def shutdown(self, timeout: float = 30.0) -> None:
        """Halt the container cleanly (SIGTERM to systemd-nspawn); kill it if it will not stop."""
        nspawn = self._nspawn_pid()
        if nspawn is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(nspawn, signal.SIGTERM)
        try:
            self.boot.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill()

    def _kill(self) -> None:
        # SIGKILL to a container's init ends its whole pid namespace; then nspawn and the script.
        for pid in (self.init_pid, self._nspawn_pid()):
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.boot.pid, signal.SIGKILL)
        self.boot.wait(10)


def _child(parent: int, name: str) -> int | None:
    """The pid of ``parent``'s child process called ``name``, if there is one."""
    try:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for pid in children:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == name:
                return int(pid)
    return None


def preflight() -> None:
    """Fail, saying what is missing, when this machine cannot boot a container."""
    if os.geteuid() != 0:
        raise ContainerError("the systemd system test needs root (it boots a container)")
    missing = [tool for tool in ("systemd-nspawn", "unshare", "nsenter") if not shutil.which(tool)]
    if missing:
        raise ContainerError(
            f"{', '.join(missing)} not found: install systemd-container and util-linux "
            f"(`make test-deps`)"
        )
    if not Path("/lib/systemd/systemd").exists():
        raise ContainerError(
            "no /lib/systemd/systemd on this machine: the container boots the host's"
        )
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:") and not int(line.split()[1], 16) & (1 << 21):
                raise ContainerError("no CAP_SYS_ADMIN: systemd-nspawn cannot create a container")


@contextlib.contextmanager
def booted(checkout: Path, wheels: Path, name: str) -> Iterator[Container]:
    """A booted container with ``checkout`` and ``wheels`` bound in read-only; always torn down."""
    preflight()
    scratch = Path(tempfile.mkdtemp(prefix="sockd-nspawn-"))
    script = scratch / "boot.sh"
    script.write_text(_BOOT_SCRIPT)
    (scratch / "mnt").mkdir()
    container: Container | None = None
    try:
        with (scratch / "console.log").open("wb") as console:
            proc = subprocess.Popen(
                [
                    "unshare",
                    "--mount",
                    "--propagation=private",
                    "bash",
                    str(script),
                    str(scratch / "mnt"),
                    str(checkout),
                    str(wheels),
                    name,
                    SRC_MOUNT,
                    WHEELS_MOUNT,
                ],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: one killpg ends every straggler
            )
        container = Container(scratch, proc)
        container.wait_booted()
        yield container
    finally:
        if container is not None:
            container.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)


# The wheelhouse --------------------------------------------------------------------------------------


def requirements(pyproject: Path) -> list[str]:
    """What installing the checkout offline needs: its dependencies and its build back-end."""
    data = tomllib.loads(pyproject.read_text())
    return [*data["project"]["dependencies"], *data["build-system"]["requires"], "wheel"]


def ensure_wheelhouse(pyproject: Path, cache: Path) -> Path:
    """Wheels of every requirement, for the system Python; built once (network) and cached.

    The cache key covers the requirements and the interpreter version, so a change of either
    builds a new wheelhouse. Built in a temporary directory and renamed: never half there.
    """
    reqs = requirements(pyproject)
    version = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print(sys.version)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    key = hashlib.sha256("\n".join([version, *reqs]).encode()).hexdigest()[:16]
    target = cache / "wheelhouse" / key
    if target.is_dir():
        return target
    builder = cache / "wheel-builder"
    if not (builder / "bin" / "pip").exists():
        _checked([SYSTEM_PYTHON, "-m", "venv", str(builder)], "create the wheel-building venv")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=target.parent))
    try:
        # --use-pep517: systemd-python's setup.py cannot build a wheel without the `wheel` package.
        _checked(
            [
                str(builder / "bin" / "pip"),
                "wheel",
                "--quiet",
                "--disable-pip-version-check",
                "--use-pep517",
                "--wheel-dir",
                str(partial),
                *reqs,
            ],
            "build the wheelhouse (needs network access once; then it is cached)",
        )
        partial.chmod(0o755)
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _checked(argv: Sequence[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ContainerError(
            f"cannot {what}: {' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
        )
