"""Child processes of a chaos run die with it."""

from __future__ import annotations

import ctypes
import signal


def die_with_parent() -> None:
    """Runs in a child before exec: the kernel SIGTERMs it when the thread that started it
    dies, so a chaos run killed hard leaves no daemon, broker, database or proxy behind."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
