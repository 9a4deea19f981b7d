"""Two tiers of errors.

UserError: something the user gave us is wrong; the message is one line saying what was found,
what was expected and how to fix it. The CLI prints it and exits non-zero, no traceback.
Anything else escaping a command is a bug in edgekit and is reported as one.
"""


class UserError(Exception):
    """Bad input: shown to the user as one line."""

    exit_code = 1


class FormatError(UserError):
    """A file that is not what it claims, or a checkpoint edgekit does not understand."""


class MissingDependencyError(UserError):
    """An optional runtime or toolchain is not installed; the message names the pip extra."""

    def __init__(self, module: str, extra: str):
        super().__init__(f"{module} is not installed; install it with: pip install \"edgekit[{extra}]\"")
        self.module, self.extra = module, extra


def require_module(module: str, extra: str):
    """Import an optional dependency or raise MissingDependencyError naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(module, extra) from None
