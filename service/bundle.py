"""Load and verify a serving bundle (docs/bundle.md): JSON and ONNX only, never pickle."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
ONNX_FILE = "model.onnx"

log = logging.getLogger("cosrec.service")


class BundleError(Exception):
    """A bundle that cannot be served; the message says why."""


@dataclass(frozen=True)
class Bundle:
    """One loaded model with its vocabularies; immutable, so it can be swapped as a reference."""

    path: Path
    model_version: str
    sequence_length: int
    session: ort.InferenceSession
    item_ids: tuple[str, ...]
    # item id (UTF-8 bytes, as Redis returns it) -> item index (1..N); 0 is padding
    item_index: dict[bytes, int]
    # user id -> user index (1..U); unknown users get the generic index 0
    user_index: dict[str, int]
    popular_items: tuple[str, ...]
    popular_scores: tuple[float, ...]

    def score(self, items: np.ndarray, users: np.ndarray) -> np.ndarray:
        """scores[b, j] of item index j + 1 for each row; items int64 [B, L], users int64 [B]."""
        return self.session.run(None, {"items": items, "users": users})[0]


def make_session(onnx_bytes: bytes, device: str, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            log.warning("device=cuda asked for but onnxruntime has no CUDA provider: using CPU")
    session = ort.InferenceSession(onnx_bytes, sess_options=options, providers=providers)
    if device == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        log.warning("the CUDA provider failed to start: serving on CPU")
    return session


def _read_files(path: Path) -> tuple[bytes, bytes]:
    """manifest.json and model.onnx read through one directory handle.

    A publisher replaces the bundle directory by rename; opening both files relative to the
    same directory handle means they always come from the same bundle.
    """
    try:
        dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as error:
        raise BundleError(f"cannot open bundle directory {path}: {error.strerror}") from error
    try:
        parts = []
        for name in (MANIFEST_FILE, ONNX_FILE):
            try:
                fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
            except OSError as error:
                raise BundleError(f"{path / name}: {error.strerror}") from error
            with os.fdopen(fd, "rb") as file:
                parts.append(file.read())
        return parts[0], parts[1]
    finally:
        os.close(dir_fd)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise BundleError(message)


def _check_manifest(manifest: object) -> dict:
    _require(isinstance(manifest, dict), "manifest.json is not a JSON object")
    assert isinstance(manifest, dict)
    version = manifest.get("format_version")
    _require(version == FORMAT_VERSION, f"format_version {version!r} is not {FORMAT_VERSION}")
    for key, kind in [
        ("model_version", str),
        ("sequence_length", int),
        ("items", list),
        ("users", list),
        ("popularity", dict),
        ("onnx_sha256", str),
    ]:
        _require(isinstance(manifest.get(key), kind), f"manifest {key!r} missing or not {kind}")
    _require(manifest["sequence_length"] >= 1, "manifest sequence_length must be >= 1")
    _require(len(manifest["items"]) >= 1, "manifest has no items")
    popularity = manifest["popularity"]
    _require(
        isinstance(popularity.get("items"), list) and isinstance(popularity.get("counts"), list),
        "manifest popularity needs items and counts lists",
    )
    return manifest


def _check_session(session: ort.InferenceSession, sequence_length: int, num_items: int) -> None:
    """Run one padded row: the graph must take the documented inputs and score every item."""
    names = {i.name for i in session.get_inputs()}
    _require(names == {"items", "users"}, f"model.onnx inputs are {sorted(names)}")
    items = np.zeros((1, sequence_length), dtype=np.int64)
    users = np.zeros(1, dtype=np.int64)
    try:
        scores = session.run(None, {"items": items, "users": users})[0]
    except Exception as error:  # onnxruntime raises several unrelated types
        raise BundleError(f"model.onnx fails on a {sequence_length}-item input: {error}") from error
    _require(
        scores.shape == (1, num_items) and scores.dtype == np.float32,
        f"model.onnx scores have shape {scores.shape} {scores.dtype}, "
        f"expected (1, {num_items}) float32",
    )


def load_bundle(path: Path, device: str = "cpu", threads: int = 1) -> Bundle:
    """Read, verify (format, sha256, shapes) and open a bundle; BundleError says what is wrong."""
    manifest_bytes, onnx_bytes = _read_files(path)
    try:
        manifest = _check_manifest(json.loads(manifest_bytes))
    except ValueError as error:
        raise BundleError(f"manifest.json is not valid JSON: {error}") from error
    digest = hashlib.sha256(onnx_bytes).hexdigest()
    _require(
        digest == manifest["onnx_sha256"],
        f"model.onnx sha256 {digest[:12]}... does not match the manifest's "
        f"{manifest['onnx_sha256'][:12]}...",
    )
    items = tuple(str(i) for i in manifest["items"])
    users = [str(u) for u in manifest["users"]]
    try:
        session = make_session(onnx_bytes, device, threads)
    except Exception as error:  # onnxruntime raises several unrelated types
        raise BundleError(f"model.onnx does not load: {error}") from error
    _check_session(session, manifest["sequence_length"], len(items))
    popularity = manifest["popularity"]
    return Bundle(
        path=path,
        model_version=manifest["model_version"],
        sequence_length=manifest["sequence_length"],
        session=session,
        item_ids=items,
        item_index={item.encode(): index for index, item in enumerate(items, start=1)},
        user_index={user: index for index, user in enumerate(users, start=1)},
        popular_items=tuple(str(i) for i in popularity["items"]),
        popular_scores=tuple(float(c) for c in popularity["counts"]),
    )
