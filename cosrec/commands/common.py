"""What every command shares: one-line usage errors, exit status 2, argument types.

Torch-free and service-free: `cosrec serve` runs where only the service is installed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

USAGE_ERROR = 2


class UsageError(Exception):
    """A bad argument or unreadable input: reported as one line, exit status 2."""


class CommandParser(argparse.ArgumentParser):
    """argparse whose errors raise (one line, reported by `run_command`) instead of usage."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def run_command(prog: str, body: Callable[[], int | None]) -> int:
    """Run a command's body; a usage error or bad input (ValueError, OSError: unreadable
    data, a bad bundle or checkpoint) is one line on stderr and exit status 2."""
    try:
        return int(body() or 0)
    except SystemExit as done:  # --help
        return int(done.code or 0)
    except (UsageError, ValueError, OSError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        print(f"{prog}: error: {message}", file=sys.stderr)
        return USAGE_ERROR


def log_line(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be non-negative, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text}")
    return value


def int_list(text: str) -> list[int]:
    """Comma-separated non-negative integers, e.g. `128,256`."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return values


def duration_s(text: str) -> float:
    """A duration: seconds, or a number with s, m, h or d (`90`, `45s`, `30m`, `1h`, `2d`)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 90, 30m or 1h, got {text!r}"
        ) from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value
