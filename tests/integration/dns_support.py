"""Real DNS services for the dns_switch tests: a BIND 9 ``named`` of the test's own, and moto's Route 53 API.

``named`` runs in the foreground (``-g``) as a child of the test, with a configuration, zone and journal in a
temporary directory, listening on 127.0.0.1 only (UDP and TCP) on a random free port, no recursion, no notify,
no control channel: the system's /etc/bind and its service are never used. As root it simply stays root (no
``-u``): the temporary directory is root's. The zone allows dynamic updates signed with one TSIG key.

The records are checked with ``dig`` (bind9-dnsutils) and boto3, independently of what the role reads. The role
itself runs through ansible-playbook with a playbook the test writes; its secrets go in a 0600 extra-vars file,
never on a command line.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
from backup_support import VENV_BIN, module_env
from botocore.config import Config
from helpers import LOOPBACK, ROOT, free_port, stop_process, tail

NAMED = Path("/usr/sbin/named")
ZONE = "shop.test"
KEY_NAME = "tokotani-dr-switch"
ALGORITHM = "hmac-sha256"
START_ATTEMPTS = 3

ZONE_FILE = """$TTL 300
@       IN SOA  ns1.{zone}. hostmaster.{zone}. ( 1 3600 600 86400 60 )
@       IN NS   ns1.{zone}.
ns1     IN A    127.0.0.1
www     IN A    192.0.2.10
pair    IN A    192.0.2.21
pair    IN A    192.0.2.22
v6      IN AAAA 2001:db8::10
alias   IN CNAME lb1.example.net.
"""


def bind_missing() -> str | None:
    missing = [str(p) for p in (NAMED, Path("/usr/bin/dig")) if not p.exists()]
    if missing:
        return (
            f"BIND 9 is not installed (missing {', '.join(missing)}): `make integration` installs it "
            "(scripts/ensure.sh bind9; Debian: apt-get install bind9 bind9-utils bind9-dnsutils)"
        )
    return None


@dataclass
class Named:
    """One running named: its port, its TSIG key and its directory."""

    port: int
    process: subprocess.Popen
    directory: Path
    log: Path
    secret: str = field(repr=False)
    zone: str = ZONE
    key_name: str = KEY_NAME

    def dig(self, name: str, rtype: str = "A", tcp: bool = False) -> list[tuple[str, int]]:
        """(value, ttl) of every record of name/rtype, asked of this server with dig; [] when there is none."""
        fqdn = name if name.endswith(".") else f"{name}.{self.zone}."
        argv = ["dig", "+noall", "+answer", "+norecurse", "+time=3", "+tries=2", f"@{LOOPBACK}", "-p", str(self.port)]
        argv += ["+tcp"] if tcp else []
        argv += [fqdn, rtype]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        if result.returncode != 0:
            raise AssertionError(f"dig failed (rc {result.returncode}): {result.stdout}{result.stderr}")
        found = []
        for line in result.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 5 and parts[3] == rtype and parts[0].lower() == fqdn.lower():
                found.append((parts[4].lower(), int(parts[1])))
        return sorted(found)

    def values(self, name: str, rtype: str = "A") -> list[str]:
        return [value for value, _ttl in self.dig(name, rtype)]

    def set(self, name: str, rtype: str, values: list[str], ttl: int = 300) -> None:
        """Give name/rtype exactly these values (none: remove it) with BIND's own nsupdate, signed with the key."""
        fqdn = f"{name}.{self.zone}."
        keyfile = self.directory / "client.key"
        if not keyfile.exists():
            keyfile.write_text(f'key "{self.key_name}" {{ algorithm {ALGORITHM}; secret "{self.secret}"; }};\n')
            keyfile.chmod(0o600)
        script = [f"server {LOOPBACK} {self.port}", f"zone {self.zone}.", f"update delete {fqdn} {rtype}"]
        script += [f"update add {fqdn} {ttl} {rtype} {value}" for value in values]
        script += ["send", ""]
        result = subprocess.run(
            ["nsupdate", "-v", "-k", str(keyfile)],
            input="\n".join(script),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"nsupdate failed (rc {result.returncode}): {result.stdout}{result.stderr}")

    def settings(self, **extra) -> dict:
        """The role's nsupdate variables for this server (with the right secret unless extra says otherwise)."""
        settings = {
            "dns_switch_provider": "nsupdate",
            "dns_switch_zone": self.zone,
            "dns_switch_nsupdate_server": LOOPBACK,
            "dns_switch_nsupdate_port": self.port,
            "dns_switch_tsig_key_name": self.key_name,
            "dns_switch_tsig_algorithm": ALGORITHM,
            "dns_switch_tsig_secret": self.secret,
            "dns_switch_wait_timeout": 10,
        }
        settings.update(extra)
        return settings

    def stop(self) -> None:
        stop_process(self.process, timeout=10)


