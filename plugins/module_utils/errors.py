# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one error type behind every engine's errors (catalog, PostgreSQL, pm2, S3, drill report).

Pure standard library: the modules hand ``to_dict()`` to ``fail_json``, the host-side runner
writes it to the journal and the status file.
"""

from __future__ import annotations


class DrError(Exception):
    """A failure an operator can act on: a message, the command, rc and stderr excerpt behind it
    when there was one, and any further details (returned as they are)."""

    def __init__(self, msg, cmd=None, rc=None, stderr=None, **details):
        super().__init__(msg)
        self.msg = msg
        self.cmd = cmd
        self.rc = rc
        self.stderr = stderr
        self.details = details

    def to_dict(self):
        out = {"msg": self.msg}
        if self.cmd is not None:
            out["cmd"] = " ".join(self.cmd) if isinstance(self.cmd, (list, tuple)) else str(self.cmd)
        if self.rc is not None:
            out["rc"] = self.rc
        if self.stderr:
            out["stderr"] = self.stderr
        out.update(self.details)
        return out


def call(fn, *args, **kwargs):
    """(fn's result, None), or (None, the DrError's dict) when it raised one.

    Modules call ``fail_json`` with that dict after this returns, outside any ``except`` block:
    ansible-core 2.19 attaches the exception being handled to a ``fail_json`` made inside one,
    and an operator reading "An exception occurred during task execution" looks for a crash in
    what was a plain refusal.
    """
    try:
        return fn(*args, **kwargs), None
    except DrError as err:
        failure = err.to_dict()
    return None, failure
