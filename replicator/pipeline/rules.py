"""Routing rules: which source prefixes replicate to which destinations, and how (pure).

A configuration file (TOML) holds the routes::

    [residency]
    allowed = ["s3://*", "gs://*", "region:europe-*"]   # optional allow-list

    [[routes]]
    name = "clickstream"
    source = "s3://lake/clickstream/"
    destinations = [
      { url = "gs://ml/clickstream/", region = "europe-west4" },
      { url = "az://lake/clickstream/" },
    ]
    include = ["*.parquet"]          # relative to the source prefix; default: everything
    exclude = ["_tmp/*"]
    delete_policy = "delayed"        # propagate (default) | never | delayed
    delete_delay = "7d"              # delayed only: how long a replica outlives its source
    concurrency = 8                  # objects of this route applied at once (per daemon);
                                     # default: no limit beyond the daemon's [copy] workers
    max_deletes_per_minute = 600

Deletes: ``propagate`` deletes a replica as soon as its source is deleted; ``never`` keeps it;
``delayed`` deletes it ``delete_delay`` after the source's deletion, unless the source is
written again in the meantime (a safety net against mistaken deletes). Only objects carrying
this route's replica mark are ever deleted, and at most ``max_deletes_per_minute`` per route.

Replication groups: two or more locations that all converge to the same content, each written
by its own users (``replicator.pipeline.groups``)::

    [[groups]]
    name = "lake"
    members = ["s3://lake-us/data/", { url = "gs://lake-eu/data/", region = "europe-west4" }]
    include = ["*.parquet"]          # as for routes
    delete_policy = "propagate"      # or "never", or "delayed" with a delete_delay

A group is expanded into one route per member (named ``lake.1``, ``lake.2``, ... in member
order), whose destinations are all the other members.

Groups may share members, forming a chain (``A <-> B`` and ``B <-> C``): a write at A reaches
B through the first group, and the second group forwards B's replica of it to C. The groups
of a chain form one catalog dataset (named after the chain's first group in the file) and
break ties of the conflict rule by the chain's order: the members of its groups in the order
they first appear in the file. Groups sharing a member only partly (one inside another) and
groups closing a cycle (``A <-> B``, ``B <-> C``, ``C <-> A``: a write would reach a member
by two paths) are refused.

Residency: when ``allowed`` is set, every destination must match one of its patterns, either
by URL (``gs://*``) or by region (``region:europe-*``); a route that breaks it is refused when
the configuration is loaded, before any data moves.
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from connectors import parse_store_url
from connectors.base import STAGING_PREFIX, InvalidStoreURL
from replicator.engine.units import parse_duration
from replicator.errors import ConfigError

DeletePolicy = Literal["propagate", "never", "delayed"]


def _check_url(url: str) -> str:
    try:
        parse_store_url(url)
    except InvalidStoreURL as exc:
        raise ValueError(str(exc)) from None
    return url


M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def config_value(parse: Callable[[str], T], text: str) -> T:
    """``parse(text)`` inside a configuration model: its error becomes a validation error, so
    it is reported with the field it belongs to."""
    try:
        return parse(text)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def _duration(value: object) -> object:
    return config_value(parse_duration, value) if isinstance(value, str) else value


Duration = Annotated[timedelta, BeforeValidator(_duration)]
"""A duration as operators write it ('90s', '6h', '7d')."""


def _duration_or_off(value: object) -> object:
    if isinstance(value, str) and value.strip().lower() == "off":
        return None
    return _duration(value)


DurationOrOff = Annotated[timedelta | None, BeforeValidator(_duration_or_off)]
"""A duration, or 'off' (None) for a periodic action turned off."""


def check_delay(policy: DeletePolicy, delay: timedelta | None, what: str) -> None:
    """A delay goes with the delayed policy, and only with it."""
    if policy == "delayed":
        if delay is None or delay.total_seconds() <= 0:
            raise ValueError('delete_policy = "delayed" needs a positive delete_delay, e.g. "7d"')
    elif delay is not None:
        raise ValueError(
            f'delete_delay applies only with delete_policy = "delayed" '
            f"(this {what}'s policy is {policy!r})"
        )


class Destination(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str
    region: str | None = None

    _valid_url = field_validator("url")(_check_url)


def _urls_as_tables(value: object) -> object:
    """A location may be written as its URL alone."""
    if isinstance(value, list):
        return [{"url": item} if isinstance(item, str) else item for item in value]
    return value


class GroupTag(BaseModel):
    """The replication group a route was expanded from: its members in the configured order
    and which of them is the route's source; the chain of groups it belongs to (its members
    alone for a group sharing none): every member of the chain in the order they first
    appear in the configuration (the conflict rule's tie-break), and the chain's dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    members: tuple[str, ...]
    index: int
    chain: tuple[str, ...]
    dataset: str

    def member_of(self, url: str) -> int | None:
        """The position of the member holding ``url``, if one does."""
        return _position(self.members, url)

    def rank(self, url: str) -> int | None:
        """The position in the chain of the member holding ``url``, if one does."""
        return _position(self.chain, url)

    def forwards(self, origin: str) -> bool:
        """Whether this group's route forwards a replica of ``origin``: one another group of
        the chain wrote (never one of its own: it would loop back)."""
        return self.member_of(origin) is None and self.rank(origin) is not None


def _position(members: tuple[str, ...], url: str) -> int | None:
    for position, member in enumerate(members):
        if url.startswith(member):
            return position
    return None


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def store_urls(self) -> list[str]:
        """The source's and every destination's root URL."""
        return [self.source, *(d.url for d in self.destinations)]

    name: str = Field(min_length=1)
    source: str
    destinations: tuple[Destination, ...] = Field(min_length=1)
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    delete_policy: DeletePolicy = "propagate"
    delete_delay: Duration | None = None
    concurrency: int | None = Field(default=None, ge=1, le=1024)
    max_deletes_per_minute: int = Field(default=600, ge=0)
    # Set only on the routes a [[groups]] entry expands into.
    group: GroupTag | None = None

    _valid_source = field_validator("source")(_check_url)

    @property
    def dataset(self) -> str:
        """The catalog dataset the route's objects are recorded in: one per group, whose
        members are all sources (each is written by its own users)."""
        return self.group.dataset if self.group is not None else self.name

    @model_validator(mode="after")
    def _delay_with_policy(self) -> Route:
        check_delay(self.delete_policy, self.delete_delay, "route")
        return self

    _plain_urls = field_validator("destinations", mode="before")(_urls_as_tables)

    @model_validator(mode="after")
    def _no_self_loop(self) -> Route:
        for destination in self.destinations:
            if destination.url.startswith(self.source) or self.source.startswith(destination.url):
                raise ValueError(
                    f"destination {destination.url} overlaps the source {self.source}: "
                    "replicas would be written where the route reads"
                )
        return self

    def relative_key(self, source_url: str) -> str | None:
        """The part of ``source_url`` below this route's source, if the route takes it."""
        if not source_url.startswith(self.source):
            return None
        relative = source_url[len(self.source) :]
        if not relative:
            return None
        if not any(fnmatch.fnmatchcase(relative, pattern) for pattern in self.include):
            return None
        if any(fnmatch.fnmatchcase(relative, pattern) for pattern in self.exclude):
            return None
        return relative


class Residency(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    allowed: tuple[str, ...] | None = None

    def permits(self, destination: Destination) -> bool:
        if self.allowed is None:
            return True
        for pattern in self.allowed:
            if pattern.startswith("region:"):
                if destination.region and fnmatch.fnmatchcase(
                    destination.region, pattern.removeprefix("region:")
                ):
                    return True
            elif fnmatch.fnmatchcase(destination.url, pattern):
                return True
        return False


def _overlap(first: str, second: str) -> bool:
    return first.startswith(second) or second.startswith(first)


class Group(BaseModel):
    """A replication group: every member is written by its own users and receives every other
    member's writes; conflicting writes of one key are settled by the rule in
    ``replicator.pipeline.groups``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # The catalog dataset of the group (hence a dataset name).
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    members: tuple[Destination, ...] = Field(min_length=2)
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    delete_policy: DeletePolicy = "propagate"
    # Delayed: a member's replica of another member's deleted object outlives it this long.
    delete_delay: Duration | None = None
    concurrency: int | None = Field(default=None, ge=1, le=1024)
    max_deletes_per_minute: int = Field(default=600, ge=0)

    _plain_urls = field_validator("members", mode="before")(_urls_as_tables)

    @model_validator(mode="after")
    def _delay_with_policy(self) -> Group:
        check_delay(self.delete_policy, self.delete_delay, "group")
        return self

    @model_validator(mode="after")
    def _distinct_members(self) -> Group:
        urls = [member.url for member in self.members]
        for i, first in enumerate(urls):
            for second in urls[i + 1 :]:
                if first == second:
                    raise ValueError(f"member {first} is listed twice")
                if _overlap(first, second):
                    raise ValueError(
                        f"members {first} and {second} overlap: one would hold the other's "
                        "objects and replicate them into itself"
                    )
        return self

    def routes(
        self, chain: tuple[str, ...] | None = None, dataset: str | None = None
    ) -> list[Route]:
        """One route per member, to every other member, in member order; ``chain``: the
        members of the chain of groups this one belongs to, ``dataset``: the chain's."""
        urls = tuple(member.url for member in self.members)
        tag = GroupTag(
            name=self.name, members=urls, index=0, chain=chain or urls, dataset=dataset or self.name
        )
        return [
            Route(
                name=f"{self.name}.{index + 1}",
                source=member.url,
                destinations=tuple(m for m in self.members if m is not member),
                include=self.include,
                exclude=self.exclude,
                delete_policy=self.delete_policy,
                delete_delay=self.delete_delay,
                concurrency=self.concurrency,
                max_deletes_per_minute=self.max_deletes_per_minute,
                group=tag.model_copy(update={"index": index}),
            )
            for index, member in enumerate(self.members)
        ]


def check_groups(groups: tuple[Group, ...], routes: tuple[Route, ...]) -> None:
    """Groups share a location only as the very same member (a chain), never close a cycle,
    and never overlap a route: a hand-written route reading or writing a member would feed
    the group's replicas back to it as new writes (or delete from a member behind the group's
    conflict rule)."""
    names = [group.name for group in groups]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"group names must be unique: {', '.join(duplicates)}")
    for i, group in enumerate(groups):
        for member in group.members:
            for other in groups[i + 1 :]:
                for theirs in other.members:
                    if member.url != theirs.url and _overlap(member.url, theirs.url):
                        raise ValueError(
                            f"groups {group.name!r} and {other.name!r} overlap at "
                            f"{member.url} / {theirs.url}: groups share a location only as "
                            "the same member URL"
                        )
            for route in routes:
                for url in route.store_urls():
                    if _overlap(member.url, url):
                        raise ValueError(
                            f"group {group.name!r} member {member.url} overlaps {url} of route "
                            f"{route.name!r}: a location belongs to one group or route, or "
                            "replicas would loop back into the group"
                        )
    _check_no_cycle(groups)


def _check_no_cycle(groups: tuple[Group, ...]) -> None:
    """Groups and their members as a graph (a group linked to each of its members) must be a
    forest: then a write reaches every member of its chain by exactly one path."""
    links: dict[str, set[str]] = {}
    for group in groups:
        node = f"group {group.name!r}"
        for member in group.members:
            path = _path(links, node, member.url)
            if path is not None:
                raise ValueError(
                    f"replication groups form a cycle: {' -> '.join([*path, node])}; a write "
                    "would reach a member by two paths (join the locations in one group instead)"
                )
            links.setdefault(node, set()).add(member.url)
            links.setdefault(member.url, set()).add(node)


def _path(links: dict[str, set[str]], start: str, end: str) -> list[str] | None:
    """The nodes from ``start`` to ``end`` in the graph ``links``, if they are connected."""
    previous: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        if node == end:
            path = [node]
            while (step := previous[path[-1]]) is not None:
                path.append(step)
            return path[::-1]
        for linked in sorted(links.get(node, ())):
            if linked not in previous:
                previous[linked] = node
                frontier.append(linked)
    return None


def group_chains(groups: tuple[Group, ...]) -> list[tuple[tuple[Group, ...], tuple[str, ...]]]:
    """Each group's chain (the groups linked to it by shared members; a lone group is its own
    chain), in configuration order: its groups, and its members in the order they first
    appear."""
    linked_to = list(range(len(groups)))

    def first(index: int) -> int:
        while linked_to[index] != index:
            index = linked_to[index]
        return index

    for i, group in enumerate(groups):
        urls = {member.url for member in group.members}
        for j in range(i):
            if urls & {member.url for member in groups[j].members}:
                linked_to[first(i)] = first(j)
    chains = []
    for i in range(len(groups)):
        linked = tuple(g for j, g in enumerate(groups) if first(j) == first(i))
        members = tuple(dict.fromkeys(m.url for g in linked for m in g.members))
        chains.append((linked, members))
    return chains


class RoutingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # The routes as written, followed by those the groups expand into.
    routes: tuple[Route, ...] = ()
    groups: tuple[Group, ...] = ()
    residency: Residency = Residency()

    @model_validator(mode="after")
    def _expand_groups(self) -> RoutingConfig:
        if not self.routes and not self.groups:
            raise ValueError("no [[routes]] and no [[groups]]: nothing to replicate")
        if any(route.group is not None for route in self.routes):
            raise ValueError("group is set on the routes [[groups]] expand into, not by hand")
        check_groups(self.groups, self.routes)
        # The model is frozen to its users; this is its own validation completing it.
        expanded = tuple(
            route
            for group, (linked, members) in zip(self.groups, group_chains(self.groups), strict=True)
            for route in group.routes(members, linked[0].name)
        )
        object.__setattr__(self, "routes", self.routes + expanded)
        return self

    @model_validator(mode="after")
    def _checks(self) -> RoutingConfig:
        names = [route.name for route in self.routes]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"route names must be unique: {', '.join(duplicates)}")
        for first in self.routes:
            for second in self.routes:
                if first is second or _same_chain_member(first, second):
                    continue
                if second.source.startswith(first.source):
                    raise ValueError(
                        f"routes {first.name!r} and {second.name!r} overlap: "
                        f"{second.source} is inside {first.source}; each source object must "
                        "belong to one route (give one route several destinations instead)"
                    )
        for route in self.routes:
            for destination in route.destinations:
                if not self.residency.permits(destination):
                    where = f" (region {destination.region})" if destination.region else ""
                    raise ValueError(
                        f"route {route.name!r}: destination {destination.url}{where} is not "
                        f"in the residency allow-list {list(self.residency.allowed or [])}"
                    )
        return self


