"""The paper's (Caser's) ranking evaluation, vectorised over users.

Protocol, as in the reference `evaluation.py` of Caser/CosRec:
- every user with at least one test item is evaluated; the network reads the user index and
  the user's last L training items (the score function encodes them: `training.scoring`);
- all items are ranked by score, and the user's training items are removed from the ranking;
- the targets are the user's test items as a SET: an item repeated in test counts once (the
  reference builds a sparse matrix whose indices are distinct). A test item that is also a
  training item stays in the denominators but can never be hit (it is removed from the
  ranking), exactly as in the reference;
- Precision@k = hits in the top k / k, Recall@k = hits in the top k / |targets|;
- AP = sum, over the ranks of the hits in the whole ranking, of precision at that rank, divided
  by |targets|; MAP and the other figures are means over the evaluated users.

One deliberate difference: the padding item (index 0) is never ranked. The reference ranked it
like an item, so a model that scored padding high could push a real item out of the top k.
When fewer than k items are left to rank, Precision@k divides by the number left (as the
reference's `len(predictions[:k])` does). Equal scores are ranked by item index (stable sort);
the reference's order for ties is unspecified.

Speed: no loop over users or items in Python. For each slice of users the scores, masks of
training and test items, and one sort of packed int64 keys (score, then item index, with the
hit flag in the lowest bit) give every hit's rank at once; float32 scores (what models give)
take this path, float64 scores that float32 cannot hold exactly a slower stable argsort. Where
users have few test items (sparse data: Amazon Beauty has 1-2 a user among 12K items), each
hit's rank is instead counted by comparing its score with its row's: the same ranks, without
sorting every row.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import numpy as np
import torch

from model import SequentialRecommender, build_model
from training.dataset import Split
from training.scoring import ScoreFn, torch_scorer

# Users are ranked in slices of about 2^20 (user, item) pairs, 8 MiB of sort keys, so memory
# stays bounded whatever the batch size and catalogue (on ML-1M the time is the same).
METRIC_ITEMS_PER_SLICE = 1 << 20
# Where a slice's users have at most this many hittable test items on average, each hit's rank
# is counted by comparing its score with the row's (hits x items comparisons) instead of
# sorting every row (items x log items): sparse data such as Amazon Beauty (1-2 test items a
# user, 12K items) evaluates several times faster. ML-1M (33 a user) keeps the sort.
RANK_BY_COMPARISON_MAX_HITS = 8


def evaluate(
    score_fn: ScoreFn,
    split: Split,
    ks: Sequence[int] = (1, 5, 10),
    batch_size: int = 1024,
) -> dict[str, float]:
    """Evaluate `score_fn` on `split` with the paper's protocol.

    `score_fn(users [B] int64, histories)` (`training.scoring`) gets each user's training
    items and returns scores `[B, num_items + 1]` (column 0, padding, is ignored). Returns `map`,
    `prec@k` and `recall@k` for each k in `ks`, and `users`, the number of users evaluated.
    """
    if any(k < 1 for k in ks):
        raise ValueError("every k must be at least 1")
    evaluated = np.flatnonzero([len(seq) > 0 for seq in split.test.sequences])
    if len(evaluated) == 0:
        raise ValueError("no user has test items: nothing to evaluate")
    train = [split.train.sequences[k] for k in evaluated]
    test = [split.test.sequences[k] for k in evaluated]
    users = (evaluated + 1).astype(np.int64)  # sequence k belongs to user index k + 1
    train_rows = _RaggedRows(train)
    test_rows = _RaggedRows(test)
    num_columns = split.train.num_items + 1
    slice_rows = max(1, METRIC_ITEMS_PER_SLICE // num_columns)

    sums = {"map": 0.0, **{f"prec@{k}": 0.0 for k in ks}, **{f"recall@{k}": 0.0 for k in ks}}
    with torch.no_grad():
        for start in range(0, len(evaluated), batch_size):
            stop = min(start + batch_size, len(evaluated))
            scores = score_fn(users[start:stop], train[start:stop])
            scores = torch.as_tensor(scores).detach().cpu()
            if scores.shape != (stop - start, num_columns):
                raise ValueError(
                    f"score_fn returned shape {tuple(scores.shape)},"
                    f" expected {(stop - start, num_columns)}"
                )
            scores = _as_numpy(scores)
            for lo in range(start, stop, slice_rows):
                hi = min(lo + slice_rows, stop)
                batch = _batch_metrics(
                    scores[lo - start : hi - start],
                    train_rows.mask(lo, hi, num_columns),
                    test_rows.mask(lo, hi, num_columns),
                    ks,
                )
                for name, values in batch.items():
                    sums[name] += float(values.sum())
    count = len(evaluated)
    return {**{name: total / count for name, total in sums.items()}, "users": count}


def _as_numpy(scores: torch.Tensor) -> np.ndarray:
    """float32 where that loses nothing (bf16, fp16, float32 and float32-exact values): the
    fast ranking path; float64 otherwise."""
    if scores.dtype in (torch.float16, torch.bfloat16, torch.float32):
        return scores.float().numpy()
    values = scores.double().numpy()
    narrowed = values.astype(np.float32)
    return narrowed if np.array_equal(narrowed, values) else values


class _RaggedRows:
    """Users' item lists stored flat, to build dense per-batch masks without a Python loop."""

    def __init__(self, rows: Sequence[np.ndarray]) -> None:
        lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.items = np.concatenate([*rows, np.zeros(0, dtype=np.int64)])
        self.row_of = np.repeat(np.arange(len(rows)), lengths)

    def mask(self, start: int, stop: int, num_columns: int) -> np.ndarray:
        """bool [stop - start, num_columns]: True where row r (of the batch) holds item i."""
        lo, hi = int(self.offsets[start]), int(self.offsets[stop])
        mask = np.zeros((stop - start, num_columns), dtype=bool)
        mask[self.row_of[lo:hi] - start, self.items[lo:hi]] = True
        return mask


