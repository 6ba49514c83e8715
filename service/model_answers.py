"""The model's answers to a batch of rows: onnxruntime's scores, then the business rules, the
exclusions and the top n, capped per category where the rules ask. The recommender serves
them; the shadow bundle computes the same to compare (service.experiments)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from contract.bundle import Bundle
from contract.ids import GENERIC_USER_INDEX, input_rows
from service.ranking import Exclusions, top_n_rows
from service.rules import Answer, CatalogueIndex, Rules, apply_rules, capped_tops

if TYPE_CHECKING:
    from service.store import History


def model_input(
    bundle: Bundle, recent_items: Sequence[list[bytes]], user_ids: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """The bundle's input rows: of each history (its recent item ids) the last items the
    bundle knows, and each user's index (the generic user for a user it does not know)."""
    vocabulary = bundle.items
    items = input_rows(
        [vocabulary.lookup_utf8(ids) for ids in recent_items], bundle.sequence_length
    )
    users = np.fromiter(
        (bundle.users.get(user_id, GENERIC_USER_INDEX) for user_id in user_ids),
        dtype=np.int64,
        count=len(user_ids),
    )
    return items, users


def excluded_ids(exclude: Sequence[str], history: History) -> list[bytes]:
    """The ids an answer must leave out: the request's `exclude` list and, if it asked for
    them, the items seen (`history.seen_items`)."""
    seen = history.seen_items or []
    return [*map(str.encode, exclude), *seen] if exclude else seen


def model_answers(
    bundle: Bundle,
    index: CatalogueIndex,
    items: np.ndarray,
    users: np.ndarray,
    n: np.ndarray,
    excluded: Exclusions,
    rules: list[Rules],
    now: float,
) -> tuple[list[Answer], float]:
    """Each row's answer from the model (excluded and ineligible items left out, the cap per
    category applied) and the seconds onnxruntime took."""
    started = time.perf_counter()
    scores = bundle.score(items, users)
    inference_s = time.perf_counter() - started
    apply_rules(scores, index, rules, now)
    capped = [row for row, row_rules in enumerate(rules) if row_rules.max_per_category]
    wanted = n
    if capped:
        n = n.copy()
        n[capped] = 0  # ranked below, with the cap
    ranked = top_n_rows(scores, n, excluded)  # applies the exclusions to every row
    item_ids = bundle.manifest.items
    columns, top_scores = ranked.columns.tolist(), ranked.scores.tolist()
    answers = []
    for row, count in enumerate(ranked.counts.tolist()):
        answers.append(
            Answer([item_ids[c] for c in columns[row][:count]], top_scores[row][:count], count, {})
        )
    if not capped:
        return answers, inference_s
    tops = capped_tops(  # reads its rows only: when every row is capped, no copy of them
        scores if len(capped) == len(scores) else scores[capped],
        [int(wanted[row]) for row in capped],
        [rules[row].max_per_category for row in capped],
        index.column_categories,
        index.category_names,
    )
    # every chosen cell's score in one gather, not one indexing a row
    chosen_rows = np.repeat(capped, [len(chosen) for chosen, _ in tops])
    chosen_columns = [column for chosen, _ in tops for column in chosen]
    chosen_scores = iter(scores[chosen_rows, chosen_columns].tolist())
    for row, (chosen, per_category) in zip(capped, tops, strict=True):
        answers[row] = Answer(
            [item_ids[c] for c in chosen],
            [next(chosen_scores) for _ in chosen],
            len(chosen),
            per_category,
        )
    return answers, inference_s
