"""Write a trained model as the serving bundle of `contract.bundle`: model.onnx, its int8 copy
model.int8.onnx, and manifest.json.

The service reads nothing else, so everything it needs (vocabularies, popularity fallback,
sequence length, checksums) goes into the manifest here, through the contract's `Manifest`.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from contract.bundle import (
    FORMAT_VERSION,
    INT8_ONNX_FILE,
    ITEMS_INPUT,
    MANIFEST_FILE,
    ONNX_FILE,
    ONNX_FILES,
    SCORES_OUTPUT,
    USERS_INPUT,
    Lineage,
    Manifest,
    ModelDescription,
    Popularity,
    TrainingData,
    sha256_hex,
)
from contract.ids import PADDING_INDEX
from model import SequentialRecommender
from training.dataset import Sequences
from training.int8 import write_int8_graph

# An example batch of 1 would let the exporter specialise the batch dimension to 1.
_EXAMPLE_BATCH = 2


class _ServingScores(nn.Module):
    """The model's full scores with the padding column dropped: column j is item index j + 1."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, items: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        return self.model(items, users)[:, PADDING_INDEX + 1 :].float()


@dataclass(frozen=True)
class DataSummary:
    """What a bundle records of the data its model was trained on: the vocabularies, the
    popularity ranking and the data's identity. Checkpoints carry it, so a checkpoint exports
    without its data."""

    users: tuple[str, ...]
    items: tuple[str, ...]
    popularity: Popularity
    training_data: TrainingData

    @classmethod
    def of(cls, data: Sequences) -> DataSummary:
        return cls(
            users=data.users.ids,
            items=data.items.ids,
            popularity=popularity(data),
            training_data=TrainingData(
                fingerprint=data.fingerprint(),
                num_users=data.num_users,
                num_items=data.num_items,
                num_interactions=data.num_interactions,
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (what `torch.load(weights_only=True)` reads back)."""
        return {
            "users": list(self.users),
            "items": list(self.items),
            "popularity": self.popularity.model_dump(),
            "training_data": self.training_data.model_dump(),
        }

    @classmethod
    def from_dict(cls, content: dict[str, Any]) -> DataSummary:
        return cls(
            users=tuple(content["users"]),
            items=tuple(content["items"]),
            popularity=Popularity.model_validate(content["popularity"]),
            training_data=TrainingData.model_validate(content["training_data"]),
        )


def popularity(data: Sequences) -> Popularity:
    """Item ids by training count, most interacted first (ties: lower index first)."""
    counts = data.item_counts()
    counts[PADDING_INDEX] = 0
    order = np.argsort(-counts, kind="stable")
    order = order[counts[order] > 0]
    return Popularity(
        items=[data.items.external(int(i)) for i in order],
        counts=[int(counts[i]) for i in order],
    )


def _write_onnx(model: nn.Module, sequence_length: int, path: Path) -> None:
    wrapper = _ServingScores(model).eval()
    items = torch.ones((_EXAMPLE_BATCH, sequence_length), dtype=torch.int64)
    users = torch.ones((_EXAMPLE_BATCH,), dtype=torch.int64)
    batch = torch.export.Dim("batch")
    # The exporter logs and warns about its own internals (missing torchvision, deprecations);
    # none of it concerns the bundle, and the CLI's output should stay readable.
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _export(wrapper, items, users, batch, path)
    finally:
        onnx_logger.setLevel(level)


def _export(
    wrapper: nn.Module, items: torch.Tensor, users: torch.Tensor, batch: Any, path: Path
) -> None:
    torch.onnx.export(
        wrapper,
        (items, users),
        str(path),
        input_names=[ITEMS_INPUT, USERS_INPUT],
        output_names=[SCORES_OUTPUT],
        dynamic_shapes={ITEMS_INPUT: {0: batch}, USERS_INPUT: {0: batch}},
        external_data=False,  # the weights inside the graph's one file
        dynamo=True,
        verbose=False,
    )


def check_replaceable(out_dir: str | os.PathLike) -> None:
    """Refuse an `out_dir` that exists and is not a bundle: exporting replaces it whole."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST_FILE).is_file():
        raise ValueError(f"{out_dir}: not empty and not a bundle; refusing to replace it")


def _publish(staging: Path, out_dir: Path) -> None:
    """Move a finished bundle into place so that a reader never sees half of one."""
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    try:
        out_dir.rename(retired / out_dir.name)
    except OSError:
        # out_dir cannot move (e.g. it is a mount point): replace file by file, manifest last;
        # its onnx_sha256 lets a reader detect and refuse the moment in between.
        shutil.rmtree(retired)
        for name in (*ONNX_FILES.values(), MANIFEST_FILE):
            os.replace(staging / name, out_dir / name)
        shutil.rmtree(staging)
        return
    staging.rename(out_dir)
    shutil.rmtree(retired)


def export_bundle(
    model: SequentialRecommender,
    data: Sequences | DataSummary,
    out_dir: str | os.PathLike,
    metrics: dict[str, Any] | None = None,
    lineage: Lineage | None = None,
) -> Path:
    """Export `model` (trained on `data`) as a serving bundle in `out_dir`; returns its path.
    `lineage`: where a retrained model comes from (training.retrain).

    The export runs on a CPU copy of the model in eval mode; `model` itself is left untouched.
    An existing bundle in `out_dir` is replaced as a whole, extra files included; any other
    existing, non-empty `out_dir` is refused (ValueError).
    """
    check_replaceable(out_dir)
    summary = data if isinstance(data, DataSummary) else DataSummary.of(data)
    hyperparameters = model.hyperparameters()
    sequence_length = int(hyperparameters["L"])
    out_dir = Path(out_dir).absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    cpu_model = copy.deepcopy(model).cpu().eval()

    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        onnx_path = staging / ONNX_FILE
        _write_onnx(cpu_model, sequence_length, onnx_path)
        onnx_sha256 = sha256_hex(onnx_path.read_bytes())
        int8_path = staging / INT8_ONNX_FILE
        write_int8_graph(onnx_path, int8_path, summary, sequence_length)
        manifest = Manifest.create(
            format_version=FORMAT_VERSION,
            model=ModelDescription(name=model.name, hyperparameters=hyperparameters),
            sequence_length=sequence_length,
            items=list(summary.items),
            users=list(summary.users),
            popularity=summary.popularity,
            metrics=metrics or {},
            training_data=summary.training_data,
            onnx_sha256=onnx_sha256,
            int8_onnx_sha256=sha256_hex(int8_path.read_bytes()),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            lineage=lineage,
        )
        (staging / MANIFEST_FILE).write_text(manifest.to_json())
        os.chmod(staging, 0o755)  # mkdtemp makes it 0700; readers may run as another user
        _publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir
