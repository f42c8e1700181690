"""tokotani.dr.http_load_test through ansible against a real HTTP/1.1 server the test runs on 127.0.0.1: the
server counts what it received (per path and method, connections, headers) and the module's figures must match
it - exact request counts, weights, errors by kind, the threshold message - and match hey's against the same
server. Nothing is sent anywhere but 127.0.0.1; timings are never asserted as speed."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from backup_support import run_module
from helpers import LOOPBACK, free_port

DELAY = 0.05  # /slow answers after this many seconds
HANG = 3.0  # /hang answers after this many seconds (past the tests' timeout)
FLAKY_EVERY = 5  # /flaky answers 503 to every 5th request it receives, whoever sends it
BODY = b"TokoTani: beras, pupuk, benih\n"
PASSWORD = "Rahasia-Op5-2026"
API_KEY = "api-key-7f3a9c1d"


@dataclass
class LoopbackShop:
    """What the server saw: requests per (method, path), connections accepted, the headers of the last request."""

    port: int = 0
    hits: Counter = field(default_factory=Counter)
    connections: int = 0
    last_headers: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    def record(self, method: str, path: str, headers: dict) -> int:
        with self.lock:
            self.hits[(method, path)] += 1
            self.last_headers = headers
            return self.hits[(method, path)]

    def connected(self) -> None:
        with self.lock:
            self.connections += 1

    def reset(self) -> None:
        with self.lock:
            self.hits.clear()
            self.connections = 0
            self.last_headers = {}

    def count(self, path: str, method: str = "GET") -> int:
        return self.hits[(method, path)]

    @property
    def total(self) -> int:
        return sum(self.hits.values())


def handler_for(shop: LoopbackShop):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the module's workers reuse their connections
        disable_nagle_algorithm = True

        def setup(self):
            super().setup()
            shop.connected()

        def do_GET(self):
            self._serve(body=True)

        def do_HEAD(self):
            self._serve(body=False)

        def _serve(self, body: bool):
            path = urlsplit(self.path).path
            hit = shop.record(self.command, path, dict(self.headers))
            if path == "/drop":  # read the request, then close the connection (FIN) without answering
                self.close_connection = True
                return
            if path == "/reset":  # read the request, then reset the connection (RST)
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True
                return
            if path == "/slow":
                time.sleep(DELAY)
            if path == "/hang":
                time.sleep(HANG)
            status = {"/ok": 200, "/slow": 200, "/hang": 200, "/unavailable": 503, "/redirect": 302}.get(path, 404)
            if path == "/flaky":
                status = 503 if hit % FLAKY_EVERY == 0 else 200
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(BODY)))
            if status == 302:
                self.send_header("Location", "/ok")
            self.end_headers()
            if body:
                self.wfile.write(BODY)

        def log_message(self, *args):
            pass

    return Handler


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # the workers reconnect after every dropped, reset or timed-out request

    def handle_error(self, request, client_address):
        pass  # a client that timed out or was reset: expected here


@pytest.fixture(scope="module")
def shop() -> Iterator[LoopbackShop]:
    state = LoopbackShop()
    server = QuietServer((LOOPBACK, 0), handler_for(state))
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class TlsShop:
    shop: LoopbackShop
    server_names: list = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"https://{LOOPBACK}:{self.shop.port}{path}"


@pytest.fixture(scope="module")
def tls_shop(tmp_path_factory) -> Iterator[TlsShop]:
    """The same server behind TLS, with a self-signed certificate for shop.test; it records the SNI names asked."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test certificate (Debian package openssl)", pytrace=False)
    base: Path = tmp_path_factory.mktemp("tls")
    cert, key = base / "cert.pem", base / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=shop.test",
         "-addext", "subjectAltName=DNS:shop.test", "-keyout", str(key), "-out", str(cert)],
        capture_output=True,
        check=True,
        timeout=60,
    )  # fmt: skip
    state = TlsShop(shop=LoopbackShop())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: state.server_names.append(name)
    server = QuietServer((LOOPBACK, 0), handler_for(state.shop))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    state.shop.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def fresh_counts(shop):
    shop.reset()


def load_test(args: dict, check: bool = False) -> dict:
    for url in args.get("urls", []):
        target = url["url"] if isinstance(url, dict) else url
        assert urlsplit(target).hostname == LOOPBACK, f"integration tests only load-test {LOOPBACK}: {target}"
    return run_module("http_load_test", args, check=check, timeout=120)


