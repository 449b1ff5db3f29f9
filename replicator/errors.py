"""Errors of the engine itself (configuration, usage); store errors live in connectors.base."""


class ReplicatorError(Exception):
    """An expected failure with a message fit for an operator: printed as one line."""


class ConfigError(ReplicatorError):
    """The configuration or the command line is wrong; nothing was done."""


class Unavailable(ReplicatorError):
    """A service the product depends on (the catalog database) cannot be reached or is busy
    for now; the same request succeeds once it is back, so it is retried, never given up."""


class DependencyUnavailable(ReplicatorError):
    """Something the daemon cannot start without (the Kafka broker, the catalog database)
    did not answer. The command line exits with ``EXIT_CODE`` (sysexits' EX_UNAVAILABLE), so
    a supervisor can tell it from a configuration error (2) and retry."""

    EXIT_CODE = 69
