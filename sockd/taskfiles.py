"""Which process holds which socket, from the kernel's BPF ``task_file`` iterator.

Part of the Linux layer (see :mod:`sockd.linux`). The classic way to map sockets to processes,
ss's and psutil's, is a ``readlink`` of every ``/proc/PID/fd/N`` on the host: ~3 µs each, nearly
all kernel time (path lookup, ptrace check, d_path), 300 ms at 100 000 open files. The kernel can
walk the same fd tables itself: a BPF iterator program of type ``task_file`` (Linux >= 5.8) is
run once per open file of every process, and ours writes the 16-byte record ``(socket inode,
tgid << 32 | fd)`` of each socket into a seq_file that a ``read()`` drains. The whole host is
then walked in one read loop: 18 000 sockets in ~6 ms here, ~0.3 µs per socket.

It sees what ``/proc/PID/fd`` shows, which is what ss and psutil report: the fd table of each
process's main thread. The kernel also visits threads whose table differs from the main
thread's (one that called ``unshare(CLONE_FILES)``, or every thread once the main thread has
exited); the program skips any task that is not its process's main thread, so such fds are
not reported, as with ``ss -p``, and no socket is reported once per thread.

The program is 27 instructions assembled here (there is no libbpf in Python); the offsets of
the five struct members it reads (``task_struct.pid`` and ``.tgid``, ``file.f_inode``,
``inode.i_mode``, ``inode.i_ino``) are looked up by name in the running kernel's BTF
(``/sys/kernel/btf/vmlinux``), and the verifier checks every load against the same BTF: a load
outside the struct it reads is refused.
Kernel references: ``kernel/bpf/task_iter.c`` (the iterator, ``struct bpf_iter__task_file``),
``include/uapi/linux/bpf.h`` (``union bpf_attr``, instruction encoding), ``Documentation/bpf/
btf.rst`` (the BTF format).

It needs what loading a tracing program needs: CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN), a
kernel with BTF, no lockdown in confidentiality mode, and ``bpf()`` allowed by seccomp. The pids
it reports are the initial pid namespace's (``task->tgid``), so it is only used by a daemon
living there. Anything missing makes :meth:`TaskFiles.scan` return None, with the reason in
:attr:`TaskFiles.unavailable`; the caller then reads ``/proc/*/fd``.
"""

import array
import ctypes
import errno
import os
import struct
import sys
import threading
from collections.abc import Callable

from sockd import linux

_BPF_PROG_LOAD = 5
_BPF_LINK_CREATE = 28
_BPF_ITER_CREATE = 33
_BPF_PROG_TYPE_TRACING = 26
_BPF_TRACE_ITER = 28  # enum bpf_attach_type
_BPF_FUNC_SEQ_WRITE = 127
_PROG_LOAD_ATTR = struct.Struct("=IIQQIIQII16sIIIIQIIQIII4x")
"""union bpf_attr for BPF_PROG_LOAD, prog_type through attach_btf_obj_fd (120 bytes)."""
_PROC_PID_INIT_INO = 0xEFFFFFFC
"""The initial pid namespace's inode number (include/linux/proc_ns.h)."""
_RECORD = 16
_READ_SIZE = 1 << 20


