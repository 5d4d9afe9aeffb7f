"""``services/holders.py``: which claim holders are processes of this host that are gone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from waypost.services import holders


def test_gone_only_for_stopped_processes_of_this_host() -> None:
    host = socket.gethostname()
    mine = holders.holder_id()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    assert not holders.gone(mine, frozenset({mine}))
    assert holders.gone(f"{host}:{os.getpid()}:00000000", frozenset({mine}))  # a predecessor
    assert holders.gone(f"{host}:{dead_pid}:abcd1234")
    assert not holders.gone(f"{host}:{os.getppid()}:abcd1234")  # runs
    assert not holders.gone(f"elsewhere.example:{dead_pid}:abcd1234")  # another node's
    assert not holders.gone(f"{host}:not-a-pid:abcd1234")
    assert not holders.gone("garbage")
