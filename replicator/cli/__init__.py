"""The ``replicator`` command line and the demo: the only composition root for commands.

``app`` holds the commands (``cp``, ``run``, ``backfill``, ``scan``, ``uploads``, ``devstack``,
and the catalog's ``catalog`` and ``status``), ``demo`` the self-contained demonstration, and
``logs`` the log set-up every command shares.

May import every layer below it and ``replicator.devstack`` (for ``replicator devstack`` and the
demo); nothing imports it.
"""

import sys

if "structlog" not in sys.modules and "rich" not in sys.modules:
    # structlog.dev imports rich when it is installed (typer depends on it) for tracebacks
    # the command line's logs never draw (logs.configure formats exceptions before they are
    # rendered): ~0.1 s of CPU at every start. rich is hidden from that one import; typer
    # still imports it to draw --help.
    sys.modules["rich"] = None  # type: ignore[assignment]
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]
