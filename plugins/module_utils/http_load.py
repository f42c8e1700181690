# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HTTP load-test engine of tokotani.dr.http_load_test: the plan's ``npm run phase10:load-test --url=...``.

Order of work, and the code keeps it:

1. ``check_params``: every option is checked first, and nothing is sent while one is wrong. From there
   on a URL is only ever shown masked (``display_url``: its userinfo replaced), in figures and messages.
2. In check mode, stop: say what would be sent, send nothing.
3. ``execute``: ``concurrency`` worker threads take requests one at a time from one ``Dispatcher``,
   which hands out the URLs in a smooth weighted round-robin (``weighted_schedule``) until
   ``requests`` are handed out or ``duration`` has passed, whichever comes first. Each worker keeps
   one persistent HTTP/1.1 connection per origin (``HttpSender``) and reads every answer to its end.
   Nothing is retried: every request sent is counted once, as the server saw it.
4. ``summarize`` (figures), ``evaluate`` (thresholds), ``message`` (what an on-call operator reads).

Standard library only (http.client, ssl, threading): the module runs on the managed host (Debian 12,
Python 3.11), where nothing else is guaranteed. No proxy is ever used; only the URLs given are asked.
"""

from __future__ import annotations

import base64
import errno
import http.client
import math
import re
import socket
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit

from ansible_collections.tokotani.dr.plugins.module_utils.errors import DrError
from ansible_collections.tokotani.dr.plugins.module_utils.pm2 import MASK, is_secret_key, mask_url_passwords
from ansible_collections.tokotani.dr.plugins.module_utils.text import drop_point_zero

SCHEMES = ("http", "https")
METHODS = ("GET", "HEAD")
URL_KEYS = ("url", "weight", "method", "expect_status")
DEFAULT_EXPECT = (200,)
MAX_REQUESTS = 1_000_000
MAX_DURATION = 3600.0
MAX_CONCURRENCY = 256
MAX_TIMEOUT = 300.0
USER_AGENT = "tokotani.dr.http_load_test"
READ_CHUNK = 65536
# A worker still busy this long after its request's timeout, once the run is over, is given up on (see execute).
GRACE_SECONDS = 1.0
# Headers the engine sets itself: it sends no body and keeps its connections open.
RESERVED_HEADERS = ("content-length", "transfer-encoding")
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
CONTROL_RE = re.compile(r"[\x00-\x20\x7f]")
# How many URLs a message names before it says "and N more".
NAMED_TARGETS = 3


def argument_spec():
    """tokotani.dr.http_load_test."""
    return {
        "urls": {"type": "list", "elements": "raw", "required": True, "aliases": ["url"]},
        "requests": {"type": "int", "default": 500},
        "duration": {"type": "float", "default": 30},
        "concurrency": {"type": "int", "default": 10},
        "timeout": {"type": "float", "default": 10},
        "headers": {"type": "dict", "default": {}},
        "max_error_rate": {"type": "float", "default": 0.01},
        "max_p95_ms": {"type": "float"},
        "max_p99_ms": {"type": "float"},
        "validate_certs": {"type": "bool", "default": True},
    }


class LoadTestError(DrError):
    """An option the load test cannot run with; the message names the option (URLs masked)."""


# ---------------------------------------------------------------------------------------------
# URLs: parsing, masking, secrets


def display_url(url):
    """url as it may be shown: its userinfo (user, password, token) replaced by ********."""
    try:
        parts = urlsplit(str(url))
    except ValueError:
        return mask_url_passwords(str(url))
    if "@" not in parts.netloc:
        return str(url)
    hostport = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{MASK}@{hostport}", parts.path, parts.query, parts.fragment))


def _userinfo(parts):
    """(user, password) of a URL's netloc, percent-decoded; (None, None) without userinfo."""
    if "@" not in parts.netloc:
        return None, None
    info = parts.netloc.rpartition("@")[0]
    user, sep, password = info.partition(":")
    return unquote(user), (unquote(password) if sep else None)


def secret_values(params):
    """The values no output may show (the module adds them to its no_log values): URL passwords (a user
    without a password too, as it is then a token) and the values of secret-looking headers.

    Never raises: it runs before the options are checked."""
    found = set()
    urls = params.get("urls") or []
    for item in urls if isinstance(urls, list) else [urls]:
        url = item.get("url") if isinstance(item, dict) else item
        if not isinstance(url, str):
            continue
        try:
            user, password = _userinfo(urlsplit(url))
        except ValueError:
            continue
        secret = password if password is not None else user
        if secret:
            found.add(secret)
    headers = params.get("headers") or {}
    if isinstance(headers, dict):
        for name, value in headers.items():
            if is_secret_key(name) and value not in (None, ""):
                found.add(str(value))
    return found


