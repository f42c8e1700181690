"""Unit tests of specs.resolve and size_to_bytes: the runner reads its configuration as the modules read options."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.tokotani.dr.plugins.module_utils import specs  # noqa: E402
from ansible_collections.tokotani.dr.plugins.module_utils.jobs import runner as dr_runner  # noqa: E402
from ansible_collections.tokotani.dr.plugins.module_utils.specs import SpecError, resolve, size_to_bytes  # noqa: E402

MIB = 1024 * 1024


def backup(values, environ=None):
    return resolve(specs.backup_argument_spec(), values, environ={} if environ is None else environ)


def offsite(values, environ=None):
    return resolve(specs.offsite_argument_spec(), values, environ={} if environ is None else environ)


# --------------------------------------------------------------------------- defaults and required options


def test_defaults_fill_every_option_of_the_spec():
    params = backup({"database": "tokotani", "backup_dir": "/srv/backups"})
    assert set(params) == set(specs.backup_argument_spec())
    assert params["format"] == "directory"
    assert params["keep_days"] == 14
    assert params["keep_min"] == 3
    assert params["login_port"] == 5432
    assert params["login_user"] == "postgres"
    assert params["compression"] is None
    assert params["space_check"] is True


def test_missing_required_option_is_named():
    with pytest.raises(SpecError, match="missing required option: backup_dir"):
        backup({"database": "tokotani"})


def test_null_counts_as_not_given():
    params = backup({"database": "tokotani", "backup_dir": "/b", "keep_days": None, "label": None})
    assert params["keep_days"] == 14
    assert params["label"] is None


# --------------------------------------------------------------------------- aliases


def test_aliases_resolve_to_the_option_name():
    params = backup({"db": "shop", "backup_dir": "/b", "port": 5433, "host": "db1", "user": "backup"})
    assert params["database"] == "shop"
    assert params["login_port"] == 5433
    assert params["login_host"] == "db1"
    assert params["login_user"] == "backup"
    assert "db" not in params and "port" not in params


def test_amazon_aws_aliases_of_the_s3_options():
    params = offsite(
        {"bucket": "b", "mode": "push", "aws_endpoint_url": "http://s3:5000", "aws_region": "ap-southeast-3"}
    )
    assert params["endpoint_url"] == "http://s3:5000"
    assert params["region"] == "ap-southeast-3"


def test_an_option_given_with_its_alias_too_is_refused():
    with pytest.raises(SpecError, match=r"database: set more than once \(as database and db\)"):
        backup({"database": "a", "db": "b", "backup_dir": "/b"})


# --------------------------------------------------------------------------- environment fallbacks


def test_environment_fallbacks_fill_options_not_given():
    env = {
        "AWS_ACCESS_KEY_ID": "AKIA-env",
        "AWS_SECRET_ACCESS_KEY": "secret-env",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_SESSION_TOKEN": "token-env",
    }
    params = offsite({"bucket": "b", "mode": "push"}, environ=env)
    assert params["access_key"] == "AKIA-env"
    assert params["secret_key"] == "secret-env"
    assert params["region"] == "eu-west-1"
    assert params["session_token"] == "token-env"


def test_fallbacks_are_tried_in_order_and_a_given_value_wins():
    env = {"AWS_REGION": "first", "AWS_DEFAULT_REGION": "second", "AWS_SECRET_ACCESS_KEY": "from-env"}
    params = offsite({"bucket": "b", "mode": "push", "secret_key": "given"}, environ=env)
    assert params["region"] == "first"
    assert params["secret_key"] == "given"


def test_empty_environment_variable_counts_as_unset():
    params = offsite({"bucket": "b", "mode": "push"}, environ={"AWS_ACCESS_KEY_ID": "", "AWS_ACCESS_KEY": "second"})
    assert params["access_key"] == "second"


def test_pgpassword_fills_login_password():
    params = backup({"database": "d", "backup_dir": "/b"}, environ={"PGPASSWORD": "pw"})
    assert params["login_password"] == "pw"


def test_resolve_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-os-environ")
    params = resolve(specs.offsite_argument_spec(), {"bucket": "b", "mode": "list"})
    assert params["secret_key"] == "from-os-environ"


# --------------------------------------------------------------------------- types


@pytest.mark.parametrize(
    ("option", "given", "expected"),
    [
        ("keep_days", "7", 7),
        ("keep_days", 7.0, 7),
        ("space_check", "no", False),
        ("space_check", "Yes", True),
        ("space_check", "1", True),
        ("space_check", 0, False),
        ("space_check_ratio", "0.5", 0.5),
        ("label", 42, "42"),
    ],
)
def test_values_are_converted_like_ansible_does(option, given, expected):
    assert backup({"database": "d", "backup_dir": "/b", option: given})[option] == expected


def test_path_options_expand_the_home_directory(monkeypatch):
    monkeypatch.setenv("HOME", "/home/ops")
    assert backup({"database": "d", "backup_dir": "~/backups"})["backup_dir"] == "/home/ops/backups"


@pytest.mark.parametrize(
    ("option", "given", "kind"),
    [
        ("keep_days", "two weeks", "int"),
        ("keep_days", 3.5, "int"),
        ("keep_days", True, "int"),
        ("space_check", "maybe", "bool"),
        ("space_check_ratio", "half", "float"),
    ],
)
def test_type_errors_name_the_option_and_the_type(option, given, kind):
    with pytest.raises(SpecError) as err:
        backup({"database": "d", "backup_dir": "/b", option: given})
    assert str(err.value) == f"{option}: {given!r} is not a valid {kind}"


def test_list_and_dict_options_must_have_their_type():
    spec = {"items": {"type": "list"}, "extra": {"type": "dict"}}
    assert resolve(spec, {"items": [1], "extra": {"a": 1}}, environ={}) == {"items": [1], "extra": {"a": 1}}
    with pytest.raises(SpecError, match="items: 'a' is not a valid list"):
        resolve(spec, {"items": "a"}, environ={})


# --------------------------------------------------------------------------- unknown options and choices


def test_unknown_options_are_refused_all_at_once():
    with pytest.raises(SpecError, match=r"unsupported option\(s\): colour, size"):
        backup({"database": "d", "backup_dir": "/b", "size": 1, "colour": "red"})


def test_choices_are_enforced():
    with pytest.raises(SpecError, match="format: 'tar' is not one of directory, plain, custom"):
        backup({"database": "d", "backup_dir": "/b", "format": "tar"})
    with pytest.raises(SpecError, match="mode: 'sync' is not one of push, pull, list, prune"):
        offsite({"bucket": "b", "mode": "sync"})


def test_a_choice_default_is_valid():
    assert offsite({"bucket": "b", "mode": "prune"})["checksum_algorithm"] == "CRC32"


def test_the_module_spec_and_the_runner_agree_on_secret_options():
    s3 = specs.s3_argument_spec()
    assert s3["secret_key"]["no_log"] is True
    assert s3["session_token"]["no_log"] is True
    assert specs.postgres_argument_spec()["login_password"]["no_log"] is True


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("16MB", 16 * MIB),
        ("16 MB", 16 * MIB),
        ("8MiB", 8 * MIB),
        ("16mb", 16 * MIB),
        ("1.5MB", int(1.5 * MIB)),
        ("512KB", 512 * 1024),
        ("1G", 1024 * MIB),
        ("2TB", 2 * 1024**4),
        ("100B", 100),
        ("100", 100),
        (5242880, 5242880),
    ],
)
def test_size_to_bytes_uses_binary_units_like_human_to_bytes(given, expected):
    assert size_to_bytes(given) == expected


@pytest.mark.parametrize("given", ["", "MB", "sixteen", "16 XB", "-1MB", "16 MB extra", True, None])
def test_size_to_bytes_refuses_what_is_not_a_size(given):
    with pytest.raises(SpecError, match="not a size"):
        size_to_bytes(given)


def test_size_to_bytes_agrees_with_ansible():
    formatters = pytest.importorskip("ansible.module_utils.common.text.formatters")
    for text in ("16MB", "8MB", "1KB", "3GB", "5M"):
        assert size_to_bytes(text) == formatters.human_to_bytes(text), text


# --------------------------------------------------------------------------- dr_job's secrets


def test_the_job_module_takes_every_secret_as_no_log_and_none_in_the_config():
    spec = specs.job_argument_spec()
    assert set(spec) == {"job", "config", *specs.JOB_SECRETS}
    assert all(spec[name]["no_log"] for name in specs.JOB_SECRETS)
    assert spec["job"]["choices"] == sorted(dr_runner.JOBS)


def test_job_secrets_reach_the_job_as_the_environment_file_gives_them():
    base = {"PATH": "/usr/bin", "AWS_SECRET_ACCESS_KEY": "from-the-host"}
    params = {
        "backup_key": "k" * 32,
        "backup_previous_keys": ["a" * 32, "b" * 32],
        "login_password": None,
        "access_key": "AK",
        "secret_key": "SK",
        "session_token": "",
    }
    environ = specs.job_environ(params, base)
    assert environ == {
        "PATH": "/usr/bin",
        "TOKOTANI_BACKUP_KEY": "k" * 32,
        "TOKOTANI_BACKUP_PREVIOUS_KEYS": f"{'a' * 32},{'b' * 32}",
        "AWS_ACCESS_KEY_ID": "AK",
        "AWS_SECRET_ACCESS_KEY": "SK",
    }
    assert base["AWS_SECRET_ACCESS_KEY"] == "from-the-host"  # the base is not changed
    resolved = specs.resolve(specs.key_argument_spec(), {}, environ)
    assert resolved["backup_previous_keys"] == ["a" * 32, "b" * 32]


def offsite_params(**given):
    return resolve(specs.offsite_argument_spec(), dict({"bucket": "b", "mode": "push"}, **given), environ={})


def test_offsite_constraints_turn_sizes_into_bytes_and_leave_the_params_alone():
    params = offsite_params(multipart_chunksize="32MB")
    checked = specs.offsite_constraints(params)
    assert checked["multipart_chunksize"] == 32 * MIB and checked["multipart_threshold"] == 16 * MIB
    assert params["multipart_chunksize"] == "32MB"


@pytest.mark.parametrize(
    ("given", "retention", "message"),
    [
        ({"kms_key_id": "k"}, False, "kms_key_id needs encryption=aws:kms"),
        ({"kms_key_id": "k", "encryption": "AES256"}, False, "kms_key_id needs encryption=aws:kms"),
        ({"multipart_threshold": "lots"}, False, "multipart_threshold: not a size: 'lots' (use for example 16MB)"),
        ({"concurrency": 0}, False, "concurrency must be at least 1"),
        ({"keep_min": 0}, True, "keep_days must not be negative and keep_min must be at least 1"),
        ({"keep_days": -1}, True, "keep_days must not be negative and keep_min must be at least 1"),
    ],
)
def test_offsite_constraints_name_what_is_wrong(given, retention, message):
    with pytest.raises(SpecError) as err:
        specs.offsite_constraints(offsite_params(**given), retention=retention)
    assert str(err.value) == message


def test_offsite_retention_constraints_are_the_jobs_only():
    assert specs.offsite_constraints(offsite_params(keep_min=0, keep_days=0))["keep_min"] == 0
    assert specs.offsite_constraints(offsite_params(kms_key_id="k", encryption="aws:kms"))["kms_key_id"] == "k"
