"""Export: prepare -> quantize -> lower -> parity gate -> atomic write of artifact + manifest."""
from .lower import DEFAULT_QUANT, lower_module
from .parity import ParityError, ParityResult
from .pipeline import ExportResult, export_model
from .prepare import export_form, prepare_module, rewrite_norms
from .report import DTYPES, FORMATS, REWRITES_REVISION, SUFFIX, LoweringReport

__all__ = ["DEFAULT_QUANT", "DTYPES", "FORMATS", "SUFFIX", "ExportResult", "LoweringReport", "ParityError", "ParityResult", "export_model", "lower_module", "prepare_module",
           "rewrite_norms", "export_form", "REWRITES_REVISION"]
