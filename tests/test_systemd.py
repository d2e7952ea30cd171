"""sockd under a real systemd, the way an administrator and users meet it.

A container boots the host's systemd (tests/nspawn.py), the checkout is installed with the documented
command (`make install`), the machine reboots, and then users of that machine (``alice`` in group
sockd, ``bob`` outside it, both made with useradd) use it: socket activation, policy, the journal,
stop/restart/kill, reload and idle exit, and finally `make uninstall`. The container tests share one
machine and run in the order written; each leaves the daemon usable for the next.

If the container cannot be built or booted, every container test fails with the reason (never a skip).
"""

import errno
import json
import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sockctl.protocol import DEFAULT_SOCKET
from sockd.config import Config
from tests import nspawn
from tests.conftest import REPO

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.system]

SYSTEMD = REPO / "systemd"
UNIT_DIR = "/usr/local/lib/systemd/system"
UNITS = (f"{UNIT_DIR}/sockd.socket", f"{UNIT_DIR}/sockd.service")
CHECKOUT = "/root/sockd"
"""Where the container's administrator has the checkout (a writable copy of this one)."""
DROP_IN = "/etc/systemd/system/sockd.service.d/pause.conf"
PIP_OFFLINE = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": nspawn.WHEELS_MOUNT}
"""No network in the container: pip takes the wheels built on the host."""
EXPOSURE_THRESHOLD = 53
"""`systemd-analyze security` exposure x10 that sockd.service must not exceed (5.6 until `ns exec`
commands moved into units of their own, 5.3 since).

What keeps it there is listed in the README ("Running under systemd"): root, and no mount namespace.
"""

