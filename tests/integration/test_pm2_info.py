"""tokotani.dr.pm2_info through ansible against a real pm2 daemon: read-only, usable in conditions, no secrets."""

from __future__ import annotations

import pytest
from pm2_support import info_task, pm2_daemon, process_task, run_tasks


@pytest.fixture(scope="module")
def daemon():
    with pm2_daemon("pm2-info") as pm2:
        yield pm2


def test_no_daemon_means_no_processes_and_spawns_none(daemon):
    run = run_tasks([info_task(daemon), info_task(daemon, name=["web"])])
    everything, named = run.results
    assert everything["changed"] is False and everything["daemon_running"] is False
    assert everything["processes"] == [] and everything["all_online"] is False
    assert named["status"] == {"web": "absent"} and named["online"] == []
    assert not (daemon.home / "pm2.pid").exists(), "pm2_info must not spawn a daemon"


def test_reports_status_for_conditions_without_secrets(daemon):
    ecosystem = str(daemon.apps / "ecosystem.config.js")
    run_tasks([process_task(daemon, ecosystem=ecosystem, min_uptime=0.5)])
    daemon.pm2("stop", "worker")
    run = run_tasks(
        [
            {**info_task(daemon), "register": "everything"},
            {**info_task(daemon, name=["web", "missing-app"]), "register": "named"},
            {
                "name": "Runs only when web is online and worker is not",
                "ansible.builtin.debug": {"msg": "condition met"},
                "when": ["everything.status['web'] == 'online'", "'worker' not in everything.online"],
            },
            {
                "ansible.builtin.assert": {"that": ["not everything.all_online"], "quiet": True},
            },
        ],
        "--check",
    )
    everything, named, condition, _assertion = run.results
    assert everything["changed"] is False and everything["daemon_running"] is True
    assert everything["status"] == {"web": "online", "worker": "stopped"}
    assert everything["online"] == ["web"] and everything["all_online"] is False
    assert named["status"] == {"web": "online", "missing-app": "absent"}
    assert condition.get("msg") == "condition met" and not condition.get("skipped"), condition

    web = next(p for p in everything["processes"] if p["name"] == "web")
    assert web["status"] == "online" and web["pid"] > 0 and web["uptime"] >= 0
    assert web["cwd"] == str(daemon.apps) and web["script"] == str(daemon.apps / "healthy.js")
    assert web["args"] == ["--listen", "127.0.0.1", "--api-token", "********"]
    assert everything["pm2"]["version"] == "7.0.4" and everything["pm2"]["home"] == str(daemon.home)
    assert set(web) >= {"name", "pm_id", "pid", "status", "restarts", "uptime", "cwd", "script", "version"}
    assert not {"env", "pm2_env"} & set(web)
    for value in daemon.secrets.values():
        assert value not in run.output

    daemon.pm2("restart", "worker")
    run = run_tasks([info_task(daemon, name=["web", "worker"])])
    assert run.results[0]["all_online"] is True and run.results[0]["online"] == ["web", "worker"]


def test_log_lines_are_returned_with_the_secrets_masked(daemon):
    leaky = daemon.apps / "leaky"
    leaky.mkdir(exist_ok=True)
    secret = daemon.secrets["NEXTAUTH_SECRET"]
    password = daemon.secrets["DB_PASSWORD"]
    (leaky / "leak.js").write_text(
        "console.error('auth failed with secret ' + process.env.SESSION_SECRET);\n"
        "console.error('db at ' + process.env.DATABASE_URL);\n"
        "setInterval(() => {}, 1000);\n"
    )
    (leaky / "ecosystem.config.js").write_text(
        "module.exports = { apps: [{ name: 'leaky', script: 'leak.js', cwd: __dirname, env: {\n"
        f"  SESSION_SECRET: '{secret}', DATABASE_URL: 'postgres://shop:{password}@127.0.0.1/shop' }} }}] }};\n"
    )
    run_tasks([process_task(daemon, ecosystem=str(leaky / "ecosystem.config.js"), min_uptime=0.5)])
    run = run_tasks([info_task(daemon, name=["leaky"], log_lines=5)], "-vvv")
    logs = run.results[0]["logs"]["leaky"]
    assert logs["path"].endswith("leaky-error.log")
    assert "auth failed with secret ********" in logs["lines"]
    assert "db at ********" in logs["lines"]
    assert secret not in run.output and password not in run.output
    none = run_tasks([info_task(daemon, name=["leaky"])]).results[0]
    assert none["logs"] == {}
    daemon.pm2("delete", "leaky")
