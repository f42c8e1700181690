"""Unit tests of the host-side runner (dr_runner) and the backup job's configuration (backup_job.resolve_config).

The jobs here are stand-ins registered under the runner's job names; the real backup job, against a
real PostgreSQL and S3 API, is in tests/integration/test_backup_runner.py.
"""

from __future__ import annotations

import datetime
import io
import json
import stat
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.tokotani.dr.plugins.module_utils import specs  # noqa: E402
from ansible_collections.tokotani.dr.plugins.module_utils.jobs import backup as backup_job  # noqa: E402
from ansible_collections.tokotani.dr.plugins.module_utils.jobs import runner as dr_runner  # noqa: E402
from ansible_collections.tokotani.dr.plugins.module_utils.jobs import verify as verify_job  # noqa: E402
from ansible_collections.tokotani.dr.plugins.module_utils.pg_cli import PgError  # noqa: E402

UTC = datetime.UTC
T0 = datetime.datetime(2026, 1, 5, 2, 0, 0, tzinfo=UTC)
T1 = datetime.datetime(2026, 1, 5, 2, 0, 42, 500000, tzinfo=UTC)
FAKE_JOB = "tokotani_test_fake_job"


# --------------------------------------------------------------------------- status document


def test_a_successful_run_is_the_last_success():
    doc = dr_runner.status_document("backup", {"failed": False, "msg": "ok", "summary": {"size": 3}}, T0, T1, {})
    run = doc["last_run"]
    assert run == {
        "job": "backup",
        "ok": True,
        "started_at": "2026-01-05T02:00:00.000000Z",
        "finished_at": "2026-01-05T02:00:42.500000Z",
        "started_at_epoch": T0.timestamp(),
        "finished_at_epoch": T1.timestamp(),
        "duration": 42.5,
        "msg": "ok",
        "summary": {"size": 3},
        "skipped": False,
    }
    assert doc["last_success"] == run
    assert doc["job"] == "backup"


def test_a_skipped_run_is_not_a_failure_and_not_a_success():
    previous = {"last_success": {"ok": True, "finished_at": "2026-01-04T02:00:40Z"}}
    result = {"failed": False, "skipped": True, "msg": "skipped: a recovery of tokotani is in progress"}
    doc = dr_runner.status_document("backup", result, T0, T1, previous)
    assert doc["last_run"]["ok"] is True and doc["last_run"]["skipped"] is True
    assert doc["last_success"] == previous["last_success"]


def test_a_failed_run_keeps_the_previous_success():
    previous = {"last_success": {"ok": True, "finished_at": "2026-01-04T02:00:40Z", "summary": {"size": 1}}}
    doc = dr_runner.status_document("backup", {"failed": True, "msg": "pg_dump failed"}, T0, T1, previous)
    assert doc["last_run"]["ok"] is False
    assert doc["last_run"]["msg"] == "pg_dump failed"
    assert doc["last_run"]["summary"] == {}
    assert doc["last_success"] == previous["last_success"]


def test_a_failed_first_run_has_no_last_success():
    doc = dr_runner.status_document("verify", {"failed": True, "msg": "x"}, T0, T1, {})
    assert doc["last_success"] is None


@pytest.mark.parametrize("content", ["", "not json", "[1, 2]", '"text"'])
def test_an_unreadable_previous_status_counts_as_none(tmp_path, content):
    path = tmp_path / "status.json"
    path.write_text(content)
    assert dr_runner.read_status(str(path)) == {}
    assert dr_runner.read_status(str(tmp_path / "missing.json")) == {}


# --------------------------------------------------------------------------- main with stand-in jobs


@pytest.fixture
def fake_job(monkeypatch):
    """A job module whose run() does what the test sets in behaviour['run']."""
    module = types.ModuleType(FAKE_JOB)
    behaviour = {"run": lambda config, log, check_mode: {"msg": "done", "summary": {"size": 7}}, "calls": []}

    def run(config, log=None, check_mode=False, environ=None, via=None):
        behaviour["calls"].append({"config": config, "check_mode": check_mode, "environ": environ, "via": via})
        log("working")
        return behaviour["run"](config, log, check_mode)

    module.run = run
    monkeypatch.setitem(dr_runner.JOBS, "backup", module)
    return behaviour


