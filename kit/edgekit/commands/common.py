"""Shared CLI pieces: the --json option, one-line errors, JSON output."""
from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable

import click
from rich.console import Console

from ..errors import UserError


def json_option(fn: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(fn)


def user_errors(fn: Callable) -> Callable:
    """Turn user errors (and ValueError from validation) into one-line ClickExceptions."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except (UserError, ValueError, FileNotFoundError, PermissionError) as e:
            raise click.ClickException(_one_line(e)) from None
        except KeyboardInterrupt:
            click.echo("interrupted; nothing half-written was left behind", err=True)
            sys.exit(130)

    return wrapper


def _one_line(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if isinstance(e, (FileNotFoundError, PermissionError)) and e.filename:
        text = f"{e.strerror}: {e.filename}"
    return " ".join(text.split())


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def fmt_count(n: float) -> str:
    """12_345_678 -> '12.35M'; keeps tables short and stable."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def console(stderr: bool = False, width: int = 110) -> Console:
    """The console every command prints its tables through."""
    # A fixed width keeps tables identical in a terminal, a pipe and CliRunner tests. Plain
    # lines are never wrapped (soft_wrap): a table path longer than the width must stay
    # whole to be copied. No markup: names and paths hold brackets
    # ("tiny-student[conv_32ch...]") that rich would eat.
    return Console(width=width, highlight=False, soft_wrap=True, stderr=stderr, markup=False)
