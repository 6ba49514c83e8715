"""Business rules of /recommend, honoured on every path: the model's ranking, the popularity
answers, the fallback while Redis is down, and the top-up when the model's items run out.

A request's rules (`Rules`) are the filters it sent, else the deployment's defaults:
include/exclude categories and tags, only items available now, an explicit candidate list, a
cap per category. `exclude` and `exclude_seen` stay what they were (id lists, applied first).

Per worker, per (catalogue copy, bundle), one `CatalogueIndex` turns the catalogue into arrays
over the bundle's score columns: the model's scores of ineligible items become -inf with one
numpy add per distinct rule set of a micro-batch (the result cached per rule set), so
the hot path does no per-item Python and no Redis read. Popularity then tops an answer up to
`n` from the items the model cannot score (catalogue items it does not know, candidates),
checked item by item with the same rules.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np

from contract.bundle import Bundle
from contract.ids import score_column
from service.catalogue import UNLISTED, Catalogue, Item
from service.ranking import ranked_candidates
from service.settings import Settings, comma_list

MAX_CACHED_RULE_SETS = 256
EMPTY_COLUMNS = np.empty(0, dtype=np.intp)


@dataclass(frozen=True, slots=True)
class Rules:
    """What an answer must honour besides `exclude` and the seen items."""

    include_categories: frozenset[str] | None = None  # at least one of them
    exclude_categories: frozenset[str] = frozenset()  # none of them
    include_tags: frozenset[str] | None = None
    exclude_tags: frozenset[str] = frozenset()
    only_available: bool = False  # `available` and now within [available_from, available_until)
    candidates: frozenset[str] | None = None  # rank only these
    max_per_category: int = 0  # at most this many items of one category (0: no cap)


NO_RULES = Rules()


def deployment_rules(settings: Settings) -> Rules:
    """The rules a request gets for each filter it does not send (COSREC_DEFAULT_*)."""
    return Rules(
        exclude_categories=frozenset(comma_list(settings.default_exclude_categories)),
        exclude_tags=frozenset(comma_list(settings.default_exclude_tags)),
        only_available=settings.default_only_available,
        max_per_category=settings.default_max_per_category,
    )


def resolve_rules(query: Any, defaults: Rules) -> Rules:
    """A request's rules: each filter it sent, else the deployment's default for it. Requests
    that send the same filters share one Rules object (a bounded cache: building one cost ~6 us
    a request); a candidate list is per request, never kept."""
    sent = query.model_fields_set & FILTER_FIELDS
    if not sent:
        return defaults
    values = tuple((name, _hashable(getattr(query, name))) for name in FILTER_ORDER if name in sent)
    if query.candidates is not None:
        return _with_filters(defaults, values)
    return _with_filters_cached(defaults, values)


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _with_filters(defaults: Rules, values: tuple[tuple[str, Any], ...]) -> Rules:
    """`defaults` with the filters sent (name, value; None: not set, the default holds)."""
    changes = {
        name: frozenset(value) if isinstance(value, tuple) else value
        for name, value in values
        if value is not None
    }
    return replace(defaults, **changes)


_with_filters_cached = lru_cache(maxsize=MAX_CACHED_RULE_SETS)(_with_filters)


FILTER_FIELDS = frozenset(
    {
        "include_categories",
        "exclude_categories",
        "include_tags",
        "exclude_tags",
        "only_available",
        "candidates",
        "max_per_category",
    }
)
FILTER_ORDER = tuple(sorted(FILTER_FIELDS))  # the cache key's order


class CatalogueIndex:
    """One catalogue copy over one bundle's score columns, and the popularity order."""

    def __init__(self, catalogue: Catalogue, bundle: Bundle, unlisted_allowed: bool) -> None:
        self.catalogue = catalogue
        self.bundle = bundle
        self.items = catalogue.items
        self.unlisted_allowed = unlisted_allowed
        vocabulary = bundle.items
        self.width = len(vocabulary)
        # item index i scores in column score_column(i); ids[k] has index k + 1
        self.column = {
            item_id: int(score_column(k + 1)) for k, item_id in enumerate(vocabulary.ids)
        }
        categories: dict[str, list[int]] = {}
        tags: dict[str, list[int]] = {}
        listed_categories: list[tuple[str, ...]] = [()] * self.width
        unavailable, unlisted, windows = [], [], []
        for column, item_id in enumerate(vocabulary.ids):
            item = self.items.get(item_id)
            if item is None:
                unlisted.append(column)
                continue
            listed_categories[column] = item.categories
            for category in item.categories:
                categories.setdefault(category, []).append(column)
            for tag in item.tags:
                tags.setdefault(tag, []).append(column)
            if not item.available:
                unavailable.append(column)
            elif item.available_from > -math.inf or item.available_until < math.inf:
                windows.append((column, item.available_from, item.available_until))
        # per column, its categories as positions in category_names (the cap's walk counts
        # in a list: 8.7 against 12.7 us a row by name in a dict, an uncommitted benchmark)
        self.category_names = list(categories)
        position = {name: k for k, name in enumerate(self.category_names)}
        self.column_categories = [tuple(position[n] for n in names) for names in listed_categories]
        self.category_columns = {k: np.asarray(v, dtype=np.intp) for k, v in categories.items()}
        self.tag_columns = {k: np.asarray(v, dtype=np.intp) for k, v in tags.items()}
        self.unavailable = np.asarray(unavailable, dtype=np.intp)
        self.unlisted = np.asarray(unlisted, dtype=np.intp)
        self.window_columns = np.asarray([w[0] for w in windows], dtype=np.intp)
        self.window_from = np.asarray([w[1] for w in windows], dtype=np.float64)
        self.window_until = np.asarray([w[2] for w in windows], dtype=np.float64)
        # the popularity order: the bundle's popular items (training counts), then the items
        # only the catalogue knows (by their `popularity`), then the bundle's other items
        popularity = bundle.manifest.popularity
        self.score_of: dict[str, float] = dict(
            zip(popularity.items, map(float, popularity.counts), strict=True)
        )
        self.catalogue_only = sorted(
            (item_id for item_id in self.items if item_id not in self.column),
            key=lambda item_id: (-self.items[item_id].popularity, item_id),
        )
        for item_id in self.catalogue_only:
            self.score_of[item_id] = self.items[item_id].popularity
        rest = [item_id for item_id in vocabulary.ids if item_id not in self.score_of]
        self.order: list[str] = [*popularity.items, *self.catalogue_only, *rest]
        self.rank = {item_id: position for position, item_id in enumerate(self.order)}
        members: dict[str, list[str]] = {}
        tag_members: dict[str, list[str]] = {}
        for item_id, item in self.items.items():
            for category in item.categories:
                members.setdefault(category, []).append(item_id)
            for tag in item.tags:
                tag_members.setdefault(tag, []).append(item_id)
        self.category_members = members
        self.tag_members = tag_members
        # rule set -> its penalty before the availability windows (None: nothing left out)
        self._static: dict[Rules, np.ndarray | None] = {}
        # (categories or tags, names, after_model) -> the popularity walk of their items
        self._walks: dict[tuple[str, frozenset[str], bool], list[str]] = {}

    def item(self, item_id: str) -> Item:
        return self.items.get(item_id, UNLISTED)

    # ------------------------------------------------------------ the model's columns
    def penalty(self, rules: Rules, now: float) -> np.ndarray | None:
        """A row to add to a score row: -inf in the columns the rules leave out at `now`, 0
        elsewhere (None: nothing left out). One vectorised add per row costs less than
        scattering -inf over hundreds of columns."""
        if rules in self._static:
            penalty = self._static[rules]
        else:
            columns = self._static_columns(rules)
            penalty = None
            if columns.size:
                penalty = np.zeros(self.width, dtype=np.float32)
                penalty[columns] = -np.inf
            if rules.candidates is None:  # candidate lists are per request: not worth keeping
                if len(self._static) >= MAX_CACHED_RULE_SETS:
                    self._static.clear()
                self._static[rules] = penalty
        if rules.only_available and self.window_columns.size:
            outside = (now < self.window_from) | (now >= self.window_until)
            if outside.any():
                penalty = np.zeros(self.width, np.float32) if penalty is None else penalty.copy()
                penalty[self.window_columns[outside]] = -np.inf
        return penalty

    def _static_columns(self, rules: Rules) -> np.ndarray:
        eligible = np.ones(self.width, dtype=bool)
        if rules.include_categories is not None:
            eligible &= self._any_of(self.category_columns, rules.include_categories)
        if rules.include_tags is not None:
            eligible &= self._any_of(self.tag_columns, rules.include_tags)
        for category in rules.exclude_categories:
            eligible[self.category_columns.get(category, EMPTY_COLUMNS)] = False
        for tag in rules.exclude_tags:
            eligible[self.tag_columns.get(tag, EMPTY_COLUMNS)] = False
        if rules.only_available:
            eligible[self.unavailable] = False
        if not self.unlisted_allowed:
            eligible[self.unlisted] = False
        if rules.candidates is not None:
            wanted = np.zeros(self.width, dtype=bool)
            columns = [self.column[c] for c in rules.candidates if c in self.column]
            wanted[np.asarray(columns, dtype=np.intp)] = True
            eligible &= wanted
        return np.flatnonzero(~eligible)

    def _any_of(self, index: dict[str, np.ndarray], names: frozenset[str]) -> np.ndarray:
        hit = np.zeros(self.width, dtype=bool)
        for name in names:
            hit[index.get(name, EMPTY_COLUMNS)] = True
        return hit

    # ------------------------------------------------------------ item by item
    def eligible(self, item_id: str, rules: Rules, now: float) -> bool:
        """Whether the rules allow `item_id` at `now` (the same rules as `penalty`)."""
        item = self.items.get(item_id)
        if item is None:
            if not self.unlisted_allowed:
                return False
            item = UNLISTED
        if rules.candidates is not None and item_id not in rules.candidates:
            return False
        if rules.include_categories is not None and rules.include_categories.isdisjoint(
            item.categories
        ):
            return False
        if rules.exclude_categories and not rules.exclude_categories.isdisjoint(item.categories):
            return False
        if rules.include_tags is not None and rules.include_tags.isdisjoint(item.tags):
            return False
        if rules.exclude_tags and not rules.exclude_tags.isdisjoint(item.tags):
            return False
        return not rules.only_available or item.available_at(now)

    def walk(self, rules: Rules, after_model: bool) -> Iterable[str]:
        """Items in popularity order that may pass the rules; `after_model`: only those the
        model could not score (it has ranked every eligible item it knows)."""
        if rules.candidates is not None:  # per request: sorted each time, a bounded list
            return self._in_order(rules.candidates, after_model)
        if rules.include_categories is not None:
            key = ("categories", rules.include_categories, after_model)
        elif rules.include_tags is not None:
            key = ("tags", rules.include_tags, after_model)
        else:
            return self.catalogue_only if after_model else self.order
        walk = self._walks.get(key)
        if walk is None:  # a category's items are sorted once per catalogue copy, not per request
            members = self.category_members if key[0] == "categories" else self.tag_members
            pool = {item for name in key[1] for item in members.get(name, ())}
            walk = self._in_order(pool, after_model)
            if len(self._walks) >= MAX_CACHED_RULE_SETS:
                self._walks.clear()
            self._walks[key] = walk
        return walk

    def _in_order(self, pool: Iterable[str], after_model: bool) -> list[str]:
        """`pool` in popularity order; `after_model`: only the items the model cannot score."""
        if after_model:
            pool = [item_id for item_id in pool if item_id not in self.column]
        unranked = len(self.order)
        return sorted(pool, key=lambda item_id: (self.rank.get(item_id, unranked), item_id))


