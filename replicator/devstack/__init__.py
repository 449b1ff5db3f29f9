"""The local test bed: S3, GCS and Azure emulators and a Kafka-protocol broker on loopback, used
by ``replicator devstack``, the test suite, the demo and the benchmarks.

Kept apart from the product: no layer of ``replicator`` imports it except the command line,
which starts it on request.
"""

from replicator.devstack.stack import (
    AZURE_DEV_ACCOUNT,
    AZURE_DEV_KEY,
    COMPONENTS,
    DevStack,
    DevStackError,
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
    "DevStack",
    "DevStackError",
    "RunningComponent",
    "StackState",
    "environment",
    "free_port",
    "install_tools",
]
