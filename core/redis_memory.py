"""Redis's memory use and limit, read with one `INFO memory` at scrape time.

The queue lives in Redis: with `maxmemory-policy noeviction` (what the deployment files set) a full
Redis refuses writes, so uploads are refused (503) until memory is freed; with an evicting policy
it drops keys, jobs among them. Both are worth an alert before they happen.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

# The only policy under which Redis never deletes a job to make room.
SAFE_POLICY = "noeviction"


@dataclass(frozen=True)
class RedisMemory:
    used_bytes: int  # `used_memory`: what Redis's allocator holds for data and overhead
    max_bytes: int  # `maxmemory`; 0 means no limit (the host's memory is the limit)
    policy: str  # `maxmemory_policy`, e.g. noeviction, allkeys-lru
    version: str  # `redis_version`


def read_memory(connection: redis.Redis) -> RedisMemory:
    """Memory use, limit and eviction policy of the Redis behind `connection`.

    Raises:
        redis.exceptions.RedisError: Redis cannot be read, or refuses INFO (a managed Redis may rename it).
    """
    pipe = connection.pipeline(transaction=False)
    pipe.info("memory")
    pipe.info("server")
    memory, server = pipe.execute()
    return RedisMemory(
        used_bytes=int(memory["used_memory"]),
        max_bytes=int(memory.get("maxmemory", 0)),
        policy=str(memory.get("maxmemory_policy", "")),
        version=str(server.get("redis_version", "")),
    )
