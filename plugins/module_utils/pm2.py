# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pm2 engine of tokotani.dr: drive the pm2 CLI for one user's daemon, without a shell.

What it does for the modules pm2_process and pm2_info:

- finds pm2 (and the node that runs it) and runs it as a given system user with that
  user's PM2_HOME (``runuser`` when the module runs as root for another user);
- reads the process list from ``pm2 jlist``, whatever banners or warnings pm2 prints
  before the JSON, and never returns the processes' environment (it holds the app's
  secrets): only a fixed set of fields, with secret-looking arguments masked;
- reads an ecosystem file (through node, as pm2 does) for the apps' resolved script
  path and working directory only, so that a release switch is noticed;
- decides the actions for a desired state, waits until processes are online and stable,
  recognises a crash loop and returns the tail of the process's error log;
- ``pm2 save`` when the saved list differs, and ``pm2 startup systemd`` idempotently.

Everything that runs a command goes through ``module.run_command`` with an argv list.
"""

from __future__ import annotations

import contextlib
import datetime
import glob
import json
import os
import pwd
import re
import time

from ansible_collections.tokotani.dr.plugins.module_utils.errors import DrError
from ansible_collections.tokotani.dr.plugins.module_utils.text import STDERR_EXCERPT_LINES
from ansible_collections.tokotani.dr.plugins.module_utils.text import excerpt as _excerpt

MASK = "********"
SECRET_KEY_RE = re.compile(
    r"secret|token|password|passwd|pwd|key|credential|auth|cookie|session|private|dsn|database_url", re.IGNORECASE
)
# scheme://user:password@host - the password part (it may be empty user: ://:pw@host).
URL_PASSWORD_RE = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*:)(?P<password>[^\s@]+)(?P<tail>@)")
ARG_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Environment variables whose names look secret but hold paths or ids: never scrubbed from text.
NOT_SECRET_ENV = frozenset(
    (
        "PWD",
        "OLDPWD",
        "SSH_AUTH_SOCK",
        "XAUTHORITY",
        "DBUS_SESSION_BUS_ADDRESS",
        "XDG_SESSION_ID",
        "XDG_SESSION_TYPE",
        "XDG_SESSION_CLASS",
        "XDG_SESSION_DESKTOP",
    )
)
MIN_SECRET_LEN = 4

STATES = ("started", "stopped", "restarted", "reloaded", "absent")
RUNNING = ("online", "launching")
# Restarts seen while waiting that make a crash loop (one restart may be a slow dependency).
CRASH_LOOP_RESTARTS = 2
POLL_INTERVAL = 0.5

INSTALL_HINT = (
    "Install it with `npm install -g pm2` (as root, for every user; Node.js 18 or later), "
    "or set the executable option to the pm2 to use"
)
# pm2 reads a file as a process file (not as a script to run) when its name contains one of these.
CONFIG_FILE_KINDS = (
    (".json", "json"),
    (".yml", "yaml"),
    (".yaml", "yaml"),
    (".config.js", "js"),
    (".config.cjs", "js"),
    (".config.mjs", "mjs"),
)
ECOSYSTEM_MARK = "@@TOKOTANI_PM2_ECOSYSTEM@@"

# Runs with node in the ecosystem file's directory, as the pm2 user: loads the file the way pm2
# does and prints, for each app, only its name, resolved script, cwd, exec mode and instances.
# Never the env: the file may hold secrets.
ECOSYSTEM_JS = r"""
'use strict';
const fs = require('fs');
const path = require('path');
const vm = require('vm');
const url = require('url');
const MARK = '@@TOKOTANI_PM2_ECOSYSTEM@@';
function emit(obj) { process.stdout.write('\n' + MARK + JSON.stringify(obj) + '\n'); }
async function load(file, kind, pm2dir) {
  if (kind === 'json') {
    const code = '(' + fs.readFileSync(file, 'utf8') + ')';
    return vm.runInThisContext(code, { filename: file, displayErrors: false, timeout: 1000 });
  }
  if (kind === 'yaml') {
    let yaml;
    try { yaml = require(require.resolve('js-yaml', { paths: [pm2dir] })); } catch (e) { yaml = require('js-yaml'); }
    return yaml.load(fs.readFileSync(file, 'utf8'));
  }
  if (kind === 'mjs') {
    const mod = await import(url.pathToFileURL(file).href);
    return mod.default || mod;
  }
  return require(file);
}
async function main() {
  const file = path.resolve(process.argv[1]);
  const conf = await load(file, process.argv[2], process.argv[3] || '');
  let apps = conf && (conf.apps || conf.pm2) ? (conf.apps || conf.pm2) : conf;
  if (!Array.isArray(apps)) apps = [apps];
  const base = process.cwd();
  emit({ apps: apps.map((app) => {
    app = app || {};
    const script = app.script || app.cmd || app.command || null;
    const cwd = app.cwd ? path.resolve(base, String(app.cwd)) : base;
    let resolved = null;
    if (typeof script === 'string' && script.indexOf(' ') === -1) {
      const candidate = path.resolve(cwd, script);
      if (fs.existsSync(candidate)) resolved = candidate;
    }
    let name = app.name;
    if (!name && typeof script === 'string') name = path.basename(script, path.extname(script));
    const mode = app.exec_mode ? String(app.exec_mode).replace(/^(fork|cluster)$/, '$1_mode') : null;
    const n = Number(app.instances);
    return {
      name: name === undefined || name === null ? null : String(name),
      script: resolved,
      cwd: cwd,
      exec_mode: mode,
      instances: Number.isInteger(n) && n > 0 ? n : null,
    };
  }) });
}
main().catch((e) => { emit({ error: String((e && e.message) || e).split('\n')[0] }); process.exitCode = 1; });
"""


def process_argument_spec():
    """tokotani.dr.pm2_process (and the app of tokotani.dr.recovery_commit)."""
    return {
        "name": {"type": "str"},
        "ecosystem": {"type": "path"},
        "only": {"type": "list", "elements": "str"},
        "state": {"type": "str", "choices": list(STATES), "default": "started"},
        "recreate": {"type": "bool", "default": True},
        "restart_if_newer": {"type": "list", "elements": "path", "default": []},
        "ecosystem_env": {"type": "str"},
        "wait": {"type": "bool", "default": True},
        "min_uptime": {"type": "float", "default": 3},
        "wait_timeout": {"type": "int", "default": 60, "aliases": ["timeout"]},
        "log_lines": {"type": "int", "default": 20},
        "save": {"type": "bool", "default": False},
        "startup": {"type": "str", "choices": ["systemd"]},
        "user": {"type": "str", "aliases": ["run_as"]},
        "pm2_home": {"type": "path"},
        "executable": {"type": "path"},
    }


class Pm2Error(DrError):
    """A pm2 failure an operator can act on (the message, and the command, rc and stderr behind it)."""


# ---------------------------------------------------------------------------------------------
# Masking


def is_secret_key(key):
    """Whether a variable or option name looks like it holds a secret."""
    return bool(key) and bool(SECRET_KEY_RE.search(str(key)))


def mask_url_passwords(text):
    """scheme://user:password@host -> scheme://user:********@host, anywhere in text."""
    if not text:
        return text
    return URL_PASSWORD_RE.sub(lambda m: m.group("head") + MASK + m.group("tail"), str(text))


