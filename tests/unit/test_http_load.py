"""Unit tests of the HTTP load-test engine: percentiles, the weighted schedule, the run's bounds with a fake
sender, thresholds and their messages, option checks and URL masking (no network: a fake sender stands in)."""

from __future__ import annotations

import http.client
import math
import socket
import ssl
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.tokotani.dr.plugins.module_utils import http_load as hl  # noqa: E402
from ansible_collections.tokotani.dr.plugins.module_utils.http_load import LoadTestError, Outcome  # noqa: E402
from ansible_collections.tokotani.dr.plugins.module_utils.specs import SpecError, resolve  # noqa: E402

URL = "http://127.0.0.1:3000/"
PASSWORD = "s3cr3t-Pa55"


def params(**values):
    """The module's parameters as AnsibleModule would give them (defaults filled)."""
    values.setdefault("urls", [URL])
    return resolve(hl.argument_spec(), values, environ={})


def plan(**values):
    return hl.check_params(params(**values))


def refused(**values):
    with pytest.raises(LoadTestError) as caught:
        plan(**values)
    return caught.value.msg


class FakeSender:
    """Answers each request at once: the URL's status from ``statuses`` (200 by default), latency ``latency_ms``."""

    def __init__(self, statuses=None, latency_ms=5.0, delay=0.0):
        self.statuses = statuses or {}
        self.latency_ms = latency_ms
        self.delay = delay
        self.sent = []
        self.opened = 1

    def send(self, target):
        self.sent.append(target.index)
        if self.delay:
            time.sleep(self.delay)
        status = self.statuses.get(target.index, 200)
        kind = None if status in target.expect else f"status_{status}"
        return Outcome(index=target.index, latency_ms=self.latency_ms, status=status, kind=kind)


def outcomes_of(plan_, spec):
    """Outcomes from (index, latency_ms, status, kind) tuples."""
    return [Outcome(index=i, latency_ms=lat, status=st, kind=kind) for i, lat, st, kind in spec]


def figures_for(plan_, outcomes, elapsed=2.0, stopped_by="requests"):
    return hl.summarize(plan_, hl.Raw(outcomes=outcomes, elapsed=elapsed, stopped_by=stopped_by, connections=2))


# --------------------------------------------------------------------------- percentiles


def test_percentiles_are_nearest_rank_and_always_a_measured_value():
    values = list(range(100, 0, -1))  # 1..100, unsorted
    assert hl.percentile(values, 50) == 50
    assert hl.percentile(values, 95) == 95
    assert hl.percentile(values, 99) == 99
    assert hl.percentile(values, 100) == 100
    assert hl.percentile(values, 0) == 1
    assert hl.percentile([7.5], 99) == 7.5
    assert hl.percentile([], 95) is None


def test_percentiles_of_few_values_round_the_rank_up():
    values = [10.0, 20.0, 30.0, 40.0, 1000.0]
    assert hl.percentile(values, 50) == 30.0  # rank ceil(2.5) = 3
    assert hl.percentile(values, 95) == 1000.0  # rank ceil(4.75) = 5: one slow request in five shows
    assert hl.percentile(values, 80) == 40.0  # rank 4 exactly


def test_latency_figures_of_no_answer_are_null():
    assert hl.latency_figures([]) == {
        "p50_ms": None,
        "p95_ms": None,
        "p99_ms": None,
        "max_ms": None,
        "min_ms": None,
        "mean_ms": None,
    }
    figures = hl.latency_figures([1.23456, 2.0, 3.0])
    assert figures["min_ms"] == 1.235 and figures["max_ms"] == 3.0 and figures["mean_ms"] == 2.078


# --------------------------------------------------------------------------- the weighted schedule


def test_smooth_weighted_round_robin_spreads_the_heavy_url_out():
    schedule = hl.weighted_schedule([5, 1, 1])
    assert [next(schedule) for _pick in range(14)] == [0, 0, 1, 0, 2, 0, 0] * 2


def test_equal_weights_take_turns():
    schedule = hl.weighted_schedule([1, 1, 1])
    assert [next(schedule) for _pick in range(6)] == [0, 1, 2, 0, 1, 2]


