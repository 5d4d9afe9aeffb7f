"""A private Kamailio on loopback: the reference SIP proxy and registrar.

Benchmarks and interoperability tests compare Waypost with the SIP server
most deployments run. :class:`KamailioInstance` runs Debian's ``kamailio``
(package ``kamailio``; only modules of that package) in the foreground
(``kamailio -DD -E -f FILE``) as a child of the caller, with its own
configuration and runtime directory in one temporary directory, listening
only on ``127.0.0.1:PORT`` over UDP and TCP (a port free for both).

    with KamailioInstance(tmp_path, users={"alice": "secret"}, auth=True) as kam:
        Sipp(tmp_path, "register.xml", remote=kam.address, service="alice",
             auth_user="alice", auth_password="secret",
             keys={"domain": kam.domain}).run()

What the configuration does (``CONFIG``), in the order of a request:

* Max-Forwards (``maxfwd``: 483 at zero), OPTIONS to the server itself
  without a user part answered 200 statelessly (the liveness probe);
* in-dialog requests follow their Route set (``rr`` ``loose_route``); a
  CANCEL or a retransmission is matched to its transaction (``tm``);
* REGISTER is saved in ``usrloc`` held in memory only (``db_mode`` 0: no
  database); with ``auth`` it must carry digest credentials first (401,
  ``qop=auth``, MD5);
* with ``auth``, an INVITE or MESSAGE from a user of this server (the From
  URI names it: ``domain`` or this address and port) to anywhere else (the
  Request-URI does not name it) must carry proxy credentials (407) before
  it is relayed: Waypost's rule (``services/signals/routing.py``: local
  users are challenged before they call out; calls in are not). The realm
  is the To domain (REGISTER) or the From domain, as Waypost's realm is the
  account's domain;
* INVITE is record-routed; the Request-URI user is looked up in the
  location table (``registrar``); a user with no registration goes to
  ``forward`` (``host:port``) when one is set, else 404;
* every forwarding is stateful (``tm`` ``t_relay``).

Passwords are plain text in an ``htable`` filled when the module starts (no
``auth_db``: that needs a database), so thousands of users cost one config
line each. The process is stopped by pid: SIGTERM to the main process,
which ends its workers; any worker left after a bounded wait is SIGKILLed
by pid. Startup waits (bounded) until an OPTIONS probe is answered 200.
Without the binary, tests skip naming the package.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.support.dovecot import descendants, memory_kb, stop_tree
from tests.support.sipp import free_port

KAMAILIO = "/usr/sbin/kamailio"
PACKAGE = "kamailio"
MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules"

CONFIG = """\
#!KAMAILIO
# private Kamailio for Waypost tests and benchmarks (tests/support/kamailio.py)
debug={debug}
log_stderror=yes
memdbg=5
memlog=5
children={children}
tcp_children={children}
auto_aliases=no
alias="{domain}"
listen=udp:127.0.0.1:{port}
listen=tcp:127.0.0.1:{port}
dns=no
rev_dns=no
use_dns_cache=no
server_header="Server: kamailio-test"

mpath="{modules}"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "htable.so"
loadmodule "auth.so"

modparam("usrloc", "db_mode", 0)
modparam("usrloc", "hash_size", 14)
modparam("registrar", "max_contacts", 10)
modparam("htable", "htable", "users=>size=16;")
modparam("auth", "secret", "{secret}")
modparam("tm", "fr_timer", 5000)
modparam("tm", "fr_inv_timer", 30000)

event_route[htable:mod-init] {{
{users}
}}

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (is_method("OPTIONS") && uri == myself && $rU == $null) {{
        sl_send_reply("200", "OK");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            route(RELAY);
        }}
        if (is_method("ACK")) {{
            if (t_check_trans()) {{
                t_relay();
            }}
            exit;
        }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            route(RELAY);
        }}
        exit;
    }}
    if (!is_method("ACK")) {{
        t_check_trans();
    }}
    remove_hf("Route");
    if (is_method("REGISTER")) {{
{register_auth}        if (!save("location")) {{
            sl_reply_error();
        }}
        exit;
    }}
{call_auth}    if (is_method("INVITE|SUBSCRIBE")) {{
        record_route();
    }}
    if (lookup("location")) {{
        route(RELAY);
    }}
{forward}    sl_send_reply("404", "Not Found");
    exit;
}}

route[RELAY] {{
    if (!t_relay()) {{
        sl_reply_error();
    }}
    exit;
}}
"""


REGISTER_AUTH = """\
        if (!is_present_hf("Authorization")) {
            www_challenge("$td", "1");
            exit;
        }
        if (!pv_www_authenticate("$td", "$sht(users=>$au)", "0")) {
            www_challenge("$td", "1");
            exit;
        }
        consume_credentials();
"""
CALL_AUTH = """\
    if (is_method("INVITE|MESSAGE") && from_uri == myself && uri != myself) {
        if (!is_present_hf("Proxy-Authorization")) {
            proxy_challenge("$fd", "1");
            exit;
        }
        if (!pv_proxy_authenticate("$fd", "$sht(users=>$au)", "0")) {
            proxy_challenge("$fd", "1");
            exit;
        }
        consume_credentials();
    }
"""
FORWARD = """\
    $du = "sip:%s";
    route(RELAY);
