"""The serving bundle (docs/bundle.md): a directory of `model.onnx`, `manifest.json` and,
optionally, `model.int8.onnx` (the same network with int8 weights, for COSREC_PRECISION=int8).

The exporter writes it through `Manifest`, the service and offline evaluation read it through
`load_bundle`; nothing else knows the file names or the manifest's shape. Loading never runs
code from the bundle (JSON and ONNX, no pickle).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from contract.ids import Vocabulary

FORMAT_VERSION = 2  # 2: model_version covers the manifest too, not only model.onnx
MANIFEST_FILE = "manifest.json"
ONNX_FILE = "model.onnx"
INT8_ONNX_FILE = "model.int8.onnx"
# Which graph serves: the float32 network, or its statically quantized int8 copy (less CPU a
# row, slightly lower accuracy: the figures are in docs/bundle.md).
Precision = Literal["fp32", "int8"]
ONNX_FILES: dict[Precision, str] = {"fp32": ONNX_FILE, "int8": INT8_ONNX_FILE}
DIGEST_FIELDS: dict[Precision, str] = {"fp32": "onnx_sha256", "int8": "int8_onnx_sha256"}
# The graph's inputs and output (docs/bundle.md).
ITEMS_INPUT = "items"  # int64 [batch, L]: input_rows of the users' histories
USERS_INPUT = "users"  # int64 [batch]: user indices, 0 = the generic user
SCORES_OUTPUT = "scores"  # float32 [batch, num_items]: column j is item index j + 1

log = logging.getLogger("cosrec.bundle")


class BundleError(ValueError):
    """A bundle that cannot be served or evaluated; the message says why."""


_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)
_UNVERSIONED = {"unversioned": True}  # validation context of Manifest.create's draft


class ModelDescription(BaseModel):
    model_config = _STRICT
    name: str = Field(min_length=1)
    hyperparameters: dict[str, Any]


class Popularity(BaseModel):
    """Item ids, most interacted first, with their training counts: the fallback ranking."""

    model_config = _STRICT
    items: list[str]
    counts: list[int] = Field(description="training interactions per item, non-increasing")

    @model_validator(mode="after")
    def _consistent(self) -> Popularity:
        if len(self.items) != len(self.counts):
            raise ValueError(f"{len(self.items)} items but {len(self.counts)} counts")
        if len(set(self.items)) != len(self.items):
            raise ValueError("an item appears twice")
        if any(count < 0 for count in self.counts):
            raise ValueError("a count is negative")
        if any(a < b for a, b in zip(self.counts, self.counts[1:], strict=False)):
            raise ValueError("counts are not in non-increasing order")
        return self


class TrainingData(BaseModel):
    model_config = _STRICT
    fingerprint: str = Field(pattern=r"^[0-9a-f]{64}$")
    num_users: int = Field(ge=0)
    num_items: int = Field(ge=1)
    num_interactions: int = Field(ge=0)


class Holdout(BaseModel):
    """Both models measured on the same time-based holdout (each user's newest events)."""

    model_config = _STRICT
    users: int = Field(ge=0, description="users with held-out events")
    candidate: dict[str, float] = Field(description="the new model's figures (map, prec@k...)")
    serving: dict[str, float] | None = Field(None, description="the serving bundle's, if any")
    tolerance: float = Field(ge=0, description="the MAP the candidate may lose and still win")


class Lineage(BaseModel):
    """Where a retrained bundle comes from, and why it serves or does not (`cosrec retrain`)."""

    model_config = _STRICT
    parent_version: str | None = Field(None, description="the bundle serving when it was made")
    event_cursor: str | None = Field(None, description="the event log was read up to here")
    events_read: int = Field(ge=0, description="events read from the log by this cycle")
    first_event_at: float | None = Field(None, description="Unix time of the oldest event used")
    last_event_at: float | None = Field(None, description="... and of the newest")
    base_data: str | None = Field(None, description="the base data trained on besides the log")
    holdout: Holdout
    decision: Literal["promoted", "refused"]
    reason: str


class Manifest(BaseModel):
    """manifest.json, validated whole: types, lengths and the agreements between fields.

    `model_version` is the bundle's identity: the model's name and the first 12 hex digits of
    the sha256 of everything else in the manifest, `onnx_sha256` included (`content_digest`).
    So it covers both files, and a manifest edited after export (a shuffled `items` list,
    other counts) no longer matches its version and is refused. Build one with `create`.
    """

    model_config = _STRICT
    format_version: Literal[2]
    model_version: str = Field(min_length=1, max_length=200)
    model: ModelDescription
    sequence_length: int = Field(ge=1)
    items: list[str] = Field(min_length=1, description="item ids; items[j] has index j + 1")
    users: list[str] = Field(description="user ids; users[k] has index k + 1")
    popularity: Popularity
    metrics: dict[str, Any]
    training_data: TrainingData
    onnx_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    int8_onnx_sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="of model.int8.onnx, when the bundle has it"
    )
    created_at: str
    lineage: Lineage | None = Field(None, description="set by `cosrec retrain`")

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Manifest:
        if len(set(self.items)) != len(self.items):
            raise ValueError("items: an id appears twice")
        if len(set(self.users)) != len(self.users):
            raise ValueError("users: an id appears twice")
        if self.training_data.num_items != len(self.items):
            raise ValueError(
                f"training_data.num_items is {self.training_data.num_items}, "
                f"items holds {len(self.items)}"
            )
        if self.training_data.num_users != len(self.users):
            raise ValueError(
                f"training_data.num_users is {self.training_data.num_users}, "
                f"users holds {len(self.users)}"
            )
        unknown = set(self.popularity.items) - set(self.items)
        if unknown:
            raise ValueError(f"popularity names {len(unknown)} item(s) not in items")
        expected = _model_version(self.model.name, self.content_digest())
        if info.context != _UNVERSIONED and self.model_version != expected:
            raise ValueError(
                f"model_version {self.model_version!r} does not match the bundle's content "
                f"({expected!r}): the manifest or model.onnx was changed after export"
            )
        return self

    @classmethod
    def create(cls, **fields: Any) -> Manifest:
        """A manifest of `fields` (all but `model_version`, which is derived from them)."""
        draft = cls.model_validate({**fields, "model_version": "-"}, context=_UNVERSIONED)
        version = _model_version(draft.model.name, draft.content_digest())
        return draft.model_copy(update={"model_version": version})

    def content_digest(self) -> str:
        """sha256 of the canonical JSON of every field but `model_version`."""
        content = self.model_dump(mode="json", exclude={"model_version"}, exclude_none=True)
        canonical = json.dumps(
            content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        return sha256_hex(canonical.encode())

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True) + "\n"

    def onnx_digest(self, precision: Precision) -> str:
        """The sha256 the graph of `precision` must have; BundleError if the bundle has none."""
        digest = getattr(self, DIGEST_FIELDS[precision])
        if digest is None:
            raise BundleError(
                f"{MANIFEST_FILE} names no {ONNX_FILES[precision]} (a bundle exported before "
                f"int8 graphs, or by another exporter): serve it with precision fp32"
            )
        return digest