def test_weights_are_honoured_exactly_over_whole_rounds_and_within_one_otherwise():
    assert hl.schedule_counts([3, 1], 400) == [300, 100]
    assert hl.schedule_counts([6, 3, 1], 1000) == [600, 300, 100]
    for picks in range(1, 60):
        counts = hl.schedule_counts([5, 2, 1], picks)
        assert sum(counts) == picks
        for count, weight in zip(counts, [5, 2, 1], strict=True):
            assert abs(count - picks * weight / 8) < 1, (picks, counts)


def test_the_schedule_refuses_weights_below_one():
    with pytest.raises(ValueError, match="1 or more"):
        next(hl.weighted_schedule([1, 0]))


# --------------------------------------------------------------------------- the dispatcher and the run


def test_dispatcher_stops_at_the_request_bound_and_says_so():
    dispatcher = hl.Dispatcher([1], total=3, deadline=math.inf)
    assert [dispatcher.take() for _take in range(5)] == [0, 0, 0, None, None]
    assert dispatcher.issued == 3 and dispatcher.stopped_by == "requests"


def test_dispatcher_stops_at_the_deadline_and_says_so():
    now = [0.0]
    dispatcher = hl.Dispatcher([1, 1], total=100, deadline=10.0, clock=lambda: now[0])
    assert dispatcher.take() == 0
    now[0] = 9.99
    assert dispatcher.take() == 1
    now[0] = 10.0
    assert dispatcher.take() is None
    assert dispatcher.issued == 2 and dispatcher.stopped_by == "duration"


def test_a_run_sends_exactly_the_requests_asked_for_across_all_workers():
    the_plan = plan(urls=[URL, {"url": URL + "b", "weight": 3}], requests=403, concurrency=7)
    senders = []

    def factory():
        senders.append(FakeSender())
        return senders[-1]

    raw = hl.execute(the_plan, factory)
    assert len(senders) == 7 and len(raw.outcomes) == 403 and raw.stopped_by == "requests"
    sent = [index for sender in senders for index in sender.sent]
    assert len(sent) == 403 and sent.count(1) == hl.schedule_counts([1, 3], 403)[1]
    assert raw.connections == 7 and raw.abandoned == 0


def test_no_more_workers_than_requests():
    the_plan = plan(requests=3, concurrency=50)
    assert the_plan.workers == 3
    senders = []
    hl.execute(the_plan, lambda: senders.append(FakeSender()) or senders[-1])
    assert len(senders) == 3


def test_the_duration_bound_ends_a_run_before_the_request_bound():
    the_plan = plan(requests=1_000_000, duration=0.3, concurrency=2)
    raw = hl.execute(the_plan, lambda: FakeSender(delay=0.01))
    assert raw.stopped_by == "duration"
    assert 0 < len(raw.outcomes) < 1_000_000
    assert raw.elapsed >= 0.3


def test_a_request_that_never_ends_is_given_up_on_as_a_timeout():
    release = threading.Event()

    class Stuck(FakeSender):
        def send(self, target):
            release.wait(30)
            return super().send(target)

    the_plan = plan(requests=1, duration=0.1, timeout=0.1, concurrency=1)
    try:
        raw = hl.execute(the_plan, Stuck)
    finally:
        release.set()
    assert raw.abandoned == 1
    assert [(o.index, o.kind) for o in raw.outcomes] == [(0, "timeout")]
    assert raw.elapsed >= 0.1 + 0.1 + hl.GRACE_SECONDS - 0.05


def test_a_bug_in_a_worker_is_raised_not_counted():
    class Broken(FakeSender):
        def send(self, target):
            raise KeyError("bug")

    with pytest.raises(KeyError):
        hl.execute(plan(requests=5, concurrency=2), Broken)