def _config(directory: Path, port: int, secret: str) -> str:
    return f"""// tests/integration/dns_support.py: a test's own named, loopback only
options {{
    directory "{directory}";
    pid-file "{directory}/named.pid";
    session-keyfile "{directory}/session.key";
    managed-keys-directory "{directory}";
    bindkeys-file "{directory}/bind.keys";
    dump-file "{directory}/named_dump.db";
    statistics-file "{directory}/named.stats";
    listen-on port {port} {{ {LOOPBACK}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    allow-query {{ {LOOPBACK}; }};
    dnssec-validation no;
    notify no;
    empty-zones-enable no;
}};
controls {{ }};
key "{KEY_NAME}" {{
    algorithm {ALGORITHM};
    secret "{secret}";
}};
zone "{ZONE}" {{
    type primary;
    file "{directory}/{ZONE}.db";
    update-policy {{ grant {KEY_NAME} zonesub A AAAA CNAME; }};
}};
"""


def _answers(port: int) -> bool:
    for transport in ("+notcp", "+tcp"):
        result = subprocess.run(
            [
                "dig",
                "+short",
                "+norecurse",
                "+time=1",
                "+tries=1",
                transport,
                f"@{LOOPBACK}",
                "-p",
                str(port),
                ZONE,
                "SOA",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if result.returncode != 0 or not result.stdout.strip():
            return False
    return True


def start_named(workdir: Path) -> Named:
    """Start a named for the test zone on a free loopback port; wait until it answers over UDP and TCP."""
    problem = bind_missing()
    if problem:
        pytest.fail(problem, pytrace=False)
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    last = ""
    for attempt in range(1, START_ATTEMPTS + 1):
        directory = workdir / f"named-{attempt}"
        directory.mkdir(mode=0o700)
        port = free_port()
        conf = directory / "named.conf"
        conf.write_text(_config(directory, port, secret))
        conf.chmod(0o600)
        (directory / "bind.keys").write_text("")
        (directory / f"{ZONE}.db").write_text(ZONE_FILE.format(zone=ZONE))
        log = directory / "named.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(NAMED), "-4", "-g", "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT, cwd=directory
            )
        server = Named(port=port, process=process, directory=directory, log=log, secret=secret)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and process.poll() is None:
            if _answers(port):
                return server
            time.sleep(0.2)
        last = tail(log)
        server.stop()
    raise AssertionError(f"named did not start in {START_ATTEMPTS} attempts; last log:\n{last}")


def serve_named(workdir: Path) -> Iterator[Named]:
    """Body of a fixture: one named for the fixture's scope, stopped and removed at the end."""
    server = start_named(workdir)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


def route53_client(url: str, access_key: str, secret_key: str):
    return boto3.client(
        "route53",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(retries={"mode": "standard", "total_max_attempts": 2}),
    )


@dataclass
class HostedZone:
    """A hosted zone in moto's Route 53, with the records of ZONE_FILE's www."""

    url: str
    zone_id: str
    name: str
    access_key: str
    secret_key: str = field(repr=False)

    def client(self):
        return route53_client(self.url, self.access_key, self.secret_key)

    def values(self, name: str, rtype: str = "A") -> list[str]:
        return [value for value, _ttl in self.records(name, rtype)]

    def records(self, name: str, rtype: str = "A") -> list[tuple[str, int]]:
        """(value, ttl) of name/rtype, read through the API with boto3."""
        fqdn = name if name.endswith(".") else f"{name}.{self.name}."
        found = []
        pages = self.client().get_paginator("list_resource_record_sets").paginate(HostedZoneId=self.zone_id)
        for page in pages:
            for rrset in page["ResourceRecordSets"]:
                if rrset["Name"].lower() == fqdn.lower() and rrset["Type"] == rtype:
                    found += [(r["Value"].lower(), int(rrset["TTL"])) for r in rrset.get("ResourceRecords", [])]
        return sorted(found)

    def upsert(self, name: str, rtype: str, values: list[str], ttl: int = 300) -> None:
        fqdn = f"{name}.{self.name}."
        change = {
            "Action": "UPSERT",
            "ResourceRecordSet": {
                "Name": fqdn,
                "Type": rtype,
                "TTL": ttl,
                "ResourceRecords": [{"Value": value} for value in values],
            },
        }
        self.client().change_resource_record_sets(HostedZoneId=self.zone_id, ChangeBatch={"Changes": [change]})

    def alias(self, name: str, target: str) -> None:
        """Make name an A alias record of target (a name of this zone)."""
        change = {
            "Action": "UPSERT",
            "ResourceRecordSet": {
                "Name": f"{name}.{self.name}.",
                "Type": "A",
                "AliasTarget": {
                    "HostedZoneId": self.zone_id,
                    "DNSName": f"{target}.{self.name}.",
                    "EvaluateTargetHealth": False,
                },
            },
        }
        self.client().change_resource_record_sets(HostedZoneId=self.zone_id, ChangeBatch={"Changes": [change]})

    def settings(self, **extra) -> dict:
        settings = {
            "dns_switch_provider": "route53",
            "dns_switch_zone": self.name,
            "dns_switch_route53_endpoint_url": self.url,
            "dns_switch_route53_access_key": self.access_key,
            "dns_switch_route53_secret_key": self.secret_key,
            "dns_switch_wait_timeout": 10,
        }
        settings.update(extra)
        return settings


def hosted_zone(url: str, name: str) -> HostedZone:
    """Create the hosted zone name in the Route 53 API at url, with www A 192.0.2.10 (TTL 300)."""
    access_key = "AKIA" + secrets.token_hex(8).upper()
    secret_key = "r53-" + secrets.token_urlsafe(24)
    client = route53_client(url, access_key, secret_key)
    created = client.create_hosted_zone(Name=f"{name}.", CallerReference=secrets.token_hex(8))
    zone = HostedZone(
        url=url,
        zone_id=created["HostedZone"]["Id"].split("/")[-1],
        name=name,
        access_key=access_key,
        secret_key=secret_key,
    )
    zone.upsert("www", "A", ["192.0.2.10"])
    return zone


@dataclass
class RoleRun:
    rc: int
    output: str
    result: dict | None

    @property
    def text(self) -> str:
        """The output with every run of whitespace as one space (the YAML callback wraps long messages)."""
        return " ".join(self.output.split())

    @property
    def changed_count(self) -> int:
        """The play recap's changed= count for localhost."""
        match = re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)", self.output)
        if not match:
            raise AssertionError(f"no play recap in the output:\n{self.output[-3000:]}")
        return int(match.group(1))


