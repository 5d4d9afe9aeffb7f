"""A tiny authoritative DNS server for tests, on 127.0.0.1 (UDP and TCP, one port).

Configured from a dict of names to records::

    {
        "otherserver.dom": {"MX": [(10, "mx.otherserver.dom")]},
        "mx.otherserver.dom": {"A": ["127.0.0.2"]},
        "sip.dom": {"SRV": [(10, 5, 5060, "pbx.sip.dom")], "TXT": ["v=spf1 -all"]},
        "_sip._udp.none.dom": {"SRV": [(0, 0, 0, ".")]},   # "." : no such service
        "alias.dom": {"CNAME": "mx.otherserver.dom"},
        "broken.dom": {"RCODE": "SERVFAIL"},   # every query fails this way
        "slow.dom": {"DROP": True},            # never answered (client times out)
    }

Names are case-insensitive, without a trailing dot. A name that is absent
is NXDOMAIN; a present name without the asked type is NODATA. ``TTL`` sets
the answers' TTL (default 0, so resolver caches never hide a change).
Records may be changed while the server runs (:meth:`set`, :meth:`remove`,
or the ``records`` dict itself). ``queries`` logs ``(name, type)`` asked.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from typing import Any

from dnslib import AAAA, CNAME, MX, QTYPE, RCODE, RR, SRV, TXT, A, DNSError, DNSRecord
from dnslib.server import DNSLogger, DNSServer

Records = dict[str, dict[str, Any]]


def _norm(name: str) -> str:
    return str(name).rstrip(".").lower()


def _rdata(rtype: str, value: Any) -> Any:
    if rtype == "A":
        return A(value)
    if rtype == "AAAA":
        return AAAA(value)
    if rtype == "MX":
        pref, exchange = value
        return MX(exchange if exchange == "." else exchange + ".", pref)
    if rtype == "SRV":
        prio, weight, port, target = value
        return SRV(prio, weight, port, "." if target == "." else target + ".")
    if rtype == "TXT":
        return TXT(value)
    if rtype == "CNAME":
        return CNAME(value + ".")
    raise ValueError(f"unsupported record type {rtype}")


class _Resolver:
    def __init__(self, server: TestDNSServer) -> None:
        self.server = server

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        qname = _norm(str(request.q.qname))
        qtype = QTYPE[request.q.qtype]
        self.server.queries.append((qname, qtype))
        name = qname
        for _ in range(8):  # follow CNAMEs inside our own data
            entry = self.server.records.get(name)
            if entry is None:
                if name == qname:
                    reply.header.rcode = RCODE.NXDOMAIN
                return reply
            if entry.get("DROP"):
                raise DNSError("dropped on purpose")  # dnslib then sends nothing
            if "RCODE" in entry:
                reply.header.rcode = getattr(RCODE, entry["RCODE"])
                return reply
            ttl = int(entry.get("TTL", 0))
            if "CNAME" in entry and qtype != "CNAME":
                reply.add_answer(
                    RR(name + ".", QTYPE.CNAME, rdata=_rdata("CNAME", entry["CNAME"]), ttl=ttl)
                )
                name = _norm(entry["CNAME"])
                continue
            values = entry.get(qtype, [])
            if isinstance(values, str | tuple):
                values = [values]
            for value in values:
                rr = RR(name + ".", getattr(QTYPE, qtype), rdata=_rdata(qtype, value), ttl=ttl)
                reply.add_answer(rr)
            return reply
        return reply


class _QuietLogger(DNSLogger):
    def __init__(self) -> None:
        super().__init__(log="-request,-reply,-truncated,-error", prefix=False)


class TestDNSServer:
    """Start with ``with TestDNSServer(records) as dns:``; ``dns.address`` is
    ``"127.0.0.1:PORT"``, ``dns.host`` / ``dns.port`` its parts."""

    __test__ = False  # not a pytest test class

    def __init__(self, records: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.records: Records = {_norm(n): dict(e) for n, e in (records or {}).items()}
        self.queries: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self.host = "127.0.0.1"
        self.port = 0
        self._servers: list[DNSServer] = []

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def load(self, records: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace all records."""
        with self._lock:
            self.records = {_norm(n): dict(e) for n, e in records.items()}

    def set(self, name: str, rtype: str, values: Any) -> None:
        """Replace one record set (``set("a.dom", "A", ["127.0.0.3"])``)."""
        with self._lock:
            entry = dict(self.records.get(_norm(name), {}))
            entry[rtype] = values
            self.records[_norm(name)] = entry

    def remove(self, name: str, rtype: str | None = None) -> None:
        """Drop one record set, or the whole name (it becomes NXDOMAIN)."""
        with self._lock:
            if rtype is None:
                self.records.pop(_norm(name), None)
            elif _norm(name) in self.records:
                entry = dict(self.records[_norm(name)])
                entry.pop(rtype, None)
                self.records[_norm(name)] = entry

    def start(self) -> TestDNSServer:
        resolver = _Resolver(self)
        for _attempt in range(20):
            udp = DNSServer(resolver, address=self.host, port=0, logger=_QuietLogger())
            port = udp.server.server_address[1]
            try:
                tcp = DNSServer(
                    resolver, address=self.host, port=port, tcp=True, logger=_QuietLogger()
                )
            except OSError:  # TCP side of that port taken: pick another
                udp.server.server_close()
                continue
            self.port = port
            self._servers = [udp, tcp]
            for srv in self._servers:
                # a short poll interval keeps stop() quick
                srv.thread = threading.Thread(
                    target=srv.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
                )
                srv.thread.start()
            return self
        raise RuntimeError("no free port for the test DNS server")

    def stop(self) -> None:
        for srv in self._servers:
            with contextlib.suppress(Exception):
                srv.server.shutdown()
            srv.server.server_close()
            srv.thread.join(timeout=5)
        self._servers = []

    def __enter__(self) -> TestDNSServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def query(address: str, name: str, rtype: str = "A", tcp: bool = False) -> DNSRecord:
    """Ask the server directly (blocking; a self-check for tests)."""
    host, _, port = address.rpartition(":")
    packet = DNSRecord.question(name, rtype).send(host, int(port), tcp=tcp, timeout=5)
    return DNSRecord.parse(packet)
