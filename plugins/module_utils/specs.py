# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Argument specs of the collection's modules, in one place for two front doors.

The modules hand these to AnsibleModule. The host-side runner (``dr_runner``, driven by the
systemd timers of the backup roles) has no Ansible on the host: it resolves its JSON
configuration against the same specs with ``resolve`` (aliases, environment fallbacks,
defaults, types and choices), so a timer run and a module run get the same parameters.
"""

from __future__ import annotations

import os
import re

from ansible_collections.tokotani.dr.plugins.module_utils.backup_keys import ENV_KEY, ENV_PREVIOUS_KEYS
from ansible_collections.tokotani.dr.plugins.module_utils.s3_offsite import (
    CHECKSUM_ALGORITHMS,
    ENCRYPTIONS,
    STORAGE_CLASSES,
)

try:
    from ansible.module_utils.basic import env_fallback
except ImportError:  # the host-side runner: no Ansible installed there

    def env_fallback(*args, **kwargs):
        """Stand-in with the same name, recognised by ``resolve`` like Ansible's."""
        for name in args:
            if name in os.environ:
                return os.environ[name]
        raise LookupError(args)


SSL_MODES = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
FORMATS = ["directory", "plain", "custom"]
COMPRESSIONS = ["zstd", "gzip", "none"]
RESTORE_MODES = ["replace", "stage", "swap", "discard", "into", "revert"]
OFFSITE_MODES = ["push", "pull", "list", "prune"]


def postgres_argument_spec():
    """The connection options every PostgreSQL module of the collection takes (doc fragment tokotani.dr.postgres)."""
    return {
        "login_host": {"type": "str", "aliases": ["host"]},
        "login_port": {"type": "int", "default": 5432, "aliases": ["port"]},
        "login_user": {"type": "str", "default": "postgres", "aliases": ["user"]},
        "login_password": {"type": "str", "no_log": True, "fallback": (env_fallback, ["PGPASSWORD"])},
        "login_unix_socket": {"type": "path"},
        "maintenance_db": {"type": "str", "default": "postgres"},
        "ssl_mode": {"type": "str", "choices": SSL_MODES},
        "ca_cert": {"type": "path"},
        "connect_timeout": {"type": "int", "default": 10},
        "pg_bindir": {"type": "path"},
    }


