"""The `cosrec` command: a thin dispatcher to the subcommands in `cosrec.commands`.

Each subcommand's module is imported only when it runs, so `cosrec serve` works in the
serving image, where torch, `model/` and `training/` are not installed.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> one-line help; the code is cosrec.commands.<name>.<name>_main
SUBCOMMANDS: dict[str, str] = {
    "split": "split an interaction log into the paper's splits",
    "train": "train, evaluate and export a bundle",
    "evaluate": "score a checkpoint or bundle on a split",
    "export": "export a checkpoint as a serving bundle",
    "compare": "train and evaluate models side by side",
    "tune": "search each model's settings on validation, retrain, measure",
    "plot": "draw a model's filters or a training history",
    "retrain": "learn from the service's events: once, or by itself (the closed loop)",
    "bundles": "list the bundle registry, add a bundle to it",
    "rollback": "serve an earlier bundle of the registry",
    "serve": "run the recommendation service",
    "experiment": "report an online experiment: rates per variant, tests between them",
    "demo": "train on generated data and serve it, end to end",
}


def usage() -> str:
    lines = ["usage: cosrec <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, help_ in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"-h", "--help"}:
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"cosrec: unknown command {name!r} (try: {', '.join(SUBCOMMANDS)})", file=sys.stderr)
        return 2
    module = importlib.import_module(f"cosrec.commands.{name}")
    return int(getattr(module, f"{name}_main")(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
