#!/usr/bin/python
# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Engine: plugins/module_utils/s3_offsite.py (push, pull, list, prune; offsite_crypto.py encrypts).

DOCUMENTATION = r"""
module: backup_offsite
short_description: Keep offsite copies of database backups on S3, and pull them back
version_added: "0.1.0"
description:
  - Copies backups made by M(tokotani.dr.postgresql_backup) to any S3 API (AWS, or an S3-compatible store
    through O(endpoint_url)), lists and prunes them there, and pulls one back into a local directory, from
    which M(tokotani.dr.postgresql_restore) restores it. When a server is lost with its local backups, the
    offsite copy is what a new server restores from.
  - "O(mode=push) uploads a local backup (a file, or every file of a directory backup) and then its manifest,
    under O(prefix): C(<prefix>/backup_YYYY-MM-DD_HH-mm-ss.<ext>) (or C(<prefix>/backup_YYYY-MM-DD_HH-mm-ss.dir/<file>))
    and C(<prefix>/backup_YYYY-MM-DD_HH-mm-ss.manifest.json). The manifest goes last: it is the commit point,
    so an interrupted push never lists as a backup."
  - Every data object carries the manifest's sha256 in its metadata (C(x-amz-meta-sha256); each file's own
    sha256 for a directory backup) and, by default, an S3 additional checksum (O(checksum_algorithm)) that
    the endpoint checks for every part it receives.
  - While uploading, the local backup's sha256 is recomputed (O(verify)); a backup that does not match its
    manifest is not pushed and its uploaded data is removed.
  - A push of a backup already offsite with the same sha256 changes nothing. A different backup under the same
    name fails, unless O(force=true).
  - O(mode=pull) downloads one backup - by name, the newest (O(backup=latest)), or the newest before a time
    (O(before)) - into C(<backup_dir>/<name>.partial), verifies its sha256 against the manifest, writes the
    manifest and renames the data into place. A pull that does not verify, or fails in any way, leaves nothing
    behind. A backup already in O(backup_dir) with the same sha256 is not downloaded again.
  - With O(backup=latest) and O(fallback), a pull whose chosen copy turns out damaged on download (same size, other
    bytes) or gone falls back to the previous valid backup, and says so (RV(passed_over) and a warning).
  - O(mode=list) reports what is offsite, with the validity of each backup (manifest readable, every data object
    there with the manifest's size), the newest one, and data left by interrupted pushes. It never changes anything.
  - O(mode=prune) removes offsite copies by the same retention rules as local backups (O(keep_days), O(keep_min)),
    per database - never the newest O(keep_min) valid ones, never an invalid one. The manifest goes first.
    Data without a manifest (an interrupted push) older than O(keep_days) is removed when no O(database) is given.
  - "With a backup key, data objects are encrypted client-side by default (O(client_encryption)): each object is a
    header (C(TKDRENC1), the key's id, a random salt) and AES-256-GCM chunks; a pull authenticates every chunk
    before anything is renamed into place, then verifies the sha256 of the plaintext as for a plain copy."
  - Large files go up and down in multipart transfers, streamed from and to disk (memory stays flat), with
    O(concurrency) parts in flight; the part size grows with the file so that a 1 TiB backup stays within S3's
    10,000 parts.
author:
  - TokoTani DevOps Team (@tokotani)
extends_documentation_fragment:
  - tokotani.dr.s3
  - tokotani.dr.backup_key
  - tokotani.dr.suspicious
attributes:
  check_mode:
    support: full
    description:
      - Every mode reads what is offsite and locally and reports what it would push, pull or prune, writing nothing.
  diff_mode:
    support: none
    description: There is nothing to compare; the result describes what was done.
options:
  mode:
    description:
      - V(push) a local backup to the bucket; V(pull) one from it; V(list) what is there; V(prune) old copies.
    type: str
    required: true
    choices: [push, pull, list, prune]
  backup_dir:
    description:
      - The local backup directory. O(mode=push) reads backups from it; O(mode=pull) writes into it (created 0700
        when missing).
      - Required for O(mode=push) (unless O(backup) is an absolute path) and O(mode=pull).
    type: path
  backup:
    description:
      - Which backup. V(latest) (default) - the newest valid one (of O(database), when set).
      - O(mode=push) - also V(all) (every valid local backup that is not offsite yet), or a backup's name
        (V(backup_2026-01-05_02-00-00)), data or manifest file name, or path.
      - O(mode=pull) - also a backup's name, or its data or manifest file name.
    type: str
    default: latest
  before:
    description:
      - O(mode=pull) with O(backup=latest) - pull the newest valid backup that ended strictly before this time
        (to restore from before a breach). O(mode=list) - also report it in RV(newest_before).
      - ISO 8601 (V(2026-01-05T02:00:00Z); without a zone, UTC), a backup name, or epoch seconds.
    type: str
    aliases: [latest_before]
  written_before:
    description:
      - O(mode=pull) - only backups whose manifest and data objects all reached the bucket before this time (their
        C(LastModified), the bucket's own clock, which no client sets) are considered; the others are reported and
        passed over. After a breach, a backup whose manifest says it ended before the breach but that was written
        after it may be the intruder's, signed with a key read on the server - give the breach's time here too.
      - ISO 8601, a backup name, or epoch seconds, as O(before).
    type: str
  fallback:
    description:
      - O(mode=pull) with O(backup=latest) - when the backup chosen does not verify on download, try up to this many
        older ones, newest first, and pull the first that verifies. For disaster recovery, where the newest offsite
        copy may have been damaged or tampered with in a way the listing cannot see (same size, other bytes).
      - A copy is passed over only when it is bad itself - its sha256 does not match the manifest
        (V(checksum_mismatch)), an encrypted object does not authenticate (V(not_authentic)), or an object is gone
        (V(object_missing)). Nothing of it is kept; it is listed in RV(passed_over) and in a warning. Any other
        failure (endpoint, credentials, a missing key, local disk) fails the pull as without O(fallback).
      - The candidates are those V(latest) considers - valid, of O(database), ended before O(before) when set,
        not suspicious unless O(accept_suspicious).
      - Each backup passed over makes the restore point older (the RPO grows) - check RV(name) and RV(passed_over)
        before restoring.
      - When every backup tried fails, the pull fails with the last one's RV(error), naming each backup tried and why.
      - V(0) (the default) never falls back. Ignored when O(backup) names a backup - a named backup never falls
        back. In check mode, only what is checked before a download (the data's metadata, the encryption headers)
        can pass a backup over.
    type: int
    default: 0
  database:
    description:
      - Only consider backups of this database (from their manifests).
      - With O(mode=prune), apply retention to this database only; without it, to every database offsite.
    type: str
    aliases: [db]
  keep_days:
    description:
      - O(mode=prune) - remove offsite copies that started more than this many days ago ...
    type: int
    default: 14
  keep_min:
    description:
      - O(mode=prune) - ... but always keep the newest O(keep_min) valid ones of each database, whatever their age.
    type: int
    default: 3
  force:
    description:
      - O(mode=push) - upload even when the same backup is already offsite, and replace a different backup of the
        same name.
    type: bool
    default: false
  verify:
    description:
      - O(mode=push) - recompute the local backup's sha256 while uploading it, and refuse a backup that does not
        match its manifest. A pull always verifies.
    type: bool
    default: true
  client_encryption:
    description:
      - O(mode=push) - with a backup key configured (C(backup_key)), encrypt every data object on this host before
        it leaves (AES-256-GCM in 1 MiB chunks, one key per object derived from the backup key), so that the bucket
        holds only ciphertext and the manifest. This is the default whenever a backup key is given.
      - V(false) pushes plaintext even with a backup key (the manifest is still signed). Without a backup key,
        nothing is encrypted client-side whatever this says.
      - A pull always decrypts an encrypted copy (and needs the key that encrypted it, or that key in
        C(backup_previous_keys)), and still pulls plain copies pushed before encryption was turned on.
      - Needs C(python3-cryptography) on the host that runs the transfer.
      - Independent of O(encryption), the server-side encryption S3 applies on top.
    type: bool
    default: true
  encryption:
    description:
      - Server-side encryption of the uploaded objects. Unset leaves it to the bucket's default encryption.
    type: str
    choices: [AES256, "aws:kms"]
  kms_key_id:
    description:
      - With O(encryption=aws:kms), the KMS key (ID, ARN or alias) to encrypt with; unset means the account's
        C(aws/s3) key.
    type: str
    aliases: [encryption_kms_key_id]
  storage_class:
    description:
      - Storage class of the uploaded data. Unset leaves it to the bucket (C(STANDARD)).
      - Objects in V(GLACIER) or V(DEEP_ARCHIVE) must be restored in S3 before a pull; manifests always stay in
        a directly readable class.
    type: str
    choices:
      - STANDARD
      - REDUCED_REDUNDANCY
      - STANDARD_IA
      - ONEZONE_IA
      - INTELLIGENT_TIERING
      - GLACIER
      - DEEP_ARCHIVE
      - GLACIER_IR
  checksum_algorithm:
    description:
      - The S3 additional checksum sent with every upload (and every part) and checked by the endpoint as it
        receives the data. V(CRC32) (the default, as in the AWS CLI) costs little CPU; V(SHA256) checks with the
        manifest's algorithm at about the cost of hashing the backup once more. V(none) sends only what the
        endpoint requires, for stores that reject these headers.
      - Independent of the sha256 of the manifest, which travels in the object's metadata and is what a pull
        verifies.
    type: str
    choices: [CRC32, CRC32C, SHA256, none]
    default: CRC32
  multipart_threshold:
    description:
      - Files at least this large are transferred in parts (and downloaded with parallel ranged requests).
        Bytes, or a size such as V(64MB) (binary units).
    type: str
    default: 16MB
  multipart_chunksize:
    description:
      - The size of each part (at least 5 MB, S3's minimum). Raised automatically, in whole MB, for files that
        would otherwise need more than 10,000 parts (a 1 TiB backup gets 105 MB parts).
    type: str
    default: 16MB
  concurrency:
    description:
      - How many parts (or files) are transferred at once.
    type: int
    default: 8
    aliases: [max_concurrency]
  lock_timeout:
    description:
      - O(mode=pull) - seconds to wait for another pull into the same O(backup_dir) to finish.
    type: int
    default: 300
notes:
  - A directory backup is pushed file by file under C(<data>/), each file with its own sha256 in its metadata;
    after a pull every file and the manifest's listing digest are verified, as M(tokotani.dr.postgresql_restore)
    does.
  - Retention offsite is independent of retention locally; run O(mode=prune) after pushing (see the examples).
  - Incomplete multipart uploads of a killed push stay invisible in the bucket until removed; give the bucket a
    lifecycle rule C(AbortIncompleteMultipartUpload) (for example after 2 days).
seealso:
  - module: tokotani.dr.postgresql_backup
  - module: tokotani.dr.postgresql_restore
  - module: tokotani.dr.backup_info
"""

