"""``waypost files ...`` (issue 11 point 2): the real command over a real
data directory, as an administrator runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.support.cli import Waypost


@pytest.fixture
def waypost(tmp_path: Path) -> Waypost:
    run = Waypost(tmp_path / "var")
    run("init", "--domain", "main.dom")
    run("account", "add", "alice", "--password", "pw-alice-1")
    return run


def test_put_list_get_mv_rm_info(waypost: Waypost, tmp_path: Path) -> None:
    source = tmp_path / "page.html"
    source.write_bytes(b"<h1>Alice</h1>\n")
    assert "stored /site/index.html (15 bytes)" in waypost(
        "files", "put", "alice", "site/index.html", str(source), "--parents").stdout
    waypost("files", "put", "alice@main.dom", "/notes.txt", input="from stdin\n")
    listing = waypost("files", "list", "alice").stdout
    assert "site/" in listing and "notes.txt" in listing
    assert "index.html" in waypost("files", "list", "alice", "site").stdout
    got = subprocess.run([sys.executable, "-m", "waypost", "--data", str(waypost.data),
                          "files", "get", "alice", "site/index.html"],
                         capture_output=True, timeout=60, check=True)
    assert got.stdout == b"<h1>Alice</h1>\n"
    waypost("files", "mkdir", "alice", "old")
    waypost("files", "mv", "alice", "notes.txt", "old/notes.txt")
    assert "notes.txt" in waypost("files", "list", "alice", "old").stdout
    info = waypost("files", "info", "alice").stdout
    assert "4 of 1000" in info and "26 bytes" in info
    waypost("files", "rm", "alice", "old", check=1)  # not empty
    assert "2 entries" in waypost("files", "rm", "alice", "old", "-r").stdout
    assert "index.html" in waypost("files", "list", "alice", "site/").stdout
    assert "old" not in waypost("files", "list", "alice").stdout


@pytest.mark.parametrize("path", ["../escape", "a/../../b", "index.wssp", ".profile",
                                  "x\u2215y", "x\\y"])
def test_bad_paths_are_one_error_line(waypost: Waypost, path: str) -> None:
    result = waypost("files", "put", "alice", path, input="x", check=1)
    assert result.stderr.startswith("error:") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_quota_and_unknown_accounts(waypost: Waypost) -> None:
    waypost("account", "set", "alice", "MaxWebSize", "10")
    result = waypost("files", "put", "alice", "big.txt", input="x" * 11, check=1)
    assert "limit" in result.stderr
    assert "0 of" in waypost("files", "info", "alice").stdout
    assert waypost("files", "list", "nobody", check=1).stderr.startswith("error:")
    assert waypost("files", "get", "alice", "missing.txt", check=1).stderr.startswith("error:")


def test_an_upload_killed_midway_leaves_the_old_file(waypost: Waypost) -> None:
    """kill -9 of the CLI in the middle of a put: readers still get the old
    file whole, never a part of the new one."""
    waypost("files", "put", "alice", "page.html", input="old page\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "waypost", "--data", str(waypost.data), "files", "put",
         "alice", "page.html", "-", "--no-progress"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(b"new " * 100_000)
    proc.stdin.flush()
    tmp = waypost.data / "webfiles" / ".tmp"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(
            p.stat().st_size > 0 for p in tmp.iterdir() if p.is_file()):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    got = subprocess.run([sys.executable, "-m", "waypost", "--data", str(waypost.data),
                          "files", "get", "alice", "page.html"],
                         capture_output=True, timeout=60, check=True)
    assert got.stdout == b"old page\n"
    assert "1 of" in waypost("files", "info", "alice").stdout


def test_progress_bar_on_request(waypost: Waypost, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(2 * 1024 * 1024))
    result = waypost("files", "put", "alice", "big.bin", str(source), "--progress")
    assert "stored /big.bin (2097152 bytes)" in result.stdout
