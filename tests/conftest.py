import os

import pytest
import torch

# Tests must never reach a hub, and must not read or write the user's edgekit config.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_edgekit_dirs(tmp_path_factory, monkeypatch):
    base = tmp_path_factory.mktemp("edgekit-home")
    monkeypatch.setenv("EDGEKIT_CONFIG_DIR", str(base / "config"))
    monkeypatch.setenv("EDGEKIT_DATA_DIR", str(base / "data"))
    torch.manual_seed(0)
    yield