def mask_args(args):
    """A process's argument list with secret-looking values masked.

    ``--password x`` and ``--password=x`` (any flag whose name looks secret), ``API_KEY=x`` and
    passwords inside URLs are masked; everything else is kept.
    """
    if args is None:
        return []
    if isinstance(args, str):
        args = args.split()
    out = []
    mask_next = False
    for raw in args:
        arg = str(raw)
        if mask_next:
            out.append(MASK)
            mask_next = False
            continue
        if arg.startswith("-"):
            flag, sep = arg.partition("=")[:2]
            if is_secret_key(flag.lstrip("-")):
                if sep:
                    out.append(flag + "=" + MASK)
                else:
                    out.append(flag)
                    mask_next = True
                continue
        else:
            key, sep = arg.partition("=")[:2]
            if sep and ARG_KEY_RE.match(key) and is_secret_key(key):
                out.append(key + "=" + MASK)
                continue
        out.append(mask_url_passwords(arg))
    return out


def secret_values(procs):
    """Values in the processes' environment that must never appear in output (for scrubbing text)."""
    found = set()
    for proc in procs or []:
        env = proc.get("pm2_env") or {}
        sources = [env]
        if isinstance(env.get("env"), dict):
            sources.append(env["env"])
        for source in sources:
            for key, value in source.items():
                if not isinstance(value, str) or key in NOT_SECRET_ENV:
                    continue
                if is_secret_key(key) and len(value) >= MIN_SECRET_LEN:
                    found.add(value)
                for match in URL_PASSWORD_RE.finditer(value):
                    if len(match.group("password")) >= MIN_SECRET_LEN:
                        found.add(match.group("password"))
    return found


def scrub(text, secrets=()):
    """text without ANSI colours, known secret values or URL passwords."""
    if not text:
        return text
    text = ANSI_RE.sub("", str(text))
    for value in sorted(secrets, key=len, reverse=True):
        text = text.replace(value, MASK)
    return mask_url_passwords(text)


def excerpt(text, lines=STDERR_EXCERPT_LINES, secrets=()):
    """The last non-empty lines of a tool's output, scrubbed (text.excerpt of the scrubbed text)."""
    return _excerpt(scrub(text, secrets), lines)


# ---------------------------------------------------------------------------------------------
# pm2 jlist


def parse_jlist(stdout):
    """The process list printed by ``pm2 jlist``.

    pm2 prints the list as one line of JSON, but may print its banner, "Spawning PM2 daemon" lines
    or warnings (with ANSI colours, which contain ``[``) before or after it. The list is the line-
    starting ``[`` that decodes to a list of objects (the last one, preferring one that ends the
    output); an array inside the JSON never starts a line, so a cut-off list is an error, not [].
    """
    text = stdout or ""
    decoder = json.JSONDecoder()
    found = None
    for match in re.finditer(r"^\[", text, re.MULTILINE):
        try:
            value, end = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, list) and all(isinstance(item, dict) for item in value):
            found = value
            if not text[end:].strip():
                return value
    if found is None:
        lines = [line.strip() for line in ANSI_RE.sub("", text).splitlines() if line.strip()]
        first = lines[0][:200] if lines else "(nothing)"
        if "{" in first:  # a broken list would hold the processes' environment: never echo it
            first = "(JSON that could not be parsed)"
        raise Pm2Error(f"`pm2 jlist` printed no process list (JSON array); its output began with: {first}")
    return found