@dataclass
class Answer:
    """One answer in the making: items best first, the first `from_model` chosen by the model."""

    item_ids: list[str]
    scores: list[float]
    from_model: int
    per_category: dict[str, int]


def apply_rules(
    scores: np.ndarray, index: CatalogueIndex, rules: Sequence[Rules], now: float
) -> None:
    """Every ineligible cell of row r (by rules[r]) becomes -inf: one add per rule set."""
    groups: dict[Rules, list[int]] = {}
    for row, row_rules in enumerate(rules):
        groups.setdefault(row_rules, []).append(row)
    for row_rules, rows in groups.items():
        penalty = index.penalty(row_rules, now)
        if penalty is None:
            continue
        if len(rows) == len(scores):
            scores += penalty
        else:
            scores[rows] += penalty


def capped_tops(
    rows: np.ndarray,
    wanted: Sequence[int],
    caps: Sequence[int],
    column_categories: Sequence[tuple[int, ...]],
    category_names: Sequence[str],
) -> list[tuple[list[int], dict[str, int]]]:
    """Per row of `rows`: its best columns (excluded ones are -inf), at most `caps[r]` per
    category (an item of several categories counts in each and needs room in all), up to
    `wanted[r]`, best first, ties in column order; and how many it took of each category (by
    name). `column_categories[c]`: column c's categories, as positions in `category_names`.
    Every row's best candidates (4 n, at least n + 32) are ranked in one numpy pass over the
    batch (`ranked_candidates`): per-row numpy calls cost more than the ranking."""
    k = min(rows.shape[1], max(max(4 * n, n + 32) for n in wanted))
    candidates = ranked_candidates(rows, k)
    columns, starts = candidates.columns.tolist(), candidates.starts.tolist()
    complete = candidates.complete.tolist()
    counts = [0] * len(category_names)  # a row's, set back to 0 after it
    results = []
    for r in range(len(rows)):
        n, cap = wanted[r], caps[r]
        chosen: list[int] = []
        _take(columns[starts[r] : starts[r + 1]], n, cap, column_categories, chosen, counts)
        if len(chosen) < n and not complete[r]:
            # not enough under the cap: walk the rest of the row in order (the candidates are
            # its best cells, so the full order starts with them)
            finite = int(np.count_nonzero(rows[r] > -np.inf))
            rest = np.argsort(-rows[r], kind="stable")[starts[r + 1] - starts[r] : finite]
            _take(rest.tolist(), n, cap, column_categories, chosen, counts)
        per_category = {}
        for column in chosen:
            for category in column_categories[column]:
                if counts[category]:  # its first chosen item: the row's whole count
                    per_category[category_names[category]] = counts[category]
                    counts[category] = 0
        results.append((chosen, per_category))
    return results


