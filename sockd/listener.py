"""Where the listening socket comes from: systemd socket activation, or a path we bind ourselves."""

import contextlib
import errno
import os
import socket
import stat
from dataclasses import dataclass


class ListenerError(Exception):
    """The daemon cannot listen; the message says why and what to do."""


@dataclass
class Listener:
    sock: socket.socket
    path: str | None
    """The path we bound (and must remove on exit); None for a socket systemd passed us."""
    inode: int | None = None

    def close(self) -> None:
        self.sock.close()
        if self.path is None:
            return
        # Remove the file only if it is still the socket we bound, not a successor's.
        try:
            if os.lstat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass


def from_systemd() -> Listener | None:
    """The socket passed by systemd (LISTEN_FDS), checked to be a listening AF_UNIX SEQPACKET socket."""
    if "LISTEN_FDS" not in os.environ:
        return None
    from systemd import daemon  # noqa: PLC0415 -- only under socket activation

    # listen_fds_with_names() consumes the LISTEN_* variables; call it once, first (systemd-python).
    fds = daemon.listen_fds_with_names(unset_environment=True)
    if not fds:
        return None
    if len(fds) != 1:
        raise ListenerError(f"systemd passed {len(fds)} sockets; sockd.socket must declare one")
    (fd,) = fds
    sock = socket.socket(fileno=fd)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_SEQPACKET:
        sock.detach()
        raise ListenerError(
            "the socket systemd passed is not AF_UNIX SOCK_SEQPACKET: use ListenSequentialPacket="
        )
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise ListenerError("the socket systemd passed is not listening")
    os.set_inheritable(fd, False)
    return Listener(sock, None)


def bind(path: str, mode: int = 0o666, backlog: int = socket.SOMAXCONN) -> Listener:
    """Bind and listen on ``path``, replacing a stale socket file left by a dead daemon.

    A file that is not a socket is never removed; a socket another daemon answers on is never taken.
    """
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        # Bind with a restrictive umask, then open up: never a moment with a wider mode than asked.
        old = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, mode)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ListenerError(f"cannot listen on {path}: {exc.strerror}") from exc
    return Listener(sock, path, os.lstat(path).st_ino)


def _clear_stale(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ListenerError(f"{path} exists and is not a socket; refusing to touch it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        pass  # nobody listens: stale, left by a daemon that died
    except OSError as exc:
        if exc.errno == errno.EPROTOTYPE:
            raise ListenerError(f"{path} is a socket of another type in use; refusing") from exc
        raise ListenerError(f"cannot check {path}: {exc.strerror}") from exc
    else:
        raise ListenerError(f"another sockd answers on {path}; stop it first (or use --socket)")
    finally:
        probe.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
