#!/usr/bin/python
# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Engine: plugins/module_utils/pg_backup.py (backup).

DOCUMENTATION = r"""
module: postgresql_backup
short_description: Back up one PostgreSQL database, with a manifest, atomically, and apply retention
version_added: "0.1.0"
description:
  - Dumps one database with C(pg_dump) into O(backup_dir) as C(backup_YYYY-MM-DD_HH-mm-ss.<ext>) (UTC; C(_1),
    C(_2) ... are appended when two backups start within the same second), with
    C(backup_YYYY-MM-DD_HH-mm-ss.manifest.json) beside it.
  - The manifest records the database, format, compression, size, sha256 (for a directory backup the sha256
    of its sorted per-file listing, and every file's own sha256), start and end, duration, server and
    C(pg_dump) versions, host, the database's properties (owner, encoding, locale, ACL, settings), and the
    exact row count of every table, counted in the same snapshot the dump reads (an exported snapshot
    handed to C(pg_dump --snapshot)). No manifest, no valid backup.
  - Written as C(<name>.partial), fsynced, then renamed into place after the manifest; a crash, kill or full
    disk never leaves something that looks like a backup. Stale C(.partial) leftovers of an interrupted run
    are removed by the next run, unless another backup in the directory is running. Files are mode 0600,
    the directory 0700 (an existing, looser directory is tightened, with a warning).
  - A lock per database (C(flock) on C(.tokotani-backup.<database>.lock) in O(backup_dir)) makes a second
    backup of the same database wait up to O(lock_timeout) seconds and then fail.
  - Before dumping, checks that C(pg_dump) is not older than the server (and names the package to install
    when it is) and that O(backup_dir) has room for about O(space_check_ratio) times the database's size.
  - After a successful backup, applies retention (O(keep_days), O(keep_min)) to this database's backups. A backup
    that a restore, an offsite push or pull, or a verification is reading (they hold a shared lock on
    C(.tokotani-use.<name>.lock) while they do) is skipped with a warning naming the reader, and removed by a
    later run.
  - Before the backup, removes what interrupted restores left - stale C(<database>__restore_<timestamp>) databases
    and C(.tokotani-restore-*) / C(.tokotani-verify-*) directories in O(backup_dir) (see
    M(tokotani.dr.postgresql_restore) for how a leftover is known to be stale), reported in RV(leftovers). After it,
    applies O(keep_previous) to the databases restores kept of O(database) (the new backup may be what lets one go),
    reported in RV(kept_databases); a kept database due to go that no backup holds is backed up first (a backup of
    that database, labelled C(keep_previous archive)).
  - Passwords reach C(pg_dump) and C(psql) through the environment, never through their command line.
author:
  - TokoTani DevOps Team (@tokotani)
extends_documentation_fragment:
  - tokotani.dr.postgres
  - tokotani.dr.backup_key
  - tokotani.dr.keep_previous
  - tokotani.dr.server_log
attributes:
  check_mode:
    support: full
    description: Connects and checks versions, then reports the path it would write and the backups it would prune.
  diff_mode:
    support: none
    description: There is nothing to compare; the result describes what was done.
options:
  database:
    description:
      - Name of the database to back up.
    type: str
    required: true
    aliases: [db]
  backup_dir:
    description:
      - Directory to write the backup to (created 0700 when missing). Several databases may share it.
    type: path
    required: true
  format:
    description:
      - V(directory) (default) - C(pg_dump -Fd -Z0 -j) O(jobs) with every table's file compressed by zstd while
        pg_dump writes it; restores in parallel (C(pg_restore -j)) after a parallel decompression beside the backup.
        The fastest format, in both directions.
      - V(plain) - an SQL script; with O(compression=gzip) this is the plan's own C(pg_dump | gzip)
        C(.sql.gz). Restores with one C(psql) session.
      - V(custom) - C(pg_dump -Fc) (gzip or no compression); restores in parallel.
    type: str
    choices: [directory, plain, custom]
    default: directory
  compression:
    description:
      - Compression of the backup. Defaults to V(zstd) for O(format=directory) and V(gzip) for the others.
      - V(zstd) is not available for O(format=custom) (PostgreSQL 15's pg_dump only has gzip built in).
      - V(gzip) for O(format=plain) uses C(pigz -p) O(jobs) when C(pigz) is installed (same file format).
    type: str
    choices: [zstd, gzip, none]
  compression_level:
    description:
      - Compression level. gzip - 1 to 9, default 6 (the plan's C(gzip)).
      - zstd - 1 to 19. When not set (recommended), every table is compressed with the better of two profiles
        measured on the shop's data, chosen on its first 4 MiB - zstd level 1 (numeric and hex tables), and
        level 3 with a minimum match length of 7 (text) - which makes the backup smaller than C(pg_dump | gzip)
        at a fraction of its time.
    type: int
  jobs:
    description:
      - Parallel C(pg_dump) workers (and zstd compressors) for O(format=directory); C(pigz) threads for
        O(format=plain) with gzip.
    type: int
    default: 2
  keep_days:
    description:
      - Retention - backups of this database older than this many days are pruned after a successful backup.
    type: int
    default: 14
  keep_min:
    description:
      - Retention - the newest O(keep_min) valid backups of this database are always kept, whatever their age.
        At least 1.
    type: int
    default: 3
  prune_legacy:
    description:
      - Let retention also remove legacy C(backup_*.sql.gz) files (from the team's earlier scripts, without a
        manifest) older than O(keep_days), and only while O(keep_min) valid backups with manifests exist.
      - Off by default - a legacy file carries no database name, so the module cannot tell whose it is.
    type: bool
    default: false
  label:
    description:
      - Free text stored in the manifest (for example V(before-deploy-1.4.2) or V(nightly)).
    type: str
  lock_timeout:
    description:
      - Seconds to wait for another backup of the same database in O(backup_dir) to finish before failing.
    type: int
    default: 300
  space_check:
    description:
      - Check the free space of O(backup_dir) before dumping.
    type: bool
    default: true
  space_check_ratio:
    description:
      - Free space needed, as a fraction of the database's size (C(pg_database_size)). V(0) disables the check.
      - When unset and there is a previous valid backup of the database in O(backup_dir), the estimate follows it
        instead - its size x 1.25, plus for zstd directory backups the largest table (which sits uncompressed
        until it is complete). Without one, 0.75 for zstd directory backups, 0.5 for the other compressed ones
        and 1.2 without compression.
    type: float
  shrink_check:
    description:
      - The suspicious-backup guard - compare the new backup's row counts with the newest valid backup of the
        database here that is not itself suspicious, and mark the new one C(suspicious) in its (signed) manifest when
        a table shrank sharply (see O(shrink_threshold)). A suspicious backup is never picked as V(latest) by
        M(tokotani.dr.postgresql_restore) or M(tokotani.dr.backup_offsite) unless it is named or C(accept_suspicious)
        is set, and M(tokotani.dr.backup_info) flags it.
      - Set V(false) for one run after an expected shrink (a purge); that backup becomes the new baseline.
    type: bool
    default: true
  shrink_threshold:
    description:
      - The fraction of a table's rows that may be lost since the baseline before the backup is suspicious (a
        table that is gone always is), for tables of at least O(shrink_min_rows) rows in the baseline.
    type: float
    default: 0.3
  shrink_min_rows:
    description: Tables smaller than this in the baseline are never compared (a few test rows come and go).
    type: int
    default: 1000
  shrink_tables:
    description:
      - Thresholds per table, overriding O(shrink_threshold) - keys C(name) (a table of the C(public) schema) or
        C(schema.name), values fractions (V(1) never flags that table).
    type: dict
    default: {}
notes:
  - "Format choice, measured on this project's 2-core machine with the generated shop database (about 1 GB
    on disk, 415 MB of SQL) - C(pg_dump > /dev/null) 2.5-3.5 s; C(pg_dump | gzip) 19-21 s, 131 MB;
    this module's default (directory, zstd, 2 jobs, including checksums, fsync and manifest) 3.4-4.0 s,
    129 MB - about 5x faster than the plan's pipeline and smaller. C(make bench) reruns the comparison;
    C(bench/README.md) has the measurements behind the choice."
  - The default format needs C(zstd) on the target (Debian/Ubuntu package C(zstd)).
  - Large objects, sequences, extensions, views, materialized views, functions, triggers, grants and comments
    are all in the dump (C(pg_dump) without C(--create)); the database's own owner, ACL, settings, comment and
    connection limit are recorded in the manifest and re-applied by M(tokotani.dr.postgresql_restore).
    Roles are cluster-wide and are not part of a database backup.
seealso:
  - module: tokotani.dr.postgresql_restore
  - module: tokotani.dr.backup_info
"""