def _iso(epoch_ms):
    if not isinstance(epoch_ms, (int, float)) or epoch_ms <= 0:
        return None
    utc = datetime.timezone.utc  # noqa: UP017 - targets may run Python < 3.11
    stamp = datetime.datetime.fromtimestamp(epoch_ms / 1000.0, tz=utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def _mode(exec_mode):
    if not exec_mode:
        return None
    return str(exec_mode).replace("_mode", "")


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def status_of(proc):
    return (proc.get("pm2_env") or {}).get("status") or "unknown"


def name_of(proc):
    return proc.get("name") or (proc.get("pm2_env") or {}).get("name")


def summarize(proc, now=None):
    """The fields of one pm2 process that are safe to return: never its environment."""
    env = proc.get("pm2_env") or {}
    monit = proc.get("monit") or {}
    now = time.time() if now is None else now
    status = status_of(proc)
    started = env.get("pm_uptime")
    uptime = None
    started_at = None
    if status == "online" and isinstance(started, (int, float)) and started > 0:
        uptime = max(0, int(now - started / 1000.0))
        started_at = _iso(started)
    version = env.get("version")
    return {
        "name": name_of(proc),
        "pm_id": _int(proc.get("pm_id", env.get("pm_id"))),
        "pid": _int(proc.get("pid")) or 0,
        "status": status,
        "restarts": _int(env.get("restart_time")) or 0,
        "unstable_restarts": _int(env.get("unstable_restarts")) or 0,
        "uptime": uptime,
        "started_at": started_at,
        "created_at": _iso(env.get("created_at")),
        "cwd": env.get("pm_cwd"),
        "script": env.get("pm_exec_path"),
        "interpreter": env.get("exec_interpreter"),
        "exec_mode": _mode(env.get("exec_mode")),
        "instances": env.get("instances"),
        "namespace": env.get("namespace"),
        "version": None if version in (None, "N/A") else str(version),
        "node_version": env.get("node_version"),
        "autorestart": env.get("autorestart"),
        "memory": _int(monit.get("memory")),
        "cpu": monit.get("cpu"),
        "out_log": env.get("pm_out_log_path"),
        "error_log": env.get("pm_err_log_path"),
        "args": mask_args(env.get("args")),
        "node_args": mask_args(env.get("node_args")),
    }


def by_name(procs):
    """{name: [procs]} (a cluster-mode app has one entry per instance), in pm2's order."""
    out = {}
    for proc in procs or []:
        out.setdefault(name_of(proc), []).append(proc)
    return out


def aggregate_status(procs):
    """One status for all the instances of an app: 'absent', 'online', or the first other status."""
    if not procs:
        return "absent"
    statuses = [status_of(p) for p in procs]
    for status in statuses:
        if status != "online":
            return status
    return "online"


def status_text(names, grouped):
    """Diff text: one 'name: status' line per app."""
    return "".join(f"{name}: {aggregate_status(grouped.get(name))}\n" for name in names)


# ---------------------------------------------------------------------------------------------
# Ecosystem files


def ecosystem_kind(path):
    """How pm2 reads a process file (json, yaml, js, mjs), from its name; None when pm2 would run it as a script."""
    base = os.path.basename(path)
    for marker, kind in CONFIG_FILE_KINDS:
        if marker in base:
            return kind
    return None


def parse_ecosystem_output(stdout):
    """The apps printed by ECOSYSTEM_JS (the last marked line; the file itself may print too)."""
    payload = None
    for line in (stdout or "").splitlines():
        if line.startswith(ECOSYSTEM_MARK):
            payload = line[len(ECOSYSTEM_MARK) :]
    if payload is None:
        return None
    try:
        return json.loads(payload)
    except ValueError:
        return None


def select_apps(apps, only, path):
    """{name: app} of the apps to act on, in ``only``'s order (all of the file's apps without ``only``)."""
    names = [app.get("name") for app in apps]
    if any(not name for name in names):
        raise Pm2Error(f"every app in the ecosystem file {path} needs a name (or a script to name it after)")
    defined = {app["name"]: app for app in apps}
    if not only:
        return defined
    unknown = [name for name in only if name not in defined]
    if unknown:
        raise Pm2Error(
            f"unknown app {', '.join(repr(n) for n in unknown)}: not defined in the ecosystem file {path}, "
            f"which defines {', '.join(names) or 'no apps'}"
        )
    return {name: defined[name] for name in dict.fromkeys(only)}


# ---------------------------------------------------------------------------------------------
# Decisions


def differences(app, procs):
    """Why a running process does not run what the ecosystem file says now (script, cwd, mode, instances)."""
    reasons = []
    for proc in procs:
        env = proc.get("pm2_env") or {}
        if app.get("script") and env.get("pm_exec_path") and env.get("pm_exec_path") != app["script"]:
            reasons.append(f"script {env.get('pm_exec_path')} -> {app['script']}")
        if app.get("cwd") and env.get("pm_cwd") != app["cwd"]:
            reasons.append(f"cwd {env.get('pm_cwd')} -> {app['cwd']}")
        if app.get("exec_mode") and env.get("exec_mode") and env.get("exec_mode") != app["exec_mode"]:
            reasons.append(f"exec mode {_mode(env.get('exec_mode'))} -> {_mode(app['exec_mode'])}")
    if app.get("instances") and len(procs) != app["instances"]:
        reasons.append(f"instances {len(procs)} -> {app['instances']}")
    return list(dict.fromkeys(reasons))


def newer_files(procs, mtimes):
    """The files (of {path: mtime seconds}) modified after the oldest instance's last start."""
    starts = [(p.get("pm2_env") or {}).get("pm_uptime") for p in procs]
    starts = [s / 1000.0 for s in starts if isinstance(s, (int, float)) and s > 0]
    if not starts:
        return []
    oldest = min(starts)
    return [path for path, mtime in mtimes.items() if mtime > oldest]


def _decide(state, procs, app, mtimes):  # noqa: PLR0911 - a decision table
    """(action, reason) for one app, or None when it is already in state. app is None in name mode."""
    status = aggregate_status(procs)
    if state == "absent":
        return ("delete", f"status {status}") if procs else None
    if state == "stopped":
        return ("stop", f"status {status}") if any(status_of(p) != "stopped" for p in procs) else None
    if not procs:
        return ("start", "not in pm2's process list")
    changed = differences(app, procs) if app is not None else []
    if changed:
        return ("recreate", "; ".join(changed))
    if state in ("restarted", "reloaded"):
        return (state[:-2], f"state {state}")
    if any(status_of(p) not in RUNNING for p in procs):
        return ("start" if app is not None else "restart", f"status {status}")
    stale = newer_files(procs, mtimes)
    if stale:
        return ("restart", f"{', '.join(stale)} changed after the process started")
    return None


def plan(state, targets, grouped, apps=None, *, recreate=True, mtimes=None):
    """The actions that bring targets to state.

    grouped: {name: [procs]} from jlist. apps: {name: app} from the ecosystem file (ecosystem mode),
    None when processes are targeted by name. recreate: whether a process whose script, cwd, exec mode
    or instances differ from the file is deleted and started again. mtimes: {path: mtime} of files that
    restart an online process started before they changed. Returns a list of {name, action, reason}
    with action in start, recreate, restart, reload, stop, delete; targets already in state get none.
    """
    if state not in STATES:
        raise Pm2Error(f"unknown state {state!r}; use one of {', '.join(STATES)}")
    missing = [name for name in targets if not grouped.get(name)]
    if apps is None and state != "absent" and missing:
        raise Pm2Error(
            f"unknown app {', '.join(repr(n) for n in missing)}: pm2 has no process of that name "
            f"(it has {', '.join(sorted(n for n in grouped if n)) or 'none'}). "
            "To start a process that is not in pm2's list, give the ecosystem file (and only)."
        )
    actions = []
    for name in targets:
        app = apps[name] if apps is not None else None
        if app is not None and not recreate:
            app = {}
        decision = _decide(state, grouped.get(name) or [], app, mtimes or {})
        if decision:
            actions.append({"name": name, "action": decision[0], "reason": decision[1]})
    return actions


def commands(actions, ecosystem=None, ecosystem_env=None):
    """pm2 argv lists (without the executable) for the actions, in order: delete, stop, start, restart, reload.

    With an ecosystem file, start/restart/reload go through it with --only (so pm2 applies the file's
    current settings and env); a recreate is a delete followed by a start from the file.
    """
    names = {}
    for action in actions:
        names.setdefault(action["action"], []).append(action["name"])
    env_args = ["--env", ecosystem_env] if ecosystem and ecosystem_env else []
    out = []
    deleting = names.get("recreate", []) + names.get("delete", [])
    if deleting:
        out.append(["delete", *deleting])
    if names.get("stop"):
        out.append(["stop", *names["stop"]])
    starting = names.get("start", []) + names.get("recreate", [])
    if starting:
        if not ecosystem:
            raise Pm2Error("starting a process that is not in pm2's list needs the ecosystem file")
        out.append(["start", ecosystem, "--only", ",".join(starting), *env_args])
    for verb in ("restart", "reload"):
        if names.get(verb):
            if ecosystem:
                out.append([verb, ecosystem, "--only", ",".join(names[verb]), *env_args])
            else:
                out.append([verb, *names[verb]])
    return out


def expected_status(state):
    return {"stopped": "stopped", "absent": "absent"}.get(state, "online")


def assess(targets, grouped, baseline, min_uptime, now=None):
    """Where the targets are on the way to online and stable.

    baseline: {pm_id: restart count} when the wait began. Returns (stable, waiting, failures):
    waiting and failures are {name: reason}. A failure is an errored or stopped process, a process
    gone from the list, or a crash loop (CRASH_LOOP_RESTARTS restarts or more since the wait began).
    """
    now = time.time() if now is None else now
    waiting, failures = {}, {}
    for name in targets:
        procs = grouped.get(name) or []
        if not procs:
            failures[name] = "is no longer in pm2's process list"
            continue
        for proc in procs:
            env = proc.get("pm2_env") or {}
            status = status_of(proc)
            restarts = _int(env.get("restart_time")) or 0
            pm_id = _int(proc.get("pm_id", env.get("pm_id")))
            rose = restarts - baseline.get(pm_id, restarts)
            if status == "errored":
                failures[name] = f"errored: pm2 gave up restarting it (restarts {restarts})"
                break
            if status == "stopped":
                failures[name] = f"stopped: it exited (exit code {env.get('exit_code')}) and pm2 did not restart it"
                break
            if rose >= CRASH_LOOP_RESTARTS:
                failures[name] = f"restarted {rose} times while waiting for it to stay up"
                break
            started = env.get("pm_uptime")
            up = now - started / 1000.0 if isinstance(started, (int, float)) and started > 0 else 0.0
            if status != "online":
                waiting[name] = f"status {status}"
            elif up < min_uptime:
                waiting[name] = f"online for {up:.1f} s of the {min_uptime:g} s required"
    stable = not waiting and not failures
    return stable, waiting, failures


def next_poll(targets, grouped, min_uptime, now=None):
    """Seconds to sleep before looking again: until the youngest online target reaches min_uptime (at most 1 s),
    or POLL_INTERVAL while a target is not online yet."""
    now = time.time() if now is None else now
    remaining = 0.0
    for name in targets:
        for proc in grouped.get(name) or []:
            if status_of(proc) != "online":
                return POLL_INTERVAL
            started = (proc.get("pm2_env") or {}).get("pm_uptime")
            up = now - started / 1000.0 if isinstance(started, (int, float)) and started > 0 else 0.0
            remaining = max(remaining, min_uptime - up)
    return min(max(remaining + 0.05, 0.05), 1.0)


def dump_signature(entries):
    """What `pm2 save` records that matters at boot: name, script, cwd and whether it is stopped."""
    sig = []
    for entry in entries or []:
        env = entry.get("pm2_env") if isinstance(entry.get("pm2_env"), dict) else entry
        sig.append(
            (
                str(env.get("name") or entry.get("name")),
                str(env.get("pm_exec_path")),
                str(env.get("pm_cwd")),
                env.get("status") == "stopped",
            )
        )
    return sorted(sig)


def tail_file(path, lines=20, secrets=()):
    """The last lines of a log file (scrubbed), or [] when it cannot be read."""
    if not path or lines <= 0:
        return []
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 65536))
            data = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    kept = [line for line in scrub(data, secrets).splitlines() if line.strip()]
    return kept[-lines:]


