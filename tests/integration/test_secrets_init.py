"""Secrets come from the vault, never from a role: playbooks/secrets_init.yml writes the vault once, the
inventories read it (and name what is missing), and the roles refuse to start without a secret.

Real ansible-playbook and ansible-vault runs on this machine (localhost, local connection)."""

from __future__ import annotations

import base64
import hashlib
import shutil
import stat
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml
from ansible.parsing.vault import VaultLib, VaultSecret
from backup_support import VENV_BIN, module_env
from helpers import ROOT

SECRET_KEYS = {
    "vault_tokotani_db_password": 32,
    "vault_tokotani_nextauth_secret": 48,
    "vault_tokotani_admin_token": 40,
    "vault_tokotani_backup_key": 44,
}


# Options secrets_init.yml reads from the environment: only what a test gives counts.
SECRET_ENV = ("TOKOTANI_OFFSITE_ACCESS_KEY", "TOKOTANI_OFFSITE_SECRET_KEY", "TOKOTANI_DNS_TSIG_SECRET")
TSIG_KEY = "vault_tokotani_dns_tsig_secret"


def run(argv: list[str], env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    environment = module_env(
        {"ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default", "ANSIBLE_CALLBACK_RESULT_FORMAT": "json", **(env or {})}
    )
    for name in (*SECRET_ENV, "ANSIBLE_VAULT_IDENTITY_LIST", "ANSIBLE_VAULT_PASSWORD_FILE"):
        if name not in (env or {}):
            environment.pop(name, None)
    return subprocess.run(argv, capture_output=True, text=True, env=environment, cwd=cwd, timeout=300, check=False)


def secrets_init(secrets_file: Path, password_file: Path, *extra: str, env: dict | None = None):
    argv = [str(VENV_BIN / "ansible-playbook"), "playbooks/secrets_init.yml", "-vvv"]
    argv += ["-e", f"secrets_file={secrets_file}", "-e", f"vault_password_file={password_file}", *extra]
    return run(argv, env)


class VaultLoader(yaml.SafeLoader):
    """YAML with ansible-vault's inline values (!vault), kept as their ciphertext."""


VaultLoader.add_constructor("!vault", lambda loader, node: Ciphertext(loader.construct_scalar(node)))


class Ciphertext(str):
    pass


def view(secrets_file: Path, password_file: Path, vault_id: str) -> dict:
    """Each value of the vault file, decrypted with the ansible-vault library; every one must be encrypted."""
    doc = yaml.load(secrets_file.read_text(), Loader=VaultLoader)  # noqa: S506 - SafeLoader plus !vault
    vault = VaultLib([(vault_id, VaultSecret(password_file.read_text().strip().encode()))])
    plain = [key for key, value in doc.items() if not isinstance(value, Ciphertext)]
    assert not plain, f"stored in clear: {plain}"
    for key, value in doc.items():
        assert value.startswith(f"$ANSIBLE_VAULT;1.2;AES256;{vault_id}\n"), f"{key}: {value[:60]}"
    return {key: vault.decrypt(value).decode() for key, value in doc.items()}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    """A copy of the example production inventory, without its vault file yet."""
    target = tmp_path / "inventories" / "production"
    shutil.copytree(ROOT / "inventories" / "production", target)
    return target


def test_writes_an_encrypted_vault_with_every_secret_and_prints_none(inventory: Path, tmp_path: Path):
    secrets_file = inventory / "group_vars" / "all" / "secrets.yml"
    password_file = tmp_path / "keep" / "production.vault-password"
    proc = secrets_init(secrets_file, password_file, "-e", "generate_vault_password=true")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]

    raw = secrets_file.read_text()
    assert raw.startswith("---\n# The secrets of production, written by playbooks/secrets_init.yml on "), raw[:80]
    assert mode(secrets_file) == 0o600 and mode(password_file) == 0o600 and mode(password_file.parent) == 0o700
    values = view(secrets_file, password_file, "production")
    assert {key: len(values[key]) for key in SECRET_KEYS} == SECRET_KEYS
    assert len(set(values.values())) == len(values), "every secret is its own"
    assert "vault_tokotani_offsite_access_key" not in values
    assert TSIG_KEY not in values, "no TSIG secret unless asked for or given"

    out = proc.stdout + proc.stderr
    password = password_file.read_text().strip()
    leaked = [key for key, value in values.items() if value in out or value in raw] + (
        ["password"] if password in out else []
    )
    assert not leaked, f"printed with -vvv: {leaked}"
    assert f"Wrote {secrets_file}" in out
    assert "commit the encrypted file to your inventory's repository" in out
    assert f"--vault-id production@{password_file}" in out