def write_config(tmp_path, status_file=True, **extra):
    config = {"backup": {"database": "d"}}
    if status_file:
        config["status_file"] = str(tmp_path / "state" / "backup-status.json")
    config.update(extra)
    path = tmp_path / "backup.json"
    path.write_text(json.dumps(config))
    return path


def run_main(argv):
    out, err = io.StringIO(), io.StringIO()
    rc = dr_runner.main(argv, stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


def status_of(tmp_path):
    return json.loads((tmp_path / "state" / "backup-status.json").read_text())


def test_success_exits_0_prints_the_result_and_writes_the_status(fake_job, tmp_path):
    path = write_config(tmp_path)
    rc, out, err = run_main(["backup", "--config", str(path)])
    assert rc == dr_runner.EXIT_OK
    result = json.loads(out)
    assert result["failed"] is False
    assert result["msg"] == "done"
    assert result["duration"] >= 0
    # The job gets the configuration without the runner's own key.
    assert fake_job["calls"] == [
        {"config": {"backup": {"database": "d"}}, "check_mode": False, "environ": None, "via": None}
    ]
    doc = status_of(tmp_path)
    assert doc["last_run"]["ok"] is True
    assert doc["last_success"]["summary"] == {"size": 7}
    status_file = tmp_path / "state" / "backup-status.json"
    assert stat.S_IMODE(status_file.stat().st_mode) == 0o644
    lines = err.splitlines()
    assert lines[0] == f"tokotani-dr backup: started (config {path})"
    assert "tokotani-dr backup: working" in lines
    assert lines[-1].startswith("tokotani-dr backup: ok in ") and lines[-1].endswith(": done")


def test_a_failed_result_exits_1_and_keeps_the_last_success(fake_job, tmp_path):
    path = write_config(tmp_path)
    assert run_main(["backup", "--config", str(path)])[0] == 0
    first = status_of(tmp_path)["last_success"]
    fake_job["run"] = lambda config, log, check_mode: {"failed": True, "msg": "offsite failed", "summary": {"x": 1}}
    rc, out, err = run_main(["backup", "--config", str(path)])
    assert rc == dr_runner.EXIT_FAILED
    assert json.loads(out)["failed"] is True
    doc = status_of(tmp_path)
    assert doc["last_run"]["ok"] is False
    assert doc["last_run"]["summary"] == {"x": 1}
    assert doc["last_success"] == first
    assert err.splitlines()[-1] == "tokotani-dr backup: FAILED: offsite failed"


def test_an_operator_error_is_reported_with_its_details_and_no_traceback(fake_job, tmp_path):
    def fail(config, log, check_mode):
        raise PgError("database no_such_db does not exist", cmd=["psql", "-d", "no_such_db"], rc=2, stderr="FATAL")

    fake_job["run"] = fail
    rc, out, err = run_main(["backup", "--config", str(write_config(tmp_path))])
    assert rc == dr_runner.EXIT_FAILED
    result = json.loads(out)
    assert result["msg"] == "database no_such_db does not exist"
    assert result["cmd"] == "psql -d no_such_db"
    assert result["rc"] == 2
    assert "Traceback" not in err
    assert status_of(tmp_path)["last_run"]["msg"] == "database no_such_db does not exist"


def test_an_unexpected_exception_is_a_failure_with_its_traceback_in_the_journal(fake_job, tmp_path):
    def crash(config, log, check_mode):
        raise KeyError("oops")

    fake_job["run"] = crash
    rc, out, err = run_main(["backup", "--config", str(write_config(tmp_path))])
    assert rc == dr_runner.EXIT_FAILED
    assert json.loads(out)["msg"] == "KeyError: 'oops'"
    assert "Traceback" in err
    assert status_of(tmp_path)["last_run"]["ok"] is False


def test_a_configuration_the_job_refuses_exits_2_and_is_recorded(fake_job, tmp_path):
    path = write_config(tmp_path)
    assert run_main(["backup", "--config", str(path)])[0] == 0
    first = status_of(tmp_path)["last_success"]

    def refuse(config, log, check_mode):
        raise specs.SpecError("backup: missing required option: backup_dir")

    fake_job["run"] = refuse
    rc, out, err = run_main(["backup", "--config", str(path)])
    assert rc == dr_runner.EXIT_USAGE
    assert json.loads(out)["msg"] == "invalid configuration: backup: missing required option: backup_dir"
    assert "Traceback" not in err
    doc = status_of(tmp_path)
    assert doc["last_run"]["ok"] is False
    assert doc["last_success"] == first


def test_check_mode_writes_no_status(fake_job, tmp_path):
    path = write_config(tmp_path)
    rc, _out, err = run_main(["backup", "--config", str(path), "--check"])
    assert rc == 0
    assert fake_job["calls"][0]["check_mode"] is True
    assert not (tmp_path / "state").exists()
    assert "started (check mode)" in err


def test_without_status_file_nothing_is_written(fake_job, tmp_path):
    rc, _out, _err = run_main(["backup", "--config", str(write_config(tmp_path, status_file=False))])
    assert rc == 0
    assert not (tmp_path / "state").exists()


def test_a_status_file_that_cannot_be_written_fails_the_run(fake_job, tmp_path):
    (tmp_path / "state").write_text("a file where the directory should be")
    rc, out, err = run_main(["backup", "--config", str(write_config(tmp_path))])
    assert rc == dr_runner.EXIT_FAILED
    assert json.loads(out)["failed"] is True
    assert "cannot write the status file" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read the configuration {path}: No such file or directory"),
        ("{not json", "the configuration {path} is not valid JSON"),
        ("[1, 2]", "the configuration {path} must be a JSON object"),
    ],
)
def test_an_unreadable_configuration_exits_2_before_anything_runs(fake_job, tmp_path, content, message):
    path = tmp_path / "backup.json"
    if content is not None:
        path.write_text(content)
    rc, out, err = run_main(["backup", "--config", str(path)])
    assert rc == dr_runner.EXIT_USAGE
    assert out == ""
    assert f"tokotani-dr backup: FAILED: {message.format(path=path)}" in err
    assert fake_job["calls"] == []


