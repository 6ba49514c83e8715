"""`cosrec experiment report`: per variant, click-through and conversion of the service's
recommendations, with 95% intervals and a test of each challenger against the control, read
from the durable event log and the recorded recommendations in Redis (`contract.attribution`).
"""

from __future__ import annotations

import json

from cosrec.commands.common import CommandParser, UsageError, run_command


def _parser() -> CommandParser:
    parser = CommandParser(prog="cosrec experiment", description="online experiments")
    actions = parser.add_subparsers(dest="action", required=True)
    report = actions.add_parser("report", help="rates per variant and the tests between them")
    report.add_argument("--redis-url", default="redis://localhost:6379/0")
    report.add_argument("--cluster", action="store_true", help="the URL is a Redis Cluster node")
    report.add_argument("--prefix", default="cosrec", help="COSREC_KEY_PREFIX of the service")
    report.add_argument("--control", default="A", help="the control variant (COSREC_VARIANT_NAME)")
    report.add_argument("--click-type", default="click", help="the event type of a click")
    report.add_argument(
        "--conversion-type", default="purchase", help="the event type of a conversion"
    )
    report.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def experiment_main(argv: list[str]) -> int:
    parser = _parser()

    def body() -> int:
        import redis

        from contract.attribution import read_attribution
        from contract.event_log import open_client
        from cosrec.experiments import as_json, experiment_report, format_report

        args = parser.parse_args(argv)
        client = open_client(args.redis_url, args.cluster)
        try:
            attribution = read_attribution(client, args.prefix)
        except (redis.RedisError, OSError) as error:
            raise UsageError(f"cannot read {args.redis_url}: {error}") from None
        finally:
            client.close()
        reports = experiment_report(
            attribution, args.control, args.click_type, args.conversion_type
        )
        if args.json:
            content = {
                "control": args.control,
                "click_type": args.click_type,
                "conversion_type": args.conversion_type,
                "users": attribution.users,
                "unmatched_events": attribution.unmatched,
                "variants": as_json(reports),
            }
            print(json.dumps(content, indent=2))
        elif not reports:
            print("no recorded recommendations (is COSREC_RECORD_RECOMMENDATIONS on?)")
        else:
            print(format_report(reports, args.control, attribution.unmatched))
        return 0

    return run_command(parser.prog, body)
