"""The networks: CosRec, CosRec-base and the paper's baselines (Table 3), looked up by name."""

from __future__ import annotations

from typing import Any

from model.base import SequentialRecommender
from model.bpr import BPR
from model.caser import Caser
from model.cosrec import CosRec
from model.cosrec_base import CosRecBase
from model.fmc import FMC
from model.fpmc import FPMC
from model.gru4rec import GRU4Rec
from model.poprec import PopRec

MODELS: dict[str, type[SequentialRecommender]] = {
    model.name: model for model in (CosRec, CosRecBase, PopRec, BPR, FMC, FPMC, GRU4Rec, Caser)
}


def build_model(
    name: str, num_users: int, num_items: int, **hyperparameters: Any
) -> SequentialRecommender:
    """A fresh network; ``build_model(m.name, U, I, **m.hyperparameters())`` rebuilds ``m``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r} (choose from: {', '.join(MODELS)})")
    return MODELS[name](num_users, num_items, **hyperparameters)


__all__ = [
    "BPR",
    "FMC",
    "FPMC",
    "MODELS",
    "Caser",
    "CosRec",
    "CosRecBase",
    "GRU4Rec",
    "PopRec",
    "SequentialRecommender",
    "build_model",
]
