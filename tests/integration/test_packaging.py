"""The collection as AWX and ansible-galaxy get it: collections/requirements.yml installed from the checkout.

The installed artifact (galaxy.yml's build_ignore applied) is what ships, so the checks run on it: its
dependencies are exactly the collections its content calls, its playbooks resolve, and meta/runtime.yml's
requires_ansible holds the ansible-core these tiers run (claim only what is tested).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import ansible.release
import pytest
import yaml
from helpers import ROOT
from packaging.specifiers import SpecifierSet
from packaging.version import Version

BIN = ROOT / ".venv" / "bin"
# A task's module (`- community.postgresql.postgresql_query:`), a role by FQCN (`name: tokotani.dr.db_recovery`),
# a lookup, filter or test plugin in Jinja, a Python import of another collection's module_utils.
USES = (
    re.compile(r"^\s*-?\s*([a-z0-9_]+\.[a-z0-9_]+)\.[a-z0-9_]+:\s*$", re.MULTILINE),
    re.compile(r"^\s*-?\s*([a-z0-9_]+\.[a-z0-9_]+)\.[a-z0-9_]+:\s*\S", re.MULTILINE),
    re.compile(r"^\s*(?:-\s*)?(?:name|role):\s*([a-z0-9_]+\.[a-z0-9_]+)\.[a-z0-9_]+\s*$", re.MULTILINE),
    re.compile(r"(?:lookup|query)\(\s*['\"]([a-z0-9_]+\.[a-z0-9_]+)\.[a-z0-9_]+['\"]"),
    re.compile(r"\|\s*([a-z0-9_]+\.[a-z0-9_]+)\.[a-z0-9_]+\b"),
    re.compile(r"\bansible_collections\.([a-z0-9_]+\.[a-z0-9_]+)\."),
)
# Mapping keys of a task that look like FQCNs but are not modules.
NOT_MODULES = {"ansible.builtin", "tokotani.dr"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("collections")
    proc = subprocess.run(
        [
            str(BIN / "ansible-galaxy"),
            *("collection", "install", "-r", "collections/requirements.yml"),
            *("-p", str(dest), "--no-deps", "--force"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    path = dest / "ansible_collections" / "tokotani" / "dr"
    assert (path / "MANIFEST.json").is_file(), proc.stdout
    return path


def _used_collections(root: Path) -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}
    for path in root.rglob("*"):
        if path.suffix not in (".yml", ".yaml", ".py", ".j2") or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        patterns = USES[-1:] if path.suffix == ".py" else USES[:-1]
        for pattern in patterns:
            for name in pattern.findall(text):
                used.setdefault(name, set()).add(str(path.relative_to(root)))
    return used


def test_the_artifact_leaves_out_what_is_not_shipped(installed):
    for left_out in ("sandbox", "molecule", "tests", "bench", "roles/sandbox_infra", "collections", ".venv"):
        assert not (installed / left_out).exists(), left_out
    for shipped in ("playbooks/rollback.yml", "roles/app_rollback", "plugins/modules/app_release.py", "meta"):
        assert (installed / shipped).exists(), shipped


def test_dependencies_are_exactly_the_collections_the_content_calls(installed):
    manifest = json.loads((installed / "MANIFEST.json").read_text())["collection_info"]
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    assert manifest["dependencies"] == galaxy["dependencies"]
    used = _used_collections(installed)
    others = {name: files for name, files in used.items() if name not in NOT_MODULES}
    assert set(others) == set(galaxy["dependencies"]), {n: sorted(f)[:3] for n, f in others.items()}


def test_its_playbooks_resolve_from_the_installed_collection(installed):
    # an empty configuration: not this checkout's ansible.cfg, whose collections_path is the checkout itself
    config = installed.parents[2] / "ansible.cfg"
    config.write_text("[defaults]\n")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(installed.parents[2]), ANSIBLE_CONFIG=str(config))
    for playbook in sorted((installed / "playbooks").glob("*.yml")):
        proc = subprocess.run(
            [str(BIN / "ansible-playbook"), "--syntax-check", "-i", "localhost,", str(playbook)],
            cwd=installed.parents[3],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert proc.returncode == 0, f"{playbook.name}: {proc.stdout[-1500:]}{proc.stderr[-1500:]}"


def test_requires_ansible_claims_only_the_ansible_core_that_is_tested():
    spec = SpecifierSet(yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())["requires_ansible"])
    running = Version(ansible.release.__version__)
    assert running in spec, f"ansible-core {running} does not satisfy requires_ansible {spec}"
    lowest = min(Version(s.version) for s in spec if s.operator in (">=", ">"))
    assert (lowest.major, lowest.minor) == (running.major, running.minor), (
        f"requires_ansible starts at {lowest}, but the tiers run ansible-core {running}: claim only what is tested"
    )
