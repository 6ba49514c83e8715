"""A small generated interaction log with real sequential structure.

Items fall into "genres" and each user favours one. Each item has a few "follow-up" items of
its genre (what people tend to take next) and a few "skip" follow-ups (what people take two
steps later: the paper's skip behaviour, Figure 1b). A user walks through the catalogue: mostly
along follow-ups of the last item, sometimes along skip follow-ups of the item before it,
otherwise by popularity tilted towards their genre. Nobody takes an item twice (as with films),
so test items are new to their user, as the evaluation protocol needs. The previous item alone
predicts the next one far better than popularity, while the popularity draws keep the task
from being trivial. Used by tests, the demo and the service test fixtures."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from contract.ids import Vocabulary
from training.dataset import Sequences

FOLLOW_UPS_PER_ITEM = 3
FOLLOW_UP_PROBABILITY = 0.55
SKIP_PROBABILITY = 0.25  # the rest of the time: a popularity draw
POPULARITY_EXPONENT = 0.8  # Zipf-like item popularity
ITEMS_PER_GENRE = 20
TASTE_WEIGHT = 4.0  # popularity draws favour the user's own genre this many times


def generate_log(
    num_users: int = 200,
    num_items: int = 100,
    length_range: tuple[int, int] = (20, 60),
    seed: int = 0,
) -> Sequences:
    """Sequences for users `u1..u{num_users}` over items `i1..i{num_items}`; the same seed
    gives the same log. Lengths are uniform in `length_range` (inclusive), capped at
    `num_items` because items do not repeat."""
    low, high = length_range
    if num_users < 1 or num_items < 2 or not 1 <= low <= high:
        raise ValueError("need num_users >= 1, num_items >= 2 and 1 <= min length <= max length")
    rng = np.random.default_rng(seed)
    num_genres = max(1, num_items // ITEMS_PER_GENRE)
    genre = rng.permutation(np.arange(num_items) % num_genres)  # genre of item i: genre[i - 1]
    follow_ups = _successors(rng, genre)
    skip_follow_ups = _successors(rng, genre)
    popularity = (rng.permutation(num_items) + 1.0) ** -POPULARITY_EXPONENT
    no_candidates = np.zeros(0, dtype=np.int64)

    sequences = []
    for length in rng.integers(low, high, endpoint=True, size=num_users):
        taste = np.where(genre == rng.integers(num_genres), TASTE_WEIGHT, 1.0) * popularity
        seen = np.zeros(num_items + 1, dtype=bool)
        seq: list[int] = []
        for _ in range(min(int(length), num_items)):
            draw = rng.random()
            if seq and draw < FOLLOW_UP_PROBABILITY:
                candidates = follow_ups[seq[-1]]
            elif len(seq) >= 2 and draw < FOLLOW_UP_PROBABILITY + SKIP_PROBABILITY:
                candidates = skip_follow_ups[seq[-2]]
            else:
                candidates = no_candidates
            unseen = candidates[~seen[candidates]]
            if len(unseen):
                item = int(unseen[0])
            else:
                cumulative = np.cumsum(taste * ~seen[1:])
                item = 1 + int(np.searchsorted(cumulative, rng.random() * cumulative[-1], "right"))
            seen[item] = True
            seq.append(item)
        sequences.append(np.asarray(seq, dtype=np.int64))

    return Sequences(
        users=Vocabulary(tuple(f"u{k}" for k in range(1, num_users + 1))),
        items=Vocabulary(tuple(f"i{j}" for j in range(1, num_items + 1))),
        sequences=tuple(sequences),
    )


def _successors(rng: np.random.Generator, genre: np.ndarray) -> np.ndarray:
    """[num_items + 1, k]: for item i, k distinct other items of its genre (of any genre when
    the genre is too small), in order of preference. Row 0 (padding) is unused."""
    num_items = len(genre)
    count = min(FOLLOW_UPS_PER_ITEM, num_items - 1)
    table = np.zeros((num_items + 1, count), dtype=np.int64)
    for item in range(1, num_items + 1):
        same_genre = np.flatnonzero(genre == genre[item - 1]) + 1
        pool = same_genre if len(same_genre) > count else np.arange(1, num_items + 1)
        table[item] = rng.choice(pool[pool != item], size=count, replace=False)
    return table


def write_log_csv(seqs: Sequences, path: str | Path) -> None:
    """Write `user,item,timestamp` rows (with a header); `read_csv` reads back the same
    sequences of external ids (its item indices follow first appearance in the file).

    Timestamps are seconds, increasing within each user; rows are grouped by user.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    start = 1_600_000_000  # an arbitrary epoch second, so the values look like real times
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user", "item", "timestamp"])
        for user_id, seq in zip(seqs.users.ids, seqs.sequences, strict=True):
            for position, item in enumerate(seq.tolist()):
                writer.writerow([user_id, seqs.items.ids[item - 1], start + 60 * position])


def shuffled_replays(
    seqs: Sequences, replays: int, start: float, seed: int = 0
) -> list[tuple[str, str, float]]:
    """A poisoned stream for the retrain gate: each user's items but the newest, sent again
    `replays` times in shuffled order as (user id, item id, timestamp) from `start` on.
    Random transitions drown the real ones, while the user's newest item (the holdout) and
    their set of seen items stay as they were."""
    rng = np.random.default_rng(seed)
    events = []
    for user, sequence in zip(seqs.users.ids, seqs.sequences, strict=True):
        items = [seqs.items.external(int(item)) for item in sequence[:-1]]
        for replay in range(replays):
            order = rng.permutation(len(items))
            at = start + replay * len(items)
            events += [(user, items[k], at + t) for t, k in enumerate(order)]
    return events