def test_check_mode_sends_nothing_and_says_so():
    senders = []
    result = hl.run(params(requests=50), check_mode=True, sender_factory=lambda: senders.append(1))
    assert senders == []
    assert result["skipped"] is True and result["changed"] is False and result["passed"] is None
    assert result["requests"] == 0 and result["stopped_by"] == "check_mode"
    assert result["msg"].startswith("check mode: no requests sent (would send up to 50 requests in at most 30 s")
    assert result["thresholds"] == {"error_rate": {"limit": 0.01, "value": None, "passed": None}}


def test_a_run_returns_every_figure_and_passes_within_the_thresholds():
    result = hl.run(params(requests=20, concurrency=2, max_p95_ms=10), sender_factory=FakeSender)
    assert result["passed"] is True and result["changed"] is False
    assert result["requests"] == 20 and result["succeeded"] == 20 and result["errors"] == 0
    assert result["p95_ms"] == 5.0 and result["status_codes"] == {"200": 20}
    assert result["thresholds"]["p95_ms"] == {"limit": 10.0, "value": 5.0, "passed": True}
    assert result["msg"].startswith(f"load test on {URL} passed: error rate 0 % (0 of 20), p95 5 ms, p99 5 ms")


def test_a_crossed_threshold_fails_with_all_figures():
    result = hl.run(
        params(urls=[URL, {"url": URL + "down"}], requests=10, concurrency=1),
        sender_factory=lambda: FakeSender(statuses={1: 503}),
    )
    assert result["passed"] is False
    assert result["errors"] == 5 and result["errors_by_kind"] == {"status_503": 5}
    assert result["per_url"][1]["errors"] == 5 and result["per_url"][0]["errors"] == 0
    assert (
        "error rate 50 % (5 of 10, status_503: 5) is over the 1 % allowed, most at http://127.0.0.1:3000/down (5 of 5);"
        in result["msg"]
    )


# --------------------------------------------------------------------------- figures, thresholds, messages


def test_errors_by_kind_examples_and_per_url_figures():
    the_plan = plan(urls=[URL, {"url": URL + "slow", "expect_status": [200, 204]}])
    outcomes = outcomes_of(
        the_plan,
        [
            (0, 10.0, 200, None),
            (0, 12.0, 503, "status_503"),
            (0, None, None, "timeout"),
            (1, 100.0, 204, None),
            (1, None, None, "connection_refused"),
            (1, None, None, "timeout"),
        ],
    )
    figures = figures_for(the_plan, outcomes)
    assert figures["requests"] == 6 and figures["succeeded"] == 2 and figures["errors"] == 4
    assert figures["errors_by_kind"] == {"timeout": 2, "connection_refused": 1, "status_503": 1}
    assert list(figures["errors_by_kind"]) == ["timeout", "connection_refused", "status_503"]
    assert figures["error_rate"] == round(4 / 6, 6)
    assert figures["answered"] == 3 and figures["status_codes"] == {"200": 1, "204": 1, "503": 1}
    assert figures["p50_ms"] == 12.0 and figures["max_ms"] == 100.0 and figures["min_ms"] == 10.0
    assert figures["rps"] == 3.0 and figures["elapsed_seconds"] == 2.0
    assert figures["error_examples"]["status_503"] == "GET http://127.0.0.1:3000/"
    slow = figures["per_url"][1]
    assert slow["url"] == URL + "slow" and slow["expect_status"] == [200, 204]
    assert (slow["requests"], slow["succeeded"], slow["errors"]) == (3, 1, 2)
    assert slow["errors_by_kind"] == {"connection_refused": 1, "timeout": 1} and slow["p95_ms"] == 100.0


def test_error_rate_at_the_limit_passes_and_above_fails():
    the_plan = plan(max_error_rate=0.01)
    at_limit = figures_for(the_plan, outcomes_of(the_plan, [(0, 1.0, 200, None)] * 99 + [(0, None, None, "timeout")]))
    assert hl.evaluate(the_plan, at_limit)["error_rate"] == {"limit": 0.01, "value": 0.01, "passed": True}
    over = figures_for(the_plan, outcomes_of(the_plan, [(0, 1.0, 200, None)] * 98 + [(0, None, None, "timeout")] * 2))
    assert hl.evaluate(the_plan, over)["error_rate"]["passed"] is False