def _take(
    columns: list[int],
    n: int,
    cap: int,
    column_categories: Sequence[tuple[int, ...]],
    chosen: list[int],
    counts: list[int],
) -> None:
    """Append to `chosen` the `columns` (best first) that fit under the cap, up to n;
    `counts[c]`: the items taken so far of category position c."""
    for column in columns:
        categories = column_categories[column]
        for category in categories:
            if counts[category] >= cap:
                break
        else:
            chosen.append(column)
            for category in categories:
                counts[category] += 1
            if len(chosen) == n:
                return


def top_up(
    answer: Answer,
    index: CatalogueIndex,
    rules: Rules,
    n: int,
    excluded: set[str],
    now: float,
    after_model: bool,
) -> None:
    """Fill `answer` up to n from the popularity order, with the same rules and cap."""
    if len(answer.item_ids) >= n:
        return
    chosen = set(answer.item_ids)
    cap = rules.max_per_category
    per_category = answer.per_category
    for item_id in index.walk(rules, after_model):
        if item_id in chosen or item_id in excluded or not index.eligible(item_id, rules, now):
            continue
        if cap:
            categories = index.item(item_id).categories
            if any(per_category.get(c, 0) >= cap for c in categories):
                continue
            for c in categories:
                per_category[c] = per_category.get(c, 0) + 1
        answer.item_ids.append(item_id)
        answer.scores.append(index.score_of.get(item_id, 0.0))
        chosen.add(item_id)
        if len(answer.item_ids) == n:
            return


