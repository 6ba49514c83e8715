"""`cosrec rollback [VERSION]`: serve another bundle of the registry (by default the one that
served before); the service's bundle watcher follows the pointer."""

from __future__ import annotations

from pathlib import Path

from cosrec.commands.common import CommandParser, run_command


def rollback_main(argv: list[str]) -> int:
    parser = CommandParser(prog="cosrec rollback", description="serve an earlier bundle")
    parser.add_argument("version", nargs="?", help="default: the bundle that served before")
    parser.add_argument("--registry", type=Path, required=True)

    def body() -> int:
        from contract.registry import Registry

        args = parser.parse_args(argv)
        print(f"serving {Registry(args.registry).rollback(args.version)}")
        return 0

    return run_command(parser.prog, body)