def test_refuses_to_replace_a_vault_file(tmp_path: Path):
    secrets_file, password_file = tmp_path / "secrets.yml", tmp_path / "pw"
    assert secrets_init(secrets_file, password_file, "-e", "generate_vault_password=true").returncode == 0
    before = hashlib.sha256(secrets_file.read_bytes()).hexdigest()

    proc = secrets_init(secrets_file, password_file, "-e", "generate_vault_password=true")
    assert proc.returncode != 0
    assert f"{secrets_file} exists: it holds the secrets the servers run with" in proc.stdout
    assert "Nothing was changed" in proc.stdout
    assert "-e add_missing=true" in proc.stdout
    assert hashlib.sha256(secrets_file.read_bytes()).hexdigest() == before


def test_a_missing_password_file_is_not_made_unless_asked(tmp_path: Path):
    secrets_file, password_file = tmp_path / "secrets.yml", tmp_path / "pw"
    proc = secrets_init(secrets_file, password_file)
    assert proc.returncode != 0
    assert f"The vault password file {password_file} does not exist" in proc.stdout
    assert "-e generate_vault_password=true" in proc.stdout
    assert not secrets_file.exists() and not password_file.exists()


def test_keeps_the_secrets_of_an_old_controller_store_and_records_offsite_credentials(tmp_path: Path):
    old = tmp_path / ".secrets" / "tokotani-1"
    old.mkdir(parents=True)
    (old / "postgresql_tokotani.password").write_text("OldDbPassword0123456789abcdefgh")
    (old / "nextauth_secret").write_text("OldNextauthSecret0123456789abcdefghijklmnopqrstu")
    (old / "admin_token").write_text("OldAdminToken0123456789abcdefghijklmnop")
    secrets_file, password_file = tmp_path / "site" / "group_vars" / "all" / "secrets.yml", tmp_path / "pw"
    password_file.write_text("a-vault-password-from-the-password-manager\n")

    env = {"TOKOTANI_OFFSITE_ACCESS_KEY": "AKIAOLDSTORE", "TOKOTANI_OFFSITE_SECRET_KEY": "offsite/secret+key"}
    proc = secrets_init(secrets_file, password_file, "-e", f"import_dir={old}", "-e", "vault_id=site", env=env)
    assert proc.returncode == 0, proc.stdout[-3000:]
    values = view(secrets_file, password_file, "site")
    assert values["vault_tokotani_db_password"] == "OldDbPassword0123456789abcdefgh"
    assert values["vault_tokotani_nextauth_secret"] == "OldNextauthSecret0123456789abcdefghijklmnopqrstu"
    assert values["vault_tokotani_admin_token"] == "OldAdminToken0123456789abcdefghijklmnop"
    assert len(values["vault_tokotani_backup_key"]) == 44
    assert values["vault_tokotani_offsite_access_key"] == "AKIAOLDSTORE"
    assert values["vault_tokotani_offsite_secret_key"] == "offsite/secret+key"
    assert "offsite/secret+key" not in proc.stdout + proc.stderr
    assert f"NEXTAUTH_SECRET and ADMIN_TOKEN found in {old} were kept" in proc.stdout


def show_secret_lengths(inventory: Path, *extra: str) -> subprocess.CompletedProcess:
    names = ["tokotani_db_password", "tokotani_nextauth_secret", "tokotani_admin_token", "tokotani_backup_key"]
    expr = " ".join(f"{name}={{{{ hostvars[groups.tokotani_servers[0]].{name} | length }}}}" for name in names)
    argv = [str(VENV_BIN / "ansible"), "localhost", "-i", str(inventory), "-m", "ansible.builtin.debug"]
    return run([*argv, "-a", f"msg='{expr}'", *extra])


