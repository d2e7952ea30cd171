"""Who may do what, end to end: the real daemon, the real CLI, real uids (table-driven)."""

import json
from dataclasses import dataclass

import pytest

from tests.conftest import (
    MEMBER,
    OTHER_MEMBER,
    OUTSIDER,
    Daemon,
    ns_name,
    sockctl,
)

ROOT = None  # run as root (no setpriv)
Who = tuple[int, int, tuple[int, ...]] | None


@dataclass(frozen=True)
class Case:
    who: Who
    args: tuple[str, ...]
    exit_code: int
    audited: str | None = None  # the SOCKD_RESULT of the audit record, for mutating operations

    def __str__(self) -> str:
        who = "root" if self.who is None else f"uid{self.who[0]}"
        return f"{who}:{' '.join(self.args)}->{self.exit_code}"


def _create_as(daemon: Daemon, who: Who, name: str, user_python: tuple[str, str]) -> int:
    return sockctl(daemon, "ns", "create", name, who=who, user_python=user_python).returncode


READ_ONLY = [("ping",), ("whoami",), ("status",), ("ns", "list"), ("ns", "identify")]

CASES = [
    *[Case(who, args, 0) for who in (ROOT, MEMBER, OUTSIDER) for args in READ_ONLY],
    Case(ROOT, ("ns", "create", "{new}"), 0, "ok"),
    Case(MEMBER, ("ns", "create", "{new}"), 0, "ok"),
    Case(OUTSIDER, ("ns", "create", "{new}"), 4, "permission_denied"),
    Case(ROOT, ("ns", "delete", "{others}"), 0, "ok"),
    Case(MEMBER, ("ns", "delete", "{others}"), 4, "permission_denied"),
    Case(OUTSIDER, ("ns", "delete", "{others}"), 4, "permission_denied"),
    Case(MEMBER, ("ns", "delete", "{missing}"), 5, "not_found"),
    Case(ROOT, ("ns", "pids", "{others}"), 0),
    Case(OUTSIDER, ("ns", "pids", "{others}"), 0),
    Case(MEMBER, ("ns", "pids", "{missing}"), 5),
    Case(MEMBER, ("ns", "create", "../etc"), 9, "invalid_request"),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_access_matrix(shared_daemon: Daemon, user_python: tuple[str, str], case: Case) -> None:
    others = ns_name("victim")
    assert _create_as(shared_daemon, OTHER_MEMBER, others, user_python) == 0
    new = ns_name("new")
    args = [a.format(new=new, others=others, missing=ns_name("missing")) for a in case.args]
    before = len(shared_daemon.audit())
    try:
        result = sockctl(shared_daemon, "--json", *args, who=case.who, user_python=user_python)
        assert result.returncode == case.exit_code, result.stderr
        if case.exit_code == 0:
            json.loads(result.stdout)  # --json output parses
        else:
            error = json.loads(result.stderr)["error"]
            assert error["exit_code"] == case.exit_code
        records = shared_daemon.audit()[before:]
        if case.audited is None:
            assert records == []
        else:
            (record,) = records
            uid = 0 if case.who is None else case.who[0]
            assert record["SOCKD_PEER_UID"] == str(uid)
            assert record["SOCKD_OP"] == f"ns.{args[1]}"
            assert record["SOCKD_RESULT"] == case.audited
            if case.audited != "invalid_request":
                assert record["SOCKD_NS"] == args[2]
    finally:
        with shared_daemon.client() as client:
            for name in (new, others):
                if name in {i.name for i in client.ns_list()}:
                    client.ns_delete(name, force=True)


def test_whoami_reports_kernel_identity(
    shared_daemon: Daemon, user_python: tuple[str, str]
) -> None:
    me = sockctl(shared_daemon, "--json", "whoami", who=MEMBER, user_python=user_python).json()
    assert (me["uid"], me["gid"], me["groups"]) == (MEMBER[0], MEMBER[1], list(MEMBER[2]))
    assert me["may_create"] is True
    assert me["sees_all_processes"] is False
    outsider = sockctl(shared_daemon, "--json", "whoami", who=OUTSIDER, user_python=user_python)
    assert outsider.json()["may_create"] is False
    assert outsider.json()["groups"] == []
