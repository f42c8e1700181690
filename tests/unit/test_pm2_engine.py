"""Unit tests of the pm2 engine: jlist parsing, masking, decisions, argv building (run_command is mocked here only)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.tokotani.dr.plugins.module_utils import pm2  # noqa: E402
from ansible_collections.tokotani.dr.plugins.module_utils.pm2 import MASK, Pm2Error  # noqa: E402

NOW = 1_800_000_000.0
SECRET = "nextauth-4f9c2e1b7a"
DB_PASSWORD = "db-pw-93bd1c"

BANNER = (
    "\n                        -------------\n\n__/\\\\\\\\\\\\\\\\\\\\\\\\\\____/\\\\\\\\____\n"
    "  Runtime Edition\n  Make pm2 auto-boot at server restart:\n  $ pm2 startup\n"
    "\x1b[32m[PM2] \x1b[39mSpawning PM2 daemon with pm2_home=/tmp/h\n"
    "\x1b[32m[PM2] \x1b[39mPM2 Successfully daemonized\n"
)


def proc(
    name, *, status="online", pm_id=0, pid=100, restarts=0, up_s=60, cwd="/srv/app/releases/r1", script="server.js"
):
    """A jlist entry as pm2 7 prints it, environment (with secrets) included."""
    env = {
        "name": name,
        "status": status,
        "pm_id": pm_id,
        "restart_time": restarts,
        "unstable_restarts": 0,
        "pm_uptime": (NOW - up_s) * 1000,
        "created_at": (NOW - 3600) * 1000,
        "pm_cwd": cwd,
        "pm_exec_path": f"{cwd}/{script}",
        "exec_mode": "fork_mode",
        "exec_interpreter": "node",
        "instances": 1,
        "namespace": "default",
        "version": "1.0.0",
        "node_version": "20.20.2",
        "autorestart": True,
        "pm_out_log_path": f"/tmp/h/logs/{name}-out.log",
        "pm_err_log_path": f"/tmp/h/logs/{name}-error.log",
        "args": ["--port", "3000", "--api-token", "tok-123456"],
        "node_args": [],
        "NEXTAUTH_SECRET": SECRET,
        "PWD": cwd,
        "env": {
            "NEXTAUTH_SECRET": SECRET,
            "DATABASE_URL": f"postgres://shop:{DB_PASSWORD}@127.0.0.1:5432/shop",
            "PWD": cwd,
            "PORT": "3000",
        },
    }
    return {
        "pid": pid if status == "online" else 0,
        "name": name,
        "pm_id": pm_id,
        "pm2_env": env,
        "monit": {"memory": 1024, "cpu": 0.5},
    }


# -- jlist --------------------------------------------------------------------------------------


def test_parse_jlist_skips_banner_and_colour_codes():
    procs = [proc("web"), proc("worker", pm_id=1)]
    assert pm2.parse_jlist(BANNER + json.dumps(procs) + "\n") == procs


def test_parse_jlist_empty_list_after_banner_and_warning_after_json():
    assert pm2.parse_jlist(BANNER + "[]") == []
    text = json.dumps([proc("web")]) + "\n\x1b[33m[PM2][WARN] \x1b[39mCurrent process list is not synchronized\n"
    assert [p["name"] for p in pm2.parse_jlist(text)] == ["web"]


def test_parse_jlist_without_json_fails_without_echoing_everything():
    with pytest.raises(Pm2Error, match=r"printed no process list .* began with: \[PM2\]\[ERROR\] Daemon not launched"):
        pm2.parse_jlist("\x1b[31m[PM2][ERROR] Daemon not launched\nmore\n")


def test_parse_jlist_never_echoes_a_broken_list():
    broken = json.dumps([proc("web")])[:-40]
    with pytest.raises(Pm2Error) as caught:
        pm2.parse_jlist(broken)
    assert SECRET not in caught.value.msg and "could not be parsed" in caught.value.msg


# -- masking ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "masked"),
    [
        (["--port", "3000"], ["--port", "3000"]),
        (["--api-token", "abc", "--port", "1"], ["--api-token", MASK, "--port", "1"]),
        (["--password=hunter2"], ["--password=" + MASK]),
        (["SESSION_KEY=xyz", "MODE=fast"], ["SESSION_KEY=" + MASK, "MODE=fast"]),
        (["--db", "postgres://u:pw@h:5432/d"], ["--db", f"postgres://u:{MASK}@h:5432/d"]),
        ("--secret s1 --verbose", ["--secret", MASK, "--verbose"]),
        (None, []),
    ],
)
def test_mask_args(args, masked):
    assert pm2.mask_args(args) == masked


def test_secret_key_names():
    for key in (
        "NEXTAUTH_SECRET",
        "ADMIN_TOKEN",
        "DB_PASSWD",
        "api_key",
        "AWS_CREDENTIALS",
        "SENTRY_DSN",
        "DATABASE_URL",
    ):
        assert pm2.is_secret_key(key), key
    for key in ("PORT", "NODE_ENV", "HOST"):
        assert not pm2.is_secret_key(key), key


def test_secret_values_and_scrub_keep_paths():
    values = pm2.secret_values([proc("web")])
    assert SECRET in values and DB_PASSWORD in values
    assert "/srv/app/releases/r1" not in values, "PWD is a path, not a secret"
    text = f"\x1b[31merror\x1b[39m {SECRET} in /srv/app/releases/r1 via postgres://shop:{DB_PASSWORD}@db/shop"
    assert pm2.scrub(text, values) == f"error {MASK} in /srv/app/releases/r1 via postgres://shop:{MASK}@db/shop"


def test_summarize_never_returns_the_environment():
    summary = pm2.summarize(proc("web", up_s=90), now=NOW)
    assert SECRET not in json.dumps(summary) and DB_PASSWORD not in json.dumps(summary)
    assert "env" not in summary and "pm2_env" not in summary
    assert summary["args"] == ["--port", "3000", "--api-token", MASK]
    assert summary["uptime"] == 90 and summary["started_at"] == "2027-01-15T07:58:30Z"
    assert summary["exec_mode"] == "fork" and summary["restarts"] == 0 and summary["cwd"] == "/srv/app/releases/r1"
    assert summary["script"] == "/srv/app/releases/r1/server.js" and summary["version"] == "1.0.0"
    stopped = pm2.summarize(proc("web", status="stopped"), now=NOW)
    assert stopped["uptime"] is None and stopped["pid"] == 0


# -- ecosystem ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("ecosystem.config.js", "js"),
        ("ecosystem.config.cjs", "js"),
        ("pm2.config.mjs", "mjs"),
        ("apps.json", "json"),
        ("process.yml", "yaml"),
        ("server.js", None),
        ("ecosystem.js", None),
    ],
)
def test_ecosystem_kind(name, kind):
    assert pm2.ecosystem_kind(f"/srv/app/{name}") == kind


def test_ecosystem_output_parsing_ignores_what_the_file_prints():
    out = f"[dotenv] injecting env\n{pm2.ECOSYSTEM_MARK}" + json.dumps({"apps": [{"name": "web"}]}) + "\n"
    assert pm2.parse_ecosystem_output(out) == {"apps": [{"name": "web"}]}
    assert pm2.parse_ecosystem_output("nothing") is None


def test_select_apps_in_only_order_and_unknown_app():
    apps = [{"name": "web"}, {"name": "worker"}]
    assert list(pm2.select_apps(apps, ["worker", "web"], "/e.config.js")) == ["worker", "web"]
    assert list(pm2.select_apps(apps, [], "/e.config.js")) == ["web", "worker"]
    with pytest.raises(
        Pm2Error, match=r"unknown app 'nope': not defined in the ecosystem file /e.config.js, which defines web, worker"
    ):
        pm2.select_apps(apps, ["web", "nope"], "/e.config.js")


# -- decisions ----------------------------------------------------------------------------------

R1 = "/srv/app/releases/r1"
R2 = "/srv/app/releases/r2"


def app(name, cwd=R1, script="server.js"):
    return {"name": name, "script": f"{cwd}/{script}", "cwd": cwd, "exec_mode": None, "instances": None}


def actions(state, procs, apps=None, targets=("web",), **kwargs):
    return [(a["name"], a["action"]) for a in pm2.plan(state, list(targets), pm2.by_name(procs), apps, **kwargs)]


def test_started_is_idempotent_and_starts_what_is_missing_or_down():
    apps = {"web": app("web"), "worker": app("worker")}
    both = ("web", "worker")
    assert actions("started", [proc("web"), proc("worker", pm_id=1)], apps, both) == []
    assert actions("started", [proc("web")], apps, both) == [("worker", "start")]
    assert actions("started", [proc("web", status="stopped")], apps) == [("web", "start")]
    assert actions("started", [proc("web", status="errored")]) == [("web", "restart")]
    assert actions("started", [proc("web", status="launching")]) == []


def test_started_recreates_after_a_release_switch():
    plan = pm2.plan("started", ["web"], pm2.by_name([proc("web", cwd=R1)]), {"web": app("web", cwd=R2)})
    assert plan == [
        {
            "name": "web",
            "action": "recreate",
            "reason": f"script {R1}/server.js -> {R2}/server.js; cwd {R1} -> {R2}",
        }
    ]
    assert actions("started", [proc("web", cwd=R1)], {"web": app("web", cwd=R2)}, recreate=False) == []
    assert actions("restarted", [proc("web", cwd=R1)], {"web": app("web", cwd=R2)}) == [("web", "recreate")]


def test_started_restarts_when_a_file_changed_after_the_start():
    procs = [proc("web", up_s=60)]
    assert actions("started", procs, mtimes={"/srv/app/.env": NOW - 10}) == [("web", "restart")]
    assert actions("started", procs, mtimes={"/srv/app/.env": NOW - 600}) == []


def test_other_states():
    online, stopped = [proc("web")], [proc("web", status="stopped")]
    assert actions("stopped", online) == [("web", "stop")]
    assert actions("stopped", stopped) == []
    assert actions("stopped", [], {"web": app("web")}) == [], "nothing to stop"
    assert actions("restarted", online) == [("web", "restart")]
    assert actions("reloaded", stopped) == [("web", "reload")]
    assert actions("absent", online) == [("web", "delete")]
    assert actions("absent", []) == []


def test_unknown_process_by_name_is_an_error():
    with pytest.raises(Pm2Error, match=r"unknown app 'web': pm2 has no process of that name \(it has worker\)"):
        pm2.plan("stopped", ["web"], pm2.by_name([proc("worker")]))


def test_commands_for_an_ecosystem_and_by_name():
    plan = [
        {"name": "worker", "action": "start", "reason": ""},
        {"name": "web", "action": "recreate", "reason": ""},
        {"name": "hub", "action": "restart", "reason": ""},
    ]
    assert pm2.commands(plan, "/srv/app/current/ecosystem.config.js", "production") == [
        ["delete", "web"],
        ["start", "/srv/app/current/ecosystem.config.js", "--only", "worker,web", "--env", "production"],
        ["restart", "/srv/app/current/ecosystem.config.js", "--only", "hub", "--env", "production"],
    ]
    by_name = [{"name": n, "action": a, "reason": ""} for n, a in (("a", "stop"), ("b", "stop"), ("c", "reload"))]
    assert pm2.commands(by_name) == [["stop", "a", "b"], ["reload", "c"]]
    assert pm2.commands([{"name": "a", "action": "delete", "reason": ""}]) == [["delete", "a"]]


# -- waiting ------------------------------------------------------------------------------------


def test_assess_stable_waiting_and_failures():
    grouped = pm2.by_name([proc("web", up_s=10), proc("worker", pm_id=1, up_s=1)])
    stable, waiting, failures = pm2.assess(["web", "worker"], grouped, {0: 0, 1: 0}, 3, now=NOW)
    assert not stable and waiting == {"worker": "online for 1.0 s of the 3 s required"} and failures == {}
    assert pm2.assess(["web"], grouped, {0: 0}, 3, now=NOW)[0] is True

    looping = pm2.by_name([proc("web", restarts=5, up_s=0.2)])
    assert pm2.assess(["web"], looping, {0: 3}, 3, now=NOW)[2] == {
        "web": "restarted 2 times while waiting for it to stay up"
    }
    assert pm2.assess(["web"], looping, {0: 4}, 3, now=NOW)[2] == {}, "one restart may be a slow dependency"
    errored = pm2.by_name([proc("web", status="errored", restarts=16)])
    assert "errored" in pm2.assess(["web"], errored, {}, 3, now=NOW)[2]["web"]
    assert "no longer" in pm2.assess(["gone"], {}, {}, 3, now=NOW)[2]["gone"]


def test_next_poll_sleeps_until_min_uptime_at_most_one_second():
    young = pm2.by_name([proc("web", up_s=2.5)])
    assert pm2.next_poll(["web"], young, 3, now=NOW) == pytest.approx(0.55)
    assert pm2.next_poll(["web"], pm2.by_name([proc("web", up_s=0)]), 30, now=NOW) == 1.0
    assert pm2.next_poll(["web"], pm2.by_name([proc("web", status="launching")]), 3, now=NOW) == pm2.POLL_INTERVAL


def test_dump_signature_compares_what_a_boot_restores():
    saved = [p["pm2_env"] for p in (proc("web"), proc("worker", pm_id=1))]
    assert pm2.dump_signature(saved) == pm2.dump_signature([proc("worker", pm_id=1, pid=5), proc("web")])
    assert pm2.dump_signature(saved) != pm2.dump_signature([proc("web"), proc("worker", status="stopped")])


def test_tail_file_scrubs_and_keeps_the_last_lines(tmp_path):
    log = tmp_path / "web-error.log"
    log.write_text("".join(f"line {i}\n" for i in range(30)) + f"boom {SECRET}\n\n")
    assert pm2.tail_file(str(log), 3, {SECRET}) == ["line 28", "line 29", f"boom {MASK}"]
    assert pm2.tail_file(str(tmp_path / "missing.log"), 3) == []


# -- finding pm2 --------------------------------------------------------------------------------


def make_exe(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_find_pm2_explicit_path_on_path_and_nvm(tmp_path):
    with pytest.raises(Pm2Error, match=r"/nope/pm2 does not exist .*npm install -g pm2"):
        pm2.find_pm2("/nope/pm2", str(tmp_path), "")
    on_path = make_exe(tmp_path / "bin1" / "pm2")
    assert pm2.find_pm2(None, str(tmp_path / "home"), str(tmp_path / "bin1")) == str(on_path)
    home = tmp_path / "home"
    make_exe(home / ".nvm/versions/node/v18.20.0/bin/pm2")
    newest = make_exe(home / ".nvm/versions/node/v20.11.1/bin/pm2")
    dirs = pm2.candidate_dirs(str(home), "")
    assert dirs.index(str(newest.parent)) < dirs.index(str(home / ".nvm/versions/node/v18.20.0/bin"))


def test_missing_pm2_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(pm2, "candidate_dirs", lambda home, path_env: [str(tmp_path)])
    with pytest.raises(Pm2Error, match=r"pm2 was not found .* Install it with `npm install -g pm2`"):
        pm2.find_pm2(None, str(tmp_path), "")


# -- the CLI with run_command mocked -------------------------------------------------------------


class FakeModule:
    """Just enough of AnsibleModule: run_command answers from a function, calls are recorded."""

    def __init__(self, answer):
        self.answer = answer
        self.calls = []

    def run_command(self, args, cwd=None, environ_update=None, check_rc=False):
        self.calls.append({"args": list(args), "cwd": cwd, "env": dict(environ_update or {})})
        return self.answer(list(args))

    @staticmethod
    def get_bin_path(name):
        return {"runuser": "/usr/sbin/runuser", "env": "/usr/bin/env"}.get(name)


@pytest.fixture
def toolbox(tmp_path):
    """A fake pm2 package (bin/pm2 + package.json) with node beside it, and a PM2_HOME."""
    package = tmp_path / "prefix" / "lib" / "node_modules" / "pm2"
    make_exe(package / "bin" / "pm2")
    (package / "package.json").write_text(json.dumps({"name": "pm2", "version": "7.0.4"}))
    bindir = tmp_path / "prefix" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "pm2").symlink_to(package / "bin" / "pm2")
    make_exe(bindir / "node")
    home = tmp_path / "pm2home"
    home.mkdir()
    return {"pm2": str(bindir / "pm2"), "node": str(bindir / "node"), "home": str(home), "package": str(package)}


def test_cli_finds_node_version_and_runs_jlist_with_pm2_home(toolbox):
    jlist = BANNER + json.dumps([proc("web")])
    module = FakeModule(lambda args: (0, jlist, ""))
    cli = pm2.Pm2(module, toolbox["pm2"], None, toolbox["home"])
    assert cli.node == toolbox["node"] and cli.version == "7.0.4" and cli.package_dir == toolbox["package"]
    assert [p["name"] for p in cli.jlist()] == ["web"]
    call = module.calls[0]
    assert call["args"] == [toolbox["pm2"], "jlist"]
    assert call["env"]["PM2_HOME"] == toolbox["home"]
    assert call["env"]["PATH"].split(os.pathsep)[0] == os.path.dirname(toolbox["node"])
    assert SECRET in cli.secrets, "secrets are remembered to scrub them from messages"


def test_cli_does_not_spawn_a_daemon_to_read_an_empty_list(toolbox):
    module = FakeModule(lambda args: pytest.fail(f"nothing may run: {args}"))
    cli = pm2.Pm2(module, toolbox["pm2"], None, toolbox["home"])
    assert cli.daemon_running() is False
    assert cli.jlist(spawn=False) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_cli_runs_as_another_user_through_runuser(toolbox):
    cli = pm2.Pm2(FakeModule(lambda args: (0, "[]", "")), toolbox["pm2"], "nobody", toolbox["home"])
    argv = cli.wrap([toolbox["pm2"], "jlist"])
    assert argv[:5] == ["/usr/sbin/runuser", "-u", "nobody", "--", "/usr/bin/env"]
    assert f"PM2_HOME={toolbox['home']}" in argv and argv[-2:] == [toolbox["pm2"], "jlist"]
    assert not any(SECRET in part for part in argv)


def test_failed_command_reports_cmd_rc_and_scrubbed_stderr(toolbox):
    module = FakeModule(lambda args: (1, "", f"[PM2][ERROR] bad thing {SECRET}\n"))
    cli = pm2.Pm2(module, toolbox["pm2"], None, toolbox["home"])
    cli.secrets.add(SECRET)
    with pytest.raises(Pm2Error) as caught:
        cli.pm2(["stop", "web"])
    failure = caught.value.to_dict()
    assert failure["rc"] == 1 and failure["cmd"] == f"{toolbox['pm2']} stop web"
    assert SECRET not in json.dumps(failure) and MASK in failure["stderr"]


def test_check_mode_plans_but_runs_no_action(toolbox, tmp_path, monkeypatch):
    """ensure_process in check mode: the ecosystem is read, the list is read, nothing else runs."""
    ecosystem = tmp_path / "r2" / "ecosystem.config.js"
    ecosystem.parent.mkdir()
    ecosystem.write_text("module.exports = {}\n")
    apps = {"apps": [app("web", cwd=str(ecosystem.parent)), app("worker", cwd=str(ecosystem.parent))]}

    def answer(args):
        if args[0] == toolbox["node"]:
            return 0, pm2.ECOSYSTEM_MARK + json.dumps(apps) + "\n", ""
        if args[1:] == ["jlist"]:
            return 0, json.dumps([proc("web", cwd=R1)]), ""
        raise AssertionError(f"check mode ran {args}")

    module = FakeModule(answer)
    monkeypatch.setattr(pm2.Pm2, "daemon_running", lambda self: True)
    params = {"executable": toolbox["pm2"], "pm2_home": toolbox["home"], "ecosystem": str(ecosystem), "save": True}
    result = pm2.ensure_process(module, params, check_mode=True)
    assert result["changed"] is True and result["saved"] is True
    assert [(a["name"], a["action"]) for a in result["actions"]] == [("web", "recreate"), ("worker", "start")]
    assert result["commands"] == [
        [toolbox["pm2"], "delete", "web"],
        [toolbox["pm2"], "start", str(ecosystem), "--only", "worker,web"],
    ]
    assert result["diff"] == {"before": "web: online\nworker: absent\n", "after": "web: online\nworker: online\n"}
    assert SECRET not in json.dumps(result)
    assert module.calls[0]["cwd"] == str(ecosystem.parent), "the ecosystem file is read from its directory"


def test_startup_needs_a_pm2_home_under_the_users_home_and_systemd(toolbox, monkeypatch):
    cli = pm2.Pm2(
        FakeModule(lambda args: pytest.fail(f"nothing may run: {args}")), toolbox["pm2"], None, toolbox["home"]
    )
    monkeypatch.setattr(pm2.os, "geteuid", lambda: 0)
    with pytest.raises(
        Pm2Error, match=r"PM2_HOME=<home>/.pm2, but pm2_home is .*pm2home; use a pm2_home that ends in /.pm2"
    ):
        cli.startup_systemd(check_mode=True)
    cli.pm2_home = "/root/.pm2"
    monkeypatch.setattr(pm2.os.path, "isdir", lambda path: False)
    with pytest.raises(Pm2Error, match="not booted with systemd"):
        cli.startup_systemd(check_mode=True)


def test_unit_is_current_only_for_this_user_home_and_an_existing_pm2(toolbox, tmp_path):
    cli = pm2.Pm2(FakeModule(lambda args: (0, "", "")), toolbox["pm2"], None, toolbox["home"])
    unit = tmp_path / "pm2-root.service"
    real_pm2 = os.path.realpath(toolbox["pm2"])
    text = f"[Service]\nUser={cli.user}\nEnvironment=PM2_HOME=/root/.pm2\nExecStart={real_pm2} resurrect\n"
    unit.write_text(text)
    assert cli._unit_current(str(unit), "/root") is True
    assert cli._unit_current(str(unit), "/home/other") is False
    unit.write_text(text.replace(real_pm2, "/gone/pm2"))
    assert cli._unit_current(str(unit), "/root") is False
    assert cli._unit_current(str(tmp_path / "missing.service"), "/root") is False
