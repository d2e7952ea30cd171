"""The first thing a person does: start sockd, create a namespace as a user, see it with ip."""

import subprocess

from tests.conftest import MEMBER, Daemon, ip_netns_list, ns_name, sockctl


def test_member_creates_namespace_that_ip_sees(
    daemon: Daemon, user_python: tuple[str, str]
) -> None:
    name = ns_name("smoke")
    created = sockctl(daemon, "--json", "ns", "create", name, who=MEMBER, user_python=user_python)
    assert created.returncode == 0, created.stderr
    assert created.json()["owner_uid"] == MEMBER[0]
    assert name in ip_netns_list()
    links = subprocess.run(
        ["ip", "netns", "exec", name, "ip", "-br", "link"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "UP" in links.split("\n")[0]
    deleted = sockctl(daemon, "ns", "delete", name, who=MEMBER, user_python=user_python)
    assert deleted.returncode == 0, deleted.stderr
    assert name not in ip_netns_list()
