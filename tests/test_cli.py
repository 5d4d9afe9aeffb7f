"""The real `waypost` command, run as an administrator would run it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.support.cli import Waypost
from tests.support.router_table import SPEC_TABLE


@pytest.fixture(scope="module")
def wp(tmp_path_factory: pytest.TempPathFactory) -> Waypost:
    cmd = Waypost(tmp_path_factory.mktemp("cli") / "var")
    out = cmd("init", "--domain", "main.dom").stdout
    assert "postmaster@main.dom" in out
    return cmd


def test_init_prints_the_password_once_and_refuses_to_overwrite(tmp_path: Path) -> None:
    wp = Waypost(tmp_path / "var")
    out = wp("init", "--domain", "Example.COM").stdout
    password = next(line.split()[-1] for line in out.splitlines() if line.startswith("password"))
    assert len(password) >= 12
    again = wp("init", "--domain", "other.com", check=1)
    assert again.stderr.startswith("error: ") and "refusing" in again.stderr
    assert wp("settings", "show", "MainDomain").stdout.strip() == "example.com"
    assert (tmp_path / "var" / "waypost.db").exists()
    assert oct((tmp_path / "var").stat().st_mode & 0o777) == "0o700"
    # the password is stored hashed, never in clear text in the database
    assert password.encode() not in (tmp_path / "var" / "waypost.db").read_bytes()


def test_commands_without_data_fail_with_one_line(tmp_path: Path) -> None:
    proc = Waypost(tmp_path / "missing")("domain", "list", check=1)
    assert proc.stderr.count("\n") == 1 and "waypost init" in proc.stderr


def test_data_option_works_after_the_command_too(wp: Waypost, tmp_path: Path) -> None:
    env = dict(os.environ)
    env.pop("WAYPOST_DATA", None)
    proc = subprocess.run([sys.executable, "-m", "waypost", "domain", "list", "--data",
                           str(wp.data)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and "main.dom" in proc.stdout


def test_domains_settings_and_aliases(wp: Waypost) -> None:
    wp("domain", "add", "Domain.Dom")
    wp("domain", "set", "domain.dom", "MailToUnknown", "Rerouted to",
       "MailRerouteAddress", "*%domain.dom@otherserver.dom._via")
    wp("domain", "alias", "add", "domain.dom", "mail.domain.dom")
    listing = wp("domain", "list").stdout
    assert "domain.dom" in listing and "mail.domain.dom" in listing and "main" in listing
    shown = wp("domain", "show", "domain.dom").stdout
    assert "Rerouted to" in shown and "*%domain.dom@otherserver.dom._via" in shown
    # a bad key or value is refused with one clear line, and nothing changes
    bad = wp("domain", "set", "domain.dom", "MailToUnknown", "Sometimes", check=1)
    assert bad.stderr.startswith("error: ") and "MailToUnknown" in bad.stderr
    bad = wp("domain", "set", "domain.dom", "NoSuchKey", "x", check=1)
    assert "NoSuchKey" in bad.stderr
    assert "Rerouted to" in wp("domain", "show", "domain.dom").stdout
    assert "already" in wp("domain", "add", "mail.domain.dom", check=1).stderr
    assert wp("domain", "remove", "main.dom", check=1).stderr.startswith("error: ")


def test_accounts_and_other_objects(wp: Waypost) -> None:
    wp("domain", "add", "objects.dom")
    out = wp("account", "add", "alice@objects.dom").stdout
    assert "password:" in out
    wp("account", "add", "bob@objects.dom", "--password", "bob-pass-1")
    wp("account", "set", "alice@objects.dom", "RealName", "Alice Liddell")
    assert "Alice Liddell" in wp("account", "show", "alice@objects.dom").stdout
    assert "alice" in wp("account", "list", "objects.dom").stdout
    wp("alias", "add", "ali@objects.dom", "alice@objects.dom")
    wp("forwarder", "add", "fwd@objects.dom", "bob@friend.com")
    wp("group", "add", "staff@objects.dom", "alice@objects.dom", "bob@objects.dom")
    wp("group", "member", "add", "staff@objects.dom", "x@remote.example")
    wp("list", "add", "news@objects.dom", "--owner", "alice@objects.dom")
    assert "ali" in wp("alias", "list", "objects.dom").stdout
    assert "bob@friend.com" in wp("forwarder", "show", "fwd@objects.dom").stdout
    assert "x@remote.example" in wp("group", "show", "staff@objects.dom").stdout
    assert "news" in wp("list", "list", "objects.dom").stdout
    # names are unique per domain across object types, whatever the case
    for args in (("account", "add", "ALI@objects.dom"), ("forwarder", "add", "Staff@objects.dom",
                 "a@b.com"), ("group", "add", "News@objects.dom"), ("alias", "add",
                 "FWD@objects.dom", "bob@objects.dom")):
        proc = wp(*args, check=1)
        assert "already exists" in proc.stderr, proc.stderr
    assert wp("account", "add", "bad%name@objects.dom", check=1).stderr.startswith("error: ")
    assert wp("route", "staff@objects.dom").stdout.splitlines() == [
        "LOCAL(alice@objects.dom)", "LOCAL(bob@objects.dom)",
        "SMTP(remote.example)x@remote.example"]
    wp("alias", "remove", "ali@objects.dom")
    assert wp("route", "ali@objects.dom", check=1).stdout.startswith("error: unknown user")


def test_router_table_set_show_and_bad_tables(wp: Waypost, tmp_path: Path) -> None:
    table = tmp_path / "table.txt"
    table.write_text(SPEC_TABLE)
    assert "14 records" in wp("router", "set", str(table)).stdout
    assert wp("router", "show").stdout == SPEC_TABLE
    bad = wp("router", "set", "-", input="ok.com = fine.com\n\nbroken line\n", check=1)
    assert bad.stderr.startswith("error: line 3: missing '='")
    assert wp("router", "show").stdout == SPEC_TABLE
    assert "1 records" in wp("router", "set", "-", input="a.com = b.com\n").stdout
    wp("router", "set", str(table))


def test_route_command(wp: Waypost, tmp_path: Path) -> None:
    table = tmp_path / "table.txt"
    table.write_text(SPEC_TABLE)
    wp("router", "set", str(table))
    wp("domain", "add", "client.dom", check=None)
    assert wp("route", "bob@friend.com").stdout.strip() == "SMTP(friend.com)bob@friend.com"
    refused = wp("route", "x@filtered.com", check=1)
    assert refused.stdout.strip() == "error: relaying prohibited"
    assert wp("route", "x@filtered.com", "--source", "trusted").stdout.strip() == \
        "SMTP(127.0.0.1:26)x@filtered.com"
    # an IP source is judged by ClientIPAddresses (127.0.0.0/8 by default)
    assert wp("route", "x@filtered.com", "--source", "127.0.0.1").returncode == 0
    wp("route", "x@filtered.com", "--source", "203.0.113.5", check=1)
    assert wp("route", "LoginPage@www.client.dom", "--kind", "access").stdout.strip() == \
        "DOMAIN(client.dom)"
    assert wp("route", "bob@nodots", check=1).stdout.startswith("error: unqualified")


def test_route_explain_shows_every_step(wp: Waypost) -> None:
    wp("domain", "add", "mig.dom")
    wp("domain", "set", "mig.dom", "MailToUnknown", "Rerouted to", "MailRerouteAddress",
       "*%mig.dom@otherserver.dom._via")
    out = wp("route", "bob%mig.dom@main.dom", "--explain").stdout.splitlines()
    text = "\n".join(out)
    assert out[0].startswith("source: untrusted")
    assert "parsed 'bob%mig.dom@main.dom'" in text
    assert "Main Domain 'main.dom' stripped" in text
    assert "re-split -> local part 'bob', domain part 'mig.dom'" in text
    assert "is local after the Router table" in text
    assert "MailToUnknown = Rerouted to" in text
    assert out[-1] == "SMTP(otherserver.dom)bob@mig.dom"
    table_out = wp("route", "bob@friend.com", "--explain").stdout
    assert "Router record line 1 `Relay:friend.com = friend.com._via`" in table_out
    assert "relaying: allowed: a Relay:/RelayAll: record was applied" in table_out
    refused = wp("route", "x@else.example", "--explain", check=1).stdout
    assert "relaying: prohibited: untrusted source" in refused


def test_settings(wp: Waypost) -> None:
    shown = wp("settings", "show").stdout
    for name in ("MainDomain", "ClientIPAddresses", "DNSServers"):
        assert name in shown
    wp("settings", "set", "DNSServers", "127.0.0.1:5353")
    assert wp("settings", "show", "dnsservers").stdout.strip() == "127.0.0.1:5353"
    bad = wp("settings", "set", "DNSServers", "not-an-ip", check=1)
    assert bad.stderr.startswith("error: DNSServers")
    assert wp("settings", "show", "DNSServers").stdout.strip() == "127.0.0.1:5353"
    assert "unknown setting" in wp("settings", "set", "Nope", "1", check=1).stderr
    wp("settings", "set", "ClientIPAddresses", "10.0.0.0/8")
    wp("route", "bob@remote.example", "--source", "127.0.0.1", check=1)
    wp("settings", "set", "ClientIPAddresses", "default")
    wp("route", "bob@remote.example", "--source", "127.0.0.1")


def test_usage_errors_exit_2(wp: Waypost) -> None:
    assert wp("domain", "set", "main.dom", "OnlyAKey", check=2).returncode == 2
    assert wp("route", check=2).returncode == 2
    assert wp("route", "a@b.com", "--kind", "fax", check=2).returncode == 2
    assert wp("nosuchcommand", check=2).returncode == 2


def test_serve_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    wp = Waypost(tmp_path / "var")
    wp("init", "--domain", "serve.dom")
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-m", "waypost", "--data", str(wp.data), "serve", "--listen",
         "127.0.0.1", "--port-offset", "20000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        banner = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            banner.append(line)
            if "Ctrl-C" in line:
                break
        text = "".join(banner)
        assert "serve.dom" in text and "postmaster password" not in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "stopping" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
