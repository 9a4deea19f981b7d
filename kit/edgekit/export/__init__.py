"""Export: prepare -> quantize -> lower -> parity gate -> atomic write of artifact + manifest."""
from .lower import DEFAULT_QUANT, lower_module
from .prepare import prepare_module, rewrite_norms
from .report import DTYPES, FORMATS, SUFFIX, LoweringReport

__all__ = ["DEFAULT_QUANT", "DTYPES", "FORMATS", "SUFFIX", "LoweringReport", "lower_module", "prepare_module",
           "rewrite_norms"]
