"""Run the edge-mtl CLI under the seccomp rules systemd installs for MemoryDenyWriteExecute=yes.

systemd (src/shared/seccomp-util.c) refuses mmap() asking for PROT_WRITE|PROT_EXEC together, mprotect() and
pkey_mprotect() adding PROT_EXEC, and shmat() with SHM_EXEC. The same filter is loaded here with libseccomp, then
`edge_mtl.commands.cli.main` runs in this process, so whatever the daemon loads (ONNX Runtime, OpenCV/FFmpeg, SQLite,
paho) must live with it. Exit code: the CLI's, or 3 when the filter could not be installed or did not bite.

Usage: python mdwe_child.py run --source ... (the arguments of `edge-mtl`)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import sys


class _Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]


def install() -> None:
    name = ctypes.util.find_library("seccomp")
    if name is None:
        sys.stderr.write("mdwe_child: libseccomp not found\n")
        raise SystemExit(3)
    lib = ctypes.CDLL(name)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_Cmp)]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    allow, deny = 0x7FFF0000, 0x00050000 | errno.EPERM  # SCMP_ACT_ALLOW, SCMP_ACT_ERRNO(EPERM)
    masked_eq = 7  # SCMP_CMP_MASKED_EQ
    prot_write, prot_exec, shm_exec = 0x2, 0x4, 0o100000
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS (as NoNewPrivileges=yes): lets non-root load filters
        sys.stderr.write("mdwe_child: PR_SET_NO_NEW_PRIVS failed\n")
        raise SystemExit(3)
    ctx = lib.seccomp_init(allow)
    for call, mask, value in (
        ("mmap", prot_write | prot_exec, prot_write | prot_exec),
        ("mprotect", prot_exec, prot_exec),
        ("pkey_mprotect", prot_exec, prot_exec),
        ("shmat", shm_exec, shm_exec),
    ):
        nr = lib.seccomp_syscall_resolve_name(call.encode())
        cmp = (_Cmp * 1)(_Cmp(2, masked_eq, mask, value))
        if lib.seccomp_rule_add_array(ctx, deny, nr, 1, cmp) != 0:
            sys.stderr.write(f"mdwe_child: cannot add the {call} rule\n")
            raise SystemExit(3)
    if lib.seccomp_load(ctx) != 0:
        sys.stderr.write("mdwe_child: seccomp_load failed\n")
        raise SystemExit(3)
    try:  # the filter must bite, or this test proves nothing
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except PermissionError:
        return
    sys.stderr.write("mdwe_child: a W+X mapping was still allowed\n")
    raise SystemExit(3)


if __name__ == "__main__":
    install()
    from edge_mtl.commands.cli import main

    raise SystemExit(main(sys.argv[1:]))
