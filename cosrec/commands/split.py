"""`cosrec split`: a log into the paper's split directory (test/ and validation/)."""

from __future__ import annotations

from pathlib import Path

from cosrec.commands.common import CommandParser, run_command
from training.readers import FORMATS


def split_main(argv: list[str]) -> int:
    parser = CommandParser(prog="cosrec split", description="split a log into the paper's splits")
    parser.add_argument("--data", required=True, help="a log file, or (redis) a Redis URL")
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--min-item-count", type=int, default=5)
    parser.add_argument("--min-user-count", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)

    def body() -> int:
        from training.split import prepare_split

        args = parser.parse_args(argv)
        seqs = prepare_split(
            args.data, args.format, args.out, args.min_item_count, args.min_user_count
        )
        print(
            f"wrote {args.out}/test and {args.out}/validation: {seqs.num_users} users,"
            f" {seqs.num_items} items, {seqs.num_interactions} actions"
        )
        return 0

    return run_command(parser.prog, body)
