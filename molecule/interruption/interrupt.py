"""Interrupt playbooks/recover_db.yml at one step of its recovery, as a lost controller would.

Starts ``ansible-playbook -i <inventory> <playbook> -e confirm=true [-e ...]`` in a process group of
its own (stdout and stderr to --log), polls the recovery record on the server (``docker exec
<container> cat <record>``, every --poll seconds) until a run other than the one recorded before
the start is at --step (or at a later step of --steps: then it was late), waits until that step's
work is running on the server (a new ``docker exec`` session in the container, at most
--settle seconds) and --delay more seconds, then acts:

- ``int``: SIGINT to the process group, once (what Ctrl-C does);
- ``kill``: SIGKILL to the process group;
- ``restart``: ``docker restart <container>``.

It then waits for ansible-playbook to exit (SIGKILL to the group after --exit-timeout; after a restart,
the docker exec sessions such a killed controller left are ended and listed in ``orphans``), and for the
server to be quiet: after a restart, until ``systemctl is-system-running`` says running or degraded
and PostgreSQL accepts connections; then until no process in the container is an Ansible module or
a restore (a command line with one of --busy, or a ``docker exec`` session other than this
script's own probe) on --quiet-checks polls in a row. It prints one JSON object (action, step,
step_seen, late, rc, the end of the output, seconds, the record after) and exits 0; 2 when it
could not do its job (the playbook ended before the step, a timeout).

Standard library only; it talks to nothing but the local Docker engine and the playbook it starts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time

DEFAULT_STEPS = "identify,stop,restore,verify,swap,restart,serving"
DEFAULT_BUSY = ("AnsiballZ", "ansible-tmp", "BECOME-SUCCESS-", "pg_restore")
PROBE = ["ps", "-eo", "pid=,ppid=,args="]
CLOSED = "end"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--container", required=True, help="the server's container (docker exec target)")
    parser.add_argument("--record", required=True, help="the recovery record's path inside the container")
    parser.add_argument("--inventory", required=True)
    parser.add_argument("--action", required=True, choices=("int", "kill", "restart"))
    parser.add_argument("--step", required=True, help="the step to act at")
    parser.add_argument("--steps", default=DEFAULT_STEPS, help="the recovery's steps in order, comma-separated")
    parser.add_argument("--playbook", default="playbooks/recover_db.yml")
    parser.add_argument("--ansible-playbook", default="ansible-playbook", help="the ansible-playbook to run")
    parser.add_argument("--chdir", default=".", help="where to run it (the collection's root)")
    parser.add_argument("-e", "--extra-vars", action="append", default=[], help="more -e for the playbook")
    parser.add_argument("--log", required=True, help="the playbook's output goes here")
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between two reads of the record")
    parser.add_argument("--settle", type=float, default=10.0, help="at most this long for the step's work to start")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between the step's work starting and acting")
    parser.add_argument("--step-timeout", type=float, default=240.0)
    parser.add_argument("--exit-timeout", type=float, default=300.0)
    parser.add_argument("--quiet-timeout", type=float, default=600.0)
    parser.add_argument("--quiet-checks", type=int, default=3, help="quiet polls in a row that make it quiet")
    parser.add_argument("--busy", action="append", default=None, help="a command line part that means busy")
    parser.add_argument("--docker", default="docker")
    args = parser.parse_args(argv)
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    if args.step not in args.steps:
        parser.error(f"--step {args.step} is not one of --steps {','.join(args.steps)}")
    args.busy = tuple(args.busy) if args.busy else DEFAULT_BUSY
    return args


class Server:
    """The server container, through docker exec only."""

    def __init__(self, docker, container):
        self.docker = docker
        self.container = container

    def run(self, argv, timeout=30.0):
        """(rc, stdout) of argv inside the container; rc None when docker itself did not answer in time."""
        try:
            done = subprocess.run(
                [self.docker, "exec", self.container, *argv],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return None, ""
        return done.returncode, done.stdout

    def record(self, path):
        """The recovery record as a dict, None when there is none (or it cannot be read now)."""
        rc, out = self.run(["cat", path], timeout=15.0)
        if rc != 0:
            return None
        try:
            doc = json.loads(out)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None

    def processes(self):
        """[(pid, ppid, args)] inside the container, without this probe itself; None when unreadable."""
        rc, out = self.run(PROBE, timeout=15.0)
        if rc != 0:
            return None
        found = []
        probe = " ".join(PROBE)
        for line in out.splitlines():
            parts = line.split(None, 2)
            if len(parts) < 2 or not parts[0].isdigit() or not parts[1].isdigit():
                continue
            args = parts[2] if len(parts) == 3 else ""
            if args == probe:
                continue
            found.append((int(parts[0]), int(parts[1]), args))
        return found

    def restart(self):
        done = subprocess.run(
            [self.docker, "restart", self.container], capture_output=True, text=True, timeout=180, check=False
        )
        return done.returncode, (done.stdout + done.stderr).strip()


def sessions(procs):
    """The docker exec sessions among procs: their parent is outside the container (ppid 0), not PID 1."""
    return [p for p in procs if p[1] == 0 and p[0] != 1]


def busy(procs, patterns):
    """The processes that show work still going on: a module, a restore, any docker exec session."""
    found = sessions(procs)
    found += [p for p in procs if p not in found and any(pattern in p[2] for pattern in patterns)]
    return found


def reached(record, before_id, steps, target):
    """(reached, step_seen) for the record read now: a new run at target or later, or a new run closed."""
    if not record or record.get("run_id") in (None, before_id):
        return False, None
    index = steps.index(target)
    history = [item.get("step") for item in record.get("steps") or [] if isinstance(item, dict)]
    later = [steps.index(s) for s in history if s in steps]
    current = record.get("step")
    if record.get("state") != "running":
        return True, CLOSED
    if later and max(later) >= index:
        return True, current
    return False, current


def tail(path, lines=40):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().splitlines()[-lines:]
    except OSError:
        return []


def signal_group(proc, sig):
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def wait_exit(proc, timeout):
    """(rc, timed_out): the playbook's exit, after SIGKILL to its group when it outlives timeout."""
    try:
        return proc.wait(timeout=timeout), False
    except subprocess.TimeoutExpired:
        signal_group(proc, signal.SIGKILL)
        return proc.wait(timeout=30), True


