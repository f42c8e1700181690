"""Bad input to the tooling gets a message an operator can act on.

The foundation issue names three: a Docker engine that is missing and cannot be
installed, a sandbox image that does not exist, and a role variable of the wrong type.
"""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(argv, env=None, user=None):
    if user:
        argv = [shutil.which("runuser"), "-u", user, "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=False)


def test_missing_docker_that_cannot_be_installed():
    # A PATH with bash and coreutils but no docker client or engine, and a user
    # who is not root, so apt-get cannot install docker.io.
    home = Path(tempfile.mkdtemp(prefix="tokotani-nodocker-"))
    home.chmod(0o755)  # pytest's tmp_path is private to root
    bindir = home / "bin"
    bindir.mkdir()
    for tool in ("bash", "id", "timeout", "sleep", "tail", "printf", "seq"):
        found = shutil.which(tool)
        assert found, tool
        (bindir / tool).symlink_to(found)
    script = home / "ensure.sh"  # the checkout itself may not be readable by nobody
    shutil.copy(ROOT / "scripts/ensure.sh", script)
    script.chmod(0o755)
    env = {"PATH": str(bindir), "HOME": str(home)}
    try:
        result = run(["bash", str(script), "docker"], env=env, user="nobody")
    finally:
        shutil.rmtree(home)
    assert result.returncode != 0
    assert "the Docker engine is missing" in result.stderr
    assert "apt-get install -y docker.io" in result.stderr


def test_sandbox_image_that_does_not_exist():
    env = dict(os.environ, TOKOTANI_SANDBOX_IMAGE="tokotani-dr/no-such-image:0")
    result = run([str(ROOT / "sandbox/image/build.sh")], env=env)
    assert result.returncode != 0
    assert "'tokotani-dr/no-such-image:0' (TOKOTANI_SANDBOX_IMAGE) does not exist" in result.stderr


def test_sandbox_playbook_refuses_a_missing_image():
    env = dict(os.environ, TOKOTANI_SANDBOX_IMAGE="tokotani-dr/no-such-image:0", ANSIBLE_STDOUT_CALLBACK="json")
    result = run(["ansible-playbook", "playbooks/sandbox.yml", "-e", "sandbox_state=present"], env=env)
    assert result.returncode != 0
    out = json.loads(result.stdout)
    msgs = [
        r.get("msg", "")
        for play in out["plays"]
        for task in play["tasks"]
        for r in task["hosts"].values()
        if r.get("failed")
    ]
    assert any("'tokotani-dr/no-such-image:0' does not exist" in m and "make image" in m for m in msgs), msgs
    # It stopped there: no network, no container, no provisioning.
    ran = [task["task"]["name"] for play in out["plays"] for task in play["tasks"]]
    assert ran[-1] == "Fail when the image does not exist", ran
    assert not any("Create" in name for name in ran), ran


def test_role_variable_of_the_wrong_type(tmp_path):
    playbook = tmp_path / "wrong_type.yml"
    playbook.write_text(
        "- hosts: all\n"
        "  gather_facts: false\n"
        "  roles:\n"
        "    - role: tokotani.dr.tokotani_app\n"
        "      tokotani_app_port: not-a-port\n"
    )
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="json")
    # A host that does not exist: if the argument check ever let the role through,
    # its tasks could reach nothing, least of all this machine.
    inventory = "no-such-container,"
    result = run(["ansible-playbook", "-i", inventory, "-c", "community.docker.docker", str(playbook)], env=env)
    assert result.returncode != 0
    out = json.loads(result.stdout)
    task = out["plays"][0]["tasks"][0]
    msg = task["hosts"]["no-such-container"]["msg"]
    assert "tokotani_app_port" in msg
    assert "int" in msg
    # The failure is the argument check, before any task of the role ran.
    assert len(out["plays"][0]["tasks"]) == 1


def test_drill_refuses_a_production_inventory(tmp_path):
    # An inventory marked production, whose host does not exist: the refusal must come before
    # any task could reach a server (the connection would fail loudly if one tried).
    inventory = tmp_path / "production.yml"
    inventory.write_text(
        "all:\n"
        "  vars:\n"
        "    tokotani_environment: production\n"
        "    ansible_connection: community.docker.docker\n"
        "  children:\n"
        "    tokotani_servers:\n"
        "      hosts:\n"
        "        no-such-production-server:\n"
    )
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="json")
    result = run(["ansible-playbook", "-i", str(inventory), "playbooks/dr_drill.yml"], env=env)
    assert result.returncode != 0
    out = json.loads(result.stdout)
    failures = [
        host["msg"]
        for play in out["plays"]
        for task in play["tasks"]
        for host in task["hosts"].values()
        if host.get("failed")
    ]
    assert len(failures) == 1, failures
    assert "no-such-production-server is marked tokotani_environment=production" in failures[0]
    assert "-e dr_drill_allow_production=true" in failures[0]