# ---------------------------------------------------------------------------------------------
# Finding pm2 and node


def _is_exe(path):
    return bool(path) and os.path.isfile(path) and os.access(path, os.X_OK)


def _version_key(path):
    match = re.search(r"/v?(\d+)\.(\d+)\.(\d+)/", path)
    return tuple(int(x) for x in match.groups()) if match else (0, 0, 0)


def candidate_dirs(home, path_env):
    """Where pm2 lives when it is not on PATH: global npm prefixes, per-user prefixes, nvm, volta."""
    dirs = [d for d in (path_env or "").split(os.pathsep) if d]
    dirs += ["/usr/local/bin", "/usr/bin", "/bin", "/opt/nodejs/bin", "/usr/local/lib/node_modules/pm2/bin"]
    dirs += ["/usr/lib/node_modules/pm2/bin"]
    if home:
        dirs += [os.path.join(home, sub) for sub in (".npm-global/bin", ".local/bin", "bin", ".volta/bin")]
        dirs += sorted(glob.glob(os.path.join(home, ".nvm/versions/node/*/bin")), key=_version_key, reverse=True)
    return list(dict.fromkeys(dirs))


def find_pm2(executable, home, path_env):
    """The pm2 executable: the one given, else the first in PATH and the usual places."""
    if executable:
        if _is_exe(executable):
            return executable
        raise Pm2Error(f"the pm2 executable {executable} does not exist or is not executable. {INSTALL_HINT}.")
    searched = candidate_dirs(home, path_env)
    for directory in searched:
        path = os.path.join(directory, "pm2")
        if _is_exe(path):
            return path
    on_path = set((path_env or "").split(os.pathsep))
    extra = [d for d in searched if d not in on_path]
    raise Pm2Error(f"pm2 was not found (searched PATH, then {', '.join(extra)}). {INSTALL_HINT}.")