def end_orphans(server):
    """SIGKILL to the docker exec sessions in the container (and their children); what they were."""
    procs = server.processes() or []
    orphans = sessions(procs)
    pids = {p[0] for p in orphans}
    pids |= {p[0] for p in procs if p[1] in pids}
    if pids:
        server.run(["kill", "-9", *sorted(str(pid) for pid in pids)], timeout=15.0)
    return [f"{p[0]} {p[2]}" for p in orphans][:10]


def wait_booted(server, deadline):
    """After docker restart: systemd up (running or degraded) and PostgreSQL accepting connections."""
    booted = False
    while time.monotonic() < deadline:
        if not booted:
            rc, out = server.run(["systemctl", "is-system-running"], timeout=15.0)
            booted = rc is not None and out.strip() in ("running", "degraded")
        if booted:
            ready, _out = server.run(["runuser", "-u", "postgres", "--", "psql", "-XAtq", "-c", "SELECT 1", "postgres"])
            if ready == 0:
                return True
        time.sleep(1.0)
    return False


def wait_quiet(server, patterns, checks, deadline):
    """(quiet, what was still busy last): no busy process on `checks` polls in a row."""
    quiet_polls = 0
    last = []
    while time.monotonic() < deadline:
        procs = server.processes()
        if procs is None:
            quiet_polls = 0
        else:
            last = busy(procs, patterns)
            quiet_polls = 0 if last else quiet_polls + 1
            if quiet_polls >= checks:
                return True, []
        time.sleep(0.3)
    return False, [f"{proc[0]} {proc[2]}" for proc in last][:10]


def wait_work(server, proc, known, settle):
    """Whether the step's work (a docker exec session newer than `known`) started within settle seconds."""
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline and proc.poll() is None:
        procs = server.processes() or []
        if any(proc[0] > known for proc in sessions(procs)):
            return True
        time.sleep(0.05)
    return False


