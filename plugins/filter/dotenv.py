# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The filter tokotani.dr.dotenv: module_utils/dotenv.py's parse, where the logic and its unit tests are; documented
in dotenv.yml beside this file (the test tokotani.dr.secret_shaped checks a value read)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.tokotani.dr.plugins.module_utils import dotenv as engine


def dotenv(text, keys=None):
    try:
        return engine.parse(text, keys)
    except TypeError as error:
        raise AnsibleFilterError(f"tokotani.dr.dotenv: {error}") from None


class FilterModule:
    """tokotani.dr.dotenv - the pairs of an app's .env, read as confined data."""

    def filters(self):
        return {"dotenv": dotenv}
