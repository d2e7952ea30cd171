"""Running a command with sockets passed the way systemd socket activation does (sd_listen_fds(3))."""

import os
import socket
from typing import NoReturn

FIRST_FD = 3  # SD_LISTEN_FDS_START


def valid_fd_name(name: str) -> bool:
    """What systemd accepts in LISTEN_FDNAMES: 1-255 printable ASCII characters, no ``:``."""
    return 0 < len(name) <= 255 and name.isascii() and name.isprintable() and ":" not in name


def exec_with_socket(argv: list[str], sock: socket.socket, name: str) -> NoReturn:
    """Replace this process with ``argv``, ``sock`` as fd 3, LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES set.

    The process keeps its pid across exec, so LISTEN_PID is this process's pid. Every other
    descriptor sockctl holds is close-on-exec. Raises OSError if ``argv[0]`` cannot be run.
    """
    if sock.fileno() == FIRST_FD:
        os.set_inheritable(FIRST_FD, True)
    else:
        os.dup2(sock.fileno(), FIRST_FD)  # inheritable; replaces whatever was there (close-on-exec)
    env = {
        **os.environ,
        "LISTEN_FDS": "1",
        "LISTEN_PID": str(os.getpid()),
        "LISTEN_FDNAMES": name,
    }
    os.execvpe(argv[0], argv, env)  # noqa: S606 -- argv only, never a shell, by design
