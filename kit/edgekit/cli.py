"""The `edgekit` command: a thin click layer over the library.

Each command lives in edgekit/commands/<name>.py and registers itself on the group; the
library does the work, the command parses options and prints.
"""
from __future__ import annotations

import importlib

import click

from . import __version__

# Each module exposes register(group). Order is the order of `edgekit --help`.
_COMMAND_MODULES = (
    "edgekit.commands.inspect",
    "edgekit.commands.export",
    "edgekit.commands.latency",
    "edgekit.commands.remote",
    "edgekit.commands.train",
    "edgekit.commands.search",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edgekit")
def main() -> None:
    """Deploy HuBERT-family speech encoders to phones and Raspberry Pis."""


for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(main)


if __name__ == "__main__":
    main()