def _model_version(model_name: str, content_digest: str) -> str:
    return f"{model_name}-{content_digest[:12]}"


def parse_manifest(text: bytes | str) -> Manifest:
    """The manifest, or BundleError naming the first field that is wrong."""
    try:
        content = json.loads(text)
    except ValueError as error:
        raise BundleError(f"{MANIFEST_FILE} is not valid JSON: {error}") from None
    version = content.get("format_version") if isinstance(content, dict) else None
    if version != FORMAT_VERSION:  # first: another format may differ in every other field
        raise BundleError(f"{MANIFEST_FILE}: format_version {version!r} is not {FORMAT_VERSION}")
    try:
        return Manifest.model_validate(content)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = "".join(f"{part}: " for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise BundleError(f"{MANIFEST_FILE}: {where}{message}") from None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _NodeArg(Protocol):  # what onnxruntime says of a graph input or output
    name: str
    type: str
    shape: Sequence[int | str | None]


class _Session(Protocol):
    def get_inputs(self) -> Sequence[_NodeArg]: ...
    def get_outputs(self) -> Sequence[_NodeArg]: ...
    def run(self, output_names: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]: ...


def check_graph(manifest: Manifest, session: _Session, onnx_file: str = ONNX_FILE) -> None:
    """The graph declares the documented inputs and output, sized as the manifest says, and
    scores one padded row to the catalogue's width."""
    inputs = {arg.name: arg for arg in session.get_inputs()}
    outputs = {arg.name: arg for arg in session.get_outputs()}
    if set(inputs) != {ITEMS_INPUT, USERS_INPUT}:
        raise BundleError(f"{onnx_file}: inputs are {sorted(inputs)}")
    if SCORES_OUTPUT not in outputs:
        raise BundleError(f"{onnx_file}: no output named {SCORES_OUTPUT!r}")
    length, width = manifest.sequence_length, len(manifest.items)
    _check_arg(inputs[ITEMS_INPUT], "tensor(int64)", [None, length], onnx_file)
    _check_arg(inputs[USERS_INPUT], "tensor(int64)", [None], onnx_file)
    _check_arg(outputs[SCORES_OUTPUT], "tensor(float)", [None, width], onnx_file)
    feed = {
        ITEMS_INPUT: np.zeros((1, length), dtype=np.int64),
        USERS_INPUT: np.zeros(1, dtype=np.int64),
    }
    try:
        scores = session.run([SCORES_OUTPUT], feed)[0]
    except Exception as error:  # onnxruntime raises several unrelated types
        raise BundleError(f"{onnx_file} fails on a {length}-item input: {error}") from error
    if scores.shape != (1, width) or scores.dtype != np.float32:
        raise BundleError(
            f"{onnx_file} scores have shape {scores.shape} {scores.dtype}, "
            f"expected (1, {width}) float32"
        )


def _check_arg(arg: _NodeArg, kind: str, shape: list[int | None], onnx_file: str) -> None:
    """`shape`: None where any size is allowed (the batch); a declared fixed size must match."""
    declared = list(arg.shape)
    fits = len(declared) == len(shape) and all(
        want is None or not isinstance(have, int) or have == want
        for have, want in zip(declared, shape, strict=True)
    )
    if arg.type != kind or not fits:
        expected = [("batch" if size is None else size) for size in shape]
        raise BundleError(
            f"{onnx_file}: {arg.name} is {arg.type} {declared}, expected {kind} {expected}"
        )


def read_bundle_files(path: Path, onnx_file: str = ONNX_FILE) -> tuple[bytes, bytes]:
    """manifest.json and the graph `onnx_file`, read through one directory handle.

    A publisher replaces a bundle directory by rename; opening both files relative to the same
    directory handle means they always come from the same bundle.
    """
    try:
        dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as error:
        raise BundleError(f"cannot open bundle directory {path}: {error.strerror}") from error
    try:
        parts = []
        for name in (MANIFEST_FILE, onnx_file):
            try:
                fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
            except OSError as error:
                raise BundleError(f"{path / name}: {error.strerror}") from error
            with os.fdopen(fd, "rb") as file:
                parts.append(file.read())
        return parts[0], parts[1]
    finally:
        os.close(dir_fd)


def session_options(threads: int = 1) -> Any:
    """The onnxruntime.SessionOptions every bundle's session runs with."""
    import onnxruntime as ort  # the serving and training environments both carry it

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def open_session(onnx_bytes: bytes, device: str = "cpu", threads: int = 1) -> Any:
    """An onnxruntime session: CPU, or CUDA when asked for and present (else CPU, logged)."""
    import onnxruntime as ort

    options = session_options(threads)
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


@dataclass(frozen=True)
class Bundle:
    """One loaded, verified bundle; immutable, so a service can swap it as one reference."""

    path: Path
    manifest: Manifest
    session: Any  # onnxruntime.InferenceSession
    precision: Precision = "fp32"

    @property
    def model_version(self) -> str:
        return self.manifest.model_version

    @property
    def sequence_length(self) -> int:
        return self.manifest.sequence_length

    @cached_property
    def items(self) -> Vocabulary:
        return Vocabulary(tuple(self.manifest.items))

    @cached_property
    def users(self) -> Vocabulary:
        return Vocabulary(tuple(self.manifest.users))

    def score(self, items: np.ndarray, users: np.ndarray) -> np.ndarray:
        """float32 [B, num_items]: column j scores item index j + 1 (`contract.ids`).
        items: int64 [B, L] from `input_rows`; users: int64 [B]."""
        return self.session.run([SCORES_OUTPUT], {ITEMS_INPUT: items, USERS_INPUT: users})[0]


def load_bundle(
    path: str | os.PathLike, device: str = "cpu", threads: int = 1, precision: Precision = "fp32"
) -> Bundle:
    """Read, verify (manifest, sha256, graph) and open a bundle's graph of `precision`;
    BundleError says what is wrong."""
    path = Path(path)
    onnx_file = ONNX_FILES[precision]
    manifest_bytes, onnx_bytes = read_bundle_files(path, onnx_file)
    manifest = parse_manifest(manifest_bytes)
    expected = manifest.onnx_digest(precision)
    digest = sha256_hex(onnx_bytes)
    if digest != expected:
        raise BundleError(
            f"{onnx_file} sha256 {digest[:12]}... does not match the manifest's "
            f"{DIGEST_FIELDS[precision]} {expected[:12]}..."
        )
    try:
        session = open_session(onnx_bytes, device, threads)
    except Exception as error:  # onnxruntime raises several unrelated types
        raise BundleError(f"{onnx_file} does not load: {error}") from error
    check_graph(manifest, session, onnx_file)
    bundle = Bundle(path, manifest, session, precision)
    # Built now, off the request path: the service swaps in a bundle ready to serve.
    _ = bundle.items.utf8_positions, bundle.users
    return bundle
