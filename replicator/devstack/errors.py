"""The test bed's one error type."""

from replicator.errors import ReplicatorError


class DevStackError(ReplicatorError):
    """A component could not be installed, started or stopped; the message names it (the
    command line prints it as one line, as it does every ReplicatorError)."""
