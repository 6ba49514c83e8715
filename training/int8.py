"""The bundle's int8 graph: model.onnx with int8 weights and activations (docs/bundle.md).

Static quantization: every activation's scale is fixed here, from calibration rows, so a row's
scores never depend on the other rows of its batch (dynamic quantization takes one scale per
call over the whole batch: measured on ML-1M, a row's scores moved by up to 1.0 with its batch
neighbours). The final product that writes the scores keeps a float output: quantized, a row's
3,416 scores collapsed to ~100 distinct values, and the top 10 to ties.

The calibration rows are drawn from the training popularity (items) and the user vocabulary,
with a fixed seed: an export from a checkpoint, which carries no sequences, calibrates the same.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from contract.bundle import ITEMS_INPUT, USERS_INPUT

if TYPE_CHECKING:  # training.export imports this module
    from training.export import DataSummary

CALIBRATION_ROWS = 1024
CALIBRATION_BATCH = 64


def calibration_rows(
    summary: DataSummary, sequence_length: int, rows: int = CALIBRATION_ROWS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Histories of items drawn by training popularity, and user indices drawn uniformly
    (the generic user 0 included): int64 [rows, L] and [rows]."""
    rng = np.random.default_rng(seed)
    index = {item: position + 1 for position, item in enumerate(summary.items)}
    counts = np.asarray(summary.popularity.counts, dtype=np.float64)
    if counts.sum() > 0:
        candidates = np.array([index[item] for item in summary.popularity.items], dtype=np.int64)
        items = rng.choice(candidates, size=(rows, sequence_length), p=counts / counts.sum())
    else:  # no interactions recorded: every item alike
        items = rng.integers(1, len(summary.items) + 1, size=(rows, sequence_length))
    users = rng.integers(0, len(summary.users) + 1, size=rows)
    return items.astype(np.int64), users.astype(np.int64)


def write_int8_graph(
    onnx_path: Path, int8_path: Path, summary: DataSummary, sequence_length: int
) -> None:
    """Quantize the graph at `onnx_path` into `int8_path` (QDQ format, int8 weights, uint8
    activations, ranges by min/max over the calibration rows). Shapes are inferred first, as
    onnxruntime advises (without them most products stay float): by ONNX's shape inference,
    since onnxruntime's symbolic one fails on Caser's graph; for CosRec both give the same
    graph's accuracy and speed."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    items, users = calibration_rows(summary, sequence_length)

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._starts = iter(range(0, len(items), CALIBRATION_BATCH))

        def get_next(self) -> dict[str, np.ndarray] | None:
            start = next(self._starts, None)
            if start is None:
                return None
            stop = start + CALIBRATION_BATCH
            return {ITEMS_INPUT: items[start:stop], USERS_INPUT: users[start:stop]}

    prepared = int8_path.with_suffix(".prepared.onnx")
    root = logging.getLogger()  # the quantizer warns through the root logger about int inputs
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(int8_path),
            Batches(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"OpTypesToExcludeOutputQuantization": ["Gemm"]},
        )
    finally:
        root.setLevel(level)
        prepared.unlink(missing_ok=True)
