"""`cosrec retrain`: the closed loop (training.retrain): once, or by itself with --every
and/or --min-new-events, exporting Prometheus metrics with --metrics-port."""

from __future__ import annotations

import json
from pathlib import Path

from cosrec.commands.common import (
    CommandParser,
    UsageError,
    duration_s,
    fraction,
    log_line,
    positive_int,
    run_command,
)
from training.readers import FORMATS


def _parser() -> CommandParser:
    parser = CommandParser(prog="cosrec retrain", description="learn from the service's events")
    parser.add_argument("--registry", type=Path, required=True, help="the bundle registry")
    parser.add_argument("--redis-url", required=True, help="the service's Redis")
    parser.add_argument("--redis-cluster", action="store_true")
    parser.add_argument("--base-data", type=Path, help="data trained on besides the log")
    parser.add_argument("--base-format", choices=FORMATS, default="csv")
    parser.add_argument("--epochs", type=positive_int, default=5, help="per cycle (default 5)")
    parser.add_argument(
        "--holdout-events", type=positive_int, default=1, help="per user, newest (default 1)"
    )
    parser.add_argument(
        "--tolerance",
        type=fraction,
        default=0.05,
        help="the candidate may lose this fraction of the serving holdout MAP (default 0.05)",
    )
    parser.add_argument("--keep", type=positive_int, default=5, help="bundles kept (default 5)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--every", type=duration_s, help="run by itself: a cycle this often")
    parser.add_argument(
        "--min-new-events", type=positive_int, help="run by itself: a cycle per this many events"
    )
    parser.add_argument("--poll", type=duration_s, default=30.0, help="log reads (default 30s)")
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    return parser


def retrain_main(argv: list[str]) -> int:
    parser = _parser()

    def body() -> int:
        from training.fit import TrainConfig
        from training.retrain import RetrainSettings, run_cycle
        from training.retrain_loop import Schedule, run_loop

        args = parser.parse_args(argv)
        if args.base_data is not None and not args.base_data.exists():
            raise UsageError(f"--base-data {args.base_data}: no such file")
        settings = RetrainSettings(
            registry=args.registry,
            redis_url=args.redis_url,
            cluster=args.redis_cluster,
            base_data=args.base_data,
            base_format=args.base_format,
            holdout_events=args.holdout_events,
            tolerance=args.tolerance,
            keep=args.keep,
            train=TrainConfig(epochs=args.epochs, seed=args.seed, progress=False),
        )
        if args.every is None and args.min_new_events is None:
            report = run_cycle(settings, log_line)
            print(json.dumps(_as_dict(report)))
            return 0
        schedule = Schedule(args.every, args.min_new_events, args.poll)
        run_loop(settings, schedule, args.metrics_port, log_line)
        return 0

    return run_command(parser.prog, body)


def _as_dict(report) -> dict:
    holdout = None if report.holdout is None else report.holdout.model_dump()
    return {**report.__dict__, "holdout": holdout}
