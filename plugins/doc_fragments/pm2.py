# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options shared by the pm2 modules of tokotani.dr: which pm2, whose daemon."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  user:
    description:
      - System user whose pm2 daemon to talk to; pm2 (and any process it starts) runs as this user.
      - Defaults to the user the module runs as. Acting for another user needs root (C(become=true));
        the module then runs pm2 through C(runuser) (or C(sudo)) with that user's C(HOME) and O(pm2_home).
    type: str
    aliases: [run_as]
  pm2_home:
    description:
      - The daemon's C(PM2_HOME) directory (process list, logs, C(dump.pm2), sockets).
      - Defaults as pm2 does - the C(PM2_HOME) environment variable of the module when O(user) is not set,
        else C(~/.pm2) of O(user).
    type: path
  executable:
    description:
      - Path of the pm2 executable.
      - By default the first C(pm2) on C(PATH), then in C(/usr/local/bin), C(/usr/bin), C(/opt/nodejs/bin), the
        global npm package directories, and O(user)'s C(~/.npm-global/bin), C(~/.local/bin), C(~/bin), C(~/.volta/bin)
        and C(~/.nvm/versions/node/*/bin) (newest first).
      - The C(node) beside it (else the one on C(PATH)) runs it.
    type: path
requirements:
  - pm2 on the target (C(npm install -g pm2); pm2 7 needs Node.js 18 or later) and Node.js.
notes:
  - The processes' environment (C(pm2_env), which holds the app's secrets such as C(NEXTAUTH_SECRET) and
    C(DATABASE_URL)) is never returned. Of each process only its name, ids, status, restarts, times, paths,
    versions, resources and arguments are returned, and arguments whose name looks secret (secret, token,
    password, key, credential, auth, cookie, session, private, dsn, database_url) and passwords inside URLs
    are masked.
"""