def test_the_inventory_reads_the_vault_and_names_a_missing_secret(inventory: Path, tmp_path: Path):
    proc = show_secret_lengths(inventory)
    assert proc.returncode != 0
    assert "vault_tokotani_db_password is not in the vault of inventories/production" in proc.stdout
    assert "playbooks/secrets_init.yml" in proc.stdout

    password_file = tmp_path / "pw"
    secrets_file = inventory / "group_vars" / "all" / "secrets.yml"
    assert secrets_init(secrets_file, password_file, "-e", "generate_vault_password=true").returncode == 0
    vault = ["--vault-id", f"production@{password_file}"]
    proc = show_secret_lengths(inventory, *vault)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (
        "tokotani_db_password=32 tokotani_nextauth_secret=48 tokotani_admin_token=40 tokotani_backup_key=44"
        in proc.stdout
    )

    # An extra var (how an AWX credential injects a secret) wins over the vault.
    proc = show_secret_lengths(inventory, *vault, "-e", "tokotani_db_password=FromAnAwxCredential")
    assert "tokotani_db_password=19 " in proc.stdout, proc.stdout

    # The vault file without its password: ansible says so, nothing is guessed.
    proc = show_secret_lengths(inventory)
    assert proc.returncode != 0
    assert "vault" in (proc.stdout + proc.stderr).lower()


def run_role(tmp_path: Path, role: str, variables: dict) -> subprocess.CompletedProcess:
    playbook = tmp_path / f"{role}.yml"
    playbook.write_text(
        textwrap.dedent(
            f"""\
            - name: Run the checks of tokotani.dr.{role}
              hosts: localhost
              gather_facts: false
              tasks:
                - name: Run the role's preflight
                  ansible.builtin.include_role:
                    name: tokotani.dr.{role}
                    tasks_from: preflight

                - name: Show a digest of the secret chosen
                  ansible.builtin.debug:
                    msg: "chosen {{{{ __tokotani_app_secrets.NEXTAUTH_SECRET | hash('sha256') }}}}"
                  when: __tokotani_app_secrets is defined
            """
        )
    )
    extra = tmp_path / f"{role}-vars.yml"
    extra.write_text(yaml.safe_dump(variables))
    argv = [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook), "-e", f"@{extra}"]
    return run([*argv, "-e", f"ansible_python_interpreter={VENV_BIN / 'python'}"])


def test_postgresql_server_refuses_to_start_without_the_password(tmp_path: Path):
    proc = run_role(tmp_path, "postgresql_server", {})
    assert proc.returncode != 0
    assert "No password for the application role tokotani on localhost: set tokotani_db_password" in proc.stdout
    assert "No secret is generated by this role" in proc.stdout
    assert not (ROOT / ".secrets" / "localhost").exists(), "nothing is written on the controller"


def app_vars(base: Path, **secrets) -> dict:
    return {"tokotani_app_repo": "file:///nonexistent.git", "tokotani_app_base_dir": str(base), **secrets}


def test_tokotani_app_refuses_a_new_server_without_its_secrets(tmp_path: Path):
    proc = run_role(tmp_path, "tokotani_app", app_vars(tmp_path / "srv", tokotani_db_password="DbPassword0123456789"))
    assert proc.returncode != 0
    assert (
        "localhost has no NEXTAUTH_SECRET or ADMIN_TOKEN in a live release and the inventory gives none" in proc.stdout
    )
    assert "a new NEXTAUTH_SECRET would log every customer out" in proc.stdout
    assert not (tmp_path / "srv" / "releases").exists(), "the run stopped before anything changed"

    proc = run_role(tmp_path, "tokotani_app", app_vars(tmp_path / "srv"))
    assert proc.returncode != 0
    assert "No password for the database role tokotani on localhost: set tokotani_db_password" in proc.stdout


def test_tokotani_app_keeps_a_secret_rotated_on_the_server_and_names_it(tmp_path: Path):
    live = tmp_path / "srv" / "releases" / "v1"
    live.mkdir(parents=True)
    (live / ".env").write_text(
        "NEXTAUTH_SECRET=RotatedOnTheServer0123456789abcdef\nADMIN_TOKEN=SameAdminToken0123456789\n"
    )
    (tmp_path / "srv" / "current").symlink_to(live)
    given = app_vars(
        tmp_path / "srv",
        tokotani_db_password="DbPassword0123456789",
        tokotani_nextauth_secret="FromTheVault0123456789abcdefghijkl",
        tokotani_admin_token="SameAdminToken0123456789",
    )
    proc = run_role(tmp_path, "tokotani_app", given)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (
        "NEXTAUTH_SECRET in the live .env of localhost differs from the inventory's (rotated on the server?)"
        in proc.stdout
    )
    assert "The server's value is kept; record it in the vault" in proc.stdout
    assert "chosen " + hashlib.sha256(b"RotatedOnTheServer0123456789abcdef").hexdigest() in proc.stdout
    assert "ADMIN_TOKEN in the live" not in proc.stdout
    assert not [
        s for s in ("RotatedOnTheServer0123456789abcdef", "FromTheVault0123456789abcdefghijkl") if s in proc.stdout
    ]

    proc = run_role(tmp_path, "tokotani_app", {**given, "tokotani_app_secret_source": "inventory"})
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "The inventory's value is written (tokotani_app_secret_source=inventory)" in proc.stdout
    assert "chosen " + hashlib.sha256(b"FromTheVault0123456789abcdefghijkl").hexdigest() in proc.stdout


