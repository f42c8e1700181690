#!/usr/bin/python
# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Engine: plugins/module_utils/http_load.py (check_params, execute, summarize, evaluate, message).

DOCUMENTATION = r"""
module: http_load_test
short_description: Load-test the shop's URLs and fail when the error rate or latency crosses a threshold
version_added: "0.3.0"
description:
  - The plan's C(npm run phase10:load-test --url=...) (plan 2.3, step 5 - verify the system once DNS points to
    the rebuilt server) - sends GET or HEAD requests to the given URLs, O(concurrency) at a time, until
    O(requests) requests are sent or O(duration) seconds have passed, whichever comes first, and measures what
    came back - how many requests succeeded, the errors by kind, requests per second and latency percentiles,
    overall and per URL.
  - The task fails when a threshold is crossed - the error rate over O(max_error_rate), the 95th percentile
    latency over O(max_p95_ms), the 99th over O(max_p99_ms) - with a message an on-call operator can act on,
    which names the URLs, the thresholds crossed, the errors by kind and the latencies (see RV(msg)). A failed
    task still returns every figure.
  - A request succeeds when a complete answer arrives with one of the URL's C(expect_status) codes. Anything
    else is an error of one kind - V(status_<code>) (an answer with another status, for example V(status_503);
    redirects are not followed), V(timeout), V(connection_refused), V(connection_closed) (the server closed the
    connection without answering), V(connection_reset), V(incomplete_response), V(tls_certificate), V(tls),
    V(dns), V(unreachable), V(protocol) or V(connection_error).
  - Reads only and changes nothing (C(changed) is always false).
author:
  - TokoTani DevOps Team (@tokotani)
attributes:
  check_mode:
    support: full
    description: Checks the options and sends nothing; the result says so (RV(skipped), every count 0).
  diff_mode:
    support: none
    description: Changes nothing, so there is nothing to diff.
options:
  urls:
    description:
      - The URLs to load-test, each either a URL (C(http://) or C(https://) only) or a dict with the keys
        C(url) (required), C(weight) (a whole number of 1 or more, default V(1) - the URL's share of the
        requests), C(method) (V(GET), the default, or V(HEAD)) and C(expect_status) (the status codes that count
        as success, default V([200])).
      - The requests go to the URLs in a smooth weighted round-robin - with weights 3 and 1, 3 of every 4
        requests go to the first URL, spread out. The order is fixed, so a run of 400 requests sends exactly 300
        and 100.
      - A password in a URL (C(https://user:password@host/)) is sent as HTTP basic authentication and never
        shown - URLs appear in the result and messages with their user and password replaced by C(********).
    type: list
    elements: raw
    required: true
    aliases: [url]
  requests:
    description:
      - How many requests to send in all (1 to 1000000), unless O(duration) ends the run first.
    type: int
    default: 500
  duration:
    description:
      - The most seconds the run sends requests for (more than 0, at most 3600), unless O(requests) are sent
        first. The requests still under way then finish, each within O(timeout).
    type: float
    default: 30
  concurrency:
    description:
      - How many requests are under way at a time (1 to 256) - one worker each, each with its own persistent
        connection per host. Never more than O(requests).
    type: int
    default: 10
  timeout:
    description:
      - Seconds one request may wait to connect and for each part of its answer (more than 0, at most 300).
        A request that waits longer is a V(timeout) error, and its connection is closed.
    type: float
    default: 10
  headers:
    description:
      - Extra request headers, for example C(Host) to test a DNS name against the new server's address before
        DNS points to it (with C(https://), the C(Host) name is also the TLS name that is sent and checked).
      - They replace the module's own C(User-Agent) (V(tokotani.dr.http_load_test)) and C(Accept) (V(*/*)).
        C(Content-Length) and C(Transfer-Encoding) cannot be set - no request has a body.
      - The values of headers whose names look secret (C(Authorization), C(Cookie), C(X-Api-Key), ...) are
        masked in the task's output.
    type: dict
    default: {}
  max_error_rate:
    description:
      - The largest share of errors allowed, a fraction from V(0) to V(1) - V(0.01) allows 1 % (5 of 500),
        V(0) none.
    type: float
    default: 0.01
  max_p95_ms:
    description:
      - The largest 95th percentile latency allowed, in milliseconds. Not checked when not set.
    type: float
  max_p99_ms:
    description:
      - The largest 99th percentile latency allowed, in milliseconds. Not checked when not set.
    type: float
  validate_certs:
    description:
      - Whether the certificates of C(https://) URLs are checked (against the system's CA certificates). Set
        V(false) only for a server whose certificate is not issued yet; it is then a test of the server, not
        of what the shop's users will see.
    type: bool
    default: true
notes:
  - Only ever point it at servers you own or are allowed to load-test. It sends a lot of requests, quickly, to
    exactly the URLs it is given and nowhere else, and such traffic to someone else's server is an attack.
  - It runs where the task runs, so the figures are what that host sees. Run it on the controller (with
    C(delegate_to) V(localhost)) to measure the shop as the internet reaches it, on the server itself to
    leave the network out. It connects directly, never through a proxy (C(http_proxy) is ignored).
  - The engine is Python's standard library (C(http.client), C(ssl) and threads) - the module runs on the
    managed host (Debian 12, Python 3.11), where nothing else is guaranteed. C(wrk) and C(hey) are Debian
    packages but would have to be installed on every target first, and neither can be asked for several URLs
    with weights, expected status codes per URL and errors by kind; the collection's integration tests compare
    this module's counts with C(hey)'s against the same server.
  - Latency is the time from sending a request (opening the connection first when needed) to the last byte of
    its answer, over the requests that got a complete answer, whatever its status (as C(hey) and C(wrk)
    count it). Percentiles are nearest-rank - always one of the measured values. Requests without an answer
    (timeouts, refused or closed connections) count as errors and have no latency.
  - Nothing is retried - a request on a kept-alive connection the server had closed counts as an error, so
    the counts are what the server saw. One Python process with threads sends a few thousand small requests
    per second at most; that is plenty for checking that a rebuilt shop serves, not for finding its limits.
  - The task ends at the latest O(timeout) plus one second after O(duration) - a request still under way then
    counts as a V(timeout).
seealso:
  - module: ansible.builtin.uri
  - name: The operator's page of this module
    description: What it measures, and how to read the figures.
    link: https://github.com/tokotani/tokotani.dr/blob/main/docs/modules/http_load_test.md
"""

