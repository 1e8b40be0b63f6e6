"""How errors and figures read: close matches, unknown names, an exception's first line, bytes."""

from __future__ import annotations

import difflib
from collections.abc import Sequence


def close_matches(target: str, candidates: Sequence[str], *, cutoff: float = 0.5) -> list[str]:
    """Up to five candidates that look like ``target`` (typos, or the same last path component)."""
    close = difflib.get_close_matches(target, list(candidates), n=5, cutoff=cutoff)
    if not close:
        last = target.rsplit(".", 1)[-1]
        close = [c for c in candidates if c.rsplit(".", 1)[-1] == last][:5]
    return close


def unknown_name_error(
    what: str, name: str, candidates: Sequence[str], *, way_out: str = "", cutoff: float = 0.5
) -> ValueError:
    """A ValueError naming the unknown ``name``, its close matches, and how to find valid ones."""
    close = close_matches(name, candidates, cutoff=cutoff)
    hint = f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""
    tail = f" {way_out}" if way_out else ""
    return ValueError(f"Unknown {what} {name!r}.{hint}{tail}")


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """``"<ExceptionType>: <first line of its message>"``, cut to ``limit`` characters."""
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0] if text else ''}".strip()
    if limit is not None and len(line) > limit:
        line = line[: limit - 3] + "..."
    return line


def one_line(exc: BaseException) -> str:
    """The whole message of ``exc`` on a single line: ``ValueError: No module matches 'x' ...``."""
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text}"


def format_bytes(n: float) -> str:
    """Bytes in binary units, labelled as such: ``"0 B"``, ``"1.50 KiB"``, ``"44.6 MiB"``.

    One convention for every panel (powers of 1024, IEC names), three significant digits.
    """
    value, unit = float(n), "B"
    for larger in ("KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024:
            break
        value, unit = value / 1024, larger
    if unit == "B":
        return f"{value:.0f} B"
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:.{digits}f} {unit}"


def format_count(n: int) -> str:
    """A count as people read it: ``"999"``, ``"148K"``, ``"1.23M"``, ``"69.0B"``, ``"1.20T"``.

    Three significant digits from 1,000 up (decimal units, as parameter counts are quoted);
    rounding carries into the next unit (999,999 is ``"1.00M"``, never ``"1000K"``).
    """
    value, unit = float(n), ""
    for larger in ("K", "M", "B", "T"):
        if abs(value) < 999.5:
            break
        value, unit = value / 1000, larger
    if not unit:
        return f"{int(n)}"
    digits = 0 if abs(value) >= 99.95 else 1 if abs(value) >= 9.995 else 2
    return f"{value:.{digits}f}{unit}"