def tsig_bytes(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


def test_generates_a_tsig_secret_of_32_random_bytes_when_asked_and_prints_it_nowhere(tmp_path: Path):
    secrets_file, password_file = tmp_path / "secrets.yml", tmp_path / "pw"
    proc = secrets_init(
        secrets_file,
        password_file,
        "-e",
        "vault_id=site",
        "-e",
        "generate_vault_password=true",
        "-e",
        "generate_dns_tsig_secret=true",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    values = view(secrets_file, password_file, "site")
    assert len(tsig_bytes(values[TSIG_KEY])) == 32
    assert values[TSIG_KEY] not in proc.stdout + proc.stderr
    assert TSIG_KEY in proc.stdout, "the summary names it"

    other = tmp_path / "other.yml"
    proc = secrets_init(other, password_file, "-e", "vault_id=site", "-e", "generate_dns_tsig_secret=true")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert view(other, password_file, "site")[TSIG_KEY] != values[TSIG_KEY], "a new one each time"


def test_records_the_tsig_secret_given_in_the_environment_and_refuses_one_that_is_not_base64(tmp_path: Path):
    given = base64.b64encode(bytes(range(32))).decode()
    secrets_file, password_file = tmp_path / "secrets.yml", tmp_path / "pw"
    proc = secrets_init(
        secrets_file,
        password_file,
        "-e",
        "vault_id=site",
        "-e",
        "generate_vault_password=true",
        "-e",
        "generate_dns_tsig_secret=true",
        env={"TOKOTANI_DNS_TSIG_SECRET": given},
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert view(secrets_file, password_file, "site")[TSIG_KEY] == given, "the given secret wins over a new one"
    assert given not in proc.stdout + proc.stderr

    refused = tmp_path / "refused.yml"
    proc = secrets_init(refused, password_file, "-e", "vault_id=site", env={"TOKOTANI_DNS_TSIG_SECRET": "not base64!"})
    assert proc.returncode != 0
    assert "The TSIG secret given (dns_tsig_secret or TOKOTANI_DNS_TSIG_SECRET) is not base64" in proc.stdout
    assert "not base64!" not in proc.stdout.replace("is not base64", "")
    assert not refused.exists()


def hand_made_value(password_file: Path, vault_id: str, plain: str) -> str:
    """A value an operator added with ansible-vault encrypt_string, as it reads in the file."""
    vault = VaultLib([(vault_id, VaultSecret(password_file.read_text().strip().encode()))])
    cipher = vault.encrypt(plain, secret=VaultSecret(password_file.read_text().strip().encode()), vault_id=vault_id)
    return "\n".join("          " + line for line in cipher.decode().splitlines())


def test_add_missing_appends_only_the_missing_secrets_and_keeps_the_file_byte_for_byte(tmp_path: Path):
    secrets_file, password_file = tmp_path / "site" / "secrets.yml", tmp_path / "pw"
    created = secrets_init(secrets_file, password_file, "-e", "vault_id=site", "-e", "generate_vault_password=true")
    assert created.returncode == 0, created.stdout[-3000:]
    # an operator's own value and comment, and no newline at the end: kept exactly as they are
    with secrets_file.open("a") as out:
        out.write("# added by hand\nvault_tokotani_custom: !vault |\n" + hand_made_value(password_file, "site", "mine"))
    before = secrets_file.read_bytes()
    old = view(secrets_file, password_file, "site")

    env = {"TOKOTANI_OFFSITE_ACCESS_KEY": "AKIAADDED", "TOKOTANI_OFFSITE_SECRET_KEY": "added/offsite+secret"}
    add = ("-e", "vault_id=site", "-e", "add_missing=true", "-e", "generate_dns_tsig_secret=true")
    proc = secrets_init(secrets_file, password_file, *add, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]

    after = secrets_file.read_bytes()
    assert after[: len(before)] == before, "the existing text, values included, is byte-identical"
    assert after[len(before) :].startswith(b"\n# Added by playbooks/secrets_init.yml (add_missing) on ")
    assert mode(secrets_file) == 0o600
    values = view(secrets_file, password_file, "site")
    assert {key: values[key] for key in old} == old
    assert set(values) - set(old) == {
        TSIG_KEY,
        "vault_tokotani_offsite_access_key",
        "vault_tokotani_offsite_secret_key",
    }
    assert len(tsig_bytes(values[TSIG_KEY])) == 32
    assert values["vault_tokotani_offsite_secret_key"] == "added/offsite+secret"
    out = " ".join(proc.stdout.split())
    assert f"Added to {secrets_file}: vault_tokotani_dns_tsig_secret, vault_tokotani_offsite_access_key" in out
    assert "Kept as they were: vault_tokotani_admin_token, vault_tokotani_backup_key" in out
    assert not [value for value in values.values() if value in proc.stdout + proc.stderr]

    # nothing missing: nothing written
    proc = secrets_init(secrets_file, password_file, *add, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "has every secret this run would write: nothing was added" in " ".join(proc.stdout.split())
    assert secrets_file.read_bytes() == after


def test_add_missing_refuses_a_password_that_does_not_open_the_file(tmp_path: Path):
    secrets_file, password_file = tmp_path / "secrets.yml", tmp_path / "pw"
    assert (
        secrets_init(
            secrets_file, password_file, "-e", "vault_id=site", "-e", "generate_vault_password=true"
        ).returncode
        == 0
    )
    before = secrets_file.read_bytes()
    add = ("-e", "vault_id=site", "-e", "add_missing=true", "-e", "generate_dns_tsig_secret=true")

    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    proc = secrets_init(secrets_file, wrong, *add)
    assert proc.returncode != 0
    assert f"The vault password in {wrong} does not open the values of {secrets_file}" in " ".join(proc.stdout.split())

    proc = secrets_init(secrets_file, tmp_path / "gone", *add, "-e", "generate_vault_password=true")
    assert proc.returncode != 0
    assert f"Adding to {secrets_file} needs the vault password" in " ".join(proc.stdout.split())
    assert not (tmp_path / "gone").exists(), "no new password for an existing file"
    assert secrets_file.read_bytes() == before


def test_add_missing_writes_a_new_vault_when_there_is_none(tmp_path: Path):
    secrets_file, password_file = tmp_path / "secrets.yml", tmp_path / "pw"
    add = ("-e", "vault_id=site", "-e", "add_missing=true", "-e", "generate_dns_tsig_secret=true")
    proc = secrets_init(secrets_file, password_file, *add, "-e", "generate_vault_password=true")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert f"Wrote {secrets_file}" in proc.stdout
    assert set(view(secrets_file, password_file, "site")) == {*SECRET_KEYS, TSIG_KEY}


def test_the_sandbox_inventory_reads_the_tsig_secret_from_the_vault_and_names_it_when_missing(tmp_path: Path):
    inventory = tmp_path / "inventories" / "sandbox"
    shutil.copytree(ROOT / "inventories" / "sandbox", inventory, ignore=shutil.ignore_patterns("secrets.yml"))
    argv = [str(VENV_BIN / "ansible"), "localhost", "-i", str(inventory), "-m", "ansible.builtin.debug"]
    show = [*argv, "-a", "msg='tsig={{ tokotani_dns_tsig_secret | length }} {{ tokotani_dns_tsig_key_name }}'"]
    proc = run(show)
    assert proc.returncode != 0
    assert "vault_tokotani_dns_tsig_secret is not in the sandbox vault: make sandbox-secrets adds it" in proc.stdout

    password_file = tmp_path / "pw"
    secrets_file = inventory / "group_vars" / "all" / "secrets.yml"
    made = secrets_init(
        secrets_file, password_file, "-e", "generate_vault_password=true", "-e", "generate_dns_tsig_secret=true"
    )
    assert made.returncode == 0, made.stdout[-3000:]
    proc = run([*show, "--vault-id", f"sandbox@{password_file}"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "tsig=44 tokotani-dr-switch" in proc.stdout
