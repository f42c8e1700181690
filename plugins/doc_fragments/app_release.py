# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where the app's releases are and how their migrations are compared with the database's, shared by
app_release_info and app_release."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  base_dir:
    description: The app's base directory (C(tokotani_app_base_dir)), holding C(releases/) and C(current).
    type: path
    default: /srv/tokotani
  migrations_dir:
    description: Where a release keeps its migrations, relative to the release.
    type: str
    default: prisma/migrations
  database:
    description:
      - The app's database. When set, the migrations applied in it (C(_prisma_migrations), finished and not rolled
        back) are compared with the target release's (RV(schema)) - a database with migrations the target's code does
        not know has a newer schema than that code expects.
    type: str
    aliases: [db]
  login_os_user:
    description:
      - Run psql as this operating system user (peer authentication over the Unix socket), for example V(postgres)
        while the task itself runs as root. Needs root.
    type: str
notes:
  - The release layout is the one M(tokotani.dr.tokotani_app) builds, as M(community.general.deploy_helper) and
    Ansistrano lay it out - C(releases/<release>) with the marker C(.tokotani-release.json) of a completed build,
    C(current) the symbolic link to the live release.
  - Everything read back (directory names, markers, records, migration names, rows) is treated as possibly written by
    an intruder - names are confined to plain patterns, files are read without following links and with a size
    limit, and nothing read goes into SQL or a shell.
"""