def test_no_errors_allowed_means_one_fails():
    the_plan = plan(max_error_rate=0)
    figures = figures_for(the_plan, outcomes_of(the_plan, [(0, 1.0, 200, None)] * 499 + [(0, 2.0, 500, "status_500")]))
    thresholds = hl.evaluate(the_plan, figures)
    assert thresholds["error_rate"]["passed"] is False
    assert "error rate 0.2 % (1 of 500, status_500: 1) is over the 0 % allowed" in hl.message(
        the_plan, figures, thresholds
    )


def test_the_operators_message_names_the_url_the_rate_the_kinds_and_the_latency():
    the_plan = plan(urls=["http://127.0.0.1:3000/"], max_p95_ms=250)
    spec = [(0, 312.0, 200, None)] * 479 + [(0, 40.0, 503, "status_503")] * 21
    figures = figures_for(the_plan, outcomes_of(the_plan, spec), elapsed=6.3)
    thresholds = hl.evaluate(the_plan, figures)
    assert thresholds["p95_ms"] == {"limit": 250.0, "value": 312.0, "passed": False}
    assert hl.message(the_plan, figures, thresholds) == (
        "load test on http://127.0.0.1:3000/: error rate 4.2 % (21 of 500, status_503: 21) is over the 1 % allowed; "
        "p95 312 ms is over the 250 ms allowed; p99 312 ms, 500 requests in 6.3 s "
        "(79.4 req/s, 10 at a time, stopped by the requests bound)"
    )


def test_a_latency_threshold_without_any_answer_does_not_hold():
    the_plan = plan(max_p99_ms=500)
    figures = figures_for(the_plan, outcomes_of(the_plan, [(0, None, None, "connection_refused")] * 4))
    thresholds = hl.evaluate(the_plan, figures)
    assert thresholds["p99_ms"] == {"limit": 500.0, "value": None, "passed": False}
    text = hl.message(the_plan, figures, thresholds)
    assert "error rate 100 % (4 of 4, connection_refused: 4) is over the 1 % allowed" in text
    assert "p99 not measured (no answer) is over the 500 ms allowed" in text


def test_a_run_that_sent_nothing_does_not_pass():
    the_plan = plan()
    figures = figures_for(the_plan, [], elapsed=0.0, stopped_by="duration")
    thresholds = hl.evaluate(the_plan, figures)
    assert thresholds["error_rate"]["passed"] is False
    assert hl.message(the_plan, figures, thresholds) == f"load test on {URL}: no request was sent within 30 s"


@pytest.mark.parametrize(
    ("fraction", "text"),
    [(0.042, "4.2 %"), (0.01, "1 %"), (0, "0 %"), (1 / 3, "33.33 %"), (0.00001, "<0.01 %"), (1, "100 %")],
)
def test_percent(fraction, text):
    assert hl.percent(fraction) == text


@pytest.mark.parametrize(("value", "text"), [(312.4, "312 ms"), (4.25, "4.2 ms"), (4.0, "4 ms"), (None, "-")])
def test_milliseconds(value, text):
    assert hl.milliseconds(value) == text


def test_many_urls_are_named_by_the_first_ones_and_a_count():
    the_plan = plan(urls=[f"http://127.0.0.1:3000/{n}" for n in range(5)])
    assert hl.describe_targets(the_plan) == "http://127.0.0.1:3000/0, http://127.0.0.1:3000/1 and 3 more URLs"
    three = plan(urls=[URL, {"url": URL + "h", "method": "HEAD"}, URL + "x"])
    assert hl.describe_targets(three) == f"{URL}, HEAD {URL}h and {URL}x"


# --------------------------------------------------------------------------- option checks


