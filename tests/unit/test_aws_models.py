"""The AWS sessions load botocore's models with ``DictJSONFileLoader``: plain dicts holding
what botocore's own loader reads, in the same order, from the same files (AWS_DATA_PATH
first)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from botocore.loaders import Loader

from connectors.aws_session import DictJSONFileLoader, aws_session


def same_in_order(ours: Any, theirs: Any) -> bool:
    """Equal, and every mapping's keys in the same order (OrderedDict == dict ignores it)."""
    if isinstance(ours, Mapping):
        return (
            type(ours) is dict
            and list(ours) == list(theirs)
            and all(same_in_order(ours[key], theirs[key]) for key in ours)
        )
    if isinstance(ours, list):
        return len(ours) == len(theirs) and all(map(same_in_order, ours, theirs))
    return bool(ours == theirs)


@pytest.mark.parametrize(
    ("name", "type_name"),
    [
        ("s3", "service-2"),
        ("s3", "endpoint-rule-set-1"),
        ("sts", "service-2"),
        ("sqs", "paginators-1"),
    ],
)
def test_a_model_loads_as_botocore_loads_it(name: str, type_name: str) -> None:
    ours = aws_session(None).get_component("data_loader")
    assert isinstance(ours.file_loader, DictJSONFileLoader)
    theirs = Loader()
    assert same_in_order(
        ours.load_service_model(name, type_name), theirs.load_service_model(name, type_name)
    )
    assert same_in_order(ours.load_data("endpoints"), theirs.load_data("endpoints"))


def test_aws_data_path_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model placed in AWS_DATA_PATH wins over botocore's own, as with botocore's loader."""
    override = tmp_path / "models" / "s3" / "2006-03-01"
    override.mkdir(parents=True)
    (override / "paginators-1.json").write_text(json.dumps({"pagination": {"Mine": {}}}))
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path / "models"))
    loader = aws_session(None).get_component("data_loader")
    pagination = loader.load_service_model("s3", "paginators-1")["pagination"]
    # botocore's own file names input tokens for ListObjectsV2; its extras (merged in after
    # the file, whichever it is) only add non-aggregate keys.
    assert "Mine" in pagination
    assert "input_token" not in pagination["ListObjectsV2"]
