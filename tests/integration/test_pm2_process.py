"""tokotani.dr.pm2_process through ansible against a real pm2 daemon (temporary PM2_HOME) and node apps.

Every effect is checked with `pm2 jlist` directly, not only through what the module reports.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import free_port, wait_for_http
from pm2_support import Pm2Home, jlist_of, jlist_task, pm2_daemon, process_task, run_tasks

FAST = {"min_uptime": 0.5, "wait_timeout": 30}


@pytest.fixture(scope="module")
def daemon():
    with pm2_daemon("pm2-process") as pm2:
        yield pm2


def eco(daemon: Pm2Home, sub: str = "") -> str:
    return str(daemon.apps / sub / "ecosystem.config.js")


def ensure_running(daemon: Pm2Home, *names: str) -> dict:
    """web and worker online, with the pm2 CLI (not the module under test); returns jlist."""
    names = names or ("web", "worker")
    procs = daemon.jlist()
    missing = [n for n in names if n not in procs]
    if missing:
        daemon.pm2("start", "ecosystem.config.js", "--only", ",".join(missing))
    for name in names:
        if name in procs and procs[name]["status"] != "online":
            daemon.pm2("restart", name)
    procs = daemon.jlist()
    assert all(procs[n]["status"] == "online" for n in names), procs
    return procs


def snapshot(daemon: Pm2Home) -> dict:
    return {name: (p["status"], p["pid"], p["restarts"], p["cwd"]) for name, p in daemon.jlist().items()}


def test_ecosystem_with_only_one_then_several_is_idempotent(daemon):
    one = process_task(daemon, ecosystem=eco(daemon), only=["web"], **FAST)
    both = process_task(daemon, ecosystem=eco(daemon), only=["web", "worker"], **FAST)
    run = run_tasks([one, one, jlist_task(daemon), both, both])
    first, second, listed, third, fourth = run.results
    assert first["changed"] is True, first
    assert [(a["name"], a["action"]) for a in first["actions"]] == [("web", "start")]
    assert second["changed"] is False and second["actions"] == [], second
    procs = jlist_of(listed)
    assert procs["web"]["status"] == "online" and "worker" not in procs, procs
    assert procs["web"]["cwd"] == str(daemon.apps)
    assert [p["name"] for p in first["processes"]] == ["web"]
    assert all("env" not in p and "pm2_env" not in p for p in first["processes"])

    assert [(a["name"], a["action"]) for a in third["actions"]] == [("worker", "start")], third
    assert third["changed"] is True and fourth["changed"] is False, fourth
    after = daemon.jlist()
    assert after["web"]["status"] == after["worker"]["status"] == "online"
    assert after["web"]["pid"] == procs["web"]["pid"], "web was online and must not have been touched"
    wait_for_http(f"http://127.0.0.1:{daemon.port}/", timeout=10)


def test_stop_start_restart_reload_effects(daemon):
    start = ensure_running(daemon)["web"]
    run = run_tasks(
        [
            process_task(daemon, name="web", state="stopped"),
            process_task(daemon, name="web", state="stopped"),
            jlist_task(daemon),
            process_task(daemon, name="web", **FAST),
            process_task(daemon, name="web", **FAST),
            jlist_task(daemon),
            process_task(daemon, name="web", state="restarted", **FAST),
            process_task(daemon, name="web", state="restarted", **FAST),
            jlist_task(daemon),
            process_task(daemon, name="web", state="reloaded", **FAST),
        ],
        "--diff",
    )
    stop1, stop2, stopped, start1, start2, started, restart1, restart2, restarted, reload1 = run.results
    assert stop1["changed"] is True and stop2["changed"] is False
    assert stop1["diff"]["before"] == "web: online\n" and stop1["diff"]["after"] == "web: stopped\n"
    procs = jlist_of(stopped)
    assert procs["web"]["status"] == "stopped" and procs["worker"]["status"] == "online", procs

    assert start1["changed"] is True and start2["changed"] is False, (start1, start2)
    before = jlist_of(started)["web"]
    assert before["status"] == "online" and before["pid"] != start["pid"], before

    assert restart1["changed"] is True and restart2["changed"] is True, "restarted always acts"
    assert restart1["actions"][0]["action"] == "restart"
    after = jlist_of(restarted)["web"]
    assert after["restarts"] == before["restarts"] + 2 and after["pid"] != before["pid"], (before, after)
    assert after["status"] == "online"

    assert reload1["changed"] is True and reload1["actions"][0]["action"] == "reload"
    reloaded = daemon.jlist()["web"]
    # fork mode: pm2 reload restarts the process
    assert reloaded["restarts"] == after["restarts"] + 1 and reloaded["pid"] != after["pid"], (after, reloaded)
    assert reloaded["status"] == "online"
    wait_for_http(f"http://127.0.0.1:{daemon.port}/", timeout=10)


def test_check_mode_changes_nothing_for_every_state(daemon):
    ensure_running(daemon)
    daemon.pm2("stop", "worker")
    dump = daemon.home / "dump.pm2"
    dump_before = dump.exists() and dump.read_bytes()
    before = snapshot(daemon)
    run = run_tasks(
        [
            process_task(daemon, name="worker", state="started"),
            process_task(daemon, name="web", state="stopped"),
            process_task(daemon, name="web", state="restarted"),
            process_task(daemon, name="web", state="reloaded"),
            process_task(daemon, name="web", state="absent"),
            process_task(daemon, ecosystem=eco(daemon, "release-1"), state="started", save=True),
            process_task(daemon, ecosystem=eco(daemon), state="restarted"),
        ],
        "--check",
        "--diff",
    )
    assert all(r["changed"] is True for r in run.results), run.results
    assert run.results[0]["diff"] == {"before": "worker: stopped\n", "after": "worker: online\n"}
    assert run.results[4]["diff"] == {"before": "web: online\n", "after": "web: absent\n"}
    if "shop" not in before:
        assert run.results[5]["actions"] == [{"name": "shop", "action": "start", "reason": "not in pm2's process list"}]
    assert run.results[5]["saved"] is True
    time.sleep(0.5)
    assert snapshot(daemon) == before
    assert (dump.exists() and dump.read_bytes()) == dump_before
    daemon.pm2("restart", "worker")


def test_absent_removes(daemon):
    ensure_running(daemon)
    run = run_tasks(
        [
            process_task(daemon, name="worker", state="absent"),
            process_task(daemon, name="worker", state="absent"),
            process_task(daemon, ecosystem=eco(daemon), only=["worker"], state="absent"),
        ]
    )
    assert [r["changed"] for r in run.results] == [True, False, False], run.results
    procs = daemon.jlist()
    assert "worker" not in procs and procs["web"]["status"] == "online", procs


def test_recreate_after_release_switch(daemon):
    release1, release2 = daemon.apps / "release-1", daemon.apps / "release-2"
    run = run_tasks(
        [
            process_task(daemon, ecosystem=eco(daemon, "release-1"), **FAST),
            jlist_task(daemon),
            process_task(daemon, ecosystem=eco(daemon, "release-2"), **FAST),
            process_task(daemon, ecosystem=eco(daemon, "release-2"), **FAST),
            process_task(daemon, ecosystem=eco(daemon, "release-1"), recreate=False, **FAST),
        ]
    )
    first, listed, switched, again, kept = run.results
    before = jlist_of(listed)["shop"]
    assert first["changed"] is True
    assert before["cwd"] == str(release1) and before["script"] == str(release1 / "worker.js")
    assert switched["changed"] is True and switched["actions"][0]["action"] == "recreate", switched
    assert f"cwd {release1} -> {release2}" in switched["actions"][0]["reason"]
    assert f"script {release1 / 'worker.js'} -> {release2 / 'worker.js'}" in switched["actions"][0]["reason"]
    assert again["changed"] is False and kept["changed"] is False
    after = daemon.jlist()["shop"]
    assert after["cwd"] == str(release2) and after["script"] == str(release2 / "worker.js"), after
    assert after["status"] == "online" and after["pid"] != before["pid"]


def test_restart_if_newer(daemon):
    ensure_running(daemon)
    env_file = daemon.apps / "web.env"
    env_file.write_text("CHANGED=1\n")
    before = daemon.jlist()["web"]
    options = {"ecosystem": eco(daemon), "only": ["web"], "restart_if_newer": [str(env_file)], **FAST}
    run = run_tasks([process_task(daemon, **options), process_task(daemon, **options)])
    first, second = run.results
    assert first["changed"] is True and first["actions"][0]["action"] == "restart", first
    assert str(env_file) in first["actions"][0]["reason"]
    assert second["changed"] is False, second
    after = daemon.jlist()["web"]
    assert after["restarts"] == before["restarts"] + 1 and after["status"] == "online"


def test_wait_min_uptime_and_timeout(daemon):
    """flaky runs 3 s, then exits (pm2 restarts it): up for 1 s is reached, up for 5 s in a row never is."""
    flaky = eco(daemon, "flaky")
    run = run_tasks(
        [
            process_task(daemon, ecosystem=flaky, min_uptime=0.5, wait_timeout=10),
            process_task(daemon, ecosystem=flaky, state="restarted", min_uptime=5, wait_timeout=4, ignore_errors=True),
            process_task(daemon, name="flaky", state="absent"),
        ]
    )
    started, timed_out, _removed = run.results
    assert started["changed"] is True and not started.get("failed"), started
    assert timed_out.get("failed") is True, timed_out
    assert timed_out["msg"].startswith("timeout: flaky not online for 5 s in a row within 4 s"), timed_out["msg"]
    assert "flaky: exiting after 3 s" in timed_out["msg"], timed_out["msg"]
    assert "flaky" not in daemon.jlist()


def test_crash_loop_detected_with_log_tail(daemon):
    run = run_tasks(
        [
            process_task(daemon, ecosystem=eco(daemon, "crash"), wait_timeout=30, ignore_errors=True),
            process_task(daemon, name="crasher", state="absent"),
        ]
    )
    crashed = run.results[0]
    assert crashed.get("failed") is True, crashed
    assert crashed["msg"].startswith("crash loop: crasher did not stay online"), crashed["msg"]
    assert "FATAL: cannot reach the database (crash-at-start test app)" in crashed["msg"]
    assert "FATAL: cannot reach the database" in crashed["logs"]["crasher"][-1]
    assert crashed["changed"] is True and crashed["processes"][0]["name"] == "crasher"


def test_secrets_never_in_output_even_with_vvv(daemon):
    ensure_running(daemon)
    raw = daemon.pm2("jlist").stdout
    assert all(value in raw for value in daemon.secrets.values()), "the apps must carry the secrets for this test"
    run = run_tasks(
        [
            process_task(daemon, ecosystem=eco(daemon), **FAST),
            process_task(daemon, ecosystem=eco(daemon), state="restarted", **FAST),
            process_task(daemon, name="worker", state="stopped"),
            process_task(daemon, ecosystem=eco(daemon), only=["worker"], save=True, **FAST),
            {"tokotani.dr.pm2_info": daemon.options()},
        ],
        "-vvv",
        "--diff",
        parse=False,
    )
    assert run.rc == 0, run.output[-3000:]
    for key, value in daemon.secrets.items():
        assert value not in run.output, f"the secret {key} appears in ansible's output"
    assert "********" in run.output, "the --api-token argument must show up masked"
    assert "NEXTAUTH_SECRET" not in run.output


def test_save_writes_a_private_dump_once(daemon):
    ensure_running(daemon)
    dump = daemon.home / "dump.pm2"
    dump.unlink(missing_ok=True)
    options = {"ecosystem": eco(daemon), "only": ["web", "worker"], "save": True, **FAST}
    run = run_tasks([process_task(daemon, **options), process_task(daemon, **options)])
    first, second = run.results
    assert first["saved"] is True and first["changed"] is True, first
    assert second["saved"] is False and second["changed"] is False, second
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    assert {"web", "worker"} <= {entry["name"] for entry in json.loads(dump.read_text())}


def _pm2_installed_in_default_places() -> bool:
    dirs = ["/usr/local/bin", "/usr/bin", "/bin", "/opt/nodejs/bin", "/usr/local/lib/node_modules/pm2/bin"]
    dirs += ["/usr/lib/node_modules/pm2/bin"]
    home = Path.home()
    dirs += [str(home / sub) for sub in (".npm-global/bin", ".local/bin", "bin", ".volta/bin")]
    dirs += [str(p) for p in home.glob(".nvm/versions/node/*/bin")]
    return any(os.access(os.path.join(d, "pm2"), os.X_OK) for d in dirs)


def test_clear_errors(daemon, tmp_path):
    before = snapshot(daemon)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    no_pm2 = {key: value for key, value in daemon.options().items() if key != "executable"}
    run = run_tasks(
        [
            process_task(daemon, name="no-such-app", state="stopped", ignore_errors=True),
            process_task(daemon, ecosystem=eco(daemon), only=["web", "no-such-app"], ignore_errors=True),
            process_task(daemon, ecosystem=str(daemon.apps / "missing" / "ecosystem.config.js"), ignore_errors=True),
            process_task(daemon, ecosystem=str(daemon.apps / "healthy.js"), ignore_errors=True),
            process_task(daemon, name="web", executable="/nonexistent/bin/pm2", ignore_errors=True),
            {
                "tokotani.dr.pm2_process": {"name": "web", **no_pm2},
                "environment": {"PATH": str(empty)},
                "ignore_errors": True,
            },
        ]
    )
    unknown, unknown_only, missing_file, not_config, bad_exe, not_found = run.results
    assert all(r.get("failed") for r in run.results), run.results
    assert unknown["msg"].startswith("unknown app 'no-such-app': pm2 has no process of that name"), unknown["msg"]
    assert "unknown app 'no-such-app': not defined in the ecosystem file" in unknown_only["msg"]
    assert "which defines web, worker" in unknown_only["msg"]
    assert (
        missing_file["msg"]
        == f"the ecosystem file {daemon.apps / 'missing' / 'ecosystem.config.js'} does not exist (or is not a file)"
    )
    assert "pm2 would run" in not_config["msg"] and "ecosystem.config.js" in not_config["msg"]
    assert "npm install -g pm2" in bad_exe["msg"] and "/nonexistent/bin/pm2" in bad_exe["msg"]
    if not _pm2_installed_in_default_places():
        assert not_found["msg"].startswith("pm2 was not found"), not_found["msg"]
        assert "npm install -g pm2" in not_found["msg"]
    assert snapshot(daemon) == before


CLUSTER_JS = """
const http = require('http');
const path = require('path');
const release = path.basename(process.cwd());  // the release current pointed to when this instance started
const server = http.createServer((req, res) => { res.writeHead(200); res.end(release); })
  .listen(Number(process.env.PORT), '127.0.0.1');