class TaskFiles:
    """The loaded iterator: a link (holding the program) that stays for the daemon's life, one
    fd, then one iterator fd per scan. Loading is lazy, once, thread-safe; a failure is final.

    >>> files = TaskFiles()
    >>> found = files.scan()   # None if the kernel or the sandbox does not allow it
    """

    def __init__(
        self,
        btf: str = "/sys/kernel/btf/vmlinux",
        on_load: Callable[[str | None], None] = lambda why: None,
        on_error: Callable[[str], None] = lambda why: None,
    ) -> None:
        """``on_load`` is told once, at the first scan, None (loaded) or why it is unavailable;
        ``on_error`` why a scan of the loaded iterator failed (that scan returns None)."""
        self._btf = btf
        self._on_load = on_load
        self._on_error = on_error
        self._lock = threading.Lock()
        self._link = -1
        self._tried = False
        self.unavailable: str | None = None
        """Why scans return None, once a load was tried and failed."""

    def scan(self) -> "tuple[array.array[int], array.array[int]] | None":
        """(socket inodes, holders packed ``pid << 32 | fd``), in step, one entry per open file
        that is a socket, for every process on the host; None if the iterator is unavailable.

        A socket shared by several processes (or fds) appears once per fd. Processes exiting
        meanwhile are simply missed or included, as with a /proc walk."""
        try:
            fd = self._iterator()
        except OSError as exc:  # ENOMEM, EMFILE: this scan reads /proc instead
            self._on_error(f"task_file iterator: {exc}")
            return None
        if fd < 0:
            return None
        # Straight into the arrays, a read at a time: no buffer of the whole output (3.2 MB at
        # 200 000 sockets, twice that while it grows) is ever held.
        inodes, packed = array.array("Q"), array.array("Q")
        rest = b""
        try:
            while True:
                try:
                    chunk = os.read(fd, _READ_SIZE)
                except BlockingIOError:  # a million files without a socket: read on
                    continue
                if not chunk:
                    break
                if rest:
                    chunk, rest = rest + chunk, b""
                whole = len(chunk) - len(chunk) % _RECORD
                if whole != len(chunk):  # a read that ends inside a record: keep its start
                    chunk, rest = chunk[:whole], chunk[whole:]
                records = array.array("Q", chunk)
                inodes.extend(records[0::2])
                packed.extend(records[1::2])
        except OSError as exc:
            self._on_error(f"task_file iterator: reading: {exc}")
            return None
        finally:
            os.close(fd)
        if rest:
            self._on_error(f"task_file iterator: {len(rest)} bytes at the end are no whole record")
            return None
        return inodes, packed

    def close(self) -> None:
        with self._lock:
            if self._link >= 0:
                os.close(self._link)
                self._link = -1

    def _iterator(self) -> int:
        """A new iterator fd; -1 if unavailable. Under the lock, so close() cannot pull the
        link from under it."""
        with self._lock:
            if not self._tried:
                self._tried = True
                try:
                    self._link = _attach(_program(_btf_layout(self._btf)))
                except (OSError, ValueError, LookupError, struct.error) as exc:
                    # LookupError, struct.error: BTF that ends or points where it should not
                    self.unavailable = str(exc) or type(exc).__name__
                self._on_load(self.unavailable)
            if self._link < 0:
                return -1
            return _bpf(_BPF_ITER_CREATE, struct.pack("=II", self._link, 0))


def _attach(program: tuple[bytes, int]) -> int:
    """Load the program and create its iterator link; the link fd (it holds the program)."""
    if os.stat("/proc/self/ns/pid").st_ino != _PROC_PID_INIT_INO:
        raise OSError("not in the initial pid namespace: the iterator's pids would not be ours")
    if sys.byteorder != "little":
        raise OSError(errno.ENOSYS, "the program is encoded for little-endian machines only")
    code, func_id = program
    insns = ctypes.create_string_buffer(code, len(code))
    licence = ctypes.create_string_buffer(b"Dual MIT/GPL")  # bpf_seq_write is GPL-only
    log = ctypes.create_string_buffer(1 << 16)
    attr = _PROG_LOAD_ATTR.pack(
        _BPF_PROG_TYPE_TRACING,
        len(code) // 8,
        ctypes.addressof(insns),
        ctypes.addressof(licence),
        1,  # log_level: the verifier says why it refused
        len(log),
        ctypes.addressof(log),
        0,  # kern_version
        0,  # prog_flags
        b"sockd_holders",
        0,  # prog_ifindex
        _BPF_TRACE_ITER,
        0,  # prog_btf_fd
        0,  # func_info_rec_size
        0,  # func_info
        0,  # func_info_cnt
        0,  # line_info_rec_size
        0,  # line_info
        0,  # line_info_cnt
        func_id,  # attach_btf_id
        0,  # attach_btf_obj_fd: vmlinux
    )
    try:
        prog = _bpf(_BPF_PROG_LOAD, attr)
    except OSError as exc:
        lines = log.value.decode(errors="replace").strip().splitlines()
        raise OSError(exc.errno, f"BPF program refused: {exc.strerror}: {lines[-1:]}") from exc
    try:
        # prog_fd, target_fd, attach_type, flags, then iter_info/len (none: every task)
        return _bpf(_BPF_LINK_CREATE, struct.pack("=IIII16x", prog, 0, _BPF_TRACE_ITER, 0))
    finally:
        os.close(prog)  # the link keeps the program


def _bpf(command: int, attr: bytes) -> int:
    """bpf(2) (Python's os module has none); a new fd, or OSError."""
    buffer = ctypes.create_string_buffer(attr, len(attr))
    result = linux.syscall("bpf", command, buffer, len(attr))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


# The program. It is run with r1 = struct bpf_iter__task_file *ctx {meta, task, u32 fd, file}
# (8-byte slots), and for files that are sockets, in a process's main thread (task->pid ==
# task->tgid), writes {inode, tgid << 32 | fd} with bpf_seq_write(ctx->meta->seq, fp - 16, 16).
# Encoding: struct bpf_insn {u8 code; u8 dst:4, src:4; s16 off; s32 imm} (little-endian
# bitfields), opcodes from include/uapi/linux/bpf{,_common}.h.

