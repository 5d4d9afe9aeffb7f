"""Server settings: names, defaults, validation.

Settings are stored as strings (CGP style: ``100M``, ``unlimited``, ``YES``);
this module knows every name, its default and how to read it, so the CLI can
refuse a bad value with one clear line before anything is stored.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass


class SettingError(ValueError):
    pass


def parse_bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("yes", "true", "on", "1"):
        return True
    if v in ("no", "false", "off", "0"):
        return False
    raise SettingError(f"expected YES or NO, got {value!r}")


_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)b?\s*$", re.IGNORECASE)


def parse_size(value: str) -> int | None:
    """``100M`` -> bytes; ``unlimited`` -> None."""
    if value.strip().lower() == "unlimited":
        return None
    m = _SIZE.match(value)
    if not m or len(m.group(1)) > 30:  # int() refuses 4300 digits with a bare ValueError
        raise SettingError(f"expected a size such as 10M, 512K or unlimited, got {value!r}")
    scale = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]
    return int(m.group(1)) * scale


def parse_int(value: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise SettingError(f"expected a whole number, got {value!r}") from None
    if number < 0:
        raise SettingError(f"expected a number >= 0, got {value!r}")
    return number


def parse_port(value: str) -> int:
    number = parse_int(value)
    if not 0 < number < 65536:
        raise SettingError(f"expected a port from 1 to 65535, got {value!r}")
    return number


def split_list(value: str) -> list[str]:
    """Comma- or line-separated items; ``;`` starts a comment (CGP list format)."""
    items: list[str] = []
    for line in value.replace("\\e", "\n").splitlines():
        line = line.split(";", 1)[0]
        items.extend(part.strip() for part in line.split(",") if part.strip())
    return items


class IPList:
    """A CGP address list: single addresses, CIDR networks and ``a-b`` ranges."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._ranges: list[tuple[int, int, int]] = []  # (version, first, last)
        for item in split_list(text):
            if "-" in item:
                first_text, _, last_text = item.partition("-")
                try:
                    first = ipaddress.ip_address(first_text.strip())
                    last = ipaddress.ip_address(last_text.strip())
                except ValueError:
                    raise SettingError(f"invalid address range {item!r}") from None
                if first.version != last.version or int(first) > int(last):
                    raise SettingError(f"invalid address range {item!r}")
                self._ranges.append((first.version, int(first), int(last)))
            else:
                try:
                    net = ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise SettingError(f"invalid IP address or network {item!r}") from None
                self._ranges.append(
                    (net.version, int(net.network_address), int(net.broadcast_address))
                )

    def __contains__(self, ip: object) -> bool:
        try:
            addr = ipaddress.ip_address(str(ip))
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        value = int(addr)
        return any(v == addr.version and lo <= value <= hi for v, lo, hi in self._ranges)


def _check_ip_list(value: str) -> str:
    IPList(value)
    return value


def _check_plain_ips(value: str) -> str:
    for item in split_list(value):
        try:
            ipaddress.ip_address(item)
        except ValueError:
            raise SettingError(f"invalid IP address {item!r}") from None
    return value


def _check_dns_servers(value: str) -> str:
    for item in split_list(value):
        host, port = item, ""
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = rest.removeprefix(":")
        elif item.count(":") == 1:
            host, port = item.split(":")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise SettingError(f"invalid DNS server {item!r}: expected IP or IP:port") from None
        if port:
            parse_port(port)
    return value


def _check_domain_patterns(value: str) -> str:
    """Domain patterns, each optionally ``= account [account ...]`` (the
    accounts allowed to ATRN for it, smtp.md §6.3)."""
    for item in split_list(value):
        pattern, _, accounts = item.partition("=")
        if not re.fullmatch(r"[A-Za-z0-9*._\-:\[\]]+", pattern.strip()):
            raise SettingError(f"invalid domain name or pattern {item!r}")
        for account in accounts.split():
            if not re.fullmatch(r"[A-Za-z0-9._\-]+(@[A-Za-z0-9._\-]+)?", account):
                raise SettingError(f"invalid account {account!r} in {item!r}")
    return value


