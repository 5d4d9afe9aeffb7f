"""The bounded soak of ``bench/soak.py`` (issue 13, point 8): SMTP in, IMAP and
POP3 readers, ``kill -9`` and a restart every few seconds; nothing
acknowledged is lost and nothing is stored twice.

The bench runs as it would by hand (its own process, its own real server),
for 40 seconds of load and at least four kills: about a minute with the
final count on a quiet machine.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECONDS = 40
KILLS = 4


@pytest.mark.timeout(4 * SECONDS + 660)  # a slow machine may need up to 3 x SECONDS of load
def test_kill_9_every_few_seconds_under_load_loses_and_doubles_nothing() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--seconds", str(SECONDS),
         "--kill-every", "3", "--min-kills", str(KILLS)],
        capture_output=True, text=True, timeout=4 * SECONDS + 600, cwd=ROOT,
    )
    out = proc.stdout
    figures = {name: int(value) for name, value in
               re.findall(r"^(\w[\w ]*?)\s{2,}(\d+)$", out, re.MULTILINE)}
    assert proc.returncode == 0, out + proc.stderr[-4000:]
    assert figures["lost"] == 0 and figures["duplicated"] == 0, out
    assert figures["kills"] >= KILLS, out  # the server really was killed under load
    assert figures["acknowledged"] > 0, out
    assert figures["present"] >= figures["acknowledged"], out
    assert figures["imap reads"] > 0 and figures["pop3 reads"] > 0, out
    assert figures["rss start KB"] > 0 and figures["rss end KB"] > 0, out
    assert "verdict         PASS" in out