def start(args, log):
    """ansible-playbook in a process group of its own, its output into log."""
    argv = [args.ansible_playbook, "-i", args.inventory, args.playbook, "-e", "confirm=true"]
    for extra in args.extra_vars:
        argv += ["-e", extra]
    log.write("$ " + " ".join(argv) + "\n")
    log.flush()
    return subprocess.Popen(
        argv, cwd=args.chdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def wait_step(args, server, proc, before_id, result):
    """Poll the record until a new run reached the step; False (and result's problem) when none did."""
    deadline = time.monotonic() + args.step_timeout
    record = None
    while time.monotonic() < deadline:
        ended = proc.poll() is not None
        # after the playbook ended, one last read: the run may have reached the step between two polls
        record = server.record(args.record)
        hit, seen = reached(record, before_id, args.steps, args.step)
        if hit:
            result.update(run_id=record.get("run_id"), step_seen=seen, late=ended or seen != args.step)
            return True
        if ended:
            break
        time.sleep(args.poll)
    if record and record.get("run_id") != before_id:
        result["run_id"] = record.get("run_id")
    result["problem"] = (
        f"the playbook ended (rc {proc.returncode}) before a new run reached step {args.step}"
        if proc.poll() is not None
        else f"no new run reached step {args.step} within {args.step_timeout:.0f} s"
    )
    return False


def act(args, server, proc, result):
    """Once the step's work runs on the server (and --delay later): the action."""
    result["step_when_acting"] = CLOSED
    if result["step_seen"] != CLOSED:
        known = max((proc[0] for proc in server.processes() or []), default=0)
        result["work_seen"] = wait_work(server, proc, known, args.settle)
        if args.delay > 0:
            time.sleep(args.delay)
        now = server.record(args.record) or {}
        result["step_when_acting"] = now.get("step") if now.get("state") == "running" else CLOSED
        if now.get("run_id") != result["run_id"]:
            result["step_when_acting"] = None
    result["late"] = result["late"] or result["step_when_acting"] != args.step
    if args.action == "int":
        signal_group(proc, signal.SIGINT)
    elif args.action == "kill":
        signal_group(proc, signal.SIGKILL)
    else:
        rc, said = server.restart()
        if rc != 0:
            result["problem"] = f"docker restart failed: {said}"
    result["acted"] = True


def drive(args):
    started = time.monotonic()
    server = Server(args.docker, args.container)
    before = server.record(args.record)
    before_id = before.get("run_id") if before else None
    result = {
        "action": args.action,
        "step": args.step,
        "steps": args.steps,
        "previous_run_id": before_id,
        "run_id": None,
        "step_seen": None,
        "step_when_acting": None,
        "late": False,
        "work_seen": False,
        "acted": False,
        "acted_at": None,
        "rc": None,
        "timed_out": False,
        "quiet": False,
        "still_busy": [],
        "orphans": [],
        "problem": None,
    }
    with open(args.log, "w", encoding="utf-8") as log:
        proc = start(args, log)
    if wait_step(args, server, proc, before_id, result):
        act(args, server, proc, result)
        result["acted_at"] = round(time.monotonic() - started, 2)
    result["rc"], result["timed_out"] = wait_exit(proc, args.exit_timeout)
    deadline = time.monotonic() + args.quiet_timeout
    if args.action == "restart" and result["acted"] and not wait_booted(server, deadline):
        result["problem"] = result["problem"] or "the server did not boot again (systemd, PostgreSQL)"
    if args.action == "restart" and result["acted"] and result["timed_out"]:
        # A docker exec that the controller started while the container was booting can hang with its module
        # never sent (Docker's race, not the playbook's: over SSH the connection would be refused). The
        # controller is gone now, so the sessions it left are nobody's work: end them and say so.
        result["orphans"] = end_orphans(server)
    result["quiet"], result["still_busy"] = wait_quiet(server, args.busy, args.quiet_checks, deadline)
    if not result["quiet"]:
        result["problem"] = result["problem"] or f"the server was not quiet within {args.quiet_timeout:.0f} s"
    result["record"] = server.record(args.record)
    result["output"] = tail(args.log)
    result["seconds"] = round(time.monotonic() - started, 2)
    return result


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    result = drive(args)
    print(json.dumps(result, indent=1, sort_keys=True))
    return 0 if result["problem"] is None and not result["timed_out"] else 2


if __name__ == "__main__":
    sys.exit(main())