def _check_header_name(value: str) -> str:
    if not re.fullmatch(r"[!-9;-~]+", value):
        raise SettingError(f"invalid header field name {value!r}")
    return value


SIP_DIGEST_ALGORITHMS = ("SHA-256", "MD5")
"""What ``services/signals/digest.py`` can check (RFC 8760, RFC 7616)."""


def _check_digest_algorithms(value: str) -> str:
    names = [name.upper() for name in split_list(value)]
    if not names or len(set(names)) != len(names) or set(names) - set(SIP_DIGEST_ALGORITHMS):
        raise SettingError("expected one or more of " + ", ".join(SIP_DIGEST_ALGORITHMS)
                           + ", each once, in the order a challenge offers them")
    return ", ".join(names)


def _limit_size(value: str) -> int:
    """A size that must be bounded and above 0 (a protocol limit)."""
    size = parse_size(value)
    if not size:
        raise SettingError(f"expected a size above 0 such as 16K, got {value!r}")
    return size


def _limit_count(value: str) -> int:
    number = parse_int(value)
    if not number:
        raise SettingError(f"expected a number above 0, got {value!r}")
    return number


def _as(check: Callable[[str], object]) -> Callable[[str], str]:
    def validate(value: str) -> str:
        check(value)
        return value.strip()

    return validate


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    default: str
    help: str
    validate: Callable[[str], str] = str.strip


