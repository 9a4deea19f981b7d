"""edgekit: deploy HuBERT-family speech encoders to phones and Raspberry Pis."""
from .arch import ArchSpec
from .models import build_model
from .zoo import create_model, get_spec, list_presets

__version__ = "0.1.0"


def load(source, subnet=None):
    """Load a preset name or a checkpoint in any supported format -> (nn.Module, ArchSpec).

    See edgekit.convert for the formats; unknown formats and keys are refused, never loaded
    partially.
    """
    from .convert import load as _load

    return _load(source, subnet=subnet)


__all__ = ["ArchSpec", "build_model", "create_model", "get_spec", "list_presets", "load", "__version__"]