def pm2_package_dir(executable):
    """The pm2 npm package directory (holding package.json) behind the executable, or None."""
    real = os.path.realpath(executable)
    package = os.path.dirname(os.path.dirname(real))
    if os.path.isfile(os.path.join(package, "package.json")):
        return package
    return None


def find_node(executable, package_dir, path_env):
    """The node that runs pm2: beside it (nvm, volta, tarball installs), the package's prefix, else PATH."""
    candidates = [os.path.join(os.path.dirname(executable), "node")]
    if package_dir:
        prefix = os.path.dirname(os.path.dirname(os.path.dirname(package_dir)))  # <prefix>/lib/node_modules/pm2
        candidates.append(os.path.join(prefix, "bin", "node"))
    candidates += [os.path.join(d, "node") for d in (path_env or "").split(os.pathsep) if d]
    candidates += ["/usr/local/bin/node", "/usr/bin/node"]
    for path in candidates:
        if _is_exe(path):
            return path
    raise Pm2Error(
        "Node.js (node) was not found; pm2 needs it. "
        "Install it (Debian: apt-get install nodejs; pm2 7 needs Node.js 18 or later)."
    )


def read_pm2_version(package_dir):
    if not package_dir:
        return None
    try:
        with open(os.path.join(package_dir, "package.json"), encoding="utf-8") as handle:
            return json.load(handle).get("version")
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# The CLI