SETTINGS: tuple[Setting, ...] = (
    Setting("MainDomain", "", "the Main Domain name (changing it renames the Main Domain)"),
    Setting("ServerIPAddresses", "", "the server's own IP addresses, comma-separated",
            _check_plain_ips),
    Setting("ClientIPAddresses", "127.0.0.0/8",
            "networks whose clients are trusted to relay (addresses, CIDR, a-b ranges)",
            _check_ip_list),
    Setting("DNSServers", "", "resolver addresses IP or IP:port; empty = /etc/resolv.conf",
            _check_dns_servers),
    Setting("HoldMailForDomains", "", "domains whose mail is held until released (* allowed)",
            _check_domain_patterns),
    Setting("RelayToAllHostsWeBackup", "NO", "relay for domains that list us as an MX",
            _as(parse_bool)),
    Setting("RealToHeader", "X-Real-To", "header naming the original recipient in unified "
            "domain-wide accounts", _check_header_name),
    Setting("DefaultRemoteSMTPPort", "25", "port for MX/A targets without an explicit port",
            _as(parse_port)),
    Setting("MaxMessageSize", "50M", "largest message accepted (SIZE)", _as(parse_size)),
    Setting("MaxRecipients", "1000", "recipients accepted per message", _as(parse_int)),
    Setting("MaxLineLength", "1000", "longest command or text line in octets", _as(parse_int)),
    Setting("MaxConnections", "500", "simultaneous connections per listener", _as(parse_int)),
    Setting("MaxConnectionsPerAddress", "30", "simultaneous connections per listener from one "
            "client address (IPv4-mapped IPv6 counts as IPv4); 0 = no limit", _as(parse_int)),
    Setting("MaxConnectionsPerNetwork", "100", "simultaneous connections per listener from "
            "one IPv4 /24 or IPv6 /64 (trusted clients not counted); 0 = no limit",
            _as(parse_int)),
    Setting("MaxConnectionsPerTrustedAddress", "250", "simultaneous connections per listener "
            "from one ClientIPAddresses address; 0 = no limit (exempt)", _as(parse_int)),
    Setting("SortCacheMessages", "100000",
            "messages per mailbox whose SORT/THREAD keys are kept (about 950 bytes each)",
            _as(parse_int)),
    Setting("SMTPIdleTimeout", "300", "seconds an idle SMTP client is kept", _as(parse_int)),
    Setting("SMTPForbidBareNewline", "YES", "refuse a message holding a bare CR or LF "
            "(554 5.5.2, SMTP smuggling) from clients outside ClientIPAddresses; NO accepts "
            "it and rewrites them as CRLF", _as(parse_bool)),
    Setting("TLSCertificate", "", "PEM certificate file; empty = self-signed in DATA/tls"),
    Setting("TLSKey", "", "PEM private key file for TLSCertificate"),
    Setting("SMTPPort", "25", "SMTP (MX) listener", _as(parse_port)),
    Setting("SubmissionPort", "587", "SMTP submission listener (AUTH required)",
            _as(parse_port)),
    Setting("SMTPSPort", "465", "SMTP over implicit TLS", _as(parse_port)),
    Setting("POP3Port", "110", "POP3 listener", _as(parse_port)),
    Setting("POP3SPort", "995", "POP3 over implicit TLS", _as(parse_port)),
    Setting("IMAPPort", "143", "IMAP listener", _as(parse_port)),
    Setting("IMAPSPort", "993", "IMAP over implicit TLS", _as(parse_port)),
    Setting("WebUserPort", "8100", "WebUser HTTP listener", _as(parse_port)),
    Setting("WebUserSPort", "9100", "WebUser HTTPS listener (the server certificate)",
            _as(parse_port)),
    Setting("WebUserIdleTimeout", "1800", "seconds a WebUser session may stay idle before it "
            "ends (web.md §2)", _as(parse_int)),
    Setting("WebUserBindIP", "YES", "a WebUser session works only from the client address "
            "that logged in (besides its cookie)", _as(parse_bool)),
    Setting("WebUserMaxRequest", "1M", "largest HTTP request body the WebUser module "
            "accepts", _as(parse_size)),
    Setting("WebDAVBodyTimeout", "60", "seconds a WebDAV upload may stall mid-body before "
            "it is dropped with nothing stored", _as(parse_int)),
    Setting("WebAdminPort", "8010", "WebAdmin HTTP listener", _as(parse_port)),
    Setting("WebAdminSPort", "9010", "WebAdmin HTTPS listener", _as(parse_port)),
    Setting("SIPPort", "5060", "SIP listener (UDP and TCP)", _as(parse_port)),
    Setting("QueueRetryFirst", "600", "seconds before the first retry after a temporary "
            "failure; the delay then doubles", _as(parse_int)),
    Setting("QueueRetryMax", "3600", "longest delay between retries, seconds", _as(parse_int)),
    Setting("QueueLifetime", "432000", "seconds a message may wait in the queue before it "
            "is bounced (5 days)", _as(parse_int)),
    Setting("OverQuotaLifetime", "86400", "seconds mail for an account over its "
            "MaxAccountSize is retried before it is bounced (1 day)", _as(parse_int)),
    Setting("HeldQueueLifetime", "604800", "seconds mail for a held domain is kept before "
            "it is bounced (7 days)", _as(parse_int)),
    Setting("StorageMinFree", "1M", "free space the data directory must keep: SMTP answers "
            "452 4.3.1 at RCPT below it (plus the declared SIZE)", _as(parse_size)),
    Setting("StorageFullRetry", "30", "seconds delivery waits before trying again after the "
            "data directory was full", _as(parse_int)),
    # queue leases (issue 15): several processes on one data directory
    Setting("QueueLeaseTime", "300", "seconds a delivery process holds the queue recipients it "
            "claimed (renewed every third of it while it delivers); after a process dies its "
            "recipients wait this long before another takes them. Long enough that a slow "
            "SMTP session never loses its claim between renewals, short enough that mail of "
            "a dead process is not held up long (5 minutes)", _as(parse_int)),
    Setting("SMTPDestinationConcurrency", "20", "parallel SMTP connections per destination "
            "(SMTP queue) when relaying: the queue's messages are split over up to this many "
            "sessions, each sending its share in turn (Postfix's default destination "
            "concurrency); 1 = one session at a time", _as(parse_int)),
    Setting("LoginCacheTime", "300", "seconds a verified password is remembered (as a keyed "
            "hash) so the next logins skip argon2; 0 = verify every login", _as(parse_int)),
    Setting("LoginFailureLimit", "5", "failed logins per (account, client IP) within "
            "LoginFailureWindow that lock that account out from that IP (others are not "
            "locked out); 0 = never lock out", _as(parse_int)),
    Setting("LoginFailureWindow", "300", "seconds over which failed logins are counted",
            _as(parse_int)),
    Setting("LoginLockout", "300", "seconds an (account, client IP) pair stays locked out",
            _as(parse_int)),
    Setting("LoginAddressFailureLimit", "30", "failed logins from one client IP (all "
            "accounts) within LoginFailureWindow after which its logins are slowed by "
            "LoginFailureMaxDelay (never locked out); 0 = never", _as(parse_int)),
    Setting("LoginAccountFailureLimit", "30", "failed logins to one account (all client "
            "IPs) within LoginFailureWindow after which its logins are slowed by "
            "LoginFailureMaxDelay (never locked out); 0 = never", _as(parse_int)),
    Setting("LoginFailureMaxDelay", "8", "longest delay, seconds, of the reply to a failed "
            "or refused login (the delay doubles from 0.5 s with every failure)",
            _as(parse_int)),
    Setting("POP3APOP", "NO", "offer APOP (a timestamp in the POP3 greeting)",
            _as(parse_bool)),
    Setting("POP3IdleTimeout", "600", "seconds an idle POP3 client is kept (RFC 1939: "
            "at least 600)", _as(parse_int)),
    Setting("POP3MessageCache", "32M", "octets of recently retrieved small messages POP3 "
            "keeps in memory, shared by all sessions (0 = none)", _as(parse_size)),
    Setting("IMAPMaxLiteral", "50M", "largest IMAP literal (the largest APPEND); larger ones "
            "are refused with NO [TOOBIG]", _as(parse_size)),
    Setting("IMAPMaxLine", "64K", "longest IMAP command line in octets", _as(parse_size)),
    Setting("IMAPMaxCommand", "100M", "largest IMAP command, all its literals together (a "
            "MULTIAPPEND); never less than one IMAPMaxLiteral; larger ones are refused with "
            "NO [TOOBIG]", _as(parse_size)),
    Setting("IMAPIdleTimeout", "1800", "seconds an idle IMAP client is kept, also in IDLE "
            "(RFC 3501: at least 30 minutes)", _as(parse_int)),
    # SIP (protocols/sip)
    Setting("SIPMaxHeaderSize", "16K", "largest SIP header section in octets (more: 513 "
            "Message Too Large)", _as(_limit_size)),
    Setting("SIPMaxHeaders", "100", "most header fields in one SIP message (more: 513)",
            _as(_limit_count)),
    Setting("SIPMaxBodySize", "64K", "largest SIP message body in octets (more: 413 Request "
            "Entity Too Large)", _as(_limit_size)),
    # SIP registrar and digest authentication (services/signals/)
    Setting("SIPNonceLifetime", "300", "seconds a SIP digest nonce is accepted; an older one "
            "gets a new challenge with stale=true", _as(parse_int)),
    Setting("SIPDefaultExpires", "3600", "seconds a SIP registration lasts when the REGISTER "
            "names no expiry", _as(parse_int)),
    Setting("SIPMinExpires", "60", "shortest SIP registration accepted (shorter: 423 Interval "
            "Too Brief)", _as(parse_int)),
    Setting("SIPMaxExpires", "7200", "longest SIP registration granted (longer ones are "
            "shortened)", _as(parse_int)),
    Setting("SIPMaxRegistrations", "10", "SIP contacts one account may have registered at "
            "once (more: 403)", _as(parse_int)),
    Setting("SIPDigestAlgorithms", "SHA-256, MD5", "digest algorithms a SIP 401/407 offers, "
            "in this order, and the only ones accepted (RFC 8760 §2.4: strongest first; a "
            "phone that reads only the first challenge and knows only MD5, like sipp, needs "
            "MD5 first)", _check_digest_algorithms),
    # SIP routing and next hop (siproute: services/signals/routing.py, nexthop.py)
    Setting("SIPDefaultRemotePort", "5060", "port for SIP A/AAAA targets over UDP or TCP "
            "without an explicit port or SRV record", _as(parse_port)),
    Setting("SIPDefaultRemoteTLSPort", "5061", "port for SIP A/AAAA targets over TLS without "
            "an explicit port or SRV record", _as(parse_port)),
    Setting("SIPDNSTimeout", "5", "seconds one SIP next-hop lookup (SRV and A/AAAA together) "
            "may take before the request gets 503", _as(_limit_count)),
    # SIP proxy (sipproxy: protocols/sip/proxy.py)
    Setting("SIPTimerC", "200", "seconds an INVITE branch of the SIP proxy may go without a "
            "new provisional response before it is cancelled (RFC 3261 §16.8 Timer C; values "
            "under 181 count as 181)", _as(_limit_count)),
    Setting("SIPCancelWait", "32", "seconds a cancelled SIP proxy branch may take to send its "
            "final response before it is given up as 408 (64*T1)", _as(_limit_count)),
    Setting("SIPMaxBreadth", "60", "most parallel branches one proxied SIP request may fork "
            "into, and the Max-Breadth of requests without one (RFC 5393; none left: 440)",
            _as(_limit_count)),
    # SIP transports and transactions (siptx: protocols/sip/transport.py, transaction.py)
    Setting("SIPTLSPort", "5061", "SIP over TLS listener (the server certificate)",
            _as(parse_port)),
    Setting("SIPHost", "", "host or address this server writes in its SIP Via and "
            "Record-Route; empty = the listen address, or the Main Domain when listening on "
            "every address", _as(str)),
    Setting("SIPIdleTimeout", "300", "seconds a SIP TCP/TLS connection may stay idle before "
            "it is closed", _as(_limit_count)),
    Setting("SIPTimerT1", "500", "SIP timer T1 in milliseconds (RFC 3261 §17: the round-trip "
            "estimate; retransmissions start at T1, transactions time out after 64*T1)",
            _as(_limit_count)),
    Setting("SIPTimerT2", "4000", "SIP timer T2 in milliseconds (longest retransmit interval "
            "of non-INVITE requests and INVITE responses)", _as(_limit_count)),
    Setting("SIPTimerT4", "5000", "SIP timer T4 in milliseconds (longest time a message "
            "stays in the network)", _as(_limit_count)),
    Setting("SIPMaxTransactions", "10000", "SIP server transactions not yet answered, in "
            "all (more: 503 with Retry-After); also the most answered ones kept for "
            "retransmissions (the oldest end early)", _as(_limit_count)),
    Setting("SIPMaxTransactionsPerAddress", "500", "SIP server transactions from one "
            "client address not yet answered (more: 503 with Retry-After)",
            _as(_limit_count)),
    Setting("SIPTLSVerify", "YES", "check the certificate chain of SIP peers reached over TLS",
            _as(parse_bool)),
)

