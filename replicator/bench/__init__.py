"""``replicator bench``: replicator against rclone, the raw SDKs and cp on a test bed of its own.

It starts the local test bed (replicator.devstack), seeds data, and measures whole processes
taking turns on the same data: copy throughput and client CPU per GiB (or per 1,000 objects),
peak memory and the emulators' CPU per tool, route and data set; the event path at fixed
rates; catalog operations on SQLite and PostgreSQL; process start-up. It writes
``results.json`` (every sample), ``report.md`` and PNG plots.

Layer: between the command line (which runs it) and the daemon; it may use the test bed, and
``raw`` imports the cloud SDKs for the raw-SDK baseline (the one exception to the SDK import
rule, in pyproject.toml).
"""
