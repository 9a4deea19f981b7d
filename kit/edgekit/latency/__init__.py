"""Latency tables (schema, I/O, lookup), block signatures, profiling, prediction, estimation.

The search's entry point: `Predictor(best_table(device, backend, dtype)).predict_ms(spec, seconds)`.
"""
from .grid import BUILTIN_GRIDS, ProfileGrid, get_grid
from .predict import BlockPrediction, Prediction, Predictor
from .accuracy import Accuracy, accuracy, validate
from .cache import MeasurementCache
from .correction import fit_correction
from .measure import RuntimeMeasure, runtime_measure
from .profile import build_table, measure_blocks, measure_models
from .signature import BlockSig, block_signatures, parse_key
from .table import (SCHEMA, Correction, Entry, LatencyTable, Provenance, TableInfo, best_table, data_dir,
                    find_tables, load_table, save_table, shipped_tables_dir, table_from_dict, user_table_path,
                    user_tables_dir)

__all__ = ["Accuracy", "BUILTIN_GRIDS", "BlockPrediction", "BlockSig", "Correction", "Entry", "LatencyTable",
           "MeasurementCache", "Prediction", "Predictor", "ProfileGrid", "Provenance", "RuntimeMeasure", "SCHEMA", "TableInfo",
           "accuracy", "best_table", "block_signatures", "build_table", "data_dir", "find_tables",
           "fit_correction", "get_grid", "load_table", "measure_blocks", "measure_models", "parse_key",
           "runtime_measure", "save_table", "shipped_tables_dir", "table_from_dict", "user_table_path",
           "user_tables_dir", "validate"]