def popularity_answer(
    index: CatalogueIndex, rules: Rules, n: int, excluded: set[str], now: float
) -> Answer:
    answer = Answer([], [], 0, {})
    top_up(answer, index, rules, n, excluded, now, after_model=False)
    return answer


class Indexes:
    """This worker's CatalogueIndex per bundle, over the catalogue copy they were built for.

    A changed catalogue copy is indexed off the event loop (`prepare`) while requests go on
    with the indexes of the copy before it, then all are swapped at once: no request waits
    for an index over a large catalogue, and one answer never mixes two copies."""

    MAX_KEPT = 8  # bundles: the serving one, challengers, the shadow, and a reload or two

    def __init__(self, current_catalogue: Callable[[], Catalogue], unlisted_allowed: bool) -> None:
        self._catalogue = current_catalogue
        self.unlisted_allowed = unlisted_allowed
        self._built: list[CatalogueIndex] = []
        self._serving: Catalogue | None = None  # the copy `_built` is over (None: not prepared)

    def get(self, bundle: Bundle) -> CatalogueIndex:
        """The index of `bundle` over the prepared catalogue copy (built now if missing: a
        bundle just swapped in)."""
        catalogue = self._serving if self._serving is not None else self._catalogue()
        for index in self._built:
            if index.bundle is bundle and index.catalogue is catalogue:
                return index
        index = CatalogueIndex(catalogue, bundle, self.unlisted_allowed)
        kept = [built for built in self._built if built.catalogue is catalogue]
        self._built = [*kept[-(self.MAX_KEPT - 1) :], index]
        return index

    async def prepare(self, bundles: Sequence[Bundle]) -> None:
        """Index `bundles` over the current catalogue copy off the event loop, then serve
        those indexes (unless a newer copy arrived meanwhile: its own `prepare` swaps)."""
        catalogue = self._catalogue()
        built = [index for index in self._built if index.catalogue is catalogue]
        for bundle in bundles:
            if not any(index.bundle is bundle for index in built):
                index = await asyncio.to_thread(
                    CatalogueIndex, catalogue, bundle, self.unlisted_allowed
                )
                built.append(index)
        if self._catalogue() is catalogue:
            self._built = built[-self.MAX_KEPT :]
            self._serving = catalogue