_LDX_DW, _LDX_W, _LDX_H = 0x79, 0x61, 0x69
_STX_DW = 0x7B
_MOV_X, _MOV_K, _ADD_K, _AND_K, _LSH_K, _OR_X = 0xBF, 0xB7, 0x07, 0x57, 0x67, 0x4F
_JEQ_K, _JNE_K, _JNE_X, _CALL, _EXIT = 0x15, 0x55, 0x5D, 0x85, 0x95
_S_IFMT, _S_IFSOCK = 0o170000, 0o140000
_OUT = "out"  # the jump target: return 0


def _program(layout: "dict[str, int]") -> tuple[bytes, int]:
    """The instructions, and the BTF id to attach them to."""
    r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, fp = range(11)
    steps: list[tuple[int, int, int, int | str, int]] = [
        (_MOV_X, r6, r1, 0, 0),  # r6 = ctx
        (_LDX_DW, r7, r6, 24, 0),  # r7 = ctx->file
        (_JEQ_K, r7, 0, _OUT, 0),
        (_LDX_DW, r2, r7, layout["file.f_inode"], 0),
        (_JEQ_K, r2, 0, _OUT, 0),
        (_LDX_H, r3, r2, layout["inode.i_mode"], 0),
        (_AND_K, r3, 0, 0, _S_IFMT),
        (_JNE_K, r3, 0, _OUT, _S_IFSOCK),  # not a socket
        (_LDX_DW, r4, r2, layout["inode.i_ino"], 0),
        (_STX_DW, fp, r4, -16, 0),  # record.inode
        (_LDX_DW, r8, r6, 8, 0),  # r8 = ctx->task
        (_JEQ_K, r8, 0, _OUT, 0),
        (_LDX_W, r5, r8, layout["task_struct.tgid"], 0),
        (_LDX_W, r0, r8, layout["task_struct.pid"], 0),
        (_JNE_X, r0, r5, _OUT, 0),  # not the main thread: /proc/PID/fd would not show it
        (_LSH_K, r5, 0, 0, 32),
        (_LDX_W, r9, r6, 16, 0),  # ctx->fd
        (_OR_X, r5, r9, 0, 0),
        (_STX_DW, fp, r5, -8, 0),  # record.holder
        (_LDX_DW, r1, r6, 0, 0),  # ctx->meta
        (_LDX_DW, r1, r1, 0, 0),  # meta->seq
        (_MOV_X, r2, fp, 0, 0),
        (_ADD_K, r2, 0, 0, -16),
        (_MOV_K, r3, 0, 0, 16),
        (_CALL, 0, 0, 0, _BPF_FUNC_SEQ_WRITE),
        (_MOV_K, r0, 0, 0, 0),  # out:
        (_EXIT, 0, 0, 0, 0),
    ]
    out = len(steps) - 2
    code = b"".join(
        struct.pack("=BBhi", op, src << 4 | dst, out - i - 1 if off == _OUT else off, imm)
        for i, (op, dst, src, off, imm) in enumerate(steps)
    )
    return code, layout["bpf_iter_task_file"]


# BTF ------------------------------------------------------------------------------------------

_BTF_HEADER = struct.Struct("=HBBIIIII")
_BTF_TYPE = struct.Struct("=III")
_BTF_MAGIC = 0xEB9F
_KIND_STRUCT, _KIND_UNION, _KIND_FUNC = 4, 5, 12
_KIND_ALIASES = frozenset({8, 9, 10, 11, 18})  # typedef, volatile, const, restrict, type_tag
# Bytes after the 12-byte struct btf_type, per kind (INT .. ENUM64): fixed, and per vlen item.
_KIND_EXTRA = (0, 4, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 4, 0, 0)
_KIND_ITEM = (0, 0, 0, 0, 12, 12, 8, 0, 0, 0, 0, 0, 0, 8, 0, 12, 0, 0, 0, 12)
_WANTED = {
    "task_struct": ("pid", "tgid"),
    "file": ("f_inode",),
    "inode": ("i_mode", "i_ino"),
}
_ITERATOR = "bpf_iter_task_file"