def _same_chain_member(first: Route, second: Route) -> bool:
    """Two groups of a chain each read their shared member (each forwards what the other
    wrote there)."""
    return (
        first.group is not None
        and second.group is not None
        and first.group.dataset == second.group.dataset
        and first.source == second.source
    )


@dataclass(frozen=True)
class Target:
    """One destination object for one source object."""

    route: Route
    destination: Destination
    relative_key: str

    @property
    def dest_url(self) -> str:
        return self.destination.url + self.relative_key


def _is_staging(url: str) -> bool:
    """Objects a store stages for multipart uploads are never replicated."""
    parsed = parse_store_url(url)
    return parsed.path.startswith(STAGING_PREFIX) or f"/{STAGING_PREFIX}" in parsed.path


class Router:
    """Maps a source object URL to every destination object it must be replicated to (all of
    one route: route sources never overlap, but at a member the groups of a chain share,
    those of each group's route there)."""

    def __init__(self, config: RoutingConfig) -> None:
        self.config = config

    def targets(self, source_url: str) -> list[Target]:
        if _is_staging(source_url):
            return []
        found: list[Target] = []
        for route in self.config.routes:
            relative = route.relative_key(source_url)
            if relative is None:
                continue
            found.extend(Target(route, d, relative) for d in route.destinations)
        return found

    def ordering_key(self, source_url: str) -> str:
        """The key a change of ``source_url`` is published under (one partition, one worker,
        in order): its URL; for a group's member, the same key at the group's first member,
        so that the changes of one key at every member are applied one after the other (a
        copy from one member never races a deletion at another); for a chain of groups, its
        first member."""
        for target in self.targets(source_url)[:1]:
            group = target.route.group
            if group is not None:
                return group.chain[0] + target.relative_key
        return source_url

    def route(self, name: str) -> Route:
        for route in self.config.routes:
            if route.name == name:
                return route
        raise ConfigError(f"no route named {name!r}")


def validate_config(model: type[M], data: dict[str, object], origin: str) -> M:
    """``data`` as a ``model``, or one ConfigError listing every problem with its field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {'; '.join(config_problems(exc))}") from None


def config_problems(exc: ValidationError) -> list[str]:
    """One line per problem, naming the setting (``kafka.partitions: ...``), never its value."""
    errors = exc.errors()
    # An invalid item also makes its list "too short"; only the item's own error helps.
    errors = [
        error
        for error in errors
        if error["type"] != "too_short"
        or not any(
            other["loc"][: len(error["loc"])] == error["loc"] and other["loc"] != error["loc"]
            for other in errors
        )
    ]
    return [
        f"{'.'.join(str(p) for p in error['loc']) or 'top level'}: {error['msg']}"
        for error in errors
    ]


def read_toml(path: Path) -> dict[str, object]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def load_config(data: dict[str, object], origin: str = "configuration") -> RoutingConfig:
    return validate_config(RoutingConfig, data, origin)


def load_config_file(path: Path) -> RoutingConfig:
    return validate_config(RoutingConfig, read_toml(path), str(path))
