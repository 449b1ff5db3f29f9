"""The test bed's one error type."""


class DevStackError(RuntimeError):
    """A component could not be installed, started or stopped; the message names it."""
