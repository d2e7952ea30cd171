"""The owner as admin of their own namespace (issue 14): ``ns create --admin``, ``ns exec --admin``.

Real uids, a real daemon. What is checked is the security argument of README ("The owner as admin"):
the capabilities count in the namespace's own user namespace and nowhere else -- not on the host's
network, not in another user's namespace, not on files -- and nobody but the owner gets them.
(This kernel has no dummy interfaces, so links are added as bridges and veth pairs.)
"""

import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sockctl import Client
from tests.conftest import (
    MEMBER,
    OTHER_MEMBER,
    OUTSIDER,
    Daemon,
    Result,
    ns_name,
    sockctl,
)


@pytest.fixture
def as_user(user_python: tuple[str, str]) -> Callable[..., Result]:
    def run(who: tuple[int, int, tuple[int, ...]] | None, daemon: Daemon, *args: str) -> Result:
        return sockctl(daemon, *args, who=who, user_python=user_python)

    return run


@pytest.fixture
def admin_ns(shared_daemon: Daemon, as_user: Callable[..., Result]) -> Iterator[str]:
    name = ns_name("admin")
    made = as_user(MEMBER, shared_daemon, "--json", "ns", "create", "--admin", name)
    assert made.returncode == 0, made.stderr
    yield name
    with Client(shared_daemon.socket) as client:
        client.ns_delete(name, force=True)


def _admin(daemon: Daemon, as_user: Callable[..., Result], name: str, script: str) -> Result:
    return as_user(MEMBER, daemon, "ns", "exec", "--admin", name, "--", "sh", "-c", script)


def test_the_owner_configures_routes_and_links_inside(
    shared_daemon: Daemon, as_user: Callable[..., Result], admin_ns: str
) -> None:
    script = (
        "ip link add br9 type bridge && ip link set br9 up && "
        "ip addr add 10.77.0.1/24 dev br9 && ip route add 10.78.0.0/24 via 10.77.0.2 && "
        "ip link add v9a type veth peer name v9b && "
        "ip -j route show 10.78.0.0/24; id -u; id -g; grep -E '^Cap(Eff|Bnd)' /proc/self/status"
    )
    done = _admin(shared_daemon, as_user, admin_ns, script)
    assert done.returncode == 0, done.stderr
    route_json, uid, gid, eff, bounding = done.stdout.splitlines()
    assert json.loads(route_json)[0]["gateway"] == "10.77.0.2"
    assert (int(uid), int(gid)) == MEMBER[:2]  # still the caller: files stay theirs
    net_admin_raw = f"{(1 << 12) | (1 << 13):016x}"
    assert eff.split() == ["CapEff:", net_admin_raw]
    assert bounding.split() == ["CapBnd:", net_admin_raw]
    # The host sees the change in that namespace (iproute2-visible), and nothing on its own side.
    inside = subprocess.run(
        ["ip", "-n", admin_ns, "-br", "link"], capture_output=True, text=True, check=True
    )
    assert "br9" in inside.stdout and "v9a" in inside.stdout
    host = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True, check=True)
    assert "br9" not in host.stdout
    # Without --admin the owner's command has no capabilities of its own (CapEff 0), yet the
    # kernel lets a user namespace's owner act on what that user namespace owns -- this network
    # namespace -- from any of their processes, exactly as after `unshare -rn`.
    plain = as_user(
        MEMBER,
        shared_daemon,
        "ns",
        "exec",
        admin_ns,
        "--",
        "sh",
        "-c",
        "grep CapEff /proc/self/status; ip link add br8 type bridge && echo added",
    )
    assert plain.stdout.split() == ["CapEff:", "0" * 16, "added"], plain.stderr


