"""`cosrec serve`: check the bundle and Redis, then run uvicorn with N workers."""

from __future__ import annotations

import math
import os
import shutil
import tempfile

from cosrec.commands.common import CommandParser, UsageError, run_command


def _parser() -> CommandParser:
    parser = CommandParser(prog="cosrec serve", description="run the recommendation service")
    parser.add_argument("--bundle", help="bundle directory (default: COSREC_BUNDLE)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, help="uvicorn workers (default: COSREC_WORKERS)")
    parser.add_argument("--redis-url", help="default: COSREC_REDIS_URL")
    parser.add_argument("--log-level", default="info")
    return parser


def serve_main(argv: list[str]) -> int:
    parser = _parser()

    def body() -> int:
        import uvicorn
        from pydantic import ValidationError

        from contract.bundle import load_bundle
        from cosrec.processes import redis_reachable
        from service.http_protocol import ReadDeadlineProtocol
        from service.settings import Settings

        args = parser.parse_args(argv)
        overrides = {
            key: value
            for key, value in (
                ("bundle", args.bundle),
                ("workers", args.workers),
                ("redis_url", args.redis_url),
            )
            if value is not None
        }
        try:
            settings = Settings(**overrides)
        except ValidationError as error:
            first = error.errors()[0]
            raise UsageError(
                f"bad setting {'.'.join(map(str, first['loc']))}: {first['msg']}"
            ) from None
        if settings.bundle is None:
            raise UsageError("no bundle: pass --bundle DIR or set COSREC_BUNDLE")
        try:
            # refuse a bad bundle before starting any worker
            load_bundle(settings.bundle, precision=settings.precision)
        except ValueError as error:
            raise UsageError(f"bundle {settings.bundle}: {error}") from None
        check_experiment_files(settings)
        default_url = Settings.model_fields["redis_url"].default
        url_given = args.redis_url is not None or "COSREC_REDIS_URL" in os.environ
        if not url_given and not redis_reachable(default_url):
            raise UsageError(
                f"no Redis URL given (--redis-url or COSREC_REDIS_URL) and none reachable at "
                f"{default_url}"
            )

        # Workers are separate processes that read their settings from the environment.
        os.environ["COSREC_BUNDLE"] = str(settings.bundle.absolute())
        os.environ["COSREC_REDIS_URL"] = settings.redis_url
        os.environ["COSREC_WORKERS"] = str(settings.workers)
        metrics_dir = None
        if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            metrics_dir = tempfile.mkdtemp(prefix="cosrec-metrics-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        try:
            uvicorn.run(
                "service.app:app_from_env",
                factory=True,
                host=args.host,
                port=args.port,
                workers=settings.workers,
                log_level=args.log_level,
                access_log=False,
                http=ReadDeadlineProtocol,
                timeout_keep_alive=math.ceil(settings.keep_alive_s),
                timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_s),
            )
        finally:
            if metrics_dir is not None:
                shutil.rmtree(metrics_dir, ignore_errors=True)
        return 0

    return run_command(parser.prog, body)


def check_experiment_files(settings) -> None:
    """Refuse bad challenger or shadow bundles, or a bad catalogue file, before any worker
    starts (each worker would fail the same way)."""
    from contract.bundle import load_bundle
    from service.catalogue import read_catalogue_file

    paths = [spec.path for spec in settings.variant_specs()[1:]]
    if settings.shadow_bundle is not None:
        paths.append(settings.shadow_bundle)
    for path in paths:
        try:
            load_bundle(path, precision=settings.precision)
        except ValueError as error:
            raise UsageError(f"bundle {path}: {error}") from None
    if settings.catalogue is not None:
        read_catalogue_file(settings.catalogue, settings.max_id_length)  # ValueError: exit 2
