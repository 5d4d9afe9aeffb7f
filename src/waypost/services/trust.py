"""Source trust: is a client address one of ``ClientIPAddresses``?

The one place that answers it (smtp.md: "Client IP Addresses" are trusted
sources: they may relay, and rules see them as ``Source client``). The
SMTP session, the Enqueuer's server-wide rules, the domain and account rules
at local delivery and the CLI all ask a :class:`ClientTrust`.

Invariants: answering never touches the store (the SMTP session asks on the
event loop); the address list is parsed only when the setting's text
changed, so refreshing it with every settings change is cheap. An empty or
malformed address is never trusted.
"""

from __future__ import annotations

from waypost.settings import IPList, ServerSettings

SETTING = "ClientIPAddresses"


class ClientTrust:
    """The ``ClientIPAddresses`` list of one settings snapshot."""

    __slots__ = ("_ips", "_text")

    def __init__(self, settings: ServerSettings | None = None) -> None:
        self._text: str | None = None
        self._ips = IPList("")
        if settings is not None:
            self.update(settings)

    def update(self, settings: ServerSettings) -> None:
        """Follow a settings change; re-parses only when the list itself changed."""
        text = settings.text(SETTING)
        if text != self._text:
            self._ips = IPList(text)
            self._text = text

    def is_trusted(self, ip: str) -> bool:
        return bool(ip) and ip in self._ips


__all__ = ["ClientTrust"]