BY_NAME: dict[str, Setting] = {s.name.lower(): s for s in SETTINGS}


def lookup(name: str) -> Setting:
    try:
        return BY_NAME[name.lower()]
    except KeyError:
        raise SettingError(
            f"unknown setting {name!r}; known settings: " + ", ".join(s.name for s in SETTINGS)
        ) from None


def validate(name: str, value: str) -> tuple[str, str]:
    """(canonical name, stored value) or :class:`SettingError`."""
    setting = lookup(name)
    try:
        return setting.name, setting.validate(value)
    except SettingError as exc:
        raise SettingError(f"{setting.name}: {exc}") from None


def effective(stored: Mapping[str, str]) -> dict[str, str]:
    """Every setting with its stored value or its default."""
    lowered = {k.lower(): v for k, v in stored.items()}
    return {s.name: lowered.get(s.name.lower(), s.default) for s in SETTINGS}


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Typed view of the settings the running server reads often."""

    values: Mapping[str, str]

    @classmethod
    def from_store(cls, stored: Mapping[str, str]) -> ServerSettings:
        return cls(effective(stored))

    def text(self, name: str) -> str:
        return self.values[lookup(name).name]

    def number(self, name: str) -> int:
        return parse_int(self.text(name))

    def size(self, name: str) -> int | None:
        return parse_size(self.text(name))

    def flag(self, name: str) -> bool:
        return parse_bool(self.text(name))

    def items(self, name: str) -> list[str]:
        return split_list(self.text(name))