def test_urls_accept_strings_and_dicts_with_defaults():
    the_plan = plan(urls=[URL, {"url": "https://shop.example/api/health?x=1", "weight": "2", "method": "head"}])
    first, second = the_plan.targets
    assert (first.scheme, first.host, first.port, first.path, first.method, first.weight, first.expect) == (
        "http",
        "127.0.0.1",
        3000,
        "/",
        "GET",
        1,
        (200,),
    )
    assert (second.scheme, second.port, second.path, second.method, second.weight) == (
        "https",
        443,
        "/api/health?x=1",
        "HEAD",
        2,
    )
    assert plan(urls=["http://[::1]/x"]).targets[0].host == "::1"
    assert plan(urls=["http://shop.example"]).targets[0].path == "/"


@pytest.mark.parametrize(
    ("urls", "expected"),
    [
        ([], "urls: give at least one URL to test"),
        (["ftp://127.0.0.1/"], "urls[0] (ftp://127.0.0.1/): only http:// and https:// URLs can be load-tested"),
        (["127.0.0.1:3000"], "only http:// and https:// URLs"),
        (["http:///path"], "urls[0] (http:///path): the URL has no host"),
        (["http://127.0.0.1:99999/"], "urls[0] (http://127.0.0.1:99999/): not a valid URL"),
        (["http://127.0.0.1/a b"], "the URL contains spaces or control characters"),
        ([URL, 42], "urls[1]: expected a URL or a dict with url, weight, method, expect_status, got int"),
        ([{"weight": 2}], "urls[0]: url is required"),
        ([{"url": URL, "wieght": 2}], "urls[0]: unsupported key(s) wieght (expected url, weight, method"),
        ([{"url": URL, "weight": 0}], f"urls[0] ({URL}): weight must be a whole number of 1 or more, got 0"),
        ([{"url": URL, "weight": 1.5}], "weight must be a whole number of 1 or more, got 1.5"),
        ([{"url": URL, "weight": True}], "weight must be a whole number of 1 or more, got True"),
        ([{"url": URL, "method": "POST"}], "method must be GET or HEAD (a load test only reads), got 'POST'"),
        ([{"url": URL, "expect_status": [200, 700]}], "expect_status must be a list of HTTP status codes (100 to 599)"),
        ([{"url": URL, "expect_status": []}], "expect_status must be a list of HTTP status codes"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(urls, expected):
    assert expected in refused(urls=urls)


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("requests", 0, "requests must be between 1 and 1000000, got 0"),
        ("requests", 2_000_000, "requests must be between 1 and 1000000, got 2000000"),
        ("duration", 0, "duration must be more than 0 and at most 3600 seconds, got 0"),
        ("duration", 7200, "duration must be more than 0 and at most 3600 seconds, got 7200"),
        ("concurrency", 0, "concurrency must be between 1 and 256, got 0"),
        ("concurrency", 257, "concurrency must be between 1 and 256, got 257"),
        ("timeout", 0, "timeout must be more than 0 and at most 300 seconds, got 0"),
        ("max_error_rate", 5, "max_error_rate must be a fraction from 0 to 1 (0.01 allows 1 % of errors), got 5"),
        ("max_error_rate", -0.1, "max_error_rate must be a fraction from 0 to 1"),
        ("max_p95_ms", 0, "max_p95_ms must be more than 0 milliseconds, got 0"),
        ("max_p99_ms", -5, "max_p99_ms must be more than 0 milliseconds, got -5"),
        ("duration", float("nan"), "duration must be a finite number"),
    ],
)
def test_bad_bounds_and_thresholds_are_refused_naming_the_option(option, value, expected):
    assert refused(**{option: value}).startswith(expected)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Bad Name": "x"}, "headers: 'Bad Name' is not a valid HTTP header name"),
        ({"X-Evil": "a\r\nSet-Cookie: x"}, "headers.X-Evil: the value must not contain line breaks"),
        ({"Content-Length": "5"}, "headers: Content-Length cannot be set: the load test sends no request body"),
        ({"transfer-encoding": "chunked"}, "headers: transfer-encoding cannot be set"),
        ({"X-List": ["a"]}, "headers.X-List: the value must be a string"),
    ],
)
def test_bad_headers_are_refused(headers, expected):
    assert refused(headers=headers).startswith(expected)


