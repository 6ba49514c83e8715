"""Send many Redis commands in one round trip, with little Python work per command.

redis-py's Pipeline spends most of its time per command on argument encoding and bookkeeping
(measured here: pack_command alone was a third of the time of 100 script calls). For a single
Redis (or the master Sentinels name) this packs the RESP bytes directly and reads the replies
on one pooled connection. A Redis Cluster client must route each command to its slot's node,
so there the redis-py cluster pipeline is used. Scripts (`Script`, `run_script`) are sent as
EVALSHA the same way, and loaded again when Redis has lost them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

Command = list[bytes]


@dataclass
class Script:
    """A Lua script run by its SHA (EVALSHA), loaded into Redis on first use."""

    source: str
    sha: bytes | None = None


def pack(commands: list[Command]) -> bytes:
    """The RESP encoding of the commands, one after the other."""
    parts = []
    for args in commands:
        parts.append(b"*%d\r\n" % len(args))
        for arg in args:
            parts.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(parts)


async def execute(client: aioredis.Redis, commands: list[Command]) -> list:
    """Every command's reply, in order; an error reply is returned as its exception.

    Connection failures raise (and the connection is dropped, never reused half-read).
    """
    if isinstance(client, aioredis.RedisCluster):
        pipe = client.pipeline(transaction=False)
        for name, *args in commands:
            pipe.execute_command(name.decode(), *args)  # routing looks the name up as str
        return await pipe.execute(raise_on_error=False)
    pool = client.connection_pool
    connection = await pool.get_connection()
    try:
        await connection.send_packed_command(pack(commands), check_health=False)
        replies = []
        for _ in commands:
            try:
                replies.append(await connection.read_response())
            except ResponseError as error:
                replies.append(error)
        return replies
    except BaseException:
        await connection.disconnect()
        raise
    finally:
        await pool.release(connection)


async def run_script(
    client: aioredis.Redis,
    script: Script,
    calls: list[Command],
    send: Callable[[list[Command]], Awaitable[list]] | None = None,
) -> list:
    """EVALSHA of `script` with each call's arguments (numkeys, keys, args), in one round trip
    by `send` (default: `execute` on `client`); loads the script first, and again for the calls
    that find it missing (a SCRIPT LOAD and a second round trip). Error replies are returned
    as exceptions, as `execute` does."""
    send = send or (lambda commands: execute(client, commands))
    if script.sha is None:
        script.sha = (await client.script_load(script.source)).encode()
    replies = await send([[b"EVALSHA", script.sha, *args] for args in calls])
    missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if missing:
        # Redis lost its script cache (restart, failover, SCRIPT FLUSH): a NOSCRIPT reply
        # means that call did not run, so running it now applies it exactly once.
        script.sha = (await client.script_load(script.source)).encode()
        retried = await send([[b"EVALSHA", script.sha, *calls[i]] for i in missing])
        for i, reply in zip(missing, retried, strict=True):
            replies[i] = reply
    return replies
