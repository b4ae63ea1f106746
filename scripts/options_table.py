"""Rewrite the README's table of ``tristream run`` options from the config's fields.

Usage: ``python scripts/options_table.py`` (``--check``: exit 1 if the README is stale).
"""

from __future__ import annotations

import sys
from pathlib import Path

from tristream.cli import options_table

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- options: begin (scripts/options_table.py) -->\n", "<!-- options: end -->\n"


def rewritten(text: str) -> str:
    """``text`` (the README) with the block between the markers replaced by the table."""
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    if not rest or not tail and END not in rest:
        raise SystemExit(f"{README}: the options markers are missing")
    return head + BEGIN + options_table() + END + tail


def main() -> int:
    text = README.read_text(encoding="utf-8")
    new = rewritten(text)
    if "--check" in sys.argv[1:]:
        return 0 if new == text else 1
    README.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
