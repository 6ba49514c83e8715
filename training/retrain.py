"""One cycle of the closed loop (`cosrec retrain`): the model learns from the events the service
collected, and a worse model never reaches users.

1. the service's event log is read after the registry's cursor (up to a point safely behind
   Redis's clock), the new events are appended to the registry's archive, and the cursor moves
   on: no event is read twice or skipped, and the archive keeps them once Redis's retention has
   trimmed them;
2. the data set is the base data (if any) and every archived event, with the paper's
   preprocessing; items first seen in the log become real items;
3. each user's most recent events are held out; a candidate is trained on the rest, warm-started
   from the serving bundle's weights for the users and items it knows;
4. the candidate and the serving bundle are measured on that same holdout;
5. the candidate is promoted unless its MAP is below the serving one's by more than the
   tolerance (relative); either way it is kept in the registry with its lineage.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from contract.bundle import Holdout, Lineage, load_bundle
from contract.event_log import cursor_now, open_client, read_event_log
from contract.ids import Vocabulary
from contract.redis_layout import DEFAULT_PREFIX
from contract.registry import Registry
from model import build_model
from training.archive import EventArchive
from training.checkpoint import read_checkpoint, save_checkpoint
from training.dataset import Sequences, Split
from training.evaluation import evaluate
from training.export import DataSummary, export_bundle
from training.fit import TrainConfig, fit, set_seed
from training.pipeline import metric_subset
from training.readers import events_to_sequences, read_interactions
from training.scoring import bundle_scorer, torch_scorer
from training.split import filter_min_count
from training.warm_start import warm_start

CHECKPOINT_FILE = "checkpoint.pt"
Log = Callable[[str], None]


@dataclass(frozen=True)
class RetrainSettings:
    registry: Path
    redis_url: str
    cluster: bool = False
    prefix: str = DEFAULT_PREFIX
    base_data: Path | None = None
    base_format: str = "csv"
    holdout_events: int = 1  # per user: the newest events, measured and not trained on
    tolerance: float = 0.05  # the candidate may lose this fraction of the serving MAP
    keep: int = 5  # bundles kept in the registry
    min_item_count: int = 5
    min_user_count: int = 5
    model: str = "cosrec"  # when no bundle serves yet; otherwise the serving one's family
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=5, progress=False))


@dataclass(frozen=True)
class CycleReport:
    events_read: int
    cursor: str
    decision: str  # promoted, refused, or skipped (no data to train on)
    reason: str
    candidate: str | None  # the new bundle's version
    serving: str | None  # what serves after the cycle
    holdout: Holdout | None
    seconds: float


def collect_events(settings: RetrainSettings) -> tuple[int, str]:
    """Steps 1: read the log after the cursor into the archive; returns (events, new cursor)."""
    registry = Registry(settings.registry)
    client = open_client(settings.redis_url, settings.cluster)
    try:
        state = registry.state()
        up_to = cursor_now(client)
        rows = list(read_event_log(client, settings.prefix, after=state.cursor, up_to=up_to))
    finally:
        client.close()
    EventArchive(registry.root / "events").append(rows, state.cursor, up_to)
    registry.save_state(state.model_copy(update={"cursor": up_to}))
    return len(rows), up_to


def run_cycle(
    settings: RetrainSettings, log: Log = lambda _: None, archived_since_last: int = 0
) -> CycleReport:
    """Every step of the module docstring, once. `archived_since_last`: events the loop's
    polls already archived since the last cycle (counted in this cycle's `events_read`)."""
    started = time.perf_counter()
    registry = Registry(settings.registry)
    new_events, cursor = collect_events(settings)
    events_read = archived_since_last + new_events
    log(f"read {events_read} new events (cursor {cursor})")
    serving = registry.serving_version()
    archived = EventArchive(registry.root / "events").read()
    data = _training_data(settings, registry, archived)
    if data is None:
        return CycleReport(
            events_read, cursor, "skipped", "no user has enough events yet", None, serving,
            None, time.perf_counter() - started,
        )  # fmt: skip
    split = holdout_split(data, settings.holdout_events)
    candidate, parent = _train_candidate(settings, registry, serving, split.train, log)
    candidate_figures = metric_subset(evaluate(torch_scorer(candidate), split))
    serving_figures = None
    if serving is not None:
        bundle = load_bundle(registry.root / serving)
        scorer = bundle_scorer(bundle, split.train.users, split.train.items)
        serving_figures = metric_subset(evaluate(scorer, split))
    promote, reason = _decide(candidate_figures, serving_figures, settings.tolerance)
    log(f"holdout MAP: candidate {candidate_figures['map']:.4f}: {reason}")
    holdout = Holdout(
        users=int(sum(len(s) > 0 for s in split.test.sequences)),
        candidate=candidate_figures,
        serving=serving_figures,
        tolerance=settings.tolerance,
    )
    lineage = Lineage(
        parent_version=serving,
        event_cursor=cursor,
        events_read=events_read,
        first_event_at=min(archived[2], default=None),
        last_event_at=max(archived[2], default=None),
        base_data=None if settings.base_data is None else str(settings.base_data),
        holdout=holdout,
        decision="promoted" if promote else "refused",
        reason=reason,
    )
    version = _publish(registry, candidate, DataSummary.of(split.train), lineage, promote)
    registry.prune(settings.keep)
    if parent is not None:
        log(f"warm start from {serving}: {parent}")
    return CycleReport(
        events_read, cursor, lineage.decision, reason, version, registry.serving_version(),
        holdout, time.perf_counter() - started,
    )  # fmt: skip


def holdout_split(data: Sequences, events: int) -> Split:
    """Each user's newest `events` events held out (none for a user with too few to spare)."""
    train, test = [], []
    for sequence in data.sequences:
        cut = len(sequence) - events if len(sequence) > events else len(sequence)
        train.append(sequence[:cut])
        test.append(sequence[cut:])
    return Split(
        train=Sequences(data.users, data.items, tuple(train)),
        test=Sequences(data.users, data.items, tuple(test)),
    )


def _training_data(
    settings: RetrainSettings,
    registry: Registry,
    archived: tuple[list[str], list[str], list[float]],
) -> Sequences | None:
    """The base data's actions first (in their order), then every `archived` event (the
    archive's columns) by time."""
    users: list[str] = []
    items: list[str] = []
    times: list[float] = []
    if settings.base_data is not None:
        base = read_interactions(settings.base_data, settings.base_format)
        for user, sequence in zip(base.users.ids, base.sequences, strict=True):
            users.extend([user] * len(sequence))
            items.extend(base.items.external(int(i)) for i in sequence)
        times.extend([float("-inf")] * len(users))  # before every logged event
    users += archived[0]
    items += archived[1]
    times += archived[2]
    if not users:
        return None
    data = filter_min_count(
        events_to_sequences(users, items, times, str(registry.root)),
        settings.min_item_count,
        settings.min_user_count,
    )
    return data if data.num_users else None


def _train_candidate(
    settings: RetrainSettings,
    registry: Registry,
    serving: str | None,
    train: Sequences,
    log: Log,
) -> tuple[Any, Any]:
    """The candidate, trained on `train`: the serving bundle's family and settings, its weights
    for what it knows (when its checkpoint is in the registry), fresh rows for the rest."""
    name, hyperparameters = settings.model, dict(settings.hyperparameters)
    parent = None
    checkpoint = registry.root / serving / CHECKPOINT_FILE if serving else None
    if checkpoint is not None and checkpoint.is_file():
        saved = read_checkpoint(checkpoint)
        name, hyperparameters = saved.model.name, saved.model.hyperparameters()
        parent = saved
    config = replace(settings.train, L=int(hyperparameters.get("L", settings.train.L)))
    set_seed(config.seed)
    model = build_model(name, train.num_users, train.num_items, **hyperparameters)
    report = None
    if parent is not None and parent.data is not None:
        report = warm_start(
            model,
            parent.model,
            (train.users, train.items),
            (Vocabulary(parent.data.users), Vocabulary(parent.data.items)),
        )
    if model.trainable:
        fit(model, train, config)
    else:
        model.fit_counts(train.item_counts())
    log(f"trained {name} on {train.num_users} users, {train.num_items} items")
    return model.eval(), report


def _decide(
    candidate: dict[str, float], serving: dict[str, float] | None, tolerance: float
) -> tuple[bool, str]:
    if serving is None:
        return True, "the first bundle: nothing serves yet"
    floor = serving["map"] * (1 - tolerance)
    if candidate["map"] >= floor:
        return True, f"holdout MAP {candidate['map']:.4f} >= {floor:.4f} (serving, less tolerance)"
    return False, f"holdout MAP {candidate['map']:.4f} < {floor:.4f} (serving, less tolerance)"


def _publish(
    registry: Registry, model: Any, data: DataSummary, lineage: Lineage, promote: bool
) -> str:
    """Export the candidate with its checkpoint into the registry; promote it if decided."""
    registry.root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".candidate-", dir=registry.root))
    try:
        bundle = export_bundle(model, data, staging / "bundle", lineage=lineage)
        save_checkpoint(bundle / CHECKPOINT_FILE, model, data)
        path = registry.add(bundle)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if promote:
        registry.promote(path.name, lineage.reason)
    return path.name
