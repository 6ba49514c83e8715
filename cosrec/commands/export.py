"""`cosrec export`: a checkpoint (which carries its data's vocabularies) as a serving bundle."""

from __future__ import annotations

import json
from pathlib import Path

from cosrec.commands.common import CommandParser, UsageError, run_command


def export_main(argv: list[str]) -> int:
    parser = CommandParser(prog="cosrec export", description="export a checkpoint as a bundle")
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="the bundle directory")
    parser.add_argument("--metrics", type=Path, help="a JSON file to put in the manifest")

    def body() -> int:
        from training.checkpoint import read_checkpoint
        from training.export import export_bundle

        args = parser.parse_args(argv)
        checkpoint = read_checkpoint(args.checkpoint)
        if checkpoint.data is None:
            raise UsageError(
                f"{args.checkpoint}: carries no vocabularies (saved without its data); "
                "train again with `cosrec train`"
            )
        metrics = json.loads(args.metrics.read_text()) if args.metrics else None
        bundle = export_bundle(checkpoint.model, checkpoint.data, args.out, metrics)
        print(f"bundle: {bundle}")
        return 0

    return run_command(parser.prog, body)