def hey(url: str, requests: int, concurrency: int) -> list[dict]:
    """hey's per-response rows (CSV) for url: one row per answer, whatever its status."""
    executable = shutil.which("hey")
    if executable is None:
        pytest.fail("hey is not installed: run scripts/ensure.sh hey (Debian package hey)", pytrace=False)
    assert urlsplit(url).hostname == LOOPBACK
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    proc = subprocess.run(
        [executable, "-n", str(requests), "-c", str(concurrency), "-t", "10", "-o", "csv", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=dict(env, NO_PROXY=LOOPBACK),
    )
    assert proc.returncode == 0, proc.stderr
    return list(csv.DictReader(io.StringIO(proc.stdout)))


# --------------------------------------------------------------------------- counts


def test_sends_exactly_the_requests_asked_for_on_one_connection_per_worker(shop):
    result = load_test({"urls": [shop.url("/ok")], "requests": 200, "concurrency": 4})
    assert not result.get("failed"), result
    assert result["changed"] is False and result["passed"] is True
    assert result["requests"] == 200 == shop.count("/ok") == shop.total
    assert result["succeeded"] == 200 and result["errors"] == 0 and result["errors_by_kind"] == {}
    assert result["status_codes"] == {"200": 200} and result["answered"] == 200
    assert result["bytes_received"] == 200 * len(BODY)
    assert result["connections"] == 4 == shop.connections, "persistent connections: one per worker"
    assert result["stopped_by"] == "requests"
    assert 0 < result["min_ms"] <= result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert result["thresholds"] == {"error_rate": {"limit": 0.01, "value": 0.0, "passed": True}}
    assert result["msg"].startswith(f"load test on {shop.url('/ok')} passed: error rate 0 % (0 of 200)")


def test_weights_are_honoured_as_the_server_counts_them(shop):
    result = load_test(
        {
            "urls": [
                {"url": shop.url("/ok"), "weight": 3},
                {"url": shop.url("/slow"), "weight": 1},
                {"url": shop.url("/ok"), "weight": 2, "method": "HEAD"},
            ],
            "requests": 120,
            "concurrency": 6,
        }
    )
    assert not result.get("failed"), result
    assert (shop.count("/ok"), shop.count("/slow"), shop.count("/ok", "HEAD")) == (60, 20, 40)
    assert [(u["method"], u["weight"], u["requests"]) for u in result["per_url"]] == [
        ("GET", 3, 60),
        ("GET", 1, 20),
        ("HEAD", 2, 40),
    ]
    assert result["bytes_received"] == 80 * len(BODY), "HEAD answers have no body"


def test_errors_by_kind_match_what_the_server_counted(shop):
    closed_port = free_port()
    paths = ["/ok", "/unavailable", "/drop", "/reset", "/hang", "/redirect"]
    urls = [shop.url(p) for p in paths] + [f"http://{LOOPBACK}:{closed_port}/refused"]
    result = load_test({"urls": urls, "requests": 70, "concurrency": 5, "timeout": 0.5})
    assert result.get("failed") is True and result["_rc"] != 0
    assert result["requests"] == 70 and result["succeeded"] == 10 and result["errors"] == 60
    assert result["errors_by_kind"] == {
        "connection_closed": 10,
        "connection_refused": 10,
        "connection_reset": 10,
        "status_302": 10,
        "status_503": 10,
        "timeout": 10,
    }
    assert {p: shop.count(p) for p in paths} == dict.fromkeys(paths, 10), "each URL got its share, no retries"
    by_url = {u["url"]: u for u in result["per_url"]}
    assert by_url[shop.url("/drop")]["errors_by_kind"] == {"connection_closed": 10}
    assert by_url[shop.url("/reset")]["errors_by_kind"] == {"connection_reset": 10}
    assert by_url[shop.url("/hang")]["errors_by_kind"] == {"timeout": 10}
    assert by_url[shop.url("/hang")]["p95_ms"] is None, "no answer, no latency"
    assert by_url[urls[-1]]["errors_by_kind"] == {"connection_refused": 10}
    assert result["status_codes"] == {"200": 10, "302": 10, "503": 10}
    assert result["answered"] == 30
    assert result["error_examples"]["status_503"] == f"GET {shop.url('/unavailable')}: HTTP 503 Service Unavailable"
    assert result["msg"].startswith(
        f"load test on {shop.url('/ok')}, {shop.url('/unavailable')} and 5 more URLs: error rate 85.71 % (60 of 70, "
    )


def test_a_crossed_threshold_fails_with_a_message_for_the_operator_and_every_figure(shop):
    ok, down = shop.url("/ok"), shop.url("/unavailable")
    result = load_test({"urls": [{"url": ok, "weight": 4}, down], "requests": 100, "concurrency": 4})
    assert result.get("failed") is True and result["changed"] is False and result["passed"] is False
    assert result["msg"].startswith(
        f"load test on {ok} and {down}: error rate 20 % (20 of 100, status_503: 20) is over the 1 % allowed, "
        f"most at {down} (20 of 20); p95 "
    )
    assert result["msg"].endswith("100 requests in " + result["msg"].split(" requests in ")[1])
    assert result["thresholds"]["error_rate"] == {"limit": 0.01, "value": 0.2, "passed": False}
    assert (result["requests"], result["errors"], shop.count("/unavailable"), shop.count("/ok")) == (100, 20, 20, 80)
    assert result["p95_ms"] is not None and len(result["per_url"]) == 2

    slow = load_test({"urls": [shop.url("/slow")], "requests": 20, "concurrency": 2, "max_p95_ms": 1})
    assert slow.get("failed") is True
    assert slow["thresholds"]["p95_ms"]["passed"] is False and slow["thresholds"]["error_rate"]["passed"] is True
    assert slow["thresholds"]["p95_ms"]["value"] >= DELAY * 1000
    assert f"load test on {shop.url('/slow')}: p95 " in slow["msg"] and " ms is over the 1 ms allowed; " in slow["msg"]
    assert "error rate 0 % (0 of 20)" in slow["msg"]


def test_the_duration_bound_ends_the_run_first(shop):
    timeout = 2
    result = load_test(
        {"urls": [shop.url("/slow")], "requests": 1_000_000, "duration": 1.5, "concurrency": 2, "timeout": timeout}
    )
    assert not result.get("failed"), result
    assert result["stopped_by"] == "duration"
    assert 0 < result["requests"] < 1_000_000
    assert result["requests"] == shop.count("/slow") == result["succeeded"]
    assert 1.5 <= result["elapsed_seconds"] < 1.5 + timeout + 1, "in-flight requests finish within their timeout"


def test_check_mode_sends_nothing_and_says_so(shop):
    result = load_test({"urls": [shop.url("/ok")], "requests": 50}, check=True)
    assert not result.get("failed"), result
    assert shop.total == 0 and shop.connections == 0
    assert result["skipped"] is True and result["changed"] is False and result["requests"] == 0
    assert result["msg"] == (
        f"check mode: no requests sent (would send up to 50 requests in at most 30 s to {shop.url('/ok')}, "
        "10 at a time)"
    )


def test_host_header_and_url_password_reach_the_server_but_never_the_output(shop):
    url = f"http://ops:{PASSWORD}@{LOOPBACK}:{shop.port}/ok"
    result = load_test({"urls": [url], "requests": 10, "headers": {"Host": "shop.example", "X-Api-Key": API_KEY}})
    assert not result.get("failed"), result
    seen = {k.lower(): v for k, v in shop.last_headers.items()}
    assert seen["host"] == "shop.example" and seen["x-api-key"] == API_KEY
    token = base64.b64encode(f"ops:{PASSWORD}".encode()).decode()
    assert seen["authorization"] == f"Basic {token}"
    assert seen["user-agent"] == "tokotani.dr.http_load_test"
    assert result["per_url"][0]["url"] == f"http://********@{LOOPBACK}:{shop.port}/ok"
    output = json.dumps(result)
    for secret in (PASSWORD, API_KEY, token):
        assert secret not in output


def test_bad_options_are_refused_before_anything_is_sent(shop):
    for urls, expected in (
        ([f"ftp://ops:{PASSWORD}@{LOOPBACK}/"], "urls[0] (ftp://********@127.0.0.1/): only http:// and https:// URLs"),
        ([{"url": shop.url("/ok"), "weight": 0}], f"urls[0] ({shop.url('/ok')}): weight must be a whole number"),
        ([{"url": shop.url("/ok"), "method": "POST"}], f"urls[0] ({shop.url('/ok')}): method must be GET or HEAD"),
    ):
        result = load_test({"urls": urls})
        assert result.get("failed") is True and result["changed"] is False
        assert result["msg"].startswith(expected), result["msg"]
        assert PASSWORD not in json.dumps(result)
    result = load_test({"urls": [shop.url("/ok")], "concurrency": 1000})
    assert result["msg"] == "concurrency must be between 1 and 256, got 1000"
    assert shop.total == 0


def test_https_checks_the_certificate_against_the_host_headers_name(tls_shop):
    checked = load_test(
        {"urls": [tls_shop.url("/ok")], "requests": 5, "concurrency": 1, "headers": {"Host": "shop.test"}}
    )
    assert checked.get("failed") is True
    assert checked["errors_by_kind"] == {"tls_certificate": 5}, "self-signed: not trusted"
    assert "certificate verify failed" in checked["error_examples"]["tls_certificate"]
    assert tls_shop.shop.count("/ok") == 0 and set(tls_shop.server_names) == {"shop.test"}

    tls_shop.server_names.clear()
    unchecked = load_test(
        {
            "urls": [tls_shop.url("/ok")],
            "requests": 20,
            "concurrency": 2,
            "validate_certs": False,
            "headers": {"Host": "shop.test"},
        }
    )
    assert not unchecked.get("failed"), unchecked
    assert unchecked["succeeded"] == 20 == tls_shop.shop.count("/ok")
    assert unchecked["connections"] == 2 and tls_shop.server_names == ["shop.test", "shop.test"]
    assert {k.lower(): v for k, v in tls_shop.shop.last_headers.items()}["host"] == "shop.test"


# --------------------------------------------------------------------------- against hey


def test_the_figures_match_heys_against_the_same_server(shop):
    # A 503 on every 5th request the server receives: 40 of 200, whatever the client.
    ours = load_test({"urls": [shop.url("/flaky")], "requests": 200, "concurrency": 4, "max_error_rate": 1})
    assert not ours.get("failed"), ours
    ours_server = shop.count("/flaky")
    shop.reset()
    rows = hey(shop.url("/flaky"), 200, 4)
    hey_server = shop.count("/flaky")
    hey_statuses = Counter(row["status-code"] for row in rows)
    hey_errors = sum(n for code, n in hey_statuses.items() if code != "200")

    assert ours["requests"] == len(rows) == ours_server == hey_server == 200
    assert ours["errors"] == hey_errors == 200 // FLAKY_EVERY
    assert ours["errors_by_kind"] == {"status_503": hey_statuses["503"]}
    assert ours["status_codes"] == dict(sorted(hey_statuses.items()))
    assert ours["succeeded"] / ours["requests"] == hey_statuses["200"] / len(rows)

    # A fixed delay: both see every answer take at least as long as the server waits.
    shop.reset()
    slow = load_test({"urls": [shop.url("/slow")], "requests": 40, "concurrency": 4})
    assert not slow.get("failed"), slow
    hey_ms = sorted(float(row["response-time"]) * 1000 for row in hey(shop.url("/slow"), 40, 4))
    assert slow["requests"] == len(hey_ms) == 40 and shop.count("/slow") == 80
    assert slow["min_ms"] >= DELAY * 1000 and hey_ms[0] >= DELAY * 1000

    comparison = {
        "flaky": {
            "ours": {"requests": ours["requests"], "errors": ours["errors"], "status_codes": ours["status_codes"]},
            "hey": {"requests": len(rows), "errors": hey_errors, "status_codes": dict(sorted(hey_statuses.items()))},
            "server": {"ours": ours_server, "hey": hey_server},
        },
        "slow_50ms": {
            "ours": {k: slow[k] for k in ("min_ms", "p50_ms", "p95_ms", "max_ms")},
            "hey": {
                "min_ms": round(hey_ms[0], 1),
                "p50_ms": round(hey_ms[19], 1),
                "p95_ms": round(hey_ms[37], 1),
                "max_ms": round(hey_ms[-1], 1),
            },
        },
    }
    print("http_load_test vs hey:", json.dumps(comparison, sort_keys=True))