EXAMPLES = r"""
- name: Verify the rebuilt shop under load (plan 2.3, step 5 - npm run phase10:load-test --url=...)
  tokotani.dr.http_load_test:
    url: https://shop.example.com/
    requests: 500
    concurrency: 10
    max_error_rate: 0.01
    max_p95_ms: 800
  delegate_to: localhost
  register: load

- name: Show the figures
  ansible.builtin.debug:
    msg: "{{ load.requests }} requests, {{ load.rps }} req/s, p95 {{ load.p95_ms }} ms, {{ load.errors_by_kind }}"

- name: Weighted mix of pages, a health check that may answer 503 while warming up, for at most a minute
  tokotani.dr.http_load_test:
    urls:
      - url: https://shop.example.com/
        weight: 6
      - url: https://shop.example.com/api/products?limit=20
        weight: 3
      - url: https://shop.example.com/api/health
        method: HEAD
        expect_status: [200, 503]
    requests: 100000
    duration: 60
    concurrency: 20
    max_error_rate: 0.005
    max_p99_ms: 2000
  delegate_to: localhost

- name: Test the new server by its address before DNS points to it (the shop's name as Host and TLS name)
  tokotani.dr.http_load_test:
    url: "https://{{ new_server_ip }}/"
    headers:
      Host: shop.example.com
    requests: 200
  delegate_to: localhost

- name: Record the result without failing the play, and decide later
  tokotani.dr.http_load_test:
    url: http://127.0.0.1:3000/
    requests: 300
  register: load
  failed_when: false

- name: Fail with the load test's own message when a threshold was crossed
  ansible.builtin.fail:
    msg: "{{ load.msg }}"
  when: not load.passed
"""