"""


def kamailio_missing_reason() -> str | None:
    """Why a private Kamailio cannot run here, or None."""
    if not Path(KAMAILIO).exists() or not Path(MODULES, "tm.so").exists():
        return f"needs Kamailio (Debian package {PACKAGE})"
    return None


def require_kamailio() -> None:
    """Skip the calling test when Kamailio cannot run (names the package)."""
    import pytest

    reason = kamailio_missing_reason()
    if reason:
        pytest.skip(reason)


def _quoted(text: str) -> str:
    """A Kamailio config string literal (double quotes, backslash escapes)."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


class KamailioInstance:
    """One private Kamailio proxy and registrar on ``127.0.0.1:port``.

    ``users``: user name -> plain password (digest credentials); ``auth``:
    challenge REGISTER (401) and INVITE/MESSAGE calling out (407); ``forward``:
    ``host:port`` where requests for users with no registration go (e.g. a
    sipp UAS); ``domain``: the SIP domain (an alias of the server, and the
    realm); ``children``: UDP and TCP worker processes; ``debug``: log level
    (stderr, in ``kamailio.log``); ``shm_mb``/``pkg_mb``: shared and
    per-process memory pools (``pkg_mb`` grows with ``users`` by default).
    """

    __test__ = False

    def __init__(
        self,
        tmp: Path,
        port: int | None = None,
        *,
        users: dict[str, str] | None = None,
        auth: bool = False,
        forward: str | None = None,
        domain: str = "kamailio.test",
        children: int = 4,
        debug: int = 1,
        shm_mb: int = 256,
        pkg_mb: int | None = None,
        keep: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.users = dict(users or {})
        self.auth = auth
        self.forward = forward or ""
        self.domain = domain
        self.children = children
        self.debug = debug
        self.shm_mb = shm_mb
        # the config parser keeps each htable line in private memory (~3.5 kB)
        self.pkg_mb = pkg_mb or 16 + 4 * len(self.users) // 1000
        self.keep = keep
        self.root = Path(tmp) / f"kamailio-{self.port}"
        self.config = self.root / "kamailio.cfg"
        self.logfile = self.root / "kamailio.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``127.0.0.1:port``: what sipp takes as its remote address."""
        return f"127.0.0.1:{self.port}"

    def config_text(self) -> str:
        users = "\n".join(f'    $sht(users=>{_quoted(u)}) = "{_quoted(p)}";'
                          for u, p in self.users.items())
        return CONFIG.format(
            debug=self.debug, children=self.children, domain=_quoted(self.domain),
            port=self.port, modules=MODULES, secret=secrets.token_hex(16),
            users=users or "    $var(none) = 0;",
            register_auth=REGISTER_AUTH if self.auth else "",
            call_auth=CALL_AUTH if self.auth else "",
            forward=FORWARD % _quoted(self.forward) if self.forward else "")

    def prepare(self) -> KamailioInstance:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "run").mkdir(exist_ok=True)
        self.config.write_text(self.config_text())
        return self

    def check_config(self) -> None:
        """``kamailio -c``: raise with its messages when the file is wrong."""
        self.prepare()
        done = subprocess.run([KAMAILIO, "-c", "-f", str(self.config)], capture_output=True,
                              text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"kamailio -c failed:\n{done.stdout}{done.stderr}")

    # -- lifecycle ---------------------------------------------------------------

    def start(self, timeout: float = 30) -> KamailioInstance:
        reason = kamailio_missing_reason()
        if reason:
            raise RuntimeError(reason)
        self.prepare()
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(
                [KAMAILIO, "-DD", "-E", "-f", str(self.config), "-Y", str(self.root / "run"),
                 "-m", str(self.shm_mb), "-M", str(self.pkg_mb)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True)  # our Ctrl-C is not Kamailio's
        try:
            self._wait_ready(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def options(self, timeout: float = 1.0) -> str | None:
        """Send one OPTIONS over UDP; the status line of the answer, or None."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(timeout)
            here = sock.getsockname()[1]
            branch = "z9hG4bK" + secrets.token_hex(8)
            probe = (f"OPTIONS sip:127.0.0.1:{self.port} SIP/2.0\r\n"
                     f"Via: SIP/2.0/UDP 127.0.0.1:{here};branch={branch};rport\r\n"
                     f"From: <sip:probe@127.0.0.1>;tag={secrets.token_hex(4)}\r\n"
                     f"To: <sip:127.0.0.1:{self.port}>\r\n"
                     f"Call-ID: {secrets.token_hex(8)}@127.0.0.1\r\n"
                     "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
            sock.sendto(probe.encode(), ("127.0.0.1", self.port))
            try:
                data = sock.recv(65535)
            except OSError:
                return None
        return data.split(b"\r\n", 1)[0].decode(errors="replace")

    def _wait_ready(self, deadline: float) -> None:
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"kamailio exited with status {self.proc.returncode}:\n{self.log()}")
            status = self.options(timeout=0.5)
            if status is not None and status.startswith("SIP/2.0 200"):
                return
            time.sleep(0.05)
        raise RuntimeError(f"Kamailio never answered OPTIONS on {self.address}\n{self.log()}")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def pids(self) -> list[int]:
        """The main process and every worker under it."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        return [self.proc.pid, *descendants(self.proc.pid)]

    def memory_kb(self, field: str = "Pss") -> int:
        """Memory of all its processes (``Pss`` counts shared memory, where
        the location table lives, once; ``Rss`` once per process)."""
        return memory_kb(self.pids(), field)

    def stop(self, timeout: float = 20) -> None:
        if self.proc is not None:
            stop_tree(self.proc, self.pids()[1:], timeout)
            self.proc = None
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> KamailioInstance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.logfile.read_text(errors="replace")
        return ""
