"""`cosrec bundles list | add`: the bundle registry (contract.registry)."""

from __future__ import annotations

import json
from pathlib import Path

from cosrec.commands.common import CommandParser, run_command


def bundles_main(argv: list[str]) -> int:
    parser = CommandParser(prog="cosrec bundles", description="the bundles of a registry")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    listing = commands.add_parser("list", help="every bundle, newest first; * marks the serving")
    listing.add_argument("--registry", type=Path, required=True)
    listing.add_argument("--json", action="store_true", help="one JSON object per bundle")
    add = commands.add_parser("add", help="move a bundle directory into the registry")
    add.add_argument("bundle", type=Path, help="a bundle directory (`cosrec train --out`)")
    add.add_argument("--registry", type=Path, required=True)
    add.add_argument("--promote", action="store_true", help="and serve it")

    def body() -> int:
        from contract.registry import Registry, describe

        args = parser.parse_args(argv)
        registry = Registry(args.registry)
        if args.command == "add":
            path = registry.add(args.bundle)
            if args.promote:
                registry.promote(path.name, "added by hand (cosrec bundles add --promote)")
            print(f"{path.name}{' (serving)' if args.promote else ''}")
            return 0
        for entry in registry.entries():
            row = describe(entry)
            if args.json:
                print(json.dumps(row))
            else:
                mark = "*" if row["serving"] else " "
                decision = row["decision"] or "-"
                print(f"{mark} {row['version']}  {row['created_at']}  {decision}")
        return 0

    return run_command(parser.prog, body)
