# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup key options: who signs a backup's manifest, which keys verify it, what is refused."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  backup_key:
    description:
      - The backup key, a secret of at least 32 characters (C(openssl rand -base64 32)) kept in the vault or
        an AWX credential, never in the bucket nor beside the backups. Never returned nor logged.
      - M(tokotani.dr.postgresql_backup) signs every manifest it writes with it (HMAC-SHA256 over the
        manifest's canonical JSON). Every module that reads backups then refuses a manifest that is not
        signed (unless O(allow_unsigned=true)), signed by a key it was not given, or whose content no longer
        matches its signature; such a backup is listed as not valid, with the reason.
      - M(tokotani.dr.backup_offsite) also encrypts the offsite copies with keys derived from it.
      - Falls back to the C(TOKOTANI_BACKUP_KEY) environment variable. Without a key, nothing is signed nor
        checked - a manifest's sha256 then only proves that the data matches the manifest, not who wrote both.
    type: str
  backup_previous_keys:
    description:
      - Earlier backup keys, still accepted to verify (and decrypt) what they signed; the current
        O(backup_key) alone signs. Give the old key here when you rotate, until the backups it signed have
        aged out of retention, offsite included.
      - Falls back to the C(TOKOTANI_BACKUP_PREVIOUS_KEYS) environment variable (comma-separated).
    type: list
    elements: str
    default: []
  allow_unsigned:
    description:
      - With a O(backup_key), accept backups whose manifest carries no signature (those made before keys were
        used), reported as C(signed=false). A signature that does not match is refused all the same.
      - Legacy C(backup_*.sql.gz) files of the earlier scripts have no manifest at all - they are accepted by
        their gzip check as before, and always reported as C(signed=false).
    type: bool
    default: false
"""