EXAMPLES = r"""
- name: Take the nightly backup of the shop database (the plan's "npm run phase10:backup")
  tokotani.dr.postgresql_backup:
    database: tokotani
    backup_dir: /srv/tokotani/backups
    login_host: 127.0.0.1
    login_user: postgres
    login_password: "{{ vault_postgres_password }}"
    label: nightly
  register: backup

- name: Show what was written
  ansible.builtin.debug:
    msg: >-
      {{ backup.path }} ({{ backup.size | human_readable }}, {{ backup.duration }} s,
      pruned {{ backup.pruned | length }})

- name: A plain .sql.gz, as the team's earlier scripts made it, over the unix socket, keeping 30 days
  tokotani.dr.postgresql_backup:
    database: tokotani
    backup_dir: /srv/tokotani/backups
    login_unix_socket: /var/run/postgresql
    format: plain
    compression: gzip
    keep_days: 30
    keep_min: 5
  become: true
  become_user: postgres

- name: What would a backup write and prune? (writes nothing)
  tokotani.dr.postgresql_backup:
    database: tokotani
    backup_dir: /srv/tokotani/backups
  check_mode: true
"""

RETURN = r"""
path:
  description: The backup (a directory for O(format=directory), else a file); in check mode, the path it would have.
  returned: always
  type: str
  sample: /srv/tokotani/backups/backup_2026-01-05_02-00-00.dir
manifest_path:
  description: The manifest beside the backup.
  returned: always
  type: str
  sample: /srv/tokotani/backups/backup_2026-01-05_02-00-00.manifest.json
name:
  description: The backup's name (the common stem of the data and the manifest).
  returned: always
  type: str
  sample: backup_2026-01-05_02-00-00
database:
  description: The database backed up.
  returned: always
  type: str
  sample: tokotani
format:
  description: The format written.
  returned: always
  type: str
  sample: directory
compression:
  description: The compression used.
  returned: always
  type: str
  sample: zstd
manifest:
  description: The manifest's content (see the module description for its fields).
  returned: success and not check mode
  type: dict
size:
  description: Size of the backup in bytes.
  returned: success and not check mode
  type: int
  sample: 129014116
sha256:
  description: sha256 of the backup file, or of a directory backup's sorted per-file listing.
  returned: success and not check mode
  type: str
  sample: 5e73193ec7840fe37b569e40b0d8903fe578f2c9dc1338b0c6b8cfba3c002a5c
signed:
  description: Whether the manifest was signed with O(backup_key).
  returned: success and not check mode
  type: bool
  sample: true
key_id:
  description: The id of the key that signed the manifest (a hash of the key, never the key); null when unsigned.
  returned: success and not check mode
  type: str
  sample: 3f9c2a7d41b0e6c8
duration:
  description: Seconds from start to the backup being in place (before retention).
  returned: success and not check mode
  type: float
  sample: 3.7
database_size:
  description: C(pg_database_size) of the database, in bytes.
  returned: always
  type: int
  sample: 1023909223
throughput_mb_s:
  description: Database size divided by duration, in MB per second.
  returned: success and not check mode
  type: float
  sample: 276.7
tables:
  description: Number of tables whose row counts the manifest holds.
  returned: success and not check mode
  type: int
  sample: 8
rows:
  description: Total rows of those tables.
  returned: success and not check mode
  type: int
  sample: 7080944
pruned:
  description: Backups removed by retention (in check mode, that would be removed), with the reason.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "backup_2025-12-01_02-00-00", "path": "/srv/tokotani/backups/backup_2025-12-01_02-00-00.dir",
            "kind": "managed", "reason": "older than 14 days"}]
retention:
  description:
    - The retention settings applied and how many of this database's backups are kept; C(in_use) lists the backups
      retention skipped because a run was reading them (C(name), C(path), C(reason), C(in_use_by)).
  returned: always
  type: dict
  sample: {"keep_days": 14, "keep_min": 3, "kept": 14, "in_use": []}
leftovers:
  description:
    - What interrupted runs had left in O(backup_dir) and on the server, and what this run did with each - C(kind)
      (V(scratch_database), V(work_directory) or V(lock_file)), C(name), C(path), C(action) (V(removed), V(left),
      V(failed); in check mode V(would_remove)), C(reason), and C(holders) of what is in use.
  returned: always
  type: list
  elements: dict
  sample: [{"kind": "work_directory", "name": ".tokotani-restore-3f9a1c2e", "action": "removed",
            "path": "/srv/tokotani/backups/.tokotani-restore-3f9a1c2e",
            "reason": "its run ended without removing it (no process holds its lock)"}]
kept_databases:
  description:
    - What O(keep_previous) did with each database restores kept of O(database) - C(name), C(kind) (V(pre_restore) or
      V(failed_restore)), C(made_at), C(action) (V(kept), V(dropped), V(failed); in check mode V(would_drop)),
      C(reason) and C(backup) (the backup of the kept database that holds its data - taken by this run when there
      was none).
  returned: always
  type: list
  elements: dict
  sample: [{"name": "tokotani__pre_restore_20260101_020000", "kind": "pre_restore", "action": "dropped",
            "made_at": "2026-01-01T02:00:00.000000Z",
            "reason": "beyond the newest 2; backed up first as backup_2026-01-05_02-00-41",
            "backup": "backup_2026-01-05_02-00-41"}]
removed_partials:
  description: Leftovers of interrupted runs that were removed (in check mode, that would be removed).
  returned: always
  type: list
  elements: str
  sample: [backup_2026-01-04_02-00-00.dir.partial]
space:
  description: The free-space check - free bytes, needed bytes and how they were estimated (null when disabled).
  returned: always
  type: dict
  sample: {"free_bytes": 70799572992, "needed_bytes": 168000000,
           "estimate": "128.0 MB of the previous backup backup_2026-01-04_02-00-00 x 1.25 + 8.0 MB for the largest
                        table"}
suspicious:
  description:
    - Set when the backup is suspicious (O(shrink_check)) - C(compared_with) (the baseline), C(reason), C(tables)
      (each C(table), C(previous_rows), C(rows), C(lost)); null otherwise.
    - A backup that ends while a recovery of the database is in progress (M(tokotani.dr.recovery_run)) is suspicious
      too, whatever O(shrink_check) says - C(compared_with) null, C(tables) empty, C(recovery_run) the run - since it
      holds the database being recovered from.
  returned: success, when not in check mode
  type: dict
  sample: {"compared_with": "backup_2026-01-04_02-00-00",
           "reason": "compared with backup_2026-01-04_02-00-00: public.order_items has 2290000 rows, 50% fewer than
                      4590000",
           "tables": [{"table": "public.order_items", "previous_rows": 4590000, "rows": 2290000, "lost": 0.5011}]}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tokotani.dr.plugins.module_utils.errors import call
from ansible_collections.tokotani.dr.plugins.module_utils.pg_backup import backup
from ansible_collections.tokotani.dr.plugins.module_utils.specs import backup_argument_spec


def main():
    module = AnsibleModule(argument_spec=backup_argument_spec(), supports_check_mode=True)
    # RV(size) is the sum of the backup's files: keep AnsibleModule from replacing it with the
    # size of the directory inode (it adds file attributes to any result that has a path).
    module.add_path_info = lambda kwargs: kwargs
    result, failure = call(backup, module.params, check_mode=module.check_mode)
    if failure:
        module.fail_json(**failure)
    for warning in result.pop("warnings", []):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
