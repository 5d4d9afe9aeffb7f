"""WebUser pages beside IMAP: pages per second, same server, same run (issue 10 point 10).

Not a test: run ``.venv/bin/python bench/web.py [--messages N]``
(``--messages 1000`` is a quick check; the default is 10,000).

The mailbox is the one ``bench/imap.py`` generates (reproducible, ``--seed``),
stored straight into a fresh Waypost data directory with its ``load_waypost``;
Waypost then runs under the test harness (``tests/support/server.py``),
everything on loopback. Two kinds of work, each done over the web and over
IMAP against that one server:

* list: ``GET /Session/<id>/Mailbox.wssp?Mailbox=INBOX&Skip=0&Limit=50``
  (the 50 newest messages; with ``--sort size|from|subject`` the first 50 in
  that order, ``Sort=<it>&Order=desc``) beside ``UID FETCH <those 50 UIDs> (UID FLAGS
  RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])``;
* view: ``GET /Session/<id>/Message.wssp?Mailbox=INBOX&UID=<uid>`` beside
  ``UID FETCH <uid> BODY.PEEK[]``, cycling through the same 50 UIDs.
  (Viewing a message on the web marks it ``\\Seen``, so after the first
  views the IMAP sessions may also receive those flag changes as untagged
  FETCH responses; they are read but not counted as fetches.)

Each web client logs in as ``tests/test_http_webuser.py`` does (GET / for the
csrfToken and the WaypostLogin cookie, POST /login, the 303 to
/Session/<id>/...) and then sends its requests, with the WaypostSession
cookie, over one keep-alive ``http.client`` connection (a closed connection
is an error, not reopened). Each IMAP client logs in and SELECTs INBOX once,
on one connection. With ``--clients 1,4`` each of 1, then 4, concurrent
clients (threads in this process) sends ``--requests`` requests (default
200) after ``--warmup`` untimed ones; the rate is all requests over the wall
time. The table shows web pages/s, IMAP fetches/s and web/IMAP (1.0: a page
costs what the IMAP fetch of the same data costs; below 1: the web is
slower). The client is Python too, and its threads share one GIL, so at 4
clients the numbers are partly the client's.
"""

from __future__ import annotations

import argparse
import http.client
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

import httpx

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))  # for bench/imap.py
sys.path.insert(0, str(BENCH.parent))  # for tests.support

from tests.support.server import WaypostServer  # noqa: E402

from imap import (  # noqa: E402
    DOMAIN,
    PASSWORD,
    Client,
    ImapError,
    generate,
    load_waypost,
)

PAGE = 50
HEADERS = "(UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])"
TIMEOUT = 120


class WebClient:
    """One logged-in WebUser session on one keep-alive connection."""

    def __init__(self, port: int, account: str) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=False,
                          timeout=TIMEOUT) as login:
            page = login.get("/")
            token = re.search(r'name="csrfToken"[^>]*value="([^"]+)"', page.text) or re.search(
                r'value="([^"]+)"[^>]*name="csrfToken"', page.text)
            if page.status_code != 200 or token is None:
                raise RuntimeError(f"login page: {page.status_code} {page.text[:300]!r}")
            done = login.post("/login", data={"Username": account, "Password": PASSWORD,
                                              "csrfToken": token.group(1)})
            location = done.headers.get("location", "")
            found = re.fullmatch(r"(/Session/[^/]+/)\w+\.wssp", location)
            if done.status_code != 303 or found is None:
                raise RuntimeError(f"login: {done.status_code} {location!r} {done.text[:300]!r}")
            self.base = found.group(1)
            self.cookie = f"WaypostSession={login.cookies['WaypostSession']}"
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)

    def get(self, page: str, **params: str) -> bytes:
        self.conn.request("GET", f"{self.base}{page}?{urlencode(params)}",
                          headers={"Cookie": self.cookie})
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"{page} {params}: HTTP {response.status} {body[:300]!r}")
        if response.will_close:
            raise RuntimeError(f"{page}: the server closed the keep-alive connection")
        return body

    def close(self) -> None:
        self.conn.close()


def imap_session(port: int, account: str) -> Client:
    client = Client(port, TIMEOUT)
    client.command(f'LOGIN "{account}" "{PASSWORD}"')
    client.command("SELECT INBOX")
    return client