EXAMPLES = r"""
- name: Back up the shop database
  tokotani.dr.postgresql_backup:
    database: tokotani
    backup_dir: /srv/tokotani/backups
  register: nightly

- name: Copy it offsite
  tokotani.dr.backup_offsite:
    mode: push
    backup_dir: /srv/tokotani/backups
    backup: "{{ nightly.name }}"
    bucket: tokotani-dr
    prefix: prod/tokotani
    region: ap-southeast-3
    encryption: "aws:kms"
    kms_key_id: alias/tokotani-backups
    storage_class: STANDARD_IA

- name: Keep 14 days offsite, and never fewer than the newest 3
  tokotani.dr.backup_offsite:
    mode: prune
    database: tokotani
    bucket: tokotani-dr
    prefix: prod/tokotani
    keep_days: 14
    keep_min: 3

- name: What is offsite (read-only)
  tokotani.dr.backup_offsite:
    mode: list
    bucket: tokotani-dr
    prefix: prod/tokotani
  register: offsite

# Restore the latest offsite backup on a new server: pull, then restore.
- name: Pull the newest offsite backup (verified against its manifest)
  tokotani.dr.backup_offsite:
    mode: pull
    backup_dir: /srv/tokotani/backups
    database: tokotani
    bucket: tokotani-dr
    prefix: prod/tokotani
  register: pulled

- name: Restore it
  tokotani.dr.postgresql_restore:
    database: tokotani
    backup: "{{ pulled.path }}"
    confirm: true

- name: Pull the newest backup from before the breach, from an S3-compatible store with a private CA
  tokotani.dr.backup_offsite:
    mode: pull
    before: "2026-01-05T08:30:00+07:00"
    backup_dir: /srv/tokotani/restore
    bucket: tokotani-dr
    endpoint_url: https://s3.dr.internal:9000
    addressing_style: path
    ca_bundle: /etc/ssl/certs/tokotani-dr-ca.pem
    access_key: "{{ vault_s3_access_key }}"
    secret_key: "{{ vault_s3_secret_key }}"

# Disaster recovery: the newest offsite copy may have been damaged or tampered with; fall back to older ones.
- name: Pull the newest offsite backup that verifies, trying up to 2 older ones
  tokotani.dr.backup_offsite:
    mode: pull
    backup: latest
    fallback: 2
    backup_dir: /srv/tokotani/backups
    database: tokotani
    bucket: tokotani-dr
    prefix: prod/tokotani
  register: pulled

- name: Say how much older the restore point is
  ansible.builtin.debug:
    msg: "passed over {{ pulled.passed_over | map(attribute='name') | join(', ') }}; restoring {{ pulled.name }}"
  when: pulled.passed_over | length > 0
"""