def test_nothing_outside_the_namespace_is_reachable_with_those_capabilities(
    shared_daemon: Daemon, as_user: Callable[..., Result], admin_ns: str
) -> None:
    other = ns_name("victim")
    assert as_user(OTHER_MEMBER, shared_daemon, "ns", "create", other).returncode == 0
    fd, secret = tempfile.mkstemp(prefix="sockd-admin-")  # root's, mode 0600
    os.write(fd, b"root only\n")
    os.close(fd)
    try:
        script = (
            f"ip -n {other} link add br7 type bridge; echo other=$?; "
            "nsenter --net=/proc/1/ns/net ip link add br7 type bridge; echo host=$?; "
            f"cat {secret}; echo file=$?; "
            "unshare --net true; echo unshare=$?"
        )
        done = _admin(shared_daemon, as_user, admin_ns, script)
        results = dict(
            line.split("=") for line in done.stdout.splitlines() if "=" in line and " " not in line
        )
        assert sorted(results) == ["file", "host", "other", "unshare"], done
        assert "0" not in results.values(), done  # every one refused
        assert (
            "br7"
            not in subprocess.run(
                ["ip", "-n", other, "-br", "link"], capture_output=True, text=True, check=True
            ).stdout
        )
    finally:
        os.unlink(secret)
        with Client(shared_daemon.socket) as client:
            client.ns_delete(other)


@pytest.mark.parametrize(
    ("who", "code"),
    [
        (OTHER_MEMBER, "permission_denied"),
        (OUTSIDER, "permission_denied"),
        (None, "permission_denied"),
    ],
    ids=["other-member", "outsider", "root"],
)
def test_only_the_owner_is_admin(
    shared_daemon: Daemon,
    as_user: Callable[..., Result],
    admin_ns: str,
    who: tuple[int, int, tuple[int, ...]] | None,
    code: str,
) -> None:
    done = as_user(who, shared_daemon, "--json", "ns", "exec", "--admin", admin_ns, "--", "true")
    assert done.returncode == 4, done.stderr
    error: dict[str, Any] = json.loads(done.stderr)["error"]
    assert error["code"] == code


def test_a_namespace_made_without_admin_has_no_admin_mode(
    shared_daemon: Daemon, as_user: Callable[..., Result]
) -> None:
    name = ns_name("plain")
    assert as_user(MEMBER, shared_daemon, "ns", "create", name).returncode == 0
    try:
        done = as_user(MEMBER, shared_daemon, "--json", "ns", "exec", "--admin", name, "--", "true")
        assert done.returncode == 4
        error = json.loads(done.stderr)["error"]
        assert error["field"] == "admin" and "ns create --admin" in error["message"]
    finally:
        with Client(shared_daemon.socket) as client:
            client.ns_delete(name)


def test_an_admin_namespace_links_and_execs_like_any_other(
    shared_daemon: Daemon, as_user: Callable[..., Result], admin_ns: str
) -> None:
    linked = as_user(MEMBER, shared_daemon, "--json", "ns", "link", admin_ns)
    assert linked.returncode == 0, linked.stderr
    address = json.loads(linked.stdout)["end"]["addresses"][0]
    shown = as_user(MEMBER, shared_daemon, "ns", "exec", admin_ns, "--", "ip", "-br", "addr")
    assert address in shown.stdout
    ping_range = subprocess.run(
        ["ip", "netns", "exec", admin_ns, "cat", "/proc/sys/net/ipv4/ping_group_range"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert ping_range.stdout.split() == ["0", "2147483647"]
    # The owner's own admin commands see the link too, and may take it down.
    done = _admin(shared_daemon, as_user, admin_ns, "ip link set eth0 down && echo down")
    assert done.stdout.strip() == "down", done.stderr


def test_admin_creation_follows_the_create_policy(
    shared_daemon: Daemon, as_user: Callable[..., Result]
) -> None:
    name = ns_name("adminpol")
    refused = as_user(OUTSIDER, shared_daemon, "--json", "ns", "create", "--admin", name)
    assert refused.returncode == 4
    assert json.loads(refused.stderr)["error"]["code"] == "permission_denied"
    assert not os.path.lexists(f"/run/netns/{name}")
    # Root may make one for itself, and is then its admin (uid 0 mapped to itself).
    with Client(shared_daemon.socket) as client:
        client.ns_create(name, admin=True)
        try:
            done = client.run(
                name, ["sh", "-c", "ip link add br6 type bridge && echo ok"], admin=True,
                capture_output=True, text=True,
            )  # fmt: skip
            assert done.stdout.strip() == "ok", done.stderr
        finally:
            client.ns_delete(name)