class Pm2:
    """One user's pm2 daemon, driven through the pm2 CLI with module.run_command."""

    def __init__(self, module, executable=None, user=None, pm2_home=None):
        self.module = module
        self.secrets = set()
        current = pwd.getpwuid(os.geteuid())
        if user and user != current.pw_name:
            try:
                entry = pwd.getpwnam(user)
            except KeyError:
                raise Pm2Error(f"the user {user!r} does not exist on this host") from None
        else:
            entry = current
        self.user = entry.pw_name
        self.uid = entry.pw_uid
        self.home = entry.pw_dir
        self.switch = entry.pw_uid != os.geteuid()
        if self.switch and os.geteuid() != 0:
            raise Pm2Error(
                f"acting as the user {self.user!r} needs root: run the task with become: true "
                f"(or become {self.user!r} directly and leave the user option out)"
            )
        if pm2_home:
            self.pm2_home = pm2_home
        elif not self.switch and os.environ.get("PM2_HOME"):
            self.pm2_home = os.environ["PM2_HOME"]
        else:
            self.pm2_home = os.path.join(self.home, ".pm2")
        path_env = os.environ.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        self.executable = find_pm2(executable, self.home, path_env)
        self.package_dir = pm2_package_dir(self.executable)
        self.node = find_node(self.executable, self.package_dir, path_env)
        self.version = read_pm2_version(self.package_dir)
        dirs = [os.path.dirname(self.node), os.path.dirname(self.executable), *path_env.split(os.pathsep)]
        self.path = os.pathsep.join(dict.fromkeys(d for d in dirs if d))
        self.runuser = None
        if self.switch:
            self.runuser = module.get_bin_path("runuser") or module.get_bin_path("sudo")
            if not self.runuser:
                raise Pm2Error(f"neither runuser nor sudo is installed: cannot run pm2 as {self.user!r}")

    # -- running ---------------------------------------------------------------------------

    def environment(self):
        return {
            "HOME": self.home,
            "PM2_HOME": self.pm2_home,
            "PATH": self.path,
            "USER": self.user,
            "LOGNAME": self.user,
        }

    def wrap(self, argv):
        """argv as the pm2 user: runuser (or sudo) and env with HOME, PM2_HOME, PATH when switching."""
        if not self.switch:
            return list(argv)
        assignments = [f"{key}={value}" for key, value in sorted(self.environment().items())]
        env_bin = self.module.get_bin_path("env") or "/usr/bin/env"
        if os.path.basename(self.runuser) == "sudo":
            return [self.runuser, "-n", "-u", self.user, "--", env_bin, *assignments, *argv]
        return [self.runuser, "-u", self.user, "--", env_bin, *assignments, *argv]

    def run(self, argv, cwd=None, check=True, as_root=False, what=None):
        """Run argv (as the pm2 user unless as_root); returns (rc, stdout, stderr); raises Pm2Error on rc != 0."""
        full = list(argv) if as_root else self.wrap(argv)
        rc, out, err = self.module.run_command(
            full, cwd=cwd or self.home, environ_update=self.environment(), check_rc=False
        )
        if check and rc != 0:
            raise Pm2Error(
                f"{what or ' '.join(argv[:2])} failed (rc {rc}): "
                f"{excerpt(err, 5, self.secrets) or excerpt(out, 5, self.secrets) or 'no output'}",
                cmd=full,
                rc=rc,
                stderr=excerpt(err, secrets=self.secrets),
            )
        return rc, out, err

    def pm2(self, args, cwd=None, check=True):
        return self.run([self.executable, *args], cwd=cwd, check=check, what="pm2 " + " ".join(args[:1]))

    # -- reading ---------------------------------------------------------------------------

    def daemon_running(self):
        """Whether this PM2_HOME's daemon runs (so that reading the list does not spawn one)."""
        try:
            with open(os.path.join(self.pm2_home, "pm2.pid"), encoding="utf-8") as handle:
                pid = int(handle.read().strip())
        except (OSError, ValueError):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                cmdline = handle.read()
        except OSError:
            return True
        return b"PM2" in cmdline or b"pm2" in cmdline

    def jlist(self, spawn=True):
        """The raw process list (with environments: never return it as is). [] when no daemon and not spawn."""
        if not spawn and not self.daemon_running():
            return []
        rc, out, err = self.run([self.executable, "jlist"], check=False)
        if rc != 0:
            raise Pm2Error(
                f"`pm2 jlist` failed (rc {rc}) for PM2_HOME {self.pm2_home}: {excerpt(err, 5) or 'no output'}",
                cmd=self.wrap([self.executable, "jlist"]),
                rc=rc,
                stderr=excerpt(err),
            )
        procs = parse_jlist(out)
        self.secrets |= secret_values(procs)
        return procs

    def ecosystem_apps(self, path):
        """[{name, script, cwd, exec_mode, instances}] of an ecosystem file, resolved as pm2 resolves them."""
        if not os.path.isfile(path):
            raise Pm2Error(f"the ecosystem file {path} does not exist (or is not a file)")
        kind = ecosystem_kind(path)
        if kind is None:
            raise Pm2Error(
                f"pm2 would run {path} as a script, not read it as an ecosystem file: its name must contain "
                ".config.js, .config.cjs, .config.mjs, .json, .yml or .yaml (for example ecosystem.config.js)"
            )
        argv = [self.node, "-e", ECOSYSTEM_JS, path, kind, self.package_dir or ""]
        rc, out, err = self.run(argv, cwd=os.path.dirname(path), check=False)
        parsed = parse_ecosystem_output(out)
        if rc != 0 or not parsed or "apps" not in parsed:
            detail = (parsed or {}).get("error") or excerpt(err, 3) or f"rc {rc}"
            raise Pm2Error(f"could not load the ecosystem file {path}: {scrub(detail)}", rc=rc)
        return parsed["apps"]

    def log_tails(self, names, grouped, lines):
        """{name: (log path, [last lines])} of each app's error log (its output log when that is empty)."""
        out = {}
        for name in names:
            for proc in grouped.get(name) or []:
                env = proc.get("pm2_env") or {}
                for path in (env.get("pm_err_log_path"), env.get("pm_out_log_path")):
                    tail = tail_file(path, lines, self.secrets)
                    if tail:
                        out[name] = (path, tail)
                        break
                if name in out:
                    break
        return out

    def describe(self):
        return {
            "executable": self.executable,
            "version": self.version,
            "node": self.node,
            "user": self.user,
            "home": self.pm2_home,
        }

    # -- acting ----------------------------------------------------------------------------

    def wait_stable(self, targets, min_uptime, timeout, log_lines, first=None):
        """Poll jlist until every target is online for min_uptime; raise Pm2Error on a crash or timeout."""
        deadline = time.monotonic() + timeout
        procs = first if first is not None else self.jlist()
        baseline = {}
        for proc in procs:
            env = proc.get("pm2_env") or {}
            baseline[_int(proc.get("pm_id", env.get("pm_id")))] = _int(env.get("restart_time")) or 0
        began = time.monotonic()
        while True:
            grouped = by_name(procs)
            stable, waiting, failures = assess(targets, grouped, baseline, min_uptime)
            if stable:
                return procs
            if failures or time.monotonic() >= deadline:
                problems = failures or waiting
                tails = self.log_tails(list(problems), grouped, log_lines)
                names = ", ".join(problems)
                if failures:
                    head = f"crash loop: {names} did not stay online (watched for {time.monotonic() - began:.0f} s)"
                else:
                    head = f"timeout: {names} not online for {min_uptime:g} s in a row within {timeout} s"
                lines = [head]
                for name, reason in problems.items():
                    lines.append(f"{name}: {reason}")
                    if name in tails:
                        lines.append(f"last lines of {tails[name][0]}:")
                        lines.extend("  " + line for line in tails[name][1])
                raise Pm2Error(
                    "\n".join(lines),
                    processes=[summarize(p) for p in procs if name_of(p) in targets],
                    logs={name: tail[1] for name, tail in tails.items()},
                )
            time.sleep(next_poll(targets, grouped, min_uptime))
            procs = self.jlist()

    def dump_path(self):
        return os.path.join(self.pm2_home, "dump.pm2")

    def dump_current(self, procs):
        """Whether dump.pm2 already holds what `pm2 save` would write now (as far as a boot is concerned)."""
        try:
            with open(self.dump_path(), encoding="utf-8") as handle:
                saved = json.load(handle)
        except (OSError, ValueError):
            return False
        if not isinstance(saved, list):
            return False
        return dump_signature(saved) == dump_signature(procs)

    def save(self):
        """pm2 save; the dump holds the processes' environment (secrets), so it is made private (0600)."""
        argv = [self.executable, "save", "--force"]
        self.run(argv, what="pm2 save")
        with contextlib.suppress(OSError):
            os.chmod(self.dump_path(), 0o600)
        return argv

    # -- startup ---------------------------------------------------------------------------

    def startup_systemd(self, check_mode):
        """Install and enable pm2-<user>.service (pm2 startup systemd -u USER --hp HOME) and start it.

        Returns (changed, unit name, argv lists run). The unit is written when missing or when it
        does not run this user's daemon with this PM2_HOME through an existing pm2.
        """
        unit = f"pm2-{self.user}"
        path = f"/etc/systemd/system/{unit}.service"
        if os.geteuid() != 0:
            raise Pm2Error(f"startup: systemd writes {path} and needs root: run the task with become: true")
        if os.path.basename(self.pm2_home.rstrip("/")) != ".pm2":
            raise Pm2Error(
                "startup: pm2's systemd unit runs the daemon with PM2_HOME=<home>/.pm2, "
                f"but pm2_home is {self.pm2_home}; use a pm2_home that ends in /.pm2"
            )
        if not os.path.isdir("/run/systemd/system"):
            raise Pm2Error("startup: systemd was requested but this host was not booted with systemd")
        systemctl = self.module.get_bin_path("systemctl")
        if not systemctl:
            raise Pm2Error("startup: systemd was requested but systemctl is not installed")
        hp = os.path.dirname(self.pm2_home.rstrip("/"))
        ran = []
        changed = False
        if not self._unit_current(path, hp):
            changed = True
            argv = [self.executable, "startup", "systemd", "-u", self.user, "--hp", hp]
            ran.append(argv)
            if not check_mode:
                self.run(argv, as_root=True, what="pm2 startup systemd")
                reload_argv = [systemctl, "daemon-reload"]
                ran.append(reload_argv)
                self.run(reload_argv, as_root=True, what="systemctl daemon-reload")
        if self.run([systemctl, "is-enabled", unit], as_root=True, check=False)[1].strip() != "enabled":
            changed = True
            argv = [systemctl, "enable", unit]
            ran.append(argv)
            if not check_mode:
                self.run(argv, as_root=True, what="systemctl enable")
        active = self.run([systemctl, "is-active", unit], as_root=True, check=False)[1].strip()
        if active not in ("active", "activating", "reloading") and not self.daemon_running():
            # No daemon yet: let systemd start it, so that it runs (and is stopped) as the unit.
            changed = True
            argv = [systemctl, "start", unit]
            ran.append(argv)
            if not check_mode:
                self.run(argv, as_root=True, what=f"systemctl start {unit}")
        return changed, unit, ran

    def _unit_current(self, path, hp):
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError:
            return False
        if f"User={self.user}\n" not in text or f"Environment=PM2_HOME={os.path.join(hp, '.pm2')}\n" not in text:
            return False
        match = re.search(r"^ExecStart=(\S+) resurrect$", text, re.MULTILINE)
        return bool(match) and _is_exe(match.group(1))