RETURN = r"""
msg:
  description:
    - What happened, in one line - the thresholds crossed first, then the figures (in check mode, what would
      have been sent).
  returned: always
  type: str
  sample: >-
    load test on http://127.0.0.1:3000/: error rate 4.2 % (21 of 500, status_503: 21) is over the 1 % allowed;
    p95 312 ms, p99 540 ms, 500 requests in 6.3 s (79.4 req/s, 10 at a time, stopped by the requests bound)
passed:
  description: Whether every threshold held (V(false) fails the task); null in check mode.
  returned: always
  type: bool
  sample: false
skipped:
  description: True in check mode, where nothing is sent.
  returned: check mode
  type: bool
  sample: true
requests:
  description: How many requests were sent.
  returned: always
  type: int
  sample: 500
succeeded:
  description: How many got a complete answer with an expected status.
  returned: always
  type: int
  sample: 479
errors:
  description: How many did not (RV(requests) minus RV(succeeded)).
  returned: always
  type: int
  sample: 21
errors_by_kind:
  description: The errors by kind (see the description), the most frequent first.
  returned: always
  type: dict
  sample: {"status_503": 15, "timeout": 6}
error_rate:
  description: RV(errors) divided by RV(requests), a fraction (0 when nothing was sent).
  returned: always
  type: float
  sample: 0.042
error_examples:
  description: For each error kind, the first such error - the method, the URL (masked) and what went wrong.
  returned: always
  type: dict
  sample: {"status_503": "GET http://127.0.0.1:3000/: HTTP 503 Service Unavailable"}
status_codes:
  description: How many answers came with each HTTP status (as strings), expected or not.
  returned: always
  type: dict
  sample: {"200": 479, "503": 15}
answered:
  description: How many requests got a complete answer, whatever its status - the requests the latency figures are of.
  returned: always
  type: int
  sample: 494
elapsed_seconds:
  description: How long the run took, from the first request sent to the last answer.
  returned: always
  type: float
  sample: 6.298
rps:
  description: Requests per second - RV(requests) divided by RV(elapsed_seconds).
  returned: always
  type: float
  sample: 79.39
stopped_by:
  description: Which bound ended the run - V(requests) or V(duration) (V(check_mode) in check mode).
  returned: always
  type: str
  sample: requests
connections:
  description:
    - How many connections were opened - O(concurrency) per host when the server keeps them alive, more when
      it closes them or errors close them.
  returned: always
  type: int
  sample: 10
bytes_received:
  description: The size of all the answers' bodies, in bytes.
  returned: always
  type: int
  sample: 2150400
p50_ms:
  description: The median latency, in milliseconds (null when no request got an answer).
  returned: always
  type: float
  sample: 58.2
p95_ms:
  description: The 95th percentile latency, in milliseconds (null when no request got an answer).
  returned: always
  type: float
  sample: 312.4
p99_ms:
  description: The 99th percentile latency, in milliseconds (null when no request got an answer).
  returned: always
  type: float
  sample: 540.1
max_ms:
  description: The longest latency, in milliseconds (null when no request got an answer).
  returned: always
  type: float
  sample: 702.9
min_ms:
  description: The shortest latency, in milliseconds (null when no request got an answer).
  returned: always
  type: float
  sample: 12.3
mean_ms:
  description: The mean latency, in milliseconds (null when no request got an answer).
  returned: always
  type: float
  sample: 74.8
per_url:
  description: The figures of each URL of O(urls), in their order.
  returned: always
  type: list
  elements: dict
  contains:
    url:
      description: The URL, its user and password masked.
      type: str
      sample: http://127.0.0.1:3000/
    method:
      description: V(GET) or V(HEAD).
      type: str
      sample: GET
    weight:
      description: The URL's weight.
      type: int
      sample: 1
    expect_status:
      description: The status codes that count as success.
      type: list
      elements: int
      sample: [200]
    requests:
      description: Requests sent to the URL.
      type: int
      sample: 500
    succeeded:
      description: Of those, how many succeeded.
      type: int
      sample: 479
    errors:
      description: Of those, how many failed.
      type: int
      sample: 21
    errors_by_kind:
      description: The URL's errors by kind.
      type: dict
      sample: {"status_503": 21}
    error_rate:
      description: The URL's share of errors.
      type: float
      sample: 0.042
    p50_ms:
      description: The URL's median latency (ms).
      type: float
      sample: 58.2
    p95_ms:
      description: The URL's 95th percentile latency (ms).
      type: float
      sample: 312.4
    p99_ms:
      description: The URL's 99th percentile latency (ms).
      type: float
      sample: 540.1
    max_ms:
      description: The URL's longest latency (ms).
      type: float
      sample: 702.9
thresholds:
  description:
    - Each threshold - C(error_rate) always, C(p95_ms) and C(p99_ms) when their limit is set - with its
      C(limit), the measured C(value) and whether it C(passed) (value and passed null in check mode).
  returned: always
  type: dict
  sample:
    error_rate: {"limit": 0.01, "value": 0.042, "passed": false}
    p95_ms: {"limit": 800.0, "value": 312.4, "passed": true}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tokotani.dr.plugins.module_utils.errors import call
from ansible_collections.tokotani.dr.plugins.module_utils.http_load import argument_spec, run, secret_values


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    # URL passwords and secret header values: masked wherever the result (its invocation too) would show them.
    module.no_log_values.update(secret_values(module.params))
    result, failure = call(run, module.params, check_mode=module.check_mode)
    if failure:
        module.fail_json(changed=False, **failure)
    if result["passed"] is False:
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
