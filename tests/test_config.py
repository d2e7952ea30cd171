"""The policy file: validated with named problems, every key defaulted, reloaded on SIGHUP."""

import signal
from pathlib import Path

import pytest

from sockctl import QuotaExceeded
from sockd.config import Config, ConfigError, load
from tests.conftest import DEFAULT_CONFIG, MEMBER, Daemon, as_user, ns_name, start_daemon


def test_missing_default_config_means_defaults(tmp_path: Path) -> None:
    assert load(None) == Config() or Path("/etc/sockd/sockd.toml").exists()
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert load(str(empty)) == Config()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[policy\n", "not valid TOML"),
        ("[policy]\nnamespace_quota = -1\n", "policy.namespace_quota"),
        ("[policy]\nnamespace_qouta = 3\n", "policy.namespace_qouta"),
        ("[limits]\nidle_timeout = 0\n", "limits.idle_timeout"),
        ('[log]\nlevel = "loud"\n', "log.level"),
        ("[surprise]\n", "surprise"),
    ],
)
def test_bad_config_names_the_problem(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "sockd.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=problem.replace(".", r"\.")):
        load(str(path))


def test_explicit_missing_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load(str(tmp_path / "absent.toml"))


def test_daemon_refuses_to_start_with_a_bad_config(daemon_dir: Path) -> None:
    daemon = start_daemon(daemon_dir, config="[policy]\nnamespace_quota = 'many'\n", wait=False)
    assert daemon.proc.wait(15) != 0
    assert "policy.namespace_quota" in daemon.log()


def _create_as_member(daemon: Daemon, user_python: tuple[str, str], name: str) -> str:
    code = f"""
import json
from sockctl import Client, SockdError
try:
    with Client() as c:
        c.ns_create({name!r})
    print(json.dumps("ok"))
except SockdError as exc:
    print(json.dumps(type(exc).__name__))
"""
    result: str = as_user(MEMBER, user_python, code, daemon.socket)
    return result


def test_sighup_reloads_the_policy_and_a_bad_reload_keeps_the_old(
    daemon: Daemon, user_python: tuple[str, str]
) -> None:
    first, second = ns_name("hup"), ns_name("hup")
    try:
        daemon.config.write_text(
            DEFAULT_CONFIG.replace("namespace_quota = 4", "namespace_quota = 1")
        )
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for_log("configuration reloaded")
        assert _create_as_member(daemon, user_python, first) == "ok"
        assert _create_as_member(daemon, user_python, second) == QuotaExceeded.__name__

        daemon.config.write_text("[policy]\nnamespace_quota = 'lots'\n")
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for_log("reload failed, keeping the old policy")
        assert _create_as_member(daemon, user_python, second) == QuotaExceeded.__name__
    finally:
        with daemon.client() as client:
            for info in client.ns_list():
                if info.name in (first, second):
                    client.ns_delete(info.name)
