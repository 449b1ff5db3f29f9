"""The cyclic garbage collector around a one-shot command's start-up.

A command imports its cloud SDKs and builds their clients when it starts: hundreds of
thousands of objects that live as long as the process, which the cyclic collector would
otherwise traverse again and again as they are allocated (a sixth of a one-object ``cp``'s
CPU) and at every full collection after. ``start_up`` keeps the collector off while the
command imports and builds what it needs; when the process is the command line itself
(``main``), it then freezes what exists out of the collector's view (``gc.freeze``), as
long-lived services commonly do after start-up, before turning it back on. Called in a
process that is not (a test running a command), it only pauses the collector.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

_freeze_after_start_up = False


def freeze_after_start_up() -> None:
    """Called by the command line's entry point: this process runs one command."""
    global _freeze_after_start_up
    _freeze_after_start_up = True


@contextlib.contextmanager
def start_up() -> Iterator[None]:
    """The collector off while the block imports and builds a command's long-lived objects."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if _freeze_after_start_up:
            gc.freeze()
        if was_enabled:
            gc.enable()