def test_an_unknown_job_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        dr_runner.main(["restore", "--config", str(tmp_path / "x.json")])
    assert exit_info.value.code == dr_runner.EXIT_USAGE
    assert "invalid choice: 'restore'" in capsys.readouterr().err


# --------------------------------------------------------------------------- the backup job's configuration

GOOD = {
    "backup": {"database": "tokotani", "backup_dir": "/srv/backups", "keep_days": 7},
    "offsite": {"bucket": "b", "prefix": "server1", "endpoint_url": "http://s3:5000", "multipart_chunksize": "32MB"},
}


def test_the_backup_job_resolves_both_sections_with_the_module_specs():
    backup, offsite = backup_job.resolve_config(GOOD, environ={"AWS_SECRET_ACCESS_KEY": "from-env"})
    assert backup["database"] == "tokotani" and backup["keep_days"] == 7 and backup["format"] == "directory"
    assert offsite["mode"] == "push"
    assert offsite["backup_dir"] == "/srv/backups"
    assert offsite["database"] == "tokotani"
    assert offsite["secret_key"] == "from-env"
    assert offsite["multipart_chunksize"] == 32 * 1024 * 1024
    assert offsite["multipart_threshold"] == 16 * 1024 * 1024
    assert offsite["keep_days"] == 14


def test_offsite_absent_or_null_turns_offsite_copies_off():
    assert backup_job.resolve_config({"backup": GOOD["backup"]}, environ={})[1] is None
    assert backup_job.resolve_config({"backup": GOOD["backup"], "offsite": None}, environ={})[1] is None


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "the configuration has no 'backup' section"),
        ({"backup": []}, "'backup' must be a JSON object, not list"),
        ({"backup": {"database": "d"}}, "backup: missing required option: backup_dir"),
        (
            {"backup": {"database": "d", "backup_dir": "/b", "fromat": "plain"}},
            r"backup: unsupported option\(s\): fromat",
        ),
        (
            {"backup": {"database": "d", "backup_dir": "/b", "keep_days": "a week"}},
            "backup: keep_days: 'a week' is not",
        ),
        ({"backup": GOOD["backup"], "ofsite": {}}, r"unsupported top-level key\(s\): ofsite"),
        ({"backup": GOOD["backup"], "offsite": "s3://b"}, "'offsite' must be a JSON object, not str"),
        ({"backup": GOOD["backup"], "offsite": {"prefix": "p"}}, "offsite: missing required option: bucket"),
        (
            {"backup": GOOD["backup"], "offsite": {"bucket": "b", "mode": "pull", "db": "x"}},
            "offsite: db, mode cannot be set here",
        ),
        (
            {"backup": GOOD["backup"], "offsite": {"bucket": "b", "multipart_threshold": "lots"}},
            "offsite: multipart_threshold: not a size: 'lots'",
        ),
        ({"backup": GOOD["backup"], "offsite": {"bucket": "b", "kms_key_id": "k"}}, "kms_key_id needs encryption"),
        ({"backup": GOOD["backup"], "offsite": {"bucket": "b", "concurrency": 0}}, "concurrency must be at least 1"),
        ({"backup": GOOD["backup"], "offsite": {"bucket": "b", "keep_min": 0}}, "keep_min must be at least 1"),
        ({"backup": GOOD["backup"], "offsite": {"bucket": "b", "storage_class": "COLD"}}, "storage_class: 'COLD'"),
    ],
)
def test_a_bad_backup_configuration_names_what_is_wrong(config, message):
    with pytest.raises(specs.SpecError, match=message):
        backup_job.resolve_config(config, environ={})