def _hits_in_rank_order(
    scores: np.ndarray, excluded: np.ndarray, hittable: np.ndarray
) -> np.ndarray:
    """bool [B, C]: whether the item at each rank is a hit. Items are ranked by score, higher
    first, equal scores by item index; excluded items come last (and are never hits)."""
    if scores.dtype != np.float32 or sys.byteorder != "little":
        # lexsort is stable and sorts by its last key first.
        order = np.lexsort((-scores, excluded), axis=1)
        return np.take_along_axis(hittable, order, axis=1)
    # Fast path: sort one int64 key per item instead of an argsort (several times faster).
    # High word: the score as an int32 whose ascending order is descending score order;
    # low word: 2 * index + hittable, so ties go by index and the hit flag rides along.
    bits = (scores + np.float32(0.0)).view(np.int32)  # + 0 turns -0.0 into +0.0
    # Order-preserving float -> int map (flip the magnitude of negatives), then negated (~).
    descending = bits ^ (~(bits >> 31) | np.int32(np.iinfo(np.int32).min))
    np.putmask(descending, excluded, np.iinfo(np.int32).max)  # after every score, -inf too
    keys = np.empty(scores.shape, dtype=np.int64)
    words = keys.view(np.int32).reshape(scores.shape[0], scores.shape[1], 2)  # low word first
    words[:, :, 1] = descending
    words[:, :, 0] = np.arange(0, 2 * scores.shape[1], 2, dtype=np.int32)
    words[:, :, 0] |= hittable
    keys.sort(axis=1)
    return (words[:, :, 0] & 1).astype(bool)


def _hit_ranks_by_comparison(
    scores: np.ndarray, excluded: np.ndarray, hittable: np.ndarray, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """(row, 0-based rank among the row's candidates) of every hit, by rows then rank: the
    same ranks as `_hits_in_rank_order` (higher score first, equal scores by item index,
    excluded items never counted) for scores without NaN."""
    rows, items = np.nonzero(hittable)
    positions = np.empty(len(rows), dtype=np.int64)
    columns = np.arange(scores.shape[1])
    for start in range(0, len(rows), chunk):
        r, i = rows[start : start + chunk], items[start : start + chunk]
        row_scores = scores[r]  # [h, C]
        own = row_scores[np.arange(len(r)), i][:, None]
        ahead = (row_scores > own) | ((row_scores == own) & (columns < i[:, None]))
        positions[start : start + chunk] = (ahead & ~excluded[r]).sum(1)
    order = np.lexsort((positions, rows))
    return rows[order], positions[order]


def _batch_metrics(
    scores: np.ndarray, trained: np.ndarray, targets: np.ndarray, ks: Sequence[int]
) -> dict[str, np.ndarray]:
    """Per-user metrics of one batch (float64 arrays [B])."""
    batch_size, num_columns = scores.shape
    excluded = trained
    excluded[:, 0] = True  # padding is never a recommendation
    num_targets = targets.sum(1).astype(np.float64)  # distinct test items
    candidates = num_columns - excluded.sum(1)
    hittable = targets & ~excluded

    # Excluded items come last and are never hits, so hit positions are ranks among candidates.
    if hittable.sum() <= RANK_BY_COMPARISON_MAX_HITS * batch_size and not np.isnan(scores).any():
        hit_rows, hit_positions = _hit_ranks_by_comparison(scores, excluded, hittable)
    else:
        hit_rows, hit_positions = np.nonzero(_hits_in_rank_order(scores, excluded, hittable))
    # Both walk row by row, positions ascending: the n-th hit of a row is its n-th entry.
    row_starts = np.searchsorted(hit_rows, np.arange(batch_size))
    hit_numbers = np.arange(1, len(hit_rows) + 1) - row_starts[hit_rows]
    precision_at_hits = hit_numbers / (hit_positions + 1.0)

    metrics = {
        "map": np.bincount(hit_rows, precision_at_hits, minlength=batch_size) / num_targets,
    }
    for k in ks:
        hits_at_k = np.bincount(hit_rows[hit_positions < k], minlength=batch_size)
        metrics[f"prec@{k}"] = hits_at_k / np.maximum(np.minimum(candidates, k), 1)
        metrics[f"recall@{k}"] = hits_at_k / num_targets
    return metrics


def count_and_evaluate(split: Split, model_name: str) -> tuple[SequentialRecommender, dict, float]:
    """A model that counts (PopRec) fitted on the split's training part and measured on its
    test part: the model, its metrics and the seconds both took (there are no epochs)."""
    started = time.perf_counter()
    model = build_model(model_name, split.train.num_users, split.train.num_items)
    model.fit_counts(split.train.item_counts())
    metrics = evaluate(torch_scorer(model), split)
    return model.eval(), metrics, time.perf_counter() - started