def run(clients: list, work: Callable[[object, int], None], requests: int, warmup: int) -> float:
    """Requests per second: every client does ``warmup`` then ``requests`` calls of ``work``,
    all at once in threads; the time is from the start of the timed part to the last end."""
    barrier = threading.Barrier(len(clients) + 1)
    errors: list[BaseException] = []

    def loop(client: object) -> None:
        try:
            for i in range(warmup):
                work(client, i)
        except BaseException as exc:  # reported below
            errors.append(exc)
        barrier.wait()
        if errors:
            return
        try:
            for i in range(requests):
                work(client, i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return len(clients) * requests / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10000, help="messages in the mailbox")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per client")
    parser.add_argument("--warmup", type=int, default=10, help="untimed requests per client")
    parser.add_argument("--clients", default="1,4", help="concurrent clients, comma-separated")
    parser.add_argument("--seed", type=int, default=5, help="seed of the generated mailbox")
    parser.add_argument("--sort", default="date", choices=("date", "size", "from", "subject"),
                        help="the order of the web list page (IMAP fetches the newest 50)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]

    workdir = Path(tempfile.mkdtemp(prefix="waypost-bench-web-"))
    server = WaypostServer(workdir / "var", domain=DOMAIN, log_level="WARNING")
    account = f"bench@{DOMAIN}"
    rows: list[tuple[str, int, float, float]] = []
    try:
        started = time.monotonic()
        print(f"generating {args.messages} messages ...", flush=True)
        messages = generate(args.messages, args.seed)
        server.init()
        stored = load_waypost(server.data, account, messages, max(counts) * 2)
        print(f"Waypost: stored in {time.monotonic() - started:.1f} s, {stored}", flush=True)
        server.start()
        imap_port = server.port("IMAPPort")

        # the 50 messages of the first list page (newest first), as the web shows them
        web = WebClient(server.web, account)
        listing = web.get("Mailbox.wssp", Mailbox="INBOX", Skip="0", Limit=str(PAGE))
        shown = list(dict.fromkeys(int(u) for u in re.findall(rb"UID=(\d+)", listing)))
        imap = imap_session(imap_port, account)
        all_uids = [int(u) for u in re.findall(rb"UID (\d+)", b"".join(
            imap.command("FETCH 1:* (UID)")))]
        imap.close()
        newest = sorted(all_uids)[-PAGE:]
        print(f"list page: {len(listing)} bytes, {len(shown)} UIDs linked; "
              f"newest {PAGE} by IMAP: {newest[0]}..{newest[-1]}; "
              + ("same set" if set(shown) == set(newest) else "DIFFERENT set"), flush=True)
        uids = newest
        view = web.get("Message.wssp", Mailbox="INBOX", UID=str(uids[-1]))
        web.close()
        print(f"view page of UID {uids[-1]}: {len(view)} bytes "
              f"(the message: {len(messages[-1].data)} bytes)", flush=True)
        uid_set = ",".join(map(str, uids))
        probe = imap_session(imap_port, account)
        fetched = probe.command(f"UID FETCH {uid_set} {HEADERS}")
        probe.close()
        if sum(b"BODY[HEADER.FIELDS" in r for r in fetched) != PAGE:
            raise ImapError(f"UID FETCH of the page: {len(fetched)} responses, not {PAGE}")

        def web_list(c: object, i: int) -> None:
            assert isinstance(c, WebClient)
            c.get("Mailbox.wssp", Mailbox="INBOX", Skip="0", Limit=str(PAGE), Sort=args.sort,
                  Order="desc")

        def web_view(c: object, i: int) -> None:
            assert isinstance(c, WebClient)
            c.get("Message.wssp", Mailbox="INBOX", UID=str(uids[i % len(uids)]))

        def imap_list(c: object, i: int) -> None:
            assert isinstance(c, Client)
            got = c.command(f"UID FETCH {uid_set} {HEADERS}")
            if sum(b"BODY[HEADER.FIELDS" in r for r in got) != PAGE:
                raise ImapError("short UID FETCH")

        def imap_view(c: object, i: int) -> None:
            assert isinstance(c, Client)
            got = c.command(f"UID FETCH {uids[i % len(uids)]} BODY.PEEK[]")
            if sum(b"BODY[]" in r for r in got) != 1:
                raise ImapError("no message in UID FETCH BODY.PEEK[]")

        for count in counts:
            webs = [WebClient(server.web, account) for _ in range(count)]
            imaps = [imap_session(imap_port, account) for _ in range(count)]
            try:
                for name, w, i in (("list (50 rows)", web_list, imap_list),
                                   ("view (1 message)", web_view, imap_view)):
                    web_rate = run(webs, w, args.requests, args.warmup)
                    imap_rate = run(imaps, i, args.requests, args.warmup)
                    rows.append((name, count, web_rate, imap_rate))
                    print(f"  {name:<18} {count} client(s): web {web_rate:.1f} pages/s, "
                          f"IMAP {imap_rate:.1f} fetches/s", flush=True)
            finally:
                for c in webs:
                    c.close()
                for c in imaps:
                    c.close()
    finally:
        server.stop()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(f"{args.messages} messages, web list sorted by {args.sort}, "
          f"{args.requests} timed requests per client "
          f"(+{args.warmup} warm-up), keep-alive, loopback")
    print(f"{'work':<18} {'clients':>7} {'web pages/s':>12} {'IMAP fetches/s':>15} "
          f"{'web/IMAP':>9}")
    for name, count, web_rate, imap_rate in rows:
        print(f"{name:<18} {count:>7} {web_rate:>12.1f} {imap_rate:>15.1f} "
              f"{web_rate / imap_rate:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