# ---------------------------------------------------------------------------------------------
# The two front doors


def _targets(params, cli):
    """(targets, apps or None, ecosystem path or None) from name / ecosystem / only."""
    ecosystem = params.get("ecosystem")
    only = [n for n in params.get("only") or [] if n] or ([params["name"]] if params.get("name") else [])
    if ecosystem:
        ecosystem = os.path.abspath(ecosystem)
        apps = select_apps(cli.ecosystem_apps(ecosystem), only, ecosystem)
        return list(apps), apps, ecosystem
    return list(dict.fromkeys(only)), None, None


def _mtimes(paths):
    out = {}
    for path in paths or []:
        try:
            out[path] = os.stat(path).st_mtime
        except OSError:
            raise Pm2Error(f"restart_if_newer: {path} does not exist") from None
    return out


def _verify(cli, state, targets, after, params):
    """After acting: wait for started/restarted/reloaded targets, check stopped/absent ones; the final list."""
    if params.get("wait", True) and state in ("started", "restarted", "reloaded") and targets:
        return cli.wait_stable(
            targets,
            float(params.get("min_uptime", 3)),
            int(params.get("wait_timeout", 60)),
            int(params.get("log_lines", 20)),
            first=after,
        )
    grouped = by_name(after)
    if state == "stopped":
        bad = [n for n in targets if any(status_of(p) != "stopped" for p in grouped.get(n, []))]
        if bad:
            raise Pm2Error(f"still not stopped after pm2 stop: {', '.join(bad)}")
    elif state == "absent":
        left = [n for n in targets if grouped.get(n)]
        if left:
            raise Pm2Error(f"still in pm2's process list after pm2 delete: {', '.join(left)}")
    return after


