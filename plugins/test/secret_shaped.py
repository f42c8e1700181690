# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The test tokotani.dr.secret_shaped: module_utils/dotenv.py's secret_value, where the logic and its unit tests are;
documented in secret_shaped.yml beside this file."""

from __future__ import annotations

from ansible_collections.tokotani.dr.plugins.module_utils.dotenv import secret_value


class TestModule:
    """tokotani.dr.secret_shaped - whether a value read back has the shape of a secret to write into a .env."""

    def tests(self):
        return {"secret_shaped": secret_value}
