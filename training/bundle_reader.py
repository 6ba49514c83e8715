"""Scoring with a serving bundle (ONNX Runtime), for `cosrec evaluate --bundle`.

The service has its own reader; this one serves evaluation, where the data's index space (a
split read from files) must be mapped onto the bundle's by external id.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from training.dataset import GENERIC_USER_INDEX, PADDING_INDEX, Vocabulary
from training.evaluation import ScoreFn
from training.export import FORMAT_VERSION, MANIFEST_FILE, ONNX_FILE


@dataclass(frozen=True)
class Bundle:
    manifest: dict[str, Any]
    session: ort.InferenceSession

    @property
    def sequence_length(self) -> int:
        return int(self.manifest["sequence_length"])


def read_bundle(directory: str | Path) -> Bundle:
    """Load and check a bundle; ValueError names what is wrong with it."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_text())
        onnx_bytes = (directory / ONNX_FILE).read_bytes()
    except FileNotFoundError as error:
        raise ValueError(f"{directory}: not a bundle (no {Path(error.filename).name})") from error
    except json.JSONDecodeError as error:
        raise ValueError(f"{directory / MANIFEST_FILE}: not JSON ({error})") from error
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{directory}: bundle format {manifest.get('format_version')!r},"
            f" expected {FORMAT_VERSION}"
        )
    if hashlib.sha256(onnx_bytes).hexdigest() != manifest.get("onnx_sha256"):
        raise ValueError(f"{directory}: {ONNX_FILE} does not match the manifest's onnx_sha256")
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return Bundle(manifest=manifest, session=session)


def _index_map(data: Vocabulary, bundle_ids: list[str], unknown: int) -> np.ndarray:
    """data index -> bundle index (index 0 maps to 0; ids the bundle lacks map to `unknown`)."""
    positions = {id_: i + 1 for i, id_ in enumerate(bundle_ids)}
    return np.array([0, *(positions.get(id_, unknown) for id_ in data.ids)], dtype=np.int64)


def bundle_scorer(
    bundle: Bundle, users: Vocabulary, items: Vocabulary, batch_size: int = 1024
) -> ScoreFn:
    """A score function in the index space of `users`/`items` (e.g. a split's).

    Users unknown to the bundle become the generic user, unknown history items padding, and
    items the bundle cannot score get -inf, so they rank last.
    """
    user_map = _index_map(users, bundle.manifest["users"], GENERIC_USER_INDEX)
    item_map = _index_map(items, bundle.manifest["items"], PADDING_INDEX)
    scorable = item_map > 0
    columns = item_map[scorable] - 1  # the bundle's score column of each scorable data item

    def score(user_indices: np.ndarray, item_indices: np.ndarray) -> torch.Tensor:
        out = np.full((len(user_indices), len(item_map)), -np.inf, dtype=np.float32)
        for start in range(0, len(user_indices), batch_size):
            stop = start + batch_size
            (scores,) = bundle.session.run(
                ["scores"],
                {
                    "items": item_map[item_indices[start:stop]],
                    "users": user_map[user_indices[start:stop]],
                },
            )
            out[start:stop, scorable] = scores[:, columns]
        return torch.from_numpy(out)

    return score