def test_the_spec_refuses_what_ansible_would_refuse():
    with pytest.raises(SpecError, match="missing required option: urls"):
        resolve(hl.argument_spec(), {}, environ={})
    assert resolve(hl.argument_spec(), {"url": [URL]}, environ={})["urls"] == [URL]  # the plan's --url=


# --------------------------------------------------------------------------- masking and secrets


def test_userinfo_is_masked_whole_wherever_a_url_is_shown():
    assert (
        hl.display_url(f"https://ops:{PASSWORD}@shop.example:8443/a?b=1") == "https://********@shop.example:8443/a?b=1"
    )
    assert hl.display_url("https://tok3n@shop.example/") == "https://********@shop.example/"
    assert hl.display_url(URL) == URL
    the_plan = plan(urls=[f"http://ops:{PASSWORD}@127.0.0.1:3000/"])
    assert the_plan.targets[0].display == "http://********@127.0.0.1:3000/"


def test_a_refused_url_never_echoes_its_password():
    for urls in (
        [f"ftp://ops:{PASSWORD}@127.0.0.1/"],
        [{"url": f"http://ops:{PASSWORD}@127.0.0.1/", "weight": 0}],
        [f"http://ops:{PASSWORD}@127.0.0.1:99999/"],
        [f"http://ops:{PASSWORD}@127.0.0.1/a b"],
    ):
        text = refused(urls=urls)
        assert PASSWORD not in text and "********@127.0.0.1" in text, text


def test_the_password_of_a_url_is_sent_as_basic_auth_unless_a_header_says_otherwise():
    target = plan(urls=["http://ops:p%40ss@127.0.0.1/"]).targets[0]
    assert target.authorization == "Basic b3BzOnBAc3M="  # ops:p@ss
    assert hl.request_headers(target, {})["Authorization"] == "Basic b3BzOnBAc3M="
    assert hl.request_headers(target, {"authorization": "Bearer x"}) == {
        "User-Agent": hl.USER_AGENT,
        "Accept": "*/*",
        "authorization": "Bearer x",
    }
    assert hl.request_headers(target, {"user-agent": "probe"})["user-agent"] == "probe"
    assert "User-Agent" not in hl.request_headers(target, {"user-agent": "probe"})


def test_secret_values_are_url_passwords_tokens_and_secret_looking_headers():
    found = hl.secret_values(
        {
            "urls": [f"http://ops:{PASSWORD}@127.0.0.1/", {"url": "https://tok3n-abc@shop.example/"}, URL, 42],
            "headers": {"Host": "shop.example", "Authorization": "Bearer abc.def", "X-Api-Key": "k-123"},
        }
    )
    assert found == {PASSWORD, "tok3n-abc", "Bearer abc.def", "k-123"}
    assert hl.secret_values({"urls": "http://[bad", "headers": "x"}) == set()


def test_the_host_header_names_the_tls_server():
    assert hl._host_header_name({"Host": "shop.example"}) == "shop.example"
    assert hl._host_header_name({"host": "shop.example:8443"}) == "shop.example"
    assert hl._host_header_name({"Host": "[2001:db8::1]:443"}) == "2001:db8::1"
    assert hl._host_header_name({"Accept": "*/*"}) is None


# --------------------------------------------------------------------------- error kinds


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (TimeoutError("timed out"), "timeout"),
        (ConnectionRefusedError(111, "refused"), "connection_refused"),
        (http.client.RemoteDisconnected("closed"), "connection_closed"),
        (ConnectionResetError(104, "reset"), "connection_reset"),
        (BrokenPipeError(32, "pipe"), "connection_reset"),
        (http.client.IncompleteRead(b"ab", 10), "incomplete_response"),
        (ssl.SSLCertVerificationError("certificate verify failed"), "tls_certificate"),
        (ssl.SSLError("wrong version number"), "tls"),
        (socket.gaierror(-2, "Name or service not known"), "dns"),
        (http.client.BadStatusLine("xx"), "protocol"),
        (OSError(113, "No route to host"), "unreachable"),
        (OSError(5, "I/O error"), "connection_error"),
    ],
)
def test_error_kinds(error, kind):
    assert hl.error_kind(error) == kind
