"""Session fixtures: the real test bed (emulators, broker, PostgreSQL) started once per test
session.

Set ``REPLICATOR_TEST_DEVSTACK=running`` to reuse a stack started with ``replicator devstack up``
(its state is read from ``REPLICATOR_DEVSTACK_DIR`` or the default state directory) instead of
starting a private one. Tests that need PostgreSQL use the test bed's own server unless
``REPLICATOR_TEST_POSTGRES`` names another one (``postgresql://USER@HOST:PORT/DB``); they
create and drop schemas of their own there and never assume it is empty.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from connectors import open_store
from connectors.base import ObjectStore
from replicator.cli import logs
from replicator.devstack import COMPONENTS, DevStack, StackState, environment
from tests.private_broker import PrivateBroker

STORE_SCHEMES = ("s3", "gs", "az", "file", "mem")
POSTGRES_OVERRIDE = "REPLICATOR_TEST_POSTGRES"


@pytest.fixture(autouse=True)
def json_logs() -> None:
    """Every log call of the suite goes through the JSON renderer the container image uses,
    at debug level: a call whose values cannot be rendered fails the test that made it."""
    logs.configure("debug", "json", cache=False)


@pytest.fixture(scope="session")
def devstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackState]:
    if os.environ.get("REPLICATOR_TEST_DEVSTACK") == "running":
        state = DevStack().running()
        if state is None:
            raise RuntimeError("REPLICATOR_TEST_DEVSTACK=running but no devstack is running")
        with environment(state.env):
            yield state
        return
    components = COMPONENTS
    if os.environ.get(POSTGRES_OVERRIDE):
        components = tuple(c for c in COMPONENTS if c != "postgres")
    stack = DevStack(tmp_path_factory.mktemp("devstack"), components=components)
    state = stack.up()
    try:
        with environment(state.env):
            yield state
    finally:
        stack.down()


@pytest.fixture(scope="session")
def postgres_server(request: pytest.FixtureRequest) -> str:
    """The URL of the PostgreSQL server for this session: ``REPLICATOR_TEST_POSTGRES`` if set,
    else the test bed's."""
    override = os.environ.get(POSTGRES_OVERRIDE)
    if override:
        return override
    state: StackState = request.getfixturevalue("devstack")
    return state.env["REPLICATOR_POSTGRES_URL"]


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    """A broker of the test's own, to kill and start again."""
    broker = PrivateBroker(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


def unique_name(prefix: str = "t") -> str:
    """A bucket/container name valid on every store: lowercase letters, digits, hyphens."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def store_root_url(scheme: str, tmp_path: Path) -> str:
    if scheme == "file":
        return f"file://{tmp_path}/store"
    return f"{scheme}://{unique_name()}"


@pytest.fixture(params=STORE_SCHEMES)
async def store(
    request: pytest.FixtureRequest, devstack: StackState, tmp_path: Path
) -> AsyncIterator[ObjectStore]:
    """A store of each kind, rooted in a fresh, empty bucket/container/directory."""
    store = open_store(store_root_url(request.param, tmp_path))
    await store.create_container()
    try:
        yield store
    finally:
        await store.close()


StoreFactory = Callable[[str], Awaitable[ObjectStore]]


@pytest.fixture
async def store_factory(devstack: StackState, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """``await store_factory(scheme)`` opens a store rooted in a fresh container."""
    opened: list[ObjectStore] = []

    async def make(scheme: str) -> ObjectStore:
        store = open_store(store_root_url(scheme, tmp_path / uuid.uuid4().hex[:8]))
        await store.create_container()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()