def s3_argument_spec():
    """The connection options of the tokotani.dr.s3 doc fragment, with amazon.aws's aliases and fallbacks."""
    return {
        "bucket": {"type": "str", "required": True},
        "prefix": {"type": "str", "default": ""},
        "region": {
            "type": "str",
            "aliases": ["aws_region", "ec2_region"],
            "fallback": (env_fallback, ["AWS_REGION", "AWS_DEFAULT_REGION", "EC2_REGION"]),
        },
        "endpoint_url": {
            "type": "str",
            "aliases": ["aws_endpoint_url", "ec2_url", "s3_url"],
            "fallback": (env_fallback, ["AWS_URL", "EC2_URL", "AWS_ENDPOINT_URL"]),
        },
        "addressing_style": {"type": "str", "default": "auto", "choices": ["auto", "path", "virtual"]},
        "access_key": {
            "type": "str",
            "no_log": False,
            "aliases": ["aws_access_key_id", "aws_access_key", "ec2_access_key"],
            "fallback": (env_fallback, ["AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY", "EC2_ACCESS_KEY"]),
        },
        "secret_key": {
            "type": "str",
            "no_log": True,
            "aliases": ["aws_secret_access_key", "aws_secret_key", "ec2_secret_key"],
            "fallback": (env_fallback, ["AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY", "EC2_SECRET_KEY"]),
        },
        "session_token": {
            "type": "str",
            "no_log": True,
            "aliases": ["aws_session_token", "security_token", "aws_security_token", "access_token"],
            "fallback": (env_fallback, ["AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "EC2_SECURITY_TOKEN"]),
        },
        "profile": {
            "type": "str",
            "aliases": ["aws_profile"],
            "fallback": (env_fallback, ["AWS_PROFILE", "AWS_DEFAULT_PROFILE"]),
        },
        "validate_certs": {"type": "bool", "default": True},
        "ca_bundle": {"type": "path", "aliases": ["aws_ca_bundle"], "fallback": (env_fallback, ["AWS_CA_BUNDLE"])},
        "retries": {"type": "int", "default": 3},
        "connect_timeout": {"type": "int", "default": 10},
        "read_timeout": {"type": "int", "default": 120},
    }


def key_argument_spec():
    """The backup key options (doc fragment tokotani.dr.backup_key): who signs, who verifies, what is refused."""
    return {
        "backup_key": {"type": "str", "no_log": True, "fallback": (env_fallback, [ENV_KEY])},
        "backup_previous_keys": {
            "type": "list",
            "elements": "str",
            "no_log": True,
            "default": [],
            "fallback": (env_fallback, [ENV_PREVIOUS_KEYS]),
        },
        "allow_unsigned": {"type": "bool", "default": False},
    }


# The secrets of a runner job and the environment variables they reach it by (systemd's EnvironmentFile for
# the timers, the module dr_job's no_log options for a playbook): the jobs' configuration never holds them.
JOB_SECRETS = {
    "backup_key": ENV_KEY,
    "backup_previous_keys": ENV_PREVIOUS_KEYS,
    "login_password": "PGPASSWORD",
    "access_key": "AWS_ACCESS_KEY_ID",
    "secret_key": "AWS_SECRET_ACCESS_KEY",
    "session_token": "AWS_SESSION_TOKEN",
}


def job_argument_spec():
    """The options of the module dr_job: the job, its configuration, and its secrets (no_log, none in the config)."""
    secrets = {**key_argument_spec(), **postgres_argument_spec(), **s3_argument_spec()}
    spec = {name: dict(secrets[name]) for name in JOB_SECRETS}
    spec["backup_previous_keys"].pop("default")
    spec["access_key"]["no_log"] = True
    return dict(
        spec,
        job={"type": "str", "required": True, "choices": ["backup", "verify"]},
        config={"type": "dict", "required": True},
    )


def job_environ(params, base):
    """``base`` (the environment) with the secrets given in ``params`` set as the jobs read them."""
    environ = dict(base)
    for name, variable in JOB_SECRETS.items():
        value = params.get(name)
        if value:
            environ[variable] = ",".join(value) if isinstance(value, list) else value
    return environ


def backup_argument_spec():
    """tokotani.dr.postgresql_backup."""
    spec = postgres_argument_spec()
    spec.update(
        database={"type": "str", "required": True, "aliases": ["db"]},
        backup_dir={"type": "path", "required": True},
        format={"type": "str", "default": "directory", "choices": FORMATS},
        compression={"type": "str", "choices": COMPRESSIONS},
        compression_level={"type": "int"},
        jobs={"type": "int", "default": 2},
        keep_days={"type": "int", "default": 14},
        keep_min={"type": "int", "default": 3},
        prune_legacy={"type": "bool", "default": False},
        label={"type": "str"},
        lock_timeout={"type": "int", "default": 300},
        space_check={"type": "bool", "default": True},
        space_check_ratio={"type": "float"},
        shrink_check={"type": "bool", "default": True},
        shrink_threshold={"type": "float", "default": 0.3},
        shrink_min_rows={"type": "int", "default": 1000},
        shrink_tables={"type": "dict", "default": {}},
        **keep_previous_argument_spec(),
        **server_log_argument_spec(),
    )
    spec.update(key_argument_spec())
    return spec


def shrink_settings(params):
    """(threshold, min_rows, per_table) of the suspicious-backup guard, checked; raises SpecError."""
    threshold = float(params.get("shrink_threshold", 0.3))
    min_rows = int(params.get("shrink_min_rows", 1000))
    per_table = params.get("shrink_tables") or {}
    if not 0 < threshold <= 1:
        raise SpecError(f"shrink_threshold must be a fraction above 0 and at most 1, got {threshold}")
    if min_rows < 0:
        raise SpecError(f"shrink_min_rows must be 0 or more, got {min_rows}")
    checked = {}
    for table, value in per_table.items():
        try:
            fraction = float(value)
        except (TypeError, ValueError):
            raise SpecError(f"shrink_tables.{table}: {value!r} is not a fraction") from None
        if not 0 < fraction <= 1:
            raise SpecError(f"shrink_tables.{table} must be above 0 and at most 1, got {fraction}")
        checked[str(table)] = fraction
    return threshold, min_rows, checked


def assertions_option():
    """The operator's SQL assertions: a list of {name, sql}."""
    return {
        "type": "list",
        "elements": "dict",
        "default": [],
        "options": {
            "name": {"type": "str", "required": True},
            "sql": {"type": "str", "required": True},
        },
    }


def check_argument_spec():
    """tokotani.dr.postgresql_check."""
    spec = postgres_argument_spec()
    spec.update(
        database={"type": "str", "required": True, "aliases": ["db"]},
        backup={"type": "str"},
        backup_dir={"type": "path"},
        source_database={"type": "str"},
        assertions=assertions_option(),
        growing_tables={"type": "list", "elements": "str", "default": []},
        fail_on_problem={"type": "bool", "default": True},
        **server_log_argument_spec(),
    )
    spec.update(key_argument_spec())
    return spec


def checklist_argument_spec():
    """tokotani.dr.recovery_checklist."""
    spec = postgres_argument_spec()
    spec.update(
        stage={"type": "str", "default": "checks", "choices": ["checks", "notify"]},
        server_name={"type": "str"},
        database={"type": "str", "aliases": ["db"]},
        login_os_user={"type": "str"},
        assertions=assertions_option(),
        manifest={"type": "str", "default": ""},
        growing_tables={"type": "list", "elements": "str", "default": []},
        pm2_apps={"type": "list", "elements": "str", "default": []},
        pm2_user={"type": "str"},
        pm2_home={"type": "path"},
        pm2_executable={"type": "path"},
        app_url={"type": "str", "default": "http://127.0.0.1:3000"},
        products_limit={"type": "int", "default": 5},
        http_timeout={"type": "int", "default": 10},
        alerts_timeout={"type": "float", "default": 15},
        alerts_delay={"type": "float", "default": 1},
        notify_tasks={"type": "str", "default": ""},
        notify_tasks_outcome={"type": "dict"},
        notify_webhook_url={"type": "str", "default": "", "no_log": True},
        notify_webhook_headers={"type": "dict", "default": {}, "no_log": True},
        notify_validate_certs={"type": "bool", "default": True},
        checklist={"type": "dict"},
    )
    spec.update(key_argument_spec())
    return spec


def suspicious_argument_spec():
    """accept_suspicious (doc fragment tokotani.dr.suspicious): latest around backups the guard marked."""
    return {"accept_suspicious": {"type": "bool", "default": False}}


def server_log_argument_spec():
    """server_log (doc fragment tokotani.dr.server_log): the server's log, quoted when a client tool fails."""
    return {"server_log": {"type": "path"}}


def keep_previous_argument_spec():
    """The retention of the databases restores keep (leftovers.plan_keep_previous): backup, restore, backup_info."""
    return {
        "keep_previous": {"type": "int", "default": 2},
        "keep_previous_days": {"type": "int", "default": 7},
    }


def restore_argument_spec():
    """tokotani.dr.postgresql_restore."""
    spec = postgres_argument_spec()
    spec.update(
        database={"type": "str", "required": True, "aliases": ["db"]},
        backup={"type": "str", "default": "latest"},
        backup_dir={"type": "path"},
        before={"type": "str"},
        mode={"type": "str", "default": "replace", "choices": RESTORE_MODES},
        confirm={"type": "bool", "default": False},
        source_database={"type": "str"},
        jobs={"type": "int", "default": 2},
        analyze={"type": "bool", "default": True},
        maintenance_work_mem={"type": "str", "default": "256MB"},
        work_dir={"type": "path"},
        assertions=assertions_option(),
        previous_database={"type": "str"},
        **suspicious_argument_spec(),
        expected_oid={"type": "int"},
        previous_oid={"type": "int"},
        staging_database={"type": "str"},
        staged_oid={"type": "int"},
        **keep_previous_argument_spec(),
        **server_log_argument_spec(),
    )
    spec.update(key_argument_spec())
    return spec


def app_release_info_argument_spec():
    """tokotani.dr.app_release_info."""
    spec = postgres_argument_spec()
    spec.update(
        base_dir={"type": "path", "default": "/srv/tokotani"},
        version={"type": "str"},
        migrations_dir={"type": "str", "default": "prisma/migrations"},
        database={"type": "str", "aliases": ["db"]},
        login_os_user={"type": "str"},
    )
    return spec


def app_release_argument_spec():
    """tokotani.dr.app_release."""
    spec = app_release_info_argument_spec()
    spec.update(
        version={"type": "str", "default": "previous"},
        newer_schema={"type": "str", "default": "fail", "choices": ["fail", "allow"]},
        replaced_failed={"type": "str"},
    )
    return spec


def app_backup_argument_spec():
    """tokotani.dr.app_backup."""
    return {
        "base_dir": {"type": "path", "default": "/srv/tokotani"},
        "keep": {"type": "int", "default": 10},
        "deploying": {"type": "str"},
        "database_backup": {"type": "str"},
        "database": {"type": "str", "aliases": ["db"]},
    }


RECOVERY_STATES = ["started", "step", "finished", "status"]


def dotenv_secret_argument_spec():
    """tokotani.dr.dotenv_secret."""
    return {
        "path": {"type": "path", "required": True},
        # a variable's name, not a secret
        "key": {"type": "str", "required": True, "no_log": False},
        "value": {"type": "str", "no_log": True},
        "state": {"type": "str", "default": "present", "choices": ["present", "rotated", "absent"]},
        "bytes": {"type": "int", "default": 32},
        "create": {"type": "bool", "default": False},
    }


def evidence_bundle_argument_spec():
    """tokotani.dr.evidence_bundle."""
    return {
        "dest": {"type": "path", "required": True},
        "name": {"type": "str", "required": True},
        "since": {"type": "float"},
        "files": {"type": "list", "elements": "path", "default": []},
        "changed_since": {"type": "list", "elements": "path", "default": []},
        "env_files": {"type": "list", "elements": "path", "default": []},
        "commands": {"type": "list", "elements": "dict", "default": []},
        "command_timeout": {"type": "int", "default": 60},
        "max_file_bytes": {"type": "int", "default": 64 * 1024 * 1024},
        "operator": {"type": "str"},
        "reason": {"type": "str"},
    }


def postgresql_revoke_argument_spec():
    """tokotani.dr.postgresql_revoke."""
    spec = postgres_argument_spec()
    spec.update(
        roles={"type": "list", "elements": "str", "required": True},
        keep={"type": "list", "elements": "str", "default": []},
        drop={"type": "bool", "default": True},
        terminate={"type": "bool", "default": True},
    )
    return spec


def offsite_object_argument_spec():
    """tokotani.dr.offsite_object."""
    spec = s3_argument_spec()
    spec.update(
        src={"type": "path", "required": True},
        name={"type": "str", "required": True},
        retention_days={"type": "int", "default": 0},
        lock_mode={"type": "str", "default": "governance", "choices": ["governance", "compliance"]},
        object_lock={"type": "str", "default": "auto", "choices": ["auto", "required", "off"]},
        content_type={"type": "str"},
    )
    return spec


def recovery_run_argument_spec():
    """tokotani.dr.recovery_run."""
    spec = postgres_argument_spec()
    spec.update(
        database={"type": "str", "required": True, "aliases": ["db"]},
        state={"type": "str", "default": "status", "choices": RECOVERY_STATES},
        state_dir={"type": "path", "required": True},
        run_id={"type": "str"},
        step={"type": "str"},
        databases={"type": "dict", "default": {}},
        outcome={"type": "str", "choices": ["recovered", "reverted", "failed", "refused"]},
        summary={"type": "str"},
        procedure={"type": "str", "default": "recover_db"},
        operator={"type": "str"},
        controller={"type": "str"},
        stale_after={"type": "int", "default": 900},
        break_lock={"type": "bool", "default": False},
        check_databases={"type": "bool", "default": True},
    )
    return spec


class SpecError(ValueError):
    """A configuration value the spec does not accept; the message names the option."""


def offsite_argument_spec():
    """tokotani.dr.backup_offsite."""
    spec = s3_argument_spec()
    spec.update(
        mode={"type": "str", "required": True, "choices": OFFSITE_MODES},
        backup_dir={"type": "path"},
        backup={"type": "str", "default": "latest"},
        before={"type": "str", "aliases": ["latest_before"]},
        written_before={"type": "str"},
        fallback={"type": "int", "default": 0},
        **suspicious_argument_spec(),
        database={"type": "str", "aliases": ["db"]},
        keep_days={"type": "int", "default": 14},
        keep_min={"type": "int", "default": 3},
        force={"type": "bool", "default": False},
        verify={"type": "bool", "default": True},
        client_encryption={"type": "bool", "default": True},
        encryption={"type": "str", "choices": list(ENCRYPTIONS)},
        kms_key_id={"type": "str", "no_log": False, "aliases": ["encryption_kms_key_id"]},
        storage_class={"type": "str", "choices": list(STORAGE_CLASSES)},
        checksum_algorithm={"type": "str", "default": "CRC32", "choices": list(CHECKSUM_ALGORITHMS)},
        multipart_threshold={"type": "str", "default": "16MB"},
        multipart_chunksize={"type": "str", "default": "16MB"},
        concurrency={"type": "int", "default": 8, "aliases": ["max_concurrency"]},
        lock_timeout={"type": "int", "default": 300},
    )
    spec.update(key_argument_spec())
    return spec


# The options of offsite_argument_spec given as sizes (16MB): offsite_constraints makes them bytes.
OFFSITE_SIZE_OPTIONS = ("multipart_threshold", "multipart_chunksize")


def offsite_constraints(params, *, retention=False):
    """What offsite_argument_spec cannot say by itself, for the module and the runner's jobs alike.

    Returns a copy of params with the size options in bytes (size_to_bytes); raises SpecError naming
    the option. With retention (the backup job, whose prune must keep the newest copy), keep_days must
    not be negative and keep_min must be at least 1; the module's mode=prune takes keep_min 0.
    """
    params = dict(params)
    if params.get("kms_key_id") and params.get("encryption") != "aws:kms":
        raise SpecError("kms_key_id needs encryption=aws:kms")
    for name in OFFSITE_SIZE_OPTIONS:
        try:
            params[name] = size_to_bytes(params[name])
        except SpecError as err:
            raise SpecError(f"{name}: {err}") from None
    if params["concurrency"] < 1:
        raise SpecError("concurrency must be at least 1")
    if (params.get("fallback") or 0) < 0:
        raise SpecError(
            f"fallback must be 0 or more (got {params['fallback']}): how many older offsite backups a pull of "
            "latest may try when the newest does not verify"
        )
    if retention and (params["keep_days"] < 0 or params["keep_min"] < 1):
        raise SpecError("keep_days must not be negative and keep_min must be at least 1")
    return params


_TRUE = {"true", "yes", "on", "1", "y"}
_FALSE = {"false", "no", "off", "0", "n"}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*$", re.IGNORECASE)


def size_to_bytes(value):
    """``16MB``, ``8MiB`` or a number of bytes -> int (binary units, like Ansible's human_to_bytes)."""
    if isinstance(value, bool):
        raise SpecError(f"not a size: {value!r} (use for example 16MB)")
    if isinstance(value, int):
        return value
    match = _SIZE_RE.match(str(value))
    if not match:
        raise SpecError(f"not a size: {value!r} (use for example 16MB)")
    number, unit = float(match.group(1)), match.group(2).upper()
    return int(number * 1024 ** "BKMGT".index(unit or "B"))


def _convert(name, kind, value):  # noqa: PLR0911 - one return per type
    if value is None:
        return None
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE or text in _FALSE:
                return text in _TRUE
            raise ValueError(value)
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "path":
            return os.path.expanduser(os.path.expandvars(str(value)))
        if kind in ("list", "dict"):
            if not isinstance(value, list if kind == "list" else dict):
                raise ValueError(value)
            return value
        return str(value)
    except (TypeError, ValueError):
        raise SpecError(f"{name}: {value!r} is not a valid {kind}") from None


def _given(spec, values):
    """values keyed by option name (aliases resolved); unknown keys and an option given twice are refused."""
    names = {}
    for name, opt in spec.items():
        names[name] = name
        for alias in opt.get("aliases", ()):
            names[alias] = name
    unknown = sorted(key for key in values if key not in names)
    if unknown:
        raise SpecError("unsupported option(s): " + ", ".join(unknown))
    given = {}
    for key, value in values.items():
        if names[key] in given:
            twice = sorted(k for k in values if names[k] == names[key])
            raise SpecError(f"{names[key]}: set more than once (as {' and '.join(twice)})")
        given[names[key]] = value
    return given


def resolve(spec, values, environ=None):
    """Module-style parameters from ``values`` (a config dict): aliases, env fallbacks, defaults, types, choices.

    Unknown keys are refused, as AnsibleModule refuses them.
    """
    environ = os.environ if environ is None else environ
    given = _given(spec, values)
    params = {}
    for name, opt in spec.items():
        value = given.get(name)
        if value is None and "fallback" in opt:
            for env_name in opt["fallback"][1]:
                if environ.get(env_name):
                    value = environ[env_name]
                    break
        if value is None:
            value = opt.get("default")
        if value is None and opt.get("required"):
            raise SpecError(f"missing required option: {name}")
        if opt.get("type") == "list" and opt.get("elements") == "str" and isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]  # as AnsibleModule does
        value = _convert(name, opt.get("type", "str"), value)
        if value is not None and opt.get("type") == "list" and opt.get("elements") == "dict" and "options" in opt:
            value = [_resolve_element(name, i, opt["options"], item, environ) for i, item in enumerate(value)]
        if value is not None and opt.get("choices") and value not in opt["choices"]:
            raise SpecError(f"{name}: {value!r} is not one of {', '.join(map(str, opt['choices']))}")
        params[name] = value
    return params


def _resolve_element(name, index, options, item, environ):
    """One dict of a list option with suboptions (``type: list, elements: dict, options: ...``)."""
    if not isinstance(item, dict):
        raise SpecError(f"{name}[{index}]: {item!r} is not a dict")
    try:
        return resolve(options, item, environ)
    except SpecError as err:
        raise SpecError(f"{name}[{index}]: {err}") from None


# --------------------------------------------------------------------------- runner job configurations


def option_names(spec, wanted):
    """The option names in wanted, with all their aliases."""
    names = set()
    for name in wanted:
        names.add(name)
        names.update(spec.get(name, {}).get("aliases", ()))
    return names


def check_top_level(config, keys):
    """A runner job's configuration must be a JSON object with only these keys (and status_file)."""
    if not isinstance(config, dict):
        raise SpecError("the configuration must be a JSON object")
    unknown = sorted(set(config) - set(keys))
    if unknown:
        expected = ", ".join(keys)
        raise SpecError(f"unsupported top-level key(s): {', '.join(unknown)} (expected {expected} and status_file)")


def job_section(config, name, spec, *, required=False, set_by_job=(), why="the job sets them", log=None):
    """One section of a runner job's configuration (module options for ``spec``), or None when absent.

    Options the job sets itself are refused (``why`` says who sets them); a secret option
    (``no_log`` in the spec) given in the file is allowed with a warning, since the file is
    readable by the service's group: secrets belong in the environment file.
    """
    value = config.get(name)
    if value is None:
        if required:
            raise SpecError(f"the configuration has no '{name}' section")
        return None
    if not isinstance(value, dict):
        raise SpecError(f"'{name}' must be a JSON object, not {type(value).__name__}")
    reserved = sorted(option_names(spec, set_by_job) & set(value))
    if reserved:
        raise SpecError(f"{name}: {', '.join(reserved)} cannot be set here: {why}")
    for option, opt in spec.items():
        if opt.get("no_log") and option_names(spec, [option]) & set(value) and log:
            log(
                f"warning: {name}.{option} is set in the configuration file, which the postgres group can read: "
                "move it to the environment file"
            )
    return value
