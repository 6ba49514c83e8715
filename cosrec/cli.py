"""The `cosrec` command: a thin dispatcher to the subcommands.

Each subcommand's module is imported only when it runs, so `cosrec serve` works in the
serving image, where torch is not installed.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, function, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "split": ("training.cli", "split_main", "split an interaction log into the paper's splits"),
    "train": ("training.cli", "train_main", "train, evaluate and export a bundle"),
    "evaluate": ("training.cli", "evaluate_main", "score a checkpoint or bundle on a split"),
    "export": ("training.cli", "export_main", "export a checkpoint as a serving bundle"),
    "compare": ("training.compare", "compare_main", "train and evaluate models side by side"),
    "plot": ("training.plots", "plot_main", "draw a model's filters or a training history"),
    "serve": ("service.cli", "serve_main", "run the recommendation service"),
    "demo": ("cosrec.demo", "demo_main", "train on generated data and serve it, end to end"),
}


def usage() -> str:
    lines = ["usage: cosrec <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, _, help_) in SUBCOMMANDS.items()]
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
    module_name, function_name, _ = SUBCOMMANDS[name]
    function = getattr(importlib.import_module(module_name), function_name)
    return int(function(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
