"""Personal web sites beside nginx: requests per second for static files (issue 11 point 8).

Not a test: run ``.venv/bin/python bench/sites.py`` (``--requests 500`` is a
quick check). It builds a fresh Waypost data directory, stores a 10 KB and a
1 MB file in alice's File Storage with ``waypost files put``, starts
``waypost serve`` (the test harness, ``tests/support/server.py``) and Debian's
nginx (``nginx -c <conf>``, one worker, ``sendfile on``, access log off, the
same two files under ``/~alice/`` of its root) on loopback, then fetches each
file from each server.

The client: ``--clients`` processes (not threads: the client must not be the
bottleneck that hides the difference), each with one keep-alive HTTP/1.1
connection on a raw socket, each sending ``--requests`` GETs after
``--warmup`` untimed ones and checking every response's status and length;
the rate is all requests over the wall time of the slowest client. Each
server is measured ``--runs`` times, alternating, and the table shows every
run's rate and the ratio Waypost/nginx within each run (1.0: as fast as
nginx; below 1: slower). On this 2-core machine the clients share the cores
with the server, so both servers are measured under the same handicap.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))  # for tests.support

from tests.support.server import WaypostServer  # noqa: E402

NGINX = "/usr/sbin/nginx"
FILES = {"10k.bin": 10 * 1024, "1m.bin": 1024 * 1024}
DOMAIN = "main.dom"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, int]:
    """(status, body length) of one response; ``buffer`` keeps what follows."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the headers")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = bytearray(rest)
    while len(body) < length:
        chunk = sock.recv(max(65536, length - len(body)))
        if not chunk:
            raise ConnectionError("closed in the body")
        body += chunk
    buffer[:] = body[length:]
    return status, length


def client(port: int, path: str, size: int, warmup: int, requests: int,
           start: multiprocessing.synchronize.Barrier, out: multiprocessing.Queue) -> None:
    request = (f"GET {path} HTTP/1.1\r\nHost: {DOMAIN}\r\nAccept-Encoding: identity\r\n\r\n"
               .encode())
    buffer = bytearray()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(warmup):
            sock.sendall(request)
            _read_response(sock, buffer)
        start.wait()
        began = time.perf_counter()
        for _ in range(requests):
            sock.sendall(request)
            status, length = _read_response(sock, buffer)
            if status != 200 or length != size:
                raise RuntimeError(f"bad response {status} length {length} for {path}")
        out.put(time.perf_counter() - began)


def measure(port: int, path: str, size: int, clients: int, warmup: int, requests: int
            ) -> float:
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(clients)
    out: multiprocessing.Queue = ctx.Queue()
    procs = [ctx.Process(target=client, args=(port, path, size, warmup, requests, start, out))
             for _ in range(clients)]
    for p in procs:
        p.start()
    times = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(60)
        if p.exitcode:
            raise RuntimeError(f"a client failed (exit {p.exitcode})")
    return clients * requests / max(times)


def start_nginx(root: Path, work: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = work / "nginx.conf"
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(f"""{user}worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        etag on;
    }}
}}
""")
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-e", str(work / "nginx-error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            if proc.poll() is not None:
                why = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"nginx exited: {why}") from None
            time.sleep(0.05)
    raise RuntimeError("nginx did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=2000,
                        help="requests per client for the 10 KB file (a tenth for 1 MB)")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not Path(NGINX).exists():
        print("nginx is missing: apt-get install nginx (.ci/run installs it)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-sites-"))
    os.chmod(work, 0o755)
    nginx = None
    server = None
    try:
        root = work / "nginx-root"
        (root / "~alice").mkdir(parents=True)
        payloads = {name: os.urandom(size) for name, size in FILES.items()}
        for name, data in payloads.items():
            (root / "~alice" / name).write_bytes(data)
        server = WaypostServer(work / "var", domain=DOMAIN, log_level="WARNING").init()
        server.cli("account", "add", "alice", "--password", "bench-pw-1")
        for name, data in payloads.items():
            source = work / name
            source.write_bytes(data)
            server.cli("files", "put", "alice", name, str(source))
        server.start()
        nginx, nginx_port = start_nginx(root, work)
        print(f"{args.clients} clients, keep-alive, {args.runs} runs; rates in requests/s")
        print(f"{'file':8} {'run':>3} {'waypost':>10} {'nginx':>10} {'ratio':>7}")
        for name, size in FILES.items():
            requests = args.requests if size < 100_000 else max(10, args.requests // 10)
            ratios = []
            for run in range(1, args.runs + 1):
                ours = measure(server.web, f"/~alice/{name}", size, args.clients,
                               args.warmup, requests)
                theirs = measure(nginx_port, f"/~alice/{name}", size, args.clients,
                                 args.warmup, requests)
                ratios.append(ours / theirs)
                print(f"{name:8} {run:>3} {ours:>10.0f} {theirs:>10.0f} {ours / theirs:>7.2f}",
                      flush=True)
            print(f"{name:8} ratio min-max {min(ratios):.2f}-{max(ratios):.2f}")
        return 0
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(10)
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