def _btf_layout(path: str) -> dict[str, int]:
    """Byte offsets of the members the program reads (``"struct.member"``) and the BTF id of the
    iterator's attach point (``"bpf_iter_task_file"``), from the kernel's BTF.

    Read a piece at a time (pread): the file is 5 MB, and reading it whole was a third of the
    daemon's peak memory growth in its first listing with processes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise OSError(f"the kernel has no BTF ({path})") from exc
    try:
        return _BtfFile(fd, path).layout()
    finally:
        os.close(fd)


_BTF_CHUNK = 1 << 18


class _BtfFile:
    """The kernel's BTF, read where needed: a pass over the types for their offsets, then the few
    structs the program reads."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd, self.path = fd, path
        magic, _, _, header, type_off, type_len, str_off, str_len = _BTF_HEADER.unpack(
            self.read(0, _BTF_HEADER.size)
        )
        if magic != _BTF_MAGIC:
            raise ValueError(f"{path}: not BTF of this byte order")
        self.types = (header + type_off, header + type_off + type_len)
        self.strings = (header + str_off, header + str_off + str_len)
        self.where = array.array("I", [0])  # file offset of each type, by id (0 is void)

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` (sysfs hands a big read over in pieces)."""
        data = os.pread(self.fd, size, offset)
        while len(data) < size:
            more = os.pread(self.fd, size - len(data), offset + len(data))
            if not more:
                raise ValueError(f"{self.path}: truncated at {offset + len(data)}")
            data += more
        return data

    def string_offsets(self, names: list[str]) -> dict[str, int]:
        """Each name's offset in the string section (-1: absent), a chunk at a time."""
        first, last = self.strings
        patterns = {name: b"\0" + name.encode() + b"\0" for name in names}
        overlap = max(map(len, patterns.values()))
        found = dict.fromkeys(names, -1)
        start = first
        while start < last and -1 in found.values():
            chunk = self.read(start, min(_BTF_CHUNK + overlap, last - start))
            for name, pattern in patterns.items():
                at = chunk.find(pattern) if found[name] < 0 else -1
                if at >= 0:
                    found[name] = start + at - first + 1
            start += _BTF_CHUNK
        return found

    def layout(self) -> dict[str, int]:
        member_names = [m for members in _WANTED.values() for m in members]
        offsets = self.string_offsets([*_WANTED, _ITERATOR, *member_names])
        wanted = {offsets[name]: name for name in [*_WANTED, _ITERATOR]}
        found: dict[str, int] = {}
        where, unpack = self.where, _BTF_TYPE.unpack_from
        position, end = self.types
        buf, base = b"", position  # the file's bytes from base on
        while position < end:
            if position + _BTF_TYPE.size > base + len(buf):
                base = position
                buf = self.read(position, min(_BTF_CHUNK, end - position))
            name, info, _ = unpack(buf, position - base)
            kind, count = info >> 24 & 0x1F, info & 0xFFFF
            if kind >= len(_KIND_ITEM):
                raise ValueError(f"{self.path}: BTF kind {kind} is unknown here")
            wanted_kind = kind == _KIND_FUNC or (kind == _KIND_STRUCT and count)
            if name in wanted and wanted_kind and wanted[name] not in found:
                found[wanted[name]] = len(where)
            where.append(position)
            position += 12 + _KIND_EXTRA[kind] + _KIND_ITEM[kind] * count
        if len(found) < len(wanted):
            raise OSError(f"the kernel's BTF lacks {sorted(set(wanted.values()) - set(found))}")
        layout = {_ITERATOR: found[_ITERATOR]}
        for struct_name, members in _WANTED.items():
            for member_name in members:
                at = self.member(found[struct_name], offsets[member_name])
                if at is None:
                    raise OSError(f"the kernel's struct {struct_name} has no {member_name}")
                layout[f"{struct_name}.{member_name}"] = at
        return layout

    def member(self, type_id: int, name: int) -> int | None:
        """Byte offset of member ``name`` in a struct or union, looking into anonymous ones."""
        _, info, _ = _BTF_TYPE.unpack(self.read(self.where[type_id], _BTF_TYPE.size))
        bitfields, count = info >> 31, info & 0xFFFF
        members = self.read(self.where[type_id] + _BTF_TYPE.size, _BTF_TYPE.size * count)
        for member_name, member_type, bits in _BTF_TYPE.iter_unpack(members):
            offset = int(bits & 0xFFFFFF if bitfields else bits) // 8
            if member_name == name:
                return offset
            if member_name == 0:
                inner = self.resolve(member_type)
                at = self.member(inner, name) if inner else None
                if at is not None:
                    return offset + at
        return None

    def resolve(self, type_id: int) -> int:
        """The struct or union behind typedefs and qualifiers; 0 if it is something else."""
        where = self.where
        while 0 < type_id < len(where):
            _, info, target = _BTF_TYPE.unpack(self.read(where[type_id], _BTF_TYPE.size))
            kind = info >> 24 & 0x1F
            if kind in (_KIND_STRUCT, _KIND_UNION):
                return type_id
            if kind not in _KIND_ALIASES:
                return 0
            type_id = target
        return 0
