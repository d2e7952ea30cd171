"""``sockd``: the command line of the daemon."""

import contextlib
import errno
import fcntl
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from sockctl.protocol import DEFAULT_SOCKET, VERSION
from sockd.netns import DEFAULT_NETNS_DIR, Faults

if TYPE_CHECKING:
    from sockd.config import Config

DEFAULT_STATE_DIR = "/run/sockd"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--socket",
    "socket_path",
    default=DEFAULT_SOCKET,
    show_default=True,
    envvar="SOCKD_SOCKET",
    help="Socket to bind when not started by systemd socket activation.",
)
@click.option(
    "--config",
    "config_path",
    default=None,
    help="Policy file (TOML). Default /etc/sockd/sockd.toml if it exists, else built-in defaults.",
)
@click.option(
    "--state-dir",
    default=DEFAULT_STATE_DIR,
    show_default=True,
    help="Runtime directory for the ownership registry and the instance lock.",
)
@click.option(
    "--netns-dir",
    default=DEFAULT_NETNS_DIR,
    show_default=True,
    help="Where named network namespaces live (iproute2 uses /run/netns).",
)
@click.option(
    "--socket-mode",
    default="0666",
    show_default=True,
    help="Mode of a socket sockd binds itself (policy is enforced in the daemon).",
)
@click.option(
    "--log-target",
    type=click.Choice(["auto", "journal", "stderr"]),
    default="auto",
    show_default=True,
    help="auto: the journal when it is there, else stderr.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="Override the config file's log.level.",
)
@click.option("--schema", is_flag=True, help="Print the protocol's JSON Schema and exit.")
@click.option("--check-config", is_flag=True, help="Validate the config file and exit.")
@click.option(
    "--pause-at",
    type=click.Choice(Faults.STEPS),
    default=None,
    hidden=True,
    help="Testing only: block a request at this step so a test can kill the daemon.",
)
@click.version_option(VERSION, prog_name="sockd")
def main(
    socket_path: str,
    config_path: str | None,
    state_dir: str,
    netns_dir: str,
    socket_mode: str,
    log_target: str,
    log_level: str | None,
    schema: bool,
    check_config: bool,
    pause_at: str | None,
) -> None:
    """sockd: privileged helper for network namespaces and sockets.

    Listens on an AF_UNIX SOCK_SEQPACKET socket (from systemd socket activation, or SOCKET) and
    serves sockctl clients, deciding per request from the peer's kernel credentials and the policy.
    SIGHUP reloads the config; SIGTERM drains requests in flight and exits 0.
    """
    if schema:
        import json

        from sockctl.schema import json_schema

        click.echo(json.dumps(json_schema(), indent=2))
        return
    from sockd.config import ConfigError, load

    try:
        config = load(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if check_config:
        click.echo(f"{config_path or 'built-in defaults'}: ok")
        return
    if os.geteuid() != 0:
        raise click.ClickException("sockd must run as root (it mounts and enters namespaces)")
    try:
        mode = int(socket_mode, 8)
    except ValueError as exc:
        raise click.BadParameter("an octal mode such as 0666", param_hint="--socket-mode") from exc
    sys.exit(
        _run(
            config,
            config_path,
            socket_path,
            state_dir,
            netns_dir,
            mode,
            log_target,
            log_level or config.log.level,
            pause_at,
        )
    )


def _run(
    config: "Config",
    config_path: str | None,
    socket_path: str,
    state_dir: str,
    netns_dir: str,
    mode: int,
    log_target: str,
    log_level: str,
    pause_at: str | None,
) -> int:
    from sockd import linux
    from sockd import listener as listeners
    from sockd.config import ConfigError, load
    from sockd.daemon import Daemon
    from sockd.log import Logger
    from sockd.server import Server

    linux.limit_malloc_arenas(2)  # before any thread: see there

    log = Logger(log_target, log_level)  # type: ignore[arg-type]
    notify = _notifier()
    try:
        Path(state_dir).mkdir(mode=0o755, parents=True, exist_ok=True)
        lock = os.open(Path(state_dir) / "sockd.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        log.error(_unusable(state_dir, exc))
        return 1
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.error(f"another sockd uses {state_dir}; stop it first (or use --state-dir)")
        return 1
    try:
        listener = listeners.from_systemd() or listeners.bind(socket_path, mode)
    except listeners.ListenerError as exc:
        log.error(str(exc))
        return 1
    try:
        try:
            daemon = Daemon(
                config,
                config_path=config_path,
                state_dir=state_dir,
                log=log,
                netns_dir=netns_dir,
                pause_at=pause_at,
            )
            daemon.reconcile()
        except OSError as exc:
            log.error(_unusable(exc.filename or state_dir, exc))
            return 1
        server = Server(daemon, listener.sock, lambda: daemon.config.limits, log, notify)

        def reload() -> None:
            try:
                daemon.reload(load(config_path))
            except ConfigError as exc:
                log.error(f"reload failed, keeping the old policy: {exc}")
                return
            log.info("configuration reloaded")

        server.reload = reload
        where = listener.path or "the socket passed by systemd"

        def ready() -> None:
            log.info(f"sockd {VERSION} serving on {where}", SOCKD_SOCKET=listener.path)
            notify(
                f"READY=1\nSTATUS=Serving on {where}; "
                f"{daemon.namespaces.count_managed()} namespaces managed"
            )

        server.run(ready)
    finally:
        listener.close()
        os.close(lock)
    log.info("sockd stopped")
    return 0


def _unusable(path: str, exc: OSError) -> str:
    """The start-up refusal for a state or netns directory sockd cannot write (full /run, ...)."""
    hint = {
        errno.ENOSPC: f"the filesystem is full: free space or inodes there (df -h -i {path})",
        errno.EDQUOT: "a disk quota is exhausted",
        errno.EROFS: "the filesystem is read-only",
        errno.EACCES: "permission denied (sockd runs as root: check the mount options and LSMs)",
    }.get(exc.errno or 0, "fix that")
    return f"cannot start: {path}: {exc.strerror}; {hint}, then start sockd again"


def _notifier() -> Callable[[str], None]:
    """sd_notify through systemd-python; a no-op without NOTIFY_SOCKET (a foreground run)."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return lambda _: None
    from systemd import daemon

    def notify(state: str) -> None:
        with contextlib.suppress(OSError):  # systemd went away; nothing to tell
            daemon.notify(state)

    return notify
