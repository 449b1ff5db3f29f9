"""The ``replicator`` command line and the demo: the only composition root for commands.

``app`` holds the commands (``cp``, ``run``, ``backfill``, ``scan``, ``uploads``, ``devstack``,
and the catalog's ``catalog`` and ``status``), ``demo`` the self-contained demonstration, and
``logs`` the log set-up every command shares.

May import every layer below it and ``replicator.devstack`` (for ``replicator devstack`` and the
demo); nothing imports it.
"""
