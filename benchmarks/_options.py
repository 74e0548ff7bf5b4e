"""``key=value`` command-line options of the benchmark scripts."""

from __future__ import annotations


def parse_options(argv: list[str], defaults: dict[str, str]) -> dict[str, str]:
    """``defaults`` updated from ``key=value`` arguments; an unknown key or a bare word ends
    the script with one line listing the options."""
    opts = dict(defaults)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in defaults:
            raise SystemExit(f"unknown option '{arg}'; options: {', '.join(defaults)}")
        opts[key] = value
    return opts
