"""Fuzz targets for the File Storage and site path parsers (issue 11 points
1 and 7): any text given as a path is either refused with
``InvalidFileName`` or becomes a path of plain names that the store keeps
inside the account's tree; site URLs split without raising."""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from waypost.services.container import Services, open_services
from waypost.services.files import (
    AccountFiles,
    FileError,
    InvalidFileName,
    NotFound,
    check_path,
)
from waypost.services.websites import is_private, split_url
from waypost.storage.sqlite.files import split_path

SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
PIECES = st.sampled_from(["..", ".", "/", "\\", "\x00", "a", "b.html", "~", "%2e", "\u2215",
                          "\uff0f", "index.wssp", " ", "private", ".x", "\n", "e\u0301"])
PATHS = st.one_of(st.text(max_size=60), st.lists(PIECES, max_size=12).map("".join))


@SETTINGS
@given(PATHS)
def test_checked_paths_are_plain_names(path: str) -> None:
    try:
        checked = check_path(path)
        parts = split_path(checked)
    except InvalidFileName:
        return
    assert checked == "/".join(parts)
    for part in parts:
        assert part not in ("", ".", "..") and not part.startswith(".")
        assert "/" not in part and "\\" not in part and "\x00" not in part
        assert part.lower() != "index.wssp"
        assert unicodedata.normalize("NFC", part) == part


@SETTINGS
@given(st.text(max_size=8), st.text(max_size=60))
def test_site_urls_split_without_surprises(prefix: str, url: str) -> None:
    found = split_url(prefix, url)
    if found is not None:
        assert found.name and "/" not in found.name
        assert url.startswith("/" + prefix + found.name)
    is_private(url)


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    services = open_services(tmp_path_factory.mktemp("files-fuzz") / "var", create=True)
    services.directory.init_server("main.dom")
    services.directory.create_account("alice", "pw-fuzz-1")
    services.directory.set_account_settings("alice@main.dom", {"MaxWebFiles": "unlimited"})
    try:
        yield services
    finally:
        services.close()


@SETTINGS
@given(PATHS)
def test_writes_stay_inside_the_account(svc: Services, path: str) -> None:
    files = AccountFiles(svc)
    root = svc.data_dir / "webfiles"
    try:
        entry = files.write_bytes("alice@main.dom", path, b"x", parents=True)
    except (InvalidFileName, NotFound, FileError):  # a file where a folder is needed...
        return
    written = [Path(d) / f for d, _, fs in os.walk(root) for f in fs]
    tree = next(p for p in root.iterdir() if not p.name.startswith("."))
    target = tree / entry.path
    assert target in written and target.resolve().is_relative_to(tree.resolve())
