"""The browser fixtures themselves (tests/support/browser.py): a failing
browser test leaves a screenshot of each open page under its tmp_path, a
passing one leaves none. Run as a separate pytest process over a generated
test module, so the failure is real and does not fail this suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.browser import CHROMIUM

ROOT = Path(__file__).resolve().parent.parent
INNER = '''
def test_fails(context):
    for text in ("first", "second"):
        page = context.new_page()
        page.set_content(f"<h1>{text}</h1>")
    assert False, "on purpose"


def test_passes(context):
    context.new_page().set_content("<h1>fine</h1>")
'''


def test_a_failed_browser_test_leaves_screenshots(tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's Chromium is missing: apt-get install chromium")
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "conftest.py").write_text('pytest_plugins = ["tests.conftest"]\n')
    (inner / "test_inner.py").write_text(INNER)
    base = tmp_path / "base"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={base}",
         f"--rootdir={inner}", str(inner)],
        capture_output=True, text=True, env=env, cwd=inner, timeout=120)
    assert run.returncode == 1 and "1 failed, 1 passed" in run.stdout, run.stdout + run.stderr
    shots = sorted(p.relative_to(base) for p in base.rglob("*.png"))
    assert [p.parent for p in shots] == [Path("test_fails0/screenshots")] * 2, shots
    for shot in shots:
        assert (base / shot).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