RETURN = r"""
mode:
  description: The mode that ran.
  returned: always
  type: str
  sample: push
bucket:
  description: The bucket.
  returned: always
  type: str
  sample: tokotani-dr
prefix:
  description: The key prefix, without leading or trailing slashes.
  returned: always
  type: str
  sample: prod/tokotani
name:
  description: The backup's name (O(mode=pull), and O(mode=push) of one backup).
  returned: when O(mode=pull), or O(mode=push) of one backup
  type: str
  sample: backup_2026-01-05_02-00-00
key:
  description: The data object's key (a key prefix ending in C(/) for a directory backup).
  returned: when O(mode=pull), or O(mode=push) of one backup
  type: str
  sample: prod/tokotani/backup_2026-01-05_02-00-00.dir/
manifest_key:
  description: The manifest object's key.
  returned: when O(mode=pull), or O(mode=push) of one backup
  type: str
  sample: prod/tokotani/backup_2026-01-05_02-00-00.manifest.json
size:
  description: Bytes of data (the sum of the files of a directory backup).
  returned: when O(mode=pull), or O(mode=push) of one backup
  type: int
  sample: 171000000
sha256:
  description: The backup's sha256, from its manifest (for a directory backup, of its sorted file listing).
  returned: when O(mode=pull), or O(mode=push) of one backup
  type: str
signed:
  description: O(mode=pull) - whether the pulled manifest was signed by a key given (see RV(backups[].signed)).
  returned: when O(mode=pull)
  type: bool
signed_by:
  description: O(mode=pull) - the id of the key that signed the pulled manifest; null when unsigned or unchecked.
  returned: when O(mode=pull)
  type: str
backups:
  description:
    - O(mode=push) - one element per backup considered, with its C(status) (V(pushed), V(already_offsite),
      V(would_push)), C(name), C(database), C(key), C(manifest_key), C(size), C(sha256), C(objects),
      C(duration) and C(throughput_mb_s).
    - O(mode=list) - every backup offsite, newest first.
  returned: when O(mode=push) or O(mode=list)
  type: list
  elements: dict
  contains:
    name:
      description: The backup's name.
      type: str
      sample: backup_2026-01-05_02-00-00
    database:
      description: The database backed up.
      type: str
    data:
      description: The data's name (file or directory).
      type: str
    data_key:
      description: The data object's key (a prefix ending in C(/) for a directory backup).
      type: str
    manifest_key:
      description: The manifest object's key.
      type: str
    format:
      description: directory, plain or custom.
      type: str
    compression:
      description: zstd, gzip or none.
      type: str
    size:
      description: Bytes of data, from the manifest.
      type: int
    sha256:
      description: From the manifest.
      type: str
    label:
      description: From the manifest.
      type: str
    started_at:
      description: Start of the backup, ISO 8601 UTC.
      type: str
    finished_at:
      description: End of the backup, ISO 8601 UTC.
      type: str
    timestamp:
      description: Start of the backup, epoch seconds.
      type: float
    age_seconds:
      description: Seconds since the start.
      type: int
    storage_class:
      description: Storage class of the data objects (null when they differ).
      type: str
    last_modified:
      description: When the manifest was uploaded, ISO 8601 UTC.
      type: str
    objects:
      description: Number of data objects present.
      type: int
    encrypted:
      description:
        - Whether the data objects are encrypted client-side (their sizes are those of the encrypted format), or
          null when that cannot be told (objects missing or of the wrong size).
        - O(mode=push) - whether this run encrypted it (or, for V(already_offsite), whether the copy offsite is).
      type: bool
    key_id:
      description:
        - The id of the backup key an encrypted copy is encrypted with, from the header of its first data object
          (a hash of the key, never the key), or null.
      type: str
      sample: 3f9a0c2d81b47e65
    valid:
      description: Whether the manifest is well-formed and every data object is there with the manifest's size.
      type: bool
    signed:
      description:
        - V(true) when the manifest is signed by O(backup_key) or one of O(backup_previous_keys); V(false) when it
          carries no signature; null when no key was given to check it.
        - With a key, a manifest not signed (without O(allow_unsigned)), signed by another key, or changed after
          signing makes the entry not valid, with the reason in RV(backups[].problems) - it is never RV(newest),
          never pulled as latest, never counted among O(keep_min), and never pruned.
      type: bool
    signed_by:
      description: The id of the key whose signature was checked (a hash of the key, never the key); else null.
      type: str
    problems:
      description: What makes it invalid.
      type: list
      elements: str
pushed:
  description: Names of the backups uploaded (or that would be, in check mode).
  returned: when O(mode=push)
  type: list
  elements: str
already_offsite:
  description: Names of the backups already offsite with the same sha256 (not uploaded again).
  returned: when O(mode=push)
  type: list
  elements: str
bytes:
  description: Bytes uploaded by this run.
  returned: when O(mode=push)
  type: int
duration:
  description: Seconds this run took (O(mode=push)); seconds of download and verification (O(mode=pull)).
  returned: when O(mode=push) or O(mode=pull)
  type: float
  sample: 4.2
throughput_mb_s:
  description: Bytes moved per second, in MB (10^6 bytes), or null when nothing moved.
  returned: when O(mode=push) or O(mode=pull)
  type: float
  sample: 180.4
status:
  description:
    - O(mode=pull) - V(pulled), V(already_local) (the same backup is already in O(backup_dir)) or V(would_pull).
  returned: when O(mode=pull)
  type: str
  sample: pulled
passed_over:
  description:
    - O(mode=pull) - the backups tried before the one pulled that did not verify (with O(fallback)), newest first;
      empty when none was passed over. Nothing of them was kept.
    - A pull with O(fallback) that fails also returns the backups it tried, each with why.
  returned: when O(mode=pull)
  type: list
  elements: dict
  contains:
    name:
      description: The backup's name.
      type: str
      sample: backup_2026-01-05_02-00-00
    error:
      description: Why - V(checksum_mismatch), V(not_authentic) or V(object_missing) (see RV(error)).
      type: str
      sample: checksum_mismatch
    msg:
      description: The message of that failure.
      type: str
path:
  description: The pulled backup's data (file or directory), ready for M(tokotani.dr.postgresql_restore).
  returned: when O(mode=pull)
  type: str
  sample: /srv/tokotani/backups/backup_2026-01-05_02-00-00.dir
manifest_path:
  description: The pulled backup's manifest.
  returned: when O(mode=pull)
  type: str
database:
  description: The database of the pulled backup.
  returned: when O(mode=pull)
  type: str
format:
  description: The pulled backup's format.
  returned: when O(mode=pull)
  type: str
compression:
  description: The pulled backup's compression.
  returned: when O(mode=pull)
  type: str
started_at:
  description: Start of the pulled backup, ISO 8601 UTC.
  returned: when O(mode=pull)
  type: str
verified:
  description: Whether this run downloaded the backup and verified its sha256 against the manifest.
  returned: when O(mode=pull)
  type: bool
encrypted:
  description:
    - O(mode=pull) - whether the offsite copy is encrypted client-side (then every chunk was authenticated and
      decrypted before the sha256 check).
    - O(mode=push) of one backup - whether it was pushed encrypted (or, already offsite, whether that copy is).
  returned: when O(mode=pull), or O(mode=push) of one backup
  type: bool
key_id:
  description:
    - The id of the backup key the copy is encrypted with (a hash of the key, never the key), or null for a plain
      copy. Several ids, comma-separated, when the files of a directory backup name different keys.
  returned: when O(mode=pull), or O(mode=push) of one backup
  type: str
  sample: 3f9a0c2d81b47e65
manifest:
  description: The pulled backup's manifest.
  returned: when O(mode=pull)
  type: dict
count:
  description: Number of backups offsite (of O(database), when set).
  returned: when O(mode=list)
  type: int
valid_count:
  description: Number of valid backups offsite.
  returned: when O(mode=list)
  type: int
total_size:
  description: Bytes of all backups offsite, from their manifests.
  returned: when O(mode=list)
  type: int
newest:
  description: The newest valid backup offsite (an element of RV(backups)), or null.
  returned: when O(mode=list)
  type: dict
newest_age_seconds:
  description: Age of the newest valid backup offsite in seconds, or null.
  returned: when O(mode=list)
  type: int
newest_before:
  description: The newest valid backup offsite started before O(before), or null.
  returned: when O(mode=list) and O(before) is set
  type: dict
incomplete:
  description: Data without a manifest (an interrupted push or prune), with its C(name), number of C(keys),
    C(size) and C(last_modified).
  returned: when O(mode=list)
  type: list
  elements: dict
pruned:
  description: The backups removed (or that would be, in check mode), each with C(name), C(database) and C(reason).
  returned: when O(mode=prune)
  type: list
  elements: dict
kept:
  description: The backups kept, each with C(name), C(database) and C(reason).
  returned: when O(mode=prune)
  type: list
  elements: dict
removed_incomplete:
  description: Names of incomplete data removed (older than O(keep_days)).
  returned: when O(mode=prune)
  type: list
  elements: str
deleted_objects:
  description: Number of objects deleted.
  returned: when O(mode=prune)
  type: int
freed_bytes:
  description: Bytes removed (or that would be).
  returned: when O(mode=prune)
  type: int
error:
  description:
    - On failure, what kind of problem it is - V(bucket_missing), V(access_denied), V(no_credentials),
      V(endpoint_unreachable), V(tls), V(object_missing), V(checksum_mismatch), V(throttled), V(archived),
      V(no_backup), V(conflict), V(local), V(invalid), V(s3), V(key_missing) (an encrypted copy, and not the
      key that encrypted it) or V(not_authentic) (an encrypted object that does not authenticate - changed,
      damaged, truncated, reordered or copied from another key).
  returned: failure
  type: str
  sample: checksum_mismatch
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.tokotani.dr.plugins.module_utils.errors import call
from ansible_collections.tokotani.dr.plugins.module_utils.s3_offsite import (
    BOTO3_IMPORT_ERROR,
    HAS_BOTO3,
    run,
)
from ansible_collections.tokotani.dr.plugins.module_utils.specs import (
    SpecError,
    offsite_argument_spec,
    offsite_constraints,
)


def main():
    module = AnsibleModule(
        argument_spec=offsite_argument_spec(),
        supports_check_mode=True,
        required_if=[["mode", "pull", ["backup_dir"]]],
        required_by={"kms_key_id": "encryption"},
    )
    # The result has a path (a pulled directory backup): keep AnsibleModule from replacing size with
    # the size of the directory inode.
    module.add_path_info = lambda kwargs: kwargs
    if not HAS_BOTO3:
        module.fail_json(msg=missing_required_lib("boto3"), exception=BOTO3_IMPORT_ERROR)
    try:
        params, problem = offsite_constraints(module.params), None
    except SpecError as err:
        params, problem = None, str(err)
    if problem:  # outside the except block (see errors.call)
        module.fail_json(msg=problem)
    result, failure = call(run, params, params["mode"], check_mode=module.check_mode)
    if failure:
        failure.setdefault("error", "invalid")
        module.fail_json(changed=False, mode=params["mode"], **failure)
    for warning in result.pop("warnings", []):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