def run_role(
    workdir: Path,
    variables: dict,
    entry_points: tuple[str, ...] = ("main",),
    flags: tuple[str, ...] = (),
    env: dict | None = None,
) -> RoleRun:
    """Run tokotani.dr.dns_switch on localhost, once per entry point in order, in one ansible-playbook run.

    The variables (secrets included) go in a 0600 extra-vars file. dns_switch_result is written to a JSON file
    in an always: section, so that it is there after a failure too. Returns rc, stdout+stderr and the result.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    stamp = secrets.token_hex(4)
    result_file = workdir / f"result-{stamp}.json"
    extra = workdir / f"vars-{stamp}.json"
    extra.write_text(json.dumps(variables))
    extra.chmod(0o600)
    steps = [
        {
            "name": f"Run tokotani.dr.dns_switch - {entry}",
            "ansible.builtin.include_role": {"name": "tokotani.dr.dns_switch", "tasks_from": entry},
        }
        for entry in entry_points
    ]
    play = [
        {
            "name": "dns_switch integration test",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Switch",
                    "block": steps,
                    "always": [
                        {
                            "name": "Keep the result",
                            "ansible.builtin.copy": {
                                "content": "{{ dns_switch_result | default(none) | to_json }}",
                                "dest": str(result_file),
                                "mode": "0600",
                            },
                            "changed_when": False,
                            "check_mode": False,
                        }
                    ],
                }
            ],
        }
    ]
    playbook = workdir / f"play-{stamp}.yml"
    playbook.write_text(json.dumps(play))
    run_env = module_env(
        {
            "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default",
            "ANSIBLE_FORCE_COLOR": "0",
            # nothing of the machine's own AWS set-up: only what the test gives
            "AWS_CONFIG_FILE": str(workdir / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "no-aws-credentials"),
        }
    )
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_URL"):
        run_env.pop(name, None)
    run_env.update(env or {})
    argv = [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", str(playbook), "-e", f"@{extra}"]
    argv += ["-e", f"ansible_python_interpreter={VENV_BIN / 'python'}", *flags]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=run_env, cwd=ROOT, timeout=300, check=False)
    finally:
        extra.unlink(missing_ok=True)
    result = json.loads(result_file.read_text()) if result_file.exists() else None
    return RoleRun(rc=proc.returncode, output=proc.stdout + proc.stderr, result=result)
