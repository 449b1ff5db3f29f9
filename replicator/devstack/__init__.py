"""The local test bed: S3, GCS and Azure emulators, a Kafka-protocol broker and PostgreSQL on
loopback, used by ``replicator devstack``, the test suite, the demo and the benchmarks.

Kept apart from the product: no layer of ``replicator`` imports it except the command line,
which starts it on request.
"""

from replicator.devstack.errors import DevStackError
from replicator.devstack.packages import missing_packages, require_packages
from replicator.devstack.stack import (
    AZURE_DEV_ACCOUNT,
    AZURE_DEV_KEY,
    COMPONENTS,
    EMULATORS,
    DevStack,
    RunningComponent,
    StackState,
    environment,
    free_port,
    install_tools,
)

__all__ = [
    "AZURE_DEV_ACCOUNT",
    "AZURE_DEV_KEY",
    "COMPONENTS",
    "EMULATORS",
    "DevStack",
    "DevStackError",
    "RunningComponent",
    "StackState",
    "environment",
    "free_port",
    "install_tools",
    "missing_packages",
    "require_packages",
]
