"""`cosrec serve`: check the bundle and Redis, then run uvicorn with N workers."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

import redis
import uvicorn
from pydantic import ValidationError

from service.bundle import BundleError, load_bundle
from service.settings import Settings

DEFAULT_REDIS_URL = Settings.model_fields["redis_url"].default


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


class _UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="cosrec serve", description="run the recommendation service")
    parser.add_argument("--bundle", help="bundle directory (default: COSREC_BUNDLE)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, help="uvicorn workers (default: COSREC_WORKERS)")
    parser.add_argument("--redis-url", help="default: COSREC_REDIS_URL")
    parser.add_argument("--log-level", default="info")
    return parser


def redis_reachable(url: str) -> bool:
    """True when a Redis answers PING at `url` within a second."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _fail(message: str) -> int:
    print(f"cosrec serve: {message}", file=sys.stderr)
    return 2


def serve_main(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
    except _UsageError as error:
        return _fail(str(error))
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
        return _fail(f"bad setting {'.'.join(map(str, first['loc']))}: {first['msg']}")
    if settings.bundle is None:
        return _fail("no bundle: pass --bundle DIR or set COSREC_BUNDLE")
    try:
        load_bundle(settings.bundle)  # refuse a bad bundle before starting any worker
    except BundleError as error:
        return _fail(f"bundle {settings.bundle}: {error}")
    url_given = args.redis_url is not None or "COSREC_REDIS_URL" in os.environ
    if not url_given and not redis_reachable(DEFAULT_REDIS_URL):
        return _fail(
            f"no Redis URL given (--redis-url or COSREC_REDIS_URL) and none reachable at "
            f"{DEFAULT_REDIS_URL}"
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
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
