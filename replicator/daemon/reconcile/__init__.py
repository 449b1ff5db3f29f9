"""Reconciliation: the streamed compare of a source with its destinations and what is done
about the keys not in sync (backfill, verify, repair, ``cp -r``, the daemon's safety net)."""

from replicator.daemon.reconcile.actions import (
    ApplierActions,
    CopyActions,
    PublishActions,
    drift_event,
)
from replicator.daemon.reconcile.engine import Drift, Options, Reconciler, Tally

__all__ = [
    "ApplierActions",
    "CopyActions",
    "Drift",
    "Options",
    "PublishActions",
    "Reconciler",
    "Tally",
    "drift_event",
]
