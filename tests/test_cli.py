"""The CLI as a person and a script meet it: tables, --json, exit codes, errors, completion."""

import json
import os
import subprocess
import sys

from sockctl.cli import cli
from tests.conftest import MEMBER, OUTSIDER, REPO, Daemon, ns_name, sockctl


def test_every_command_takes_json_before_or_after_the_command(shared_daemon: Daemon) -> None:
    for args in (["ping"], ["whoami"], ["status"], ["ns", "list"], ["ns", "identify"]):
        before = sockctl(shared_daemon, "--json", *args)
        after = sockctl(shared_daemon, *args, "--json")
        assert before.returncode == after.returncode == 0, (args, before.stderr, after.stderr)
        json.loads(before.stdout)
        json.loads(after.stdout)


def test_human_list_is_an_aligned_table(
    shared_daemon: Daemon, user_python: tuple[str, str]
) -> None:
    name = ns_name("table")
    assert (
        sockctl(shared_daemon, "ns", "create", name, who=MEMBER, user_python=user_python).returncode
        == 0
    )
    try:
        out = sockctl(shared_daemon, "ns", "list").stdout.splitlines()
        header = out[0]
        assert header.split() == ["NAME", "ID", "NSID", "OWNER", "PROCS", "LINKS", "CREATED"]
        (row,) = [line for line in out if line.startswith(name + " ")]
        assert row.index(str(MEMBER[0])) == header.index("OWNER")
    finally:
        sockctl(shared_daemon, "ns", "delete", name)


def test_errors_are_one_line_with_the_documented_exit_code(
    shared_daemon: Daemon, user_python: tuple[str, str]
) -> None:
    denied = sockctl(
        shared_daemon, "ns", "create", ns_name("no"), who=OUTSIDER, user_python=user_python
    )
    assert denied.returncode == 4
    assert denied.stderr.count("\n") == 1
    assert "needs membership in group 23100" in denied.stderr
    missing = sockctl(shared_daemon, "ns", "delete", ns_name("absent"))
    assert missing.returncode == 5
    assert missing.stderr.startswith("sockctl: no namespace named")


def test_missing_daemon_says_how_to_start_it(tmp_path: object) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "SOCKD_SOCKET": "/nonexistent/sockd.sock"}
    proc = subprocess.run(
        [sys.executable, "-m", "sockctl", "ping"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 3
    assert "systemctl start sockd.socket" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "sockctl", "--json", "ping"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert json.loads(proc.stderr)["error"]["code"] == "DaemonUnavailable"


def test_shell_completion_offers_namespace_names(shared_daemon: Daemon) -> None:
    name = ns_name("compl")
    with shared_daemon.client() as client:
        client.ns_create(name)
    try:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "SOCKD_SOCKET": shared_daemon.socket,
            "_SOCKCTL_COMPLETE": "bash_complete",
            "COMP_WORDS": f"sockctl ns delete {name[:-1]}",
            "COMP_CWORD": "3",
        }
        proc = subprocess.run(
            [sys.executable, "-m", "sockctl"], capture_output=True, text=True, env=env, check=False
        )
        assert f"plain,{name}" in proc.stdout.splitlines()
    finally:
        with shared_daemon.client() as client:
            client.ns_delete(name)


def test_cli_never_imports_pydantic_on_the_hot_path(shared_daemon: Daemon) -> None:
    code = (
        "import sys\n"
        "from sockctl.cli import cli\n"
        f"cli(['--socket', {shared_daemon.socket!r}, 'ns', 'list'], standalone_mode=False)\n"
        "print('PYDANTIC' if 'pydantic' in sys.modules else 'LEAN')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout.splitlines()[-1] == "LEAN"


def test_schema_command_prints_the_contract() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sockctl", "schema"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert "ns.create" in json.loads(proc.stdout)["x-operations"]


def test_every_command_and_option_has_help() -> None:
    import click

    def walk(command: click.Command, path: str) -> None:
        assert command.help or command.short_help, path
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{path} {param.opts}"
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, f"{path} {name}")

    walk(cli, "sockctl")