@dataclass(frozen=True)
class Target:
    """One URL of the test, checked: where to connect, what to send, what counts as an answer."""

    index: int
    display: str
    scheme: str
    host: str
    port: int
    path: str
    method: str = "GET"
    weight: int = 1
    expect: tuple = DEFAULT_EXPECT
    authorization: str | None = None

    @property
    def origin(self):
        return (self.scheme, self.host, self.port)


def _whole_number(value):
    """value as an int when it is one (an int, or a string of digits), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _expect_status(where, value):
    values = [value] if not isinstance(value, (list, tuple)) else list(value)
    codes = [_whole_number(v) for v in values]
    if not codes or any(code is None or not 100 <= code <= 599 for code in codes):
        raise LoadTestError(f"{where}: expect_status must be a list of HTTP status codes (100 to 599), got {value!r}")
    return tuple(dict.fromkeys(codes))


def parse_url(index, item):
    """urls[index] (a URL, or a dict with url, weight, method, expect_status) as a Target; raises LoadTestError."""
    where = f"urls[{index}]"
    if isinstance(item, str):
        item = {"url": item}
    if not isinstance(item, dict):
        raise LoadTestError(f"{where}: expected a URL or a dict with {', '.join(URL_KEYS)}, got {type(item).__name__}")
    unknown = sorted(str(key) for key in item if key not in URL_KEYS)
    if unknown:
        raise LoadTestError(f"{where}: unsupported key(s) {', '.join(unknown)} (expected {', '.join(URL_KEYS)})")
    url = item.get("url")
    if not isinstance(url, str) or not url.strip():
        raise LoadTestError(f"{where}: url is required (an http:// or https:// URL)")
    shown = display_url(url)
    where = f"{where} ({shown})"
    if CONTROL_RE.search(url):
        raise LoadTestError(f"{where}: the URL contains spaces or control characters; percent-encode them")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise LoadTestError(f"{where}: not a valid URL ({mask_url_passwords(str(err))})") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise LoadTestError(f"{where}: only http:// and https:// URLs can be load-tested")
    if not parts.hostname:
        raise LoadTestError(f"{where}: the URL has no host")
    weight = _whole_number(item.get("weight", 1))
    if weight is None or weight < 1:
        raise LoadTestError(f"{where}: weight must be a whole number of 1 or more, got {item.get('weight')!r}")
    method = str(item.get("method") or "GET").upper()
    if method not in METHODS:
        raise LoadTestError(f"{where}: method must be GET or HEAD (a load test only reads), got {item.get('method')!r}")
    expect = _expect_status(where, item.get("expect_status", list(DEFAULT_EXPECT)))
    user, password = _userinfo(parts)
    authorization = None
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode("ascii")
        authorization = f"Basic {token}"
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(
        index=index,
        display=shown,
        scheme=scheme,
        host=parts.hostname,
        port=port or (443 if scheme == "https" else 80),
        path=path,
        method=method,
        weight=weight,
        expect=expect,
        authorization=authorization,
    )


def parse_headers(headers):
    """The extra request headers, checked: valid names, no line breaks, none the engine sets itself."""
    if headers is None:
        return {}
    if not isinstance(headers, dict):
        raise LoadTestError(f"headers must be a dict of header names and values, got {type(headers).__name__}")
    out = {}
    for key, value in headers.items():
        name = str(key)
        if not HEADER_NAME_RE.match(name):
            raise LoadTestError(f"headers: {name!r} is not a valid HTTP header name")
        if name.lower() in RESERVED_HEADERS:
            raise LoadTestError(f"headers: {name} cannot be set: the load test sends no request body")
        if value is None or isinstance(value, (dict, list)):
            raise LoadTestError(f"headers.{name}: the value must be a string")
        text = str(value)
        if "\r" in text or "\n" in text or "\x00" in text:
            raise LoadTestError(f"headers.{name}: the value must not contain line breaks")
        out[name] = text
    return out


@dataclass(frozen=True)
class Plan:
    """A checked load test: the targets, the extra headers, the bounds and the thresholds."""

    targets: tuple
    headers: dict = field(default_factory=dict)
    requests: int = 500
    duration: float = 30.0
    concurrency: int = 10
    timeout: float = 10.0
    max_error_rate: float = 0.01
    max_p95_ms: float | None = None
    max_p99_ms: float | None = None
    validate_certs: bool = True

    @property
    def workers(self):
        return min(self.concurrency, self.requests)


def _number(params, name, kind):
    value = params.get(name)
    if value is None or isinstance(value, bool):
        raise LoadTestError(f"{name} must be a number, got {value!r}")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise LoadTestError(f"{name} must be a number, got {value!r}") from None
    if kind is float and not math.isfinite(number):
        raise LoadTestError(f"{name} must be a finite number, got {value!r}")
    if kind is int and float(value) != number:
        raise LoadTestError(f"{name} must be a whole number, got {value!r}")
    return number


def _limit_ms(params, name):
    if params.get(name) is None:
        return None
    value = _number(params, name, float)
    if value <= 0:
        raise LoadTestError(f"{name} must be more than 0 milliseconds, got {drop_point_zero(str(value))}")
    return value


def check_params(params):
    """The options as a Plan, or LoadTestError naming the first wrong one (URLs masked in every message)."""
    urls = params.get("urls")
    if isinstance(urls, (str, dict)):
        urls = [urls]
    if not urls:
        raise LoadTestError("urls: give at least one URL to test (http:// or https://)")
    targets = tuple(parse_url(i, item) for i, item in enumerate(urls))
    headers = parse_headers(params.get("headers"))
    requests = _number(params, "requests", int)
    if not 1 <= requests <= MAX_REQUESTS:
        raise LoadTestError(f"requests must be between 1 and {MAX_REQUESTS}, got {requests}")
    duration = _number(params, "duration", float)
    if not 0 < duration <= MAX_DURATION:
        raise LoadTestError(
            f"duration must be more than 0 and at most {MAX_DURATION:.0f} seconds, got {drop_point_zero(str(duration))}"
        )
    concurrency = _number(params, "concurrency", int)
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise LoadTestError(f"concurrency must be between 1 and {MAX_CONCURRENCY}, got {concurrency}")
    timeout = _number(params, "timeout", float)
    if not 0 < timeout <= MAX_TIMEOUT:
        raise LoadTestError(
            f"timeout must be more than 0 and at most {MAX_TIMEOUT:.0f} seconds, got {drop_point_zero(str(timeout))}"
        )
    max_error_rate = _number(params, "max_error_rate", float)
    if not 0 <= max_error_rate <= 1:
        raise LoadTestError(
            f"max_error_rate must be a fraction from 0 to 1 (0.01 allows 1 % of errors), got {max_error_rate:g}"
        )
    return Plan(
        targets=targets,
        headers=headers,
        requests=requests,
        duration=duration,
        concurrency=concurrency,
        timeout=timeout,
        max_error_rate=max_error_rate,
        max_p95_ms=_limit_ms(params, "max_p95_ms"),
        max_p99_ms=_limit_ms(params, "max_p99_ms"),
        validate_certs=bool(params.get("validate_certs", True)),
    )


# ---------------------------------------------------------------------------------------------
# The schedule and the dispatcher


def weighted_schedule(weights):
    """Indexes into weights, endlessly, in smooth weighted round-robin order (nginx's): each index comes
    weight times in every sum(weights) picks, spread out rather than in runs ([5, 1, 1] gives
    0 0 1 0 2 0 0 ...). Deterministic, so the first N picks always hold the same count of each URL."""
    weights = [int(w) for w in weights]
    if not weights or any(w < 1 for w in weights):
        raise ValueError("weights must be 1 or more")
    total = sum(weights)
    current = [0] * len(weights)
    while True:
        for i, weight in enumerate(weights):
            current[i] += weight
        best = max(range(len(weights)), key=current.__getitem__)  # the first of equals
        current[best] -= total
        yield best


def schedule_counts(weights, picks):
    """How many of the first picks of weighted_schedule(weights) go to each index."""
    counts = [0] * len(weights)
    schedule = weighted_schedule(weights)
    for _pick in range(picks):
        counts[next(schedule)] += 1
    return counts


class Dispatcher:
    """Hands out the index of the next URL to ask, under a lock, until ``total`` are handed out or the
    clock reaches ``deadline`` (None after that); ``stopped_by`` says which bound ended the run."""

    def __init__(self, weights, total, deadline, clock=time.monotonic):
        self._schedule = weighted_schedule(weights)
        self._lock = threading.Lock()
        self.total = total
        self.deadline = deadline
        self.clock = clock
        self.issued = 0
        self.stopped_by = None

    def take(self):
        with self._lock:
            if self.issued >= self.total:
                self.stopped_by = self.stopped_by or "requests"
                return None
            if self.clock() >= self.deadline:
                self.stopped_by = self.stopped_by or "duration"
                return None
            self.issued += 1
            return next(self._schedule)


# ---------------------------------------------------------------------------------------------
# Sending: one worker's connections


@dataclass(frozen=True)
class Outcome:
    """What became of one request: its URL, the latency of a complete answer (ms, None without one),
    the HTTP status, the error kind (None when the answer was expected) and what went wrong."""

    index: int
    latency_ms: float | None = None
    status: int | None = None
    kind: str | None = None
    detail: str = ""
    size: int = 0


def error_kind(err):  # noqa: PLR0911 - one return per kind
    """The kind of a transport failure, as errors_by_kind counts it."""
    if isinstance(err, ssl.SSLCertVerificationError):
        return "tls_certificate"
    if isinstance(err, ssl.SSLError):
        return "tls"
    if isinstance(err, TimeoutError):  # socket.timeout too
        return "timeout"
    if isinstance(err, ConnectionRefusedError):
        return "connection_refused"
    if isinstance(err, http.client.RemoteDisconnected):  # before ConnectionResetError, its base class
        return "connection_closed"
    if isinstance(err, http.client.IncompleteRead):
        return "incomplete_response"
    if isinstance(err, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return "connection_reset"
    if isinstance(err, socket.gaierror):
        return "dns"
    if isinstance(err, http.client.HTTPException):
        return "protocol"
    if isinstance(err, OSError) and err.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable"
    return "connection_error"


class _Connection(http.client.HTTPConnection):
    """An HTTP connection that reports each connect (to count the connections a run opened)."""

    def __init__(self, host, port, timeout, on_connect):
        super().__init__(host, port, timeout=timeout)
        self._on_connect = on_connect

    def connect(self):
        super().connect()
        self._on_connect()


class _TlsConnection(http.client.HTTPSConnection):
    """An HTTPS connection whose TLS name (SNI and certificate check) is the Host header's when one is given,
    so that a DNS name can be tested against the address of a server it does not point to yet."""

    def __init__(self, host, port, timeout, context, *, server_hostname, on_connect):
        super().__init__(host, port, timeout=timeout, context=context)
        self._tls_context = context
        self._server_hostname = server_hostname
        self._on_connect = on_connect

    def connect(self):
        http.client.HTTPConnection.connect(self)
        self.sock = self._tls_context.wrap_socket(self.sock, server_hostname=self._server_hostname)
        self._on_connect()


def tls_context(validate_certs):
    if validate_certs:
        return ssl.create_default_context()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _host_header_name(headers):
    for name, value in headers.items():
        if name.lower() == "host":
            host = value.strip()
            if host.startswith("["):
                return host[1:].partition("]")[0] or None
            return host.rpartition(":")[0] if host.count(":") == 1 else host or None
    return None


def request_headers(target, headers):
    """The headers of one request: ours, then the operator's (theirs win), Authorization from the URL's userinfo."""
    out = {"User-Agent": USER_AGENT, "Accept": "*/*"}
    lower = {name.lower() for name in headers}
    for name in list(out):
        if name.lower() in lower:
            del out[name]
    out.update(headers)
    if target.authorization and "authorization" not in lower:
        out["Authorization"] = target.authorization
    return out


class HttpSender:
    """One worker's sender: a persistent connection per origin, reopened only after a failure or when the
    server closes it; every answer read to its end."""

    def __init__(self, plan, context=None):
        self.plan = plan
        self.context = context
        self.server_hostname = _host_header_name(plan.headers)
        self.connections = {}
        self.opened = 0
        self._headers = {target.index: request_headers(target, plan.headers) for target in plan.targets}

    def _count_connect(self):
        self.opened += 1

    def _connection(self, target):
        conn = self.connections.get(target.origin)
        if conn is None:
            if target.scheme == "https":
                if self.context is None:
                    self.context = tls_context(self.plan.validate_certs)
                conn = _TlsConnection(
                    target.host,
                    target.port,
                    self.plan.timeout,
                    self.context,
                    server_hostname=self.server_hostname or target.host,
                    on_connect=self._count_connect,
                )
            else:
                conn = _Connection(target.host, target.port, self.plan.timeout, self._count_connect)
            self.connections[target.origin] = conn
        return conn

    def send(self, target):
        conn = self._connection(target)
        started = time.perf_counter()
        size = 0
        try:
            conn.request(target.method, target.path, headers=self._headers[target.index])
            response = conn.getresponse()
            while True:
                chunk = response.read(READ_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
        except (OSError, http.client.HTTPException) as err:
            conn.close()
            self.connections.pop(target.origin, None)
            detail = mask_url_passwords(str(err) or type(err).__name__)
            return Outcome(index=target.index, kind=error_kind(err), detail=detail)
        latency = (time.perf_counter() - started) * 1000
        status = response.status
        kind = None if status in target.expect else f"status_{status}"
        detail = "" if kind is None else f"HTTP {status} {response.reason}".strip()
        return Outcome(index=target.index, latency_ms=latency, status=status, kind=kind, detail=detail, size=size)

    def close(self):
        for conn in self.connections.values():
            conn.close()
        self.connections.clear()


# ---------------------------------------------------------------------------------------------
# The run


class _Worker(threading.Thread):
    def __init__(self, number, dispatcher, sender, targets):
        super().__init__(name=f"http-load-{number}", daemon=True)
        self.dispatcher = dispatcher
        self.sender = sender
        self.targets = targets
        self.outcomes = []
        self.current = None
        self.failure = None
        self.finished_at = None

    def run(self):
        try:
            while True:
                index = self.dispatcher.take()
                if index is None:
                    break
                self.current = index
                self.outcomes.append(self.sender.send(self.targets[index]))
                self.current = None
        except BaseException as err:  # a bug, not a finding: execute raises it again
            self.failure = err
        finally:
            self.finished_at = time.monotonic()
            closer = getattr(self.sender, "close", None)
            if closer is not None:
                closer()


@dataclass
class Raw:
    """What a run gathered, before summarize: every outcome, how long, which bound ended it."""

    outcomes: list
    elapsed: float
    stopped_by: str
    connections: int = 0
    abandoned: int = 0


def execute(plan, sender_factory=None, clock=time.monotonic):
    """Run the plan: its workers until a bound is reached; returns Raw.

    The task cannot hang: a request still running ``timeout`` + 1 s after the duration bound has run for
    longer than its timeout, so it is counted as a ``timeout`` and its (daemon) thread left behind.
    """
    if sender_factory is None:
        context = tls_context(plan.validate_certs) if any(t.scheme == "https" for t in plan.targets) else None

        def sender_factory():
            return HttpSender(plan, context)

    started = clock()
    dispatcher = Dispatcher([t.weight for t in plan.targets], plan.requests, started + plan.duration, clock)
    workers = [_Worker(n, dispatcher, sender_factory(), plan.targets) for n in range(plan.workers)]
    for worker in workers:
        worker.start()
    give_up = started + plan.duration + plan.timeout + GRACE_SECONDS
    for worker in workers:
        worker.join(max(0.0, give_up - clock()))
    failures = [w.failure for w in workers if w.failure is not None]
    if failures:
        raise failures[0]
    outcomes, abandoned = [], 0
    for worker in workers:
        outcomes.extend(list(worker.outcomes))
        if worker.is_alive() and worker.current is not None:
            abandoned += 1
            outcomes.append(
                Outcome(index=worker.current, kind="timeout", detail="no complete answer in time (given up on)")
            )
    ends = [w.finished_at for w in workers if w.finished_at is not None]
    ended = max(ends) if ends and not abandoned else clock()
    connections = sum(getattr(w.sender, "opened", 0) for w in workers)
    return Raw(
        outcomes=outcomes,
        elapsed=max(ended - started, 0.0),
        stopped_by=dispatcher.stopped_by or "requests",
        connections=connections,
        abandoned=abandoned,
    )


# ---------------------------------------------------------------------------------------------
# Figures, thresholds, messages


def percentile(values, pct):
    """The nearest-rank percentile of values (the smallest value with at least pct % of them at or
    below it: always one of the values), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _round(value, digits=3):
    return None if value is None else round(value, digits)


def latency_figures(latencies):
    """p50/p95/p99/max/min/mean in ms (3 decimals) of the requests that got a complete answer."""
    return {
        "p50_ms": _round(percentile(latencies, 50)),
        "p95_ms": _round(percentile(latencies, 95)),
        "p99_ms": _round(percentile(latencies, 99)),
        "max_ms": _round(max(latencies)) if latencies else None,
        "min_ms": _round(min(latencies)) if latencies else None,
        "mean_ms": _round(sum(latencies) / len(latencies)) if latencies else None,
    }


def _kinds(outcomes):
    counted = Counter(o.kind for o in outcomes if o.kind is not None)
    return dict(sorted(counted.items(), key=lambda item: (-item[1], item[0])))


def _url_figures(target, outcomes):
    latencies = [o.latency_ms for o in outcomes if o.latency_ms is not None]
    errors = sum(1 for o in outcomes if o.kind is not None)
    figures = latency_figures(latencies)
    return {
        "url": target.display,
        "method": target.method,
        "weight": target.weight,
        "expect_status": list(target.expect),
        "requests": len(outcomes),
        "succeeded": len(outcomes) - errors,
        "errors": errors,
        "errors_by_kind": _kinds(outcomes),
        "error_rate": round(errors / len(outcomes), 6) if outcomes else 0.0,
        "p50_ms": figures["p50_ms"],
        "p95_ms": figures["p95_ms"],
        "p99_ms": figures["p99_ms"],
        "max_ms": figures["max_ms"],
    }


def summarize(plan, raw):
    """The figures of a run (everything but the thresholds)."""
    outcomes = raw.outcomes
    total = len(outcomes)
    errors = sum(1 for o in outcomes if o.kind is not None)
    latencies = [o.latency_ms for o in outcomes if o.latency_ms is not None]
    examples = {}
    for outcome in outcomes:
        if outcome.kind is not None and outcome.kind not in examples:
            target = plan.targets[outcome.index]
            examples[outcome.kind] = f"{target.method} {target.display}: {outcome.detail}".rstrip(": ")
    statuses = Counter(o.status for o in outcomes if o.status is not None)
    by_url = {t.index: [] for t in plan.targets}
    for outcome in outcomes:
        by_url[outcome.index].append(outcome)
    figures = {
        "requests": total,
        "succeeded": total - errors,
        "errors": errors,
        "errors_by_kind": _kinds(outcomes),
        "error_rate": round(errors / total, 6) if total else 0.0,
        "error_examples": dict(sorted(examples.items())),
        "status_codes": {str(code): statuses[code] for code in sorted(statuses)},
        "elapsed_seconds": round(raw.elapsed, 3),
        "rps": round(total / raw.elapsed, 2) if raw.elapsed > 0 else 0.0,
        "stopped_by": raw.stopped_by,
        "connections": raw.connections,
        "bytes_received": sum(o.size for o in outcomes),
        "answered": len(latencies),
        "per_url": [_url_figures(t, by_url[t.index]) for t in plan.targets],
    }
    figures.update(latency_figures(latencies))
    return figures


def evaluate(plan, figures):
    """Each threshold with its limit, the measured value and whether it held: error_rate always,
    p95_ms and p99_ms when a limit is set (a latency not measured - no answer at all - does not hold)."""
    total = figures["requests"]
    thresholds = {
        "error_rate": {
            "limit": plan.max_error_rate,
            "value": figures["error_rate"] if total else None,
            "passed": bool(total) and figures["errors"] / total <= plan.max_error_rate,
        }
    }
    for name, limit in (("p95_ms", plan.max_p95_ms), ("p99_ms", plan.max_p99_ms)):
        if limit is not None:
            value = figures[name]
            thresholds[name] = {"limit": limit, "value": value, "passed": value is not None and value <= limit}
    return thresholds


def percent(fraction):
    """0.042 -> '4.2 %', 0.01 -> '1 %', a small non-zero fraction '<0.01 %'."""
    if fraction is None:
        return "-"
    value = fraction * 100
    if 0 < value < 0.005:
        return "<0.01 %"
    return f"{value:.2f}".rstrip("0").rstrip(".") + " %"


def milliseconds(value):
    """312.4 -> '312 ms', 4.25 -> '4.2 ms' ('-' when not measured)."""
    if value is None:
        return "-"
    if value >= 10:
        return f"{round(value)} ms"
    return drop_point_zero(f"{value:.1f}") + " ms"


def seconds(value):
    """1.752 -> '1.75 s', 0.008 -> '0.008 s', 30 -> '30 s', 312.6 -> '313 s'."""
    if value >= 100:
        return f"{value:.0f} s"
    return f"{value:.3g} s"


def describe_targets(plan):
    """The URLs tested, for a message: all of them up to three, else the first ones and how many more."""
    shown = [f"{t.display}" if t.method == "GET" else f"{t.method} {t.display}" for t in plan.targets]
    if len(shown) == 1:
        return shown[0]
    if len(shown) <= NAMED_TARGETS:
        return ", ".join(shown[:-1]) + " and " + shown[-1]
    return ", ".join(shown[: NAMED_TARGETS - 1]) + f" and {len(shown) - NAMED_TARGETS + 1} more URLs"


def _error_clause(figures):
    kinds = ", ".join(f"{kind}: {count}" for kind, count in figures["errors_by_kind"].items())
    detail = f"{figures['errors']} of {figures['requests']}" + (f", {kinds}" if kinds else "")
    return f"error rate {percent(figures['error_rate'])} ({detail})"


def _worst_url(figures):
    """', most at <url> (n of m)' when several URLs were tested and errors happened."""
    per_url = figures["per_url"]
    if len(per_url) < 2 or not figures["errors"]:
        return ""
    worst = max(per_url, key=lambda entry: entry["errors"])
    return f", most at {worst['url']} ({worst['errors']} of {worst['requests']})"


def message(plan, figures, thresholds):
    """What the operator reads: the thresholds crossed first, then the figures not named yet."""
    target = describe_targets(plan)
    if not figures["requests"]:
        return f"load test on {target}: no request was sent within {seconds(plan.duration)}"
    failed = [name for name, check in thresholds.items() if not check["passed"]]
    clauses = []
    if "error_rate" in failed:
        clauses.append(
            f"{_error_clause(figures)} is over the {percent(plan.max_error_rate)} allowed{_worst_url(figures)}"
        )
    for name in ("p95_ms", "p99_ms"):
        if name in failed:
            label = name[:3]
            value = figures[name]
            measured = f"{label} {milliseconds(value)}" if value is not None else f"{label} not measured (no answer)"
            clauses.append(f"{measured} is over the {milliseconds(thresholds[name]['limit'])} allowed")
    known = [_error_clause(figures)] if "error_rate" not in failed else []
    known += [f"{name[:3]} {milliseconds(figures[name])}" for name in ("p95_ms", "p99_ms") if name not in failed]
    rate = drop_point_zero(f"{figures['rps']:.1f}")
    known.append(
        f"{figures['requests']} requests in {seconds(figures['elapsed_seconds'])} ({rate} req/s, "
        f"{plan.workers} at a time, stopped by the {figures['stopped_by']} bound)"
    )
    if clauses:
        return f"load test on {target}: " + "; ".join([*clauses, ", ".join(known)])
    return f"load test on {target} passed: " + ", ".join(known)


def empty_figures(plan):
    """The figures of a run that sent nothing (check mode)."""
    return summarize(plan, Raw(outcomes=[], elapsed=0.0, stopped_by="check_mode"))


def run(params, check_mode=False, sender_factory=None):
    """http_load_test: check the options, run the load test (not in check mode), and return its figures,
    thresholds and message; ``passed`` is False when a threshold was crossed (the module then fails)."""
    plan = check_params(params)
    if check_mode:
        figures = empty_figures(plan)
        thresholds = {name: dict(check, value=None, passed=None) for name, check in evaluate(plan, figures).items()}
        bound = f"up to {plan.requests} requests in at most {seconds(plan.duration)}"
        return dict(
            figures,
            changed=False,
            skipped=True,
            passed=None,
            thresholds=thresholds,
            msg=f"check mode: no requests sent (would send {bound} to {describe_targets(plan)}, "
            f"{plan.workers} at a time)",
        )
    raw = execute(plan, sender_factory)
    figures = summarize(plan, raw)
    thresholds = evaluate(plan, figures)
    passed = bool(figures["requests"]) and all(check["passed"] for check in thresholds.values())
    return dict(
        figures,
        changed=False,
        passed=passed,
        thresholds=thresholds,
        msg=message(plan, figures, thresholds),
    )
