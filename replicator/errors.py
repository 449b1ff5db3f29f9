"""Errors of the engine itself (configuration, usage); store errors live in connectors.base."""


class ReplicatorError(Exception):
    """An expected failure with a message fit for an operator: printed as one line."""


class ConfigError(ReplicatorError):
    """The configuration or the command line is wrong; nothing was done."""


class Unavailable(ReplicatorError):
    """A service the product depends on (the catalog database) cannot be reached or is busy
    for now; the same request succeeds once it is back, so it is retried, never given up."""