def test_secrets_in_the_configuration_file_are_warned_about_but_never_logged():
    logged = []
    config = {"backup": dict(GOOD["backup"]), "offsite": dict(GOOD["offsite"], aws_secret_access_key="s3cr3t")}
    _backup, offsite = backup_job.resolve_config(config, environ={}, log=logged.append)
    assert offsite["secret_key"] == "s3cr3t"
    assert logged == [
        "warning: offsite.secret_key is set in the configuration file, which the postgres group can read: "
        "move it to the environment file"
    ]
    assert "s3cr3t" not in "".join(logged)


def test_the_real_backup_job_refuses_a_bad_configuration_through_the_runner(tmp_path):
    path = tmp_path / "backup.json"
    path.write_text(json.dumps({"status_file": str(tmp_path / "s.json"), "backup": {"database": "d"}}))
    rc, out, err = run_main(["backup", "--config", str(path)])
    assert rc == dr_runner.EXIT_USAGE
    assert json.loads(out)["msg"] == "invalid configuration: backup: missing required option: backup_dir"
    assert "FAILED: invalid configuration: backup: missing required option: backup_dir" in err
    assert json.loads((tmp_path / "s.json").read_text())["last_run"]["ok"] is False


@pytest.mark.parametrize(
    ("offsite", "message"),
    [
        ({"bucket": "b", "kms_key_id": "k"}, "offsite: kms_key_id needs encryption=aws:kms"),
        ({"bucket": "b", "concurrency": 0}, "offsite: concurrency must be at least 1"),
        ({"bucket": "b", "multipart_chunksize": "big"}, "offsite: multipart_chunksize: not a size: 'big'"),
    ],
)
def test_the_verify_job_checks_the_offsite_options_as_the_module_does(offsite, message):
    config = {"source": "offsite", "restore": {"source_database": "tokotani", "backup_dir": "/b"}, "offsite": offsite}
    with pytest.raises(specs.SpecError, match=message):
        verify_job.resolve_config(config, environ={})


def test_the_verify_job_never_falls_back_past_a_damaged_newest_offsite_copy():
    base = {"source": "offsite", "restore": {"source_database": "tokotani", "backup_dir": "/b"}}
    assert verify_job.resolve_config(dict(base, offsite={"bucket": "b"}), environ={})["offsite"]["fallback"] == 0
    with pytest.raises(specs.SpecError, match="offsite: fallback cannot be set here: the verification job sets them"):
        verify_job.resolve_config(dict(base, offsite={"bucket": "b", "fallback": 3}), environ={})


# --------------------------------------------------------------------------- what runs on the host

CLOSURE = """
import json, sys
sys.modules["ansible"] = None  # a server has no Ansible
sys.path.insert(0, sys.argv[1])
from ansible_collections.tokotani.dr.plugins.module_utils.jobs import runner
prefix = "ansible_collections.tokotani.dr.plugins.module_utils."
names = []
for name, module in sys.modules.items():
    if name.startswith(prefix):
        path = module.__file__
        names.append(path[path.index("/module_utils/") + len("/module_utils/"):])
print(json.dumps({"closure": sorted(names), "declared": sorted(runner.HOST_MODULES)}))
"""


def test_the_runner_imports_without_ansible_exactly_the_files_it_declares():
    proc = subprocess.run(
        [sys.executable, "-I", "-c", CLOSURE, str(ROOT / ".collections")], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["closure"] == doc["declared"]
    assert len(set(dr_runner.HOST_MODULES)) == len(dr_runner.HOST_MODULES)