# Unit options that give the service its own mount namespace; see DESIGN.md and sockd.service.
MOUNT_NAMESPACE_OPTIONS = (
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "PrivateMounts",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectProc",
    "ProcSubset",
    "ReadWritePaths",
    "ReadOnlyPaths",
    "InaccessiblePaths",
    "ExecPaths",
    "NoExecPaths",
    "TemporaryFileSystem",
    "BindPaths",
    "BindReadOnlyPaths",
    "RootDirectory",
    "RootImage",
    "MountAPIVFS",
    "PrivateNetwork",
    "PrivateUsers",
    "ProtectHostname",
)


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file (keys may repeat), comments and sections ignored."""
    settings: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


# The shipped files, checked without a container ---------------------------------------------------


def test_shipped_config_is_the_builtin_defaults() -> None:
    import tomllib

    shipped = Config.model_validate(tomllib.loads((SYSTEMD / "sockd.toml").read_text()))
    assert shipped == Config(), "systemd/sockd.toml and sockd/config.py disagree on a default"
    for section, model in Config.model_fields.items():
        keys = set(model.annotation.model_fields)  # type: ignore[union-attr]
        text = (SYSTEMD / "sockd.toml").read_text()
        missing = [k for k in keys if not re.search(rf"^{k} = ", text, re.MULTILINE)]
        assert not missing, f"[{section}] keys not documented in systemd/sockd.toml: {missing}"


def test_socket_unit_listens_where_clients_connect() -> None:
    socket = unit_settings(SYSTEMD / "sockd.socket")
    assert socket["ListenSequentialPacket"] == [DEFAULT_SOCKET]
    assert socket["SocketMode"] == ["0666"]  # the trust model: policy is decided in the daemon
    assert socket["FileDescriptorName"] == ["sockd"]
    service = unit_settings(SYSTEMD / "sockd.service")
    assert service["Type"] == ["notify"]
    assert service["Requires"] == service["After"] == ["sockd.socket"]
    makefile = (REPO / "Makefile").read_text()
    prefix = re.search(r"^PREFIX \?= (\S+)$", makefile, re.MULTILINE)
    assert prefix is not None
    assert service["ExecStart"] == [f"{prefix.group(1)}/venv/bin/sockd"]


def test_service_has_no_mount_namespace_sandboxing() -> None:
    service = unit_settings(SYSTEMD / "sockd.service")
    present = sorted(set(service) & set(MOUNT_NAMESPACE_OPTIONS))
    assert not present, f"these options would hide /run/netns mounts from the host: {present}"


# The machine -----------------------------------------------------------------------------------------


@dataclass
class Machine:
    container: nspawn.Container
    install: nspawn.Run
    installed_socket: str
    """sockd.socket's state right after `make install` (``enable --now``), before the reboot."""
    uids: dict[str, int]
    boot_state: dict[str, str]
    """What the machine looked like right after the reboot, before any client connected."""

    def run(self, *argv: str, **kwargs: Any) -> nspawn.Run:
        return self.container.run(*argv, **kwargs)

    def sockctl(self, user: str, *args: str, check: bool = False) -> nspawn.Run:
        return self.container.run("sockctl", *args, user=user, check=check)

    def show(self, prop: str, unit: str = "sockd.service") -> str:
        return self.container.systemctl_show(unit, prop)

    def journal(self, *matches: str, unit: str | None = None) -> list[dict[str, Any]]:
        argv = ["journalctl", "--no-pager", "--output=json"]
        if unit:
            argv += ["--unit", unit]
        out = self.run(*argv, *matches, check=False).stdout
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def wait_journal(
        self, *matches: str, unit: str | None = None, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []

        def arrived() -> bool:
            found[:] = self.journal(*matches, unit=unit)
            return bool(found)

        self.container.wait_for(f"journal entries {' '.join(matches)}", arrived, timeout)
        return found

    def wait_state(self, state: str, timeout: float = 15.0) -> None:
        self.container.wait_for(
            f"sockd.service to be {state}", lambda: self.show("ActiveState") == state, timeout
        )

    def netns_entries(self) -> dict[str, str]:
        """/run/netns/* -> the file system type there (``nsfs`` for a namespace that works)."""
        out = self.run(
            "sh",
            "-c",
            'for f in /run/netns/*; do [ -e "$f" ] && stat -f -c \'%n %T\' "$f"; done; true',
        )
        return dict(line.rsplit(" ", 1) for line in out.stdout.splitlines())

    def registry(self) -> dict[str, dict[str, Any]]:
        out = self.run(
            "sh",
            "-c",
            'for f in /run/sockd/namespaces/*.json; do [ -e "$f" ] && cat "$f"; echo; done; true',
        )
        records = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        return {r["name"]: r for r in records}


def _boot_state(container: nspawn.Container) -> dict[str, str]:
    show = container.systemctl_show
    stat = container.run(
        "stat", "-c", "%n %F %U %G %a", DEFAULT_SOCKET, "/run/sockd", "/run/sockd/namespaces"
    ).stdout
    return {
        "socket": show("sockd.socket", "ActiveState"),
        "socket_sub": show("sockd.socket", "SubState"),
        "socket_enabled": container.run(
            "systemctl", "is-enabled", "sockd.socket", check=False
        ).stdout.strip(),
        "service": show("sockd.service", "ActiveState"),
        "stat": stat,
    }


@pytest.fixture(scope="module")
def machine() -> Iterator[Machine]:
    """Boot, install the checkout with `make install`, add two users, reboot."""
    wheels = nspawn.ensure_wheelhouse(REPO / "pyproject.toml", Path("/var/cache/sockd-test"))
    with nspawn.booted(REPO, wheels, f"sockd-test-{os.getpid()}") as container:
        # The administrator's checkout: a writable copy (the build writes into it).
        container.run(
            "sh",
            "-c",
            f"mkdir -p {CHECKOUT} && tar -C {nspawn.SRC_MOUNT} --exclude=.git --exclude=__pycache__ "
            f"--exclude=.mypy_cache --exclude=.ruff_cache --exclude=.pytest_cache -cf - . "
            f"| tar -C {CHECKOUT} -xf -",
        )
        install = container.run(
            "make",
            "-C",
            CHECKOUT,
            "install",
            env=PIP_OFFLINE,
            timeout=600,
        )
        container.run("useradd", "--create-home", "--groups", "sockd", "alice")
        container.run("useradd", "--create-home", "bob")
        installed_socket = container.systemctl_show("sockd.socket", "SubState")
        uids = {u: int(container.run("id", "-u", u).stdout) for u in ("alice", "bob")}
        container.reboot()
        yield Machine(container, install, installed_socket, uids, _boot_state(container))


# After install and reboot: listening, not running ---------------------------------------------------


def test_install_sets_up_the_machine_and_the_socket_listens_after_reboot(machine: Machine) -> None:
    assert "Creating group 'sockd'" in machine.install.stderr  # systemd-sysusers made the groups
    assert "Creating group 'sockd-monitor'" in machine.install.stderr
    assert machine.installed_socket == "listening"  # enable --now: listening before any reboot
    assert machine.boot_state["socket"] == "active"
    assert machine.boot_state["socket_sub"] == "listening"
    assert machine.boot_state["socket_enabled"] == "enabled"
    assert machine.boot_state["service"] == "inactive", "nothing should have started sockd yet"
    assert machine.boot_state["stat"].splitlines() == [
        f"{DEFAULT_SOCKET} socket root root 666",
        "/run/sockd directory root root 755",
        "/run/sockd/namespaces directory root root 700",
    ]
    shipped = (SYSTEMD / "sockd.toml").read_text()
    assert machine.run("cat", "/etc/sockd/sockd.toml").stdout == shipped
    assert machine.run("readlink", "/usr/local/bin/sockctl").stdout.strip() == (
        "/opt/sockd/venv/bin/sockctl"
    )
    # Users run the installed client (a venv of the system Python, readable by everyone).
    assert machine.sockctl("bob", "--version", check=True).stdout.startswith("sockctl")


def test_first_call_activates_the_service(machine: Machine) -> None:
    assert machine.show("ActiveState") == "inactive"
    pong = machine.sockctl("alice", "ping")
    assert pong.returncode == 0, pong
    machine.wait_state("active")  # READY=1 reaches systemd on its own path, maybe after the reply
    status = machine.show("StatusText")
    assert re.fullmatch(r"Serving on the socket passed by systemd; \d+ namespaces managed", status)
    main_pid = machine.show("MainPID")
    # No mount-namespace sandboxing: the daemon's /run/netns mounts are the machine's.
    namespaces = machine.run(
        "readlink", "/proc/1/ns/mnt", f"/proc/{main_pid}/ns/mnt"
    ).stdout.split()
    assert namespaces[0] == namespaces[1]
    # The watchdog is on and the main loop pings it.
    assert machine.show("WatchdogUSec") == "30s"
    machine.container.wait_for(
        "a WATCHDOG=1 ping",
        lambda: machine.show("WatchdogTimestampMonotonic") not in ("", "0"),
        timeout=20,
    )


# Users, policy, the host's view ----------------------------------------------------------------------


def test_member_creates_namespace_that_the_host_sees(machine: Machine) -> None:
    created = machine.sockctl("alice", "--json", "ns", "create", "test")
    assert created.returncode == 0, created
    assert json.loads(created.stdout)["owner_uid"] == machine.uids["alice"]
    listed = machine.run("ip", "netns", "list")
    assert "test" in listed.stdout.split()
    assert listed.stderr == ""  # no "Peer netns reference is invalid"
    assert machine.netns_entries()["/run/netns/test"] == "nsfs"
    links = machine.run("ip", "netns", "exec", "test", "ip", "-br", "link").stdout
    assert re.match(r"lo\s+UNKNOWN", links), links  # lo is up inside the namespace
    # The capability bounding set still lets sockd see other users' processes inside it: bob's
    # process, put there by systemd (NetworkNamespacePath=), is counted, and hidden from alice.
    machine.run(
        "systemd-run",
        "--unit=bob-in-test",
        "--uid=bob",
        "--gid=bob",
        "--property=NetworkNamespacePath=/run/netns/test",
        "sleep",
        "120",
    )
    try:

        def bob_inside() -> bool:
            listing = json.loads(machine.sockctl("alice", "--json", "ns", "list").stdout)
            return any(ns["name"] == "test" and ns["processes"] == 1 for ns in listing)

        machine.container.wait_for("bob's process to be counted in test", bob_inside)
        pids = json.loads(machine.sockctl("alice", "--json", "ns", "pids", "test").stdout)
        assert pids == {"name": "test", "pids": [], "hidden": 1}
    finally:
        machine.run("systemctl", "stop", "bob-in-test.service", check=False)


def test_outsider_is_refused_mutations_but_may_read(machine: Machine) -> None:
    refused = machine.sockctl("bob", "--json", "ns", "create", "bobns")
    assert refused.returncode == 4, refused  # PermissionDenied's exit code
    error = json.loads(refused.stderr)["error"]
    assert error["code"] == "permission_denied"
    assert "needs membership in group sockd" in error["message"]
    assert "bobns" not in machine.run("ip", "netns", "list").stdout.split()
    listing = machine.sockctl("bob", "--json", "ns", "list")
    assert listing.returncode == 0, listing
    assert "test" in [ns["name"] for ns in json.loads(listing.stdout)]


def test_member_runs_commands_and_gets_sockets_inside_its_namespace(machine: Machine) -> None:
    # Under the shipped unit: what `ns exec` commands inherit from it (bounding set, seccomp filter,
    # NoNewPrivileges=, address families) must still let them run, as the caller, unprivileged.
    script = (
        "id -u; grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status; readlink /proc/self/ns/net"
    )
    ran = machine.sockctl("alice", "ns", "exec", "test", "--", "sh", "-c", script)
    assert ran.returncode == 0, ran
    inside = machine.run("ip", "netns", "exec", "test", "readlink", "/proc/self/ns/net").stdout
    assert ran.stdout.splitlines() == [
        str(machine.uids["alice"]),
        "CapPrm:\t0000000000000000",
        "CapEff:\t0000000000000000",
        "NoNewPrivs:\t1",
        inside.strip(),
    ]
    assert (
        machine.sockctl("alice", "ns", "exec", "test", "--", "sh", "-c", "exit 3").returncode == 3
    )
    assert machine.sockctl("bob", "ns", "exec", "test", "--", "true").returncode == 4
    opened = machine.sockctl("alice", "--json", "sock", "open", "--ns", "test", "tcp:0.0.0.0:80")
    assert opened.returncode == 0, opened
    assert json.loads(opened.stdout) == {
        "ns": "test",
        "kind": "tcp",
        "address": "0.0.0.0:80",
        "listening": True,
    }
    assert machine.sockctl("alice", "sock", "open", "tcp:0.0.0.0:80").returncode == 4  # the host's


def test_commands_run_in_units_of_their_own_outside_the_daemon_s_sandbox(machine: Machine) -> None:
    # As udev makes it on a real machine (systemd-nspawn's copy is root-only).
    machine.run("chmod", "0666", "/dev/net/tun")
    uid = machine.uids["alice"]
    script = (
        "tail -1 /proc/self/cgroup; id -G; unshare -r true && echo userns-ok; "
        "exec 3<>/dev/net/tun && echo tun-ok; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status"
    )
    ran = machine.sockctl("alice", "ns", "exec", "test", "--", "sh", "-c", script)
    assert ran.returncode == 0, ran
    cgroup, groups, *rest = ran.stdout.splitlines()
    # Not sockd.service's cgroup (where seccomp forbids user namespaces and the device policy
    # /dev/net/tun): a transient service in alice's slice, with her own groups.
    assert re.fullmatch(
        rf"0::/user\.slice/user-{uid}\.slice/sockd-exec-{uid}-[0-9a-f]+\.service", cgroup
    )
    assert groups.split() == machine.run("id", "-G", "alice").stdout.split()
    assert rest == ["userns-ok", "tun-ok", "CapEff:\t0000000000000000", "NoNewPrivs:\t1"]
    # Deaths by signal come back as such (systemd-run would say 255), and no unit is left behind.
    killed = machine.sockctl("alice", "ns", "exec", "test", "--", "sh", "-c", "kill -TERM $$")
    assert killed.returncode == 128 + 15, killed
    # Arguments reach the command as given: systemd expands neither $VAR nor %-specifiers here.
    literal = ["$HOME", "${USER}", "$$", "%n", "%%", "a b"]
    echoed = machine.sockctl("alice", "ns", "exec", "test", "--", "printf", "%s\\n", *literal)
    assert echoed.stdout.splitlines() == literal, echoed
    # The caller's environment reaches its command only: the unit's root steps (ip, setpriv) run
    # with systemd's, or a caller's LD_PRELOAD would be loaded into them, as root. The loader
    # complains once per process that has it: exactly once, in the command.
    preload = machine.sockctl(
        "alice", "ns", "exec", "-e", "LD_PRELOAD=/nonexistent/libevil.so", "test", "--", "true"
    )
    assert preload.returncode == 0, preload
    assert preload.stderr.count("libevil.so") == 1, preload
    leftover = machine.run(
        "systemctl", "list-units", "--all", "--plain", "--no-legend", "sockd-exec-*"
    )
    assert leftover.stdout.strip() == ""
    # A terminal: the client's pty becomes the unit's controlling terminal (TTYPath=).
    on_tty = machine.run(
        "runuser", "-u", "alice", "--", "script", "-qec",
        "sockctl ns exec test -- sh -c 'tty; ps -o tty= -p $$'", "/dev/null",
    )  # fmt: skip
    # (script(1) may put a ^@ of its own in front: it sends an end-of-file when its stdin ends.)
    names = re.findall(r"pts/\d+", on_tty.stdout)
    assert len(names) == 2 and names[0] == names[1], on_tty  # `tty` and the controlling terminal
    started = machine.wait_journal("SOCKD_OP=ns.exec", unit="sockd.service")
    units = {entry.get("SOCKD_UNIT", "") for entry in machine.journal(unit="sockd.service")}
    assert any(name.startswith(f"sockd-exec-{uid}-") for name in units), started


NAT_SERVER = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.18.1.1", 7007)); s.listen()
while True:
    c, peer = s.accept(); c.sendall(("seen " + peer[0]).encode()); c.close()
"""
NAT_CLIENT = """
import socket
print(*[l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")])
print(socket.create_connection(("198.18.1.1", 7007), timeout=5).recv(100).decode())
print(open("/proc/self/cgroup").read().split()[-1])  # the unified hierarchy's line
"""


def test_a_nat_namespace_gets_its_way_out_and_resolv_conf_in_its_units(machine: Machine) -> None:
    # Under the shipped unit: nft runs in sockd.service's sandbox, and the namespace's resolv.conf
    # reaches a transient unit's command (BindReadOnlyPaths=). The "upstream" is a namespace in
    # the container's own private network: nothing leaves it.
    up = [
        ("ip", "netns", "add", "up"),
        ("ip", "link", "add", "upl0", "type", "veth", "peer", "name", "eth0", "netns", "up"),
        ("ip", "addr", "add", "198.18.0.1/30", "dev", "upl0"),
        ("ip", "link", "set", "upl0", "up"),
        ("ip", "-n", "up", "addr", "add", "198.18.0.2/30", "dev", "eth0"),
        ("ip", "-n", "up", "link", "set", "eth0", "up"),
        ("ip", "-n", "up", "addr", "add", "198.18.1.1/32", "dev", "lo"),
        ("ip", "-n", "up", "link", "set", "lo", "up"),
        ("ip", "route", "add", "198.18.1.0/24", "via", "198.18.0.2"),
        ("systemd-run", "--unit=nat-upstream", "ip", "netns", "exec", "up", "python3", "-c",
         NAT_SERVER),
    ]  # fmt: skip
    uid = machine.uids["alice"]
    try:
        for step in up:
            machine.run(*step)
        machine.run("sed", "-i", 's/^uplinks = \\[\\]/uplinks = ["upl0"]/', "/etc/sockd/sockd.toml")
        machine.run("systemctl", "stop", "sockd.service")  # the next call starts it with that
        machine.sockctl("alice", "ns", "create", "natted", check=True)
        linked = machine.sockctl("alice", "ns", "link", "natted", "--nat", "--dns", "198.18.1.53")
        assert linked.returncode == 0, linked
        ran = machine.sockctl("alice", "ns", "exec", "natted", "--", "python3", "-c", NAT_CLIENT)
        assert ran.returncode == 0, ran
        servers, seen, cgroup = ran.stdout.splitlines()
        assert servers == "198.18.1.53"
        assert seen == "seen 198.18.0.1"  # masqueraded to the uplink's address
        assert re.fullmatch(
            rf"0::/user\.slice/user-{uid}\.slice/sockd-exec-{uid}-[0-9a-f]+\.service", cgroup
        )
        assert "masquerade" in machine.run("nft", "list", "table", "ip", "sockd").stdout
        machine.sockctl("alice", "ns", "delete", "natted", check=True)
        assert machine.run("nft", "list", "table", "ip", "sockd", check=False).returncode != 0
        forwarding = machine.run("cat", "/proc/sys/net/ipv4/conf/upl0/forwarding").stdout
        assert forwarding.strip() == "0"
    finally:
        machine.sockctl("alice", "ns", "delete", "natted")
        machine.run("systemctl", "stop", "nat-upstream.service", check=False)
        machine.run("ip", "route", "del", "198.18.1.0/24", check=False)
        machine.run("ip", "link", "del", "upl0", check=False)
        machine.run("ip", "netns", "del", "up", check=False)
        machine.run("cp", "/opt/sockd/share/sockd.toml.default", "/etc/sockd/sockd.toml")
        machine.run("systemctl", "stop", "sockd.service")


def test_the_owner_is_admin_of_an_admin_namespace_under_the_shipped_unit(machine: Machine) -> None:
    # sockd.service may make no user namespace (RestrictNamespaces=): systemd makes it, in a helper
    # unit running as alice; `ns exec --admin` runs in her unit, as her, with two capabilities.
    uid = machine.uids["alice"]
    try:
        made = machine.sockctl("alice", "ns", "create", "--admin", "lab")
        assert made.returncode == 0, made
        script = (
            "ip link add br0 type bridge && echo added; id -u; "
            "grep CapEff /proc/self/status; tail -1 /proc/self/cgroup"
        )
        ran = machine.sockctl("alice", "ns", "exec", "--admin", "lab", "--", "sh", "-c", script)
        assert ran.returncode == 0, ran
        added, user, caps, cgroup = ran.stdout.splitlines()
        assert (added, user) == ("added", str(uid))
        assert caps.split() == ["CapEff:", f"{(1 << 12) | (1 << 13):016x}"]
        assert re.fullmatch(
            rf"0::/user\.slice/user-{uid}\.slice/sockd-exec-{uid}-[0-9a-f]+\.service", cgroup
        )
        assert "br0" in machine.run("ip", "-n", "lab", "-br", "link").stdout
        refused = machine.sockctl("bob", "ns", "exec", "--admin", "lab", "--", "true")
        assert refused.returncode == 4, refused
        leftover = machine.run(
            "systemctl", "list-units", "--all", "--plain", "--no-legend", "sockd-exec-*"
        )
        assert leftover.stdout.strip() == ""  # the helper unit is gone too
    finally:
        machine.sockctl("alice", "ns", "delete", "lab")


BIG_HOLDER = """
import os, resource, socket, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
held = [socket.socketpair() for _ in range(int(sys.argv[1]))]
print(os.getpid(), flush=True)
time.sleep(120)
"""


def test_processes_of_a_big_holder_are_found_by_scan_helpers(machine: Machine) -> None:
    # A process with thousands of sockets is read by helper processes the daemon starts: under
    # the shipped unit (seccomp filter, bounding set, NoNewPrivileges=) they must run and see it.
    pairs = 2100  # 4 200 fds: more than sockdiag._HELPER_MIN
    holder = machine.container.spawn("python3", "-c", BIG_HOLDER, str(pairs))
    pid = None
    try:
        assert holder.stdout is not None
        pid = int(holder.stdout.readline())
        listed = machine.run("sockctl", "--json", "sock", "list", "-x", check=False)
        assert listed.returncode == 0, listed
        held = [
            row
            for row in json.loads(listed.stdout)["sockets"]
            if any(p["pid"] == pid for p in row["processes"] or [])
        ]
        assert len(held) == 2 * pairs
        assert {p["name"] for row in held for p in row["processes"]} == {"python3"}
    finally:
        if pid is not None:
            machine.run("kill", "-9", str(pid), check=False)
        holder.kill()
        holder.communicate()


KILL_HOLDER = r"""
import socket, sys
l = socket.create_server(("127.0.0.1", 0))
c = socket.create_connection(l.getsockname())
s, _ = l.accept()
print(l.getsockname()[1], flush=True)
s.settimeout(30)
try:
    s.recv(1)
    print("open")
except OSError as e:
    print(e.errno)
"""


def test_a_user_kills_her_own_connection_under_the_shipped_unit(machine: Machine) -> None:
    # SOCK_DESTROY needs CAP_NET_ADMIN and a sock_diag socket: both must survive the hardening.
    holder = machine.container.spawn("python3", "-c", KILL_HOLDER, user="alice")
    try:
        assert holder.stdout is not None
        port = int(holder.stdout.readline())
        refused = machine.sockctl("bob", "sock", "kill", "dport", "=", f":{port}")
        assert refused.returncode == 4, refused
        killed = machine.sockctl("alice", "--json", "sock", "kill", "dport", "=", f":{port}")
        assert killed.returncode == 0, killed
        assert [r["uid"] for r in json.loads(killed.stdout)["killed"]] == [machine.uids["alice"]]
        out, _ = holder.communicate(timeout=30)
        assert out.split() == [str(errno.ECONNRESET)]  # the peer of the closed end: a reset
    finally:
        holder.kill()
        holder.communicate()


def test_audit_records_are_found_by_their_journal_fields(machine: Machine) -> None:
    alice, bob = machine.uids["alice"], machine.uids["bob"]
    # What an administrator types (README): by unit and operation, and by the peer's uid.
    created = machine.wait_journal("SOCKD_OP=ns.create", unit="sockd")
    record = next(r for r in created if r.get("SOCKD_NS") == "test")
    assert record["SOCKD_AUDIT"] == "1"
    assert record["SOCKD_PEER_UID"] == str(alice)
    assert record["SOCKD_PEER_GID"] == str(alice)  # useradd made alice's own group, same id
    assert record["SOCKD_PEER_PID"].isdigit()
    assert record["SOCKD_RESULT"] == "ok"
    assert record["_SYSTEMD_UNIT"] == "sockd.service"
    assert record["MESSAGE"] == f"audit: ns.create by uid {alice}: ok"
    by_bob = machine.wait_journal(f"SOCKD_PEER_UID={bob}", "SOCKD_OP=ns.create")
    assert [(r["SOCKD_OP"], r["SOCKD_NS"], r["SOCKD_RESULT"]) for r in by_bob] == [
        ("ns.create", "bobns", "permission_denied")
    ]


# Stop, restart, kill ---------------------------------------------------------------------------------


def test_stop_is_clean_and_the_next_call_activates_again(machine: Machine) -> None:
    machine.sockctl("alice", "ping", check=True)
    old_pid = machine.show("MainPID")
    # systemd logs every notification it receives at debug level: the proof that STOPPING=1 came.
    machine.run("systemd-analyze", "log-level", "debug")
    try:
        stopped = machine.run("systemctl", "stop", "sockd.service", check=False)
    finally:
        machine.run("systemd-analyze", "log-level", "info")
    assert stopped.returncode == 0, stopped
    assert machine.show("ActiveState") == "inactive"
    assert machine.show("Result") == "success"
    assert machine.show("ExecMainStatus") == "0"
    notes = [
        entry["MESSAGE"]
        for entry in machine.journal("_PID=1", "UNIT=sockd.service")
        if "notification message" in entry.get("MESSAGE", "")
    ]
    assert any(f"from PID {old_pid}" in n and "STOPPING=1" in n for n in notes), notes
    assert machine.wait_journal(f"_PID={old_pid}", "MESSAGE=sockd stopped")
    assert machine.show("ActiveState", "sockd.socket") == "active"
    again = machine.sockctl("bob", "ping")
    assert again.returncode == 0, again
    machine.wait_state("active")
    assert machine.show("MainPID") != old_pid


def test_restart_keeps_namespaces_and_their_owners(machine: Machine) -> None:
    created = machine.sockctl("alice", "ns", "create", "keep")
    assert created.returncode == 0, created
    old_pid = machine.show("MainPID")
    machine.run("systemctl", "restart", "sockd.service")
    assert machine.show("MainPID") != old_pid
    listing = {
        ns["name"]: ns for ns in json.loads(machine.sockctl("bob", "--json", "ns", "list").stdout)
    }
    for name in ("test", "keep"):
        assert listing[name]["owner_uid"] == machine.uids["alice"]
        assert listing[name]["managed"] is True
    assert machine.show("StatusText").endswith("; 2 namespaces managed")
    # And the owner, not someone else, may still delete it after the restart.
    assert machine.sockctl("bob", "ns", "delete", "keep").returncode == 4
    assert machine.sockctl("alice", "ns", "delete", "keep").returncode == 0


def test_kill_during_create_then_next_call_leaves_a_consistent_state(machine: Machine) -> None:
    # A drop-in makes the daemon stop inside ns.create, after the placeholder file and before the
    # bind mount: the moment a crash leaves /run/netns broken for `ip netns`.
    machine.run(
        "sh",
        "-c",
        f"mkdir -p {Path(DROP_IN).parent} && printf '%s\\n' '[Service]' 'ExecStart=' "
        f"{shlex.quote('ExecStart=/opt/sockd/venv/bin/sockd --pause-at ns.create.placeholder')} "
        f"> {DROP_IN}",
    )
    client = None
    try:
        machine.run("systemctl", "daemon-reload")
        machine.run("systemctl", "stop", "sockd.service")
        client = machine.container.spawn("sockctl", "ns", "create", "crash", user="alice")
        machine.wait_journal("SOCKD_PAUSED_AT=ns.create.placeholder", unit="sockd")
        machine.run("systemctl", "kill", "--signal=KILL", "sockd.service")
        _, err = client.communicate(timeout=30)
        assert client.returncode == 3, err  # DaemonUnavailable: the daemon went away
        machine.wait_state("failed")
        assert machine.show("Result") == "signal"
        # The wreck a crash at this point leaves: a placeholder file and a "creating" record.
        assert machine.netns_entries()["/run/netns/crash"] != "nsfs"
        assert machine.registry()["crash"]["state"] == "creating"
    finally:
        if client is not None and client.poll() is None:
            client.kill()
            client.communicate()
        machine.run("rm", "-f", DROP_IN)
        machine.run("systemctl", "daemon-reload")
    assert machine.show("ActiveState", "sockd.socket") == "active"
    # The next call starts a fresh daemon, which repairs before it serves.
    listing = machine.sockctl("alice", "--json", "ns", "list")
    assert listing.returncode == 0, listing
    names = {ns["name"] for ns in json.loads(listing.stdout)}
    assert "crash" not in names
    entries = machine.netns_entries()
    assert set(entries.values()) == {"nsfs"}, entries  # no broken entry left for `ip netns`
    assert {Path(p).name for p in entries} == names
    assert machine.run("ip", "netns", "list").stderr == ""
    registry = machine.registry()
    assert set(registry) == names  # every managed namespace has a record and vice versa
    assert {r["state"] for r in registry.values()} == {"ready"}
    assert machine.wait_journal(
        "SOCKD_NS=crash", "MESSAGE=rolled back namespace crash: its creation was interrupted"
    )
    again = machine.sockctl("alice", "ns", "create", "crash")
    assert again.returncode == 0, again
    assert machine.netns_entries()["/run/netns/crash"] == "nsfs"


def test_reload_applies_the_config_and_idle_exit_stops_the_daemon(machine: Machine) -> None:
    machine.sockctl("alice", "ping", check=True)
    pid = machine.show("MainPID")
    machine.run("sed", "-i", "s/^idle_exit = .*/idle_exit = 1.0/", "/etc/sockd/sockd.toml")
    try:
        machine.run("systemctl", "reload", "sockd.service")
        machine.wait_journal(f"_PID={pid}", "MESSAGE=configuration reloaded")
        machine.wait_state("inactive", timeout=10)
        assert machine.show("Result") == "success"
        assert machine.wait_journal(
            f"_PID={pid}", "MESSAGE=no clients for 1 s, exiting (socket activation restarts)"
        )
        again = machine.sockctl("bob", "ping")
        assert again.returncode == 0, again
    finally:
        machine.run("cp", "/opt/sockd/share/sockd.toml.default", "/etc/sockd/sockd.toml")
        machine.run("systemctl", "stop", "sockd.service")  # no daemon keeps the 1 s idle exit


# The unit files, as installed ------------------------------------------------------------------------


def test_units_pass_verify_and_the_security_threshold(machine: Machine) -> None:
    verify = machine.run("systemd-analyze", "verify", *UNITS, check=False)
    assert (verify.returncode, verify.stdout, verify.stderr) == (0, "", ""), verify
    security = machine.run(
        "systemd-analyze",
        "security",
        "--offline=true",
        f"--threshold={EXPOSURE_THRESHOLD}",
        "--no-pager",
        UNITS[1],
        check=False,
    )
    score = re.search(r"Overall exposure level for sockd.service: (\d+\.\d)", security.stdout)
    assert score is not None, security
    assert security.returncode == 0, f"exposure {score.group(1)} is above {EXPOSURE_THRESHOLD / 10}"
    print(f"systemd-analyze security: sockd.service exposure {score.group(1)}")


# Last: upgrade in place, then uninstall ------------------------------------------------------------


def test_install_again_keeps_an_edited_config_and_restarts_the_daemon(machine: Machine) -> None:
    machine.run("sh", "-c", "echo '# edited by the administrator' >> /etc/sockd/sockd.toml")
    machine.sockctl("alice", "ping", check=True)
    machine.wait_state("active")
    old_pid = machine.show("MainPID")
    again = machine.run("make", "-C", CHECKOUT, "install", env=PIP_OFFLINE, timeout=600)
    assert "kept your /etc/sockd/sockd.toml" in again.stdout
    assert "edited by the administrator" in machine.run("cat", "/etc/sockd/sockd.toml").stdout
    assert machine.show("ActiveState") == "active"
    assert machine.show("MainPID") != old_pid  # the upgrade runs the new code at once


def test_uninstall_removes_everything_but_an_edited_config(machine: Machine) -> None:
    machine.run("sh", "-c", "echo '# edited again' >> /etc/sockd/sockd.toml")
    removed = machine.run("make", "-C", CHECKOUT, "uninstall")
    assert "kept /etc/sockd/sockd.toml" in removed.stdout
    assert machine.run("systemctl", "is-enabled", "sockd.socket", check=False).returncode != 0
    assert machine.show("LoadState", "sockd.service") == "not-found"
    gone = ["/opt/sockd", *UNITS, DEFAULT_SOCKET, "/usr/local/bin/sockctl", "/usr/local/sbin/sockd"]
    gone += ["/usr/local/lib/sysusers.d/sockd.conf", "/usr/local/lib/tmpfiles.d/sockd.conf"]
    left = machine.run(
        "sh", "-c", 'for f in "$@"; do [ -e "$f" ] && echo "$f"; done; true', "-", *gone
    )
    assert left.stdout == ""
    assert "edited again" in machine.run("cat", "/etc/sockd/sockd.toml").stdout
    machine.run("make", "-C", CHECKOUT, "uninstall", "PURGE=1")
    assert machine.run("test", "-e", "/etc/sockd", check=False).returncode == 1
