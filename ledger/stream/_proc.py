"""Process settings shared by the consumer, its decode worker and the embedded broker.

Linux-specific calls (prctl, mallopt) through ctypes; on any other platform, or without
glibc, each is a no-op. They cost microseconds, once per process.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import signal

__all__ = ["die_with_parent", "tune_process"]

_PR_SET_PDEATHSIG = 1


def tune_process() -> None:
    """Allocation-heavy loops on these VMs pay for page faults and full GC passes: keep freed
    memory (glibc mallopt, like the MALLOC_*_ settings the bench runs under) and collect rarely
    (the hot path creates no reference cycles). Only for a process that is the consumer."""
    gc.set_threshold(50_000, 50, 100)
    gc.freeze()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
        libc.mallopt(-2, 1 << 28)  # M_TOP_PAD
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD


def die_with_parent(sig: int = signal.SIGKILL, parent: int | None = None) -> None:
    """Linux: this process gets `sig` when the thread that started it dies (even by SIGKILL).

    With `parent`, exit at once if that parent already died before the call took effect.
    Safe in a `preexec_fn` (no allocation beyond ctypes' own).
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig)
    if parent is not None and os.getppid() != parent:
        os._exit(1)
