# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Text for operators: durations in words and excerpts of a tool's output.

Pure standard library, no imports of the collection: every engine may use it, the host-side
runner included (it is one of the files the backup role installs for it).
"""

from __future__ import annotations

import math

# How many lines of a failed tool's stderr a result carries.
STDERR_EXCERPT_LINES = 25

# (below, unit seconds, unit) of the "report" style: 100 s to 100 min in minutes, then hours up to 48 h, then days.
_REPORT_UNITS = ((6000, 60, "min"), (172800, 3600, "h"), (math.inf, 86400, "d"))


def drop_point_zero(text):
    """'4' for '4.0', anything else as it is (numbers printed with one decimal)."""
    return text[:-2] if text.endswith(".0") else text


def human_duration(seconds, style="clock"):
    """A duration in words, in one of two styles.

    ``clock`` (the catalog's messages, e.g. a backup's age): the two largest units, truncated to
    whole seconds - 59s, 12m 5s, 1h 30m, 2d 1h.

    ``report`` (the drill report): one unit, at most one decimal - 4.2 s, 48 s, 2.5 min, 30 min,
    24 h, 3 d; negative durations with a leading '-', and '-' for None.
    """
    if style == "report":
        return _report_duration(seconds)
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def _report_duration(seconds):
    if seconds is None:
        return "-"
    if seconds < 0:
        return "-" + _report_duration(-seconds)
    if seconds < 10:
        return drop_point_zero(f"{seconds:.1f}") + " s"
    if seconds < 100:
        return f"{round(seconds)} s"
    for below, unit_seconds, unit in _REPORT_UNITS:
        if seconds < below:
            return drop_point_zero(f"{seconds / unit_seconds:.1f}") + " " + unit
    return "-"  # not reached: the last row has no upper bound


def excerpt(text, lines=STDERR_EXCERPT_LINES):
    """The last lines of a tool's output, without the noise of empty lines ('' for none)."""
    if not text:
        return ""
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])