process.on('SIGINT', () => server.close(() => process.exit(0)));  // finish what is in flight, as the shop does
"""


def _cluster_procs(daemon: Pm2Home) -> list[tuple[int, str, str]]:
    out = daemon.pm2("jlist").stdout
    procs = json.loads(out[out.index("[") :])
    return sorted((p["pm_id"], p["pm2_env"]["status"], p["pm2_env"]["exec_mode"]) for p in procs if p["name"] == "cweb")


def test_reload_in_cluster_mode_with_current_as_cwd_changes_the_code_without_refusing_a_request(daemon, tmp_path):
    """The zero-downtime rollback: two instances whose cwd is the current link; current switched, then reloaded."""
    port = free_port()
    base = tmp_path / "cluster"
    for name in ("r1", "r2"):
        release = base / "releases" / name
        release.mkdir(parents=True)
        (release / "server.js").write_text(CLUSTER_JS)
        (release / "ecosystem.config.js").write_text(
            "const path = require('path');\n"
            "module.exports = { apps: [{ name: 'cweb', script: 'server.js', exec_mode: 'cluster', instances: 2,\n"
            f"  cwd: path.resolve(__dirname, '..', '..', 'current'), env: {{ PORT: '{port}' }} }}] }};\n"
        )
    current = base / "current"
    current.symlink_to(base / "releases" / "r1")
    url = f"http://127.0.0.1:{port}/"
    try:
        run_tasks([process_task(daemon, ecosystem=str(base / "releases" / "r1" / "ecosystem.config.js"), **FAST)])
        wait_for_http(url)
        before = _cluster_procs(daemon)
        assert [p[2] for p in before] == ["cluster_mode", "cluster_mode"], before
        assert urllib.request.urlopen(url, timeout=5).read() == b"r1"

        link = base / "current.new"
        link.symlink_to(base / "releases" / "r2")
        os.replace(link, current)
        failures, answers, stop = [], [], threading.Event()

        def hammer():
            while not stop.is_set():
                try:
                    answers.append(urllib.request.urlopen(url, timeout=5).read())
                except OSError as exc:
                    failures.append(repr(exc))
                time.sleep(0.01)

        loop = threading.Thread(target=hammer)
        loop.start()
        try:
            run = run_tasks(
                [
                    process_task(
                        daemon,
                        ecosystem=str(base / "releases" / "r2" / "ecosystem.config.js"),
                        state="reloaded",
                        **FAST,
                    )
                ]
            )
            time.sleep(0.5)
        finally:
            stop.set()
            loop.join()
        (result,) = run.results
        assert [a["action"] for a in result["actions"]] == ["reload"], result["actions"]
        assert _cluster_procs(daemon) == before  # the same processes, reloaded, not deleted and started again
        served = {urllib.request.urlopen(url, timeout=5).read() for attempt in range(6)}
        assert answers[-1] == b"r2" and served == {b"r2"}
        assert b"r1" in answers  # the loop ran across the reload
        assert failures == [], f"{len(failures)} of {len(failures) + len(answers)} requests failed: {failures[:3]}"
    finally:
        daemon.pm2("delete", "cweb", check=False)
