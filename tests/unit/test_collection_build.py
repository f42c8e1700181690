"""`ansible-galaxy collection build` makes a tarball without test or sandbox clutter."""

import shutil
import subprocess
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_build_ships_the_collection_and_nothing_else(tmp_path):
    galaxy = shutil.which("ansible-galaxy")
    assert galaxy, "ansible-galaxy is missing: run make venv"
    subprocess.run(
        [galaxy, "collection", "build", "--force", "--output-path", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (tarball,) = tmp_path.glob("tokotani-dr-*.tar.gz")
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    tops = {name.split("/")[0] for name in names}
    assert {"MANIFEST.json", "FILES.json", "README.md", "meta", "roles", "playbooks"} <= tops
    for clutter in ("tests", "sandbox", "molecule", "bench", "scripts", ".ci", ".venv", ".collections", "Makefile"):
        assert clutter not in tops, clutter
    assert not [n for n in names if n.startswith("roles/sandbox_infra") or "node_modules" in n]
    assert "roles/tokotani_app/meta/argument_specs.yml" in names
