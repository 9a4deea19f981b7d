"""Where edgekit keeps the user's files: configuration (devices) and data (measured tables,
the profiling cache, measurements). Environment variables come first so tests and CI never
touch a real home directory."""
from __future__ import annotations

import os
from pathlib import Path


def config_dir() -> Path:
    """$EDGEKIT_CONFIG_DIR, else $XDG_CONFIG_HOME/edgekit, else ~/.config/edgekit."""
    return _dir("EDGEKIT_CONFIG_DIR", "XDG_CONFIG_HOME", ".config")


def data_dir() -> Path:
    """$EDGEKIT_DATA_DIR, else $XDG_DATA_HOME/edgekit, else ~/.local/share/edgekit."""
    return _dir("EDGEKIT_DATA_DIR", "XDG_DATA_HOME", ".local/share")


def _dir(own_var: str, xdg_var: str, home_default: str) -> Path:
    own = os.environ.get(own_var)
    if own:
        return Path(own)
    xdg = os.environ.get(xdg_var)
    return (Path(xdg) if xdg else Path.home() / home_default) / "edgekit"