def ensure_process(module, params, check_mode=False):
    """pm2_process: bring the targeted processes to params['state']; returns the module result."""
    cli = Pm2(module, params.get("executable"), params.get("user"), params.get("pm2_home"))
    state = params.get("state") or "started"
    result = {"changed": False, "actions": [], "commands": [], "saved": False, "pm2": cli.describe()}

    if params.get("startup"):
        changed, unit, ran = cli.startup_systemd(check_mode)
        result.update(startup_unit=unit, changed=changed)
        result["commands"].extend(ran)

    targets, apps, ecosystem = _targets(params, cli)
    mtimes = _mtimes(params.get("restart_if_newer"))
    # Reading the list never spawns a daemon in check mode, or when there is nothing to start.
    spawn = not check_mode and state in ("started", "restarted", "reloaded")
    before = cli.jlist(spawn=spawn)
    grouped = by_name(before)
    actions = plan(state, targets, grouped, apps, recreate=params.get("recreate", True), mtimes=mtimes)
    argvs = commands(actions, ecosystem, params.get("ecosystem_env"))
    result["actions"] = actions
    result["commands"].extend([cli.executable, *args] for args in argvs)
    result["changed"] = result["changed"] or bool(actions)
    result["diff"] = {"before": status_text(targets, grouped)}

    if check_mode:
        acting = {action["name"] for action in actions}
        predicted = {n: expected_status(state) if n in acting else aggregate_status(grouped.get(n)) for n in targets}
        result["diff"]["after"] = "".join(f"{name}: {status}\n" for name, status in predicted.items())
        result["processes"] = [summarize(p) for p in before if name_of(p) in targets]
        if params.get("save") and cli.daemon_running() and (actions or not cli.dump_current(before)):
            result.update(saved=True, changed=True)
        return result

    try:
        for args in argvs:
            cli.pm2(args, cwd=os.path.dirname(ecosystem) if ecosystem else None)
        after = _verify(cli, state, targets, cli.jlist(spawn=spawn) if argvs else before, params)
        if params.get("save") and cli.daemon_running() and (actions or not cli.dump_current(after)):
            result["commands"].append(cli.save())
            result.update(saved=True, changed=True)
    except Pm2Error as err:
        err.details.setdefault("changed", result["changed"])
        err.details.setdefault("actions", actions)
        raise
    result["diff"]["after"] = status_text(targets, by_name(after))
    result["processes"] = [summarize(p) for p in after if name_of(p) in targets]
    return result


def process_info(module, params):
    """pm2_info: the processes of one user's daemon (all, or those named), safe to return."""
    cli = Pm2(module, params.get("executable"), params.get("user"), params.get("pm2_home"))
    running = cli.daemon_running()
    procs = cli.jlist(spawn=False) if running else []
    names = list(dict.fromkeys(params.get("name") or []))
    if names:
        procs = [p for p in procs if name_of(p) in names]
    grouped = by_name(procs)
    listed = names or list(grouped)
    status = {name: aggregate_status(grouped.get(name)) for name in listed}
    lines = int(params.get("log_lines") or 0)
    if lines < 0:
        raise Pm2Error("log_lines must not be negative")
    tails = cli.log_tails(listed, grouped, lines) if lines else {}
    return {
        "changed": False,
        "logs": {name: {"path": path, "lines": tail} for name, (path, tail) in tails.items()},
        "daemon_running": running,
        "processes": [summarize(p) for p in procs],
        "status": status,
        "online": [name for name, st in status.items() if st == "online"],
        "all_online": bool(listed) and all(st == "online" for st in status.values()),
        "pm2": cli.describe(),
    }
