"""How fast the operator provisions new tenants' storage, against the real PostgreSQL and Redis.

`python -m e2e.bench.pg_provision [--tenants 1,40] [--max-connections 4]`: for each count N,
provisions N fresh tenants at once through the operator's Provisioner (role, schema, audit
trail, Redis ACL user; at most `--max-connections` PostgreSQL connections, the operator's
TENANTGW_POSTGRES_MAX_CONNECTIONS), prints the wall-clock time and the tenants per second,
ensures them all again at once (an idle resync: catalog reads only, timed too), then removes
them. `--busy-ms B` keeps the event loop busy B ms between any two other
callbacks, as the operator's loop is while kopf handles other tenants: each round trip to
PostgreSQL then costs at least B ms more, and a transaction sent statement by statement pays it
per statement. Needs TENANTGW_POSTGRES_DSN and TENANTGW_REDIS_URL (`source .dev/env`).
Tenant names are unique per run (pgfast-<random>-NN) so that parallel runs do not collide.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import time

from tenantgw.tenancy import Provisioner, password_from


async def _round(provisioner: Provisioner, count: int) -> tuple[float, float]:
    """Seconds to provision `count` new tenants at once, then to ensure them all again (an
    idle resync: catalog reads only)."""
    run = secrets.token_hex(3)
    names = [f"pgfast-{run}-{i:02d}" for i in range(count)]
    start = time.perf_counter()
    try:
        stored = await asyncio.gather(*(provisioner.ensure(name) for name in names))
        created = time.perf_counter() - start
        writes = provisioner.writes
        start = time.perf_counter()
        await asyncio.gather(
            *(
                provisioner.ensure(name, password_from(storage.postgres_dsn))
                for name, storage in zip(names, stored, strict=True)
            )
        )
        again = time.perf_counter() - start
        assert provisioner.writes == writes, "an idle resync wrote"
        return created, again
    finally:
        await asyncio.gather(*(provisioner.remove(name) for name in names), return_exceptions=True)


async def _hog(busy_ms: float, stop: asyncio.Event) -> None:
    """Block the loop `busy_ms` at a time, yielding between: a loop shared with other work."""
    while not stop.is_set():
        time.sleep(busy_ms / 1000)  # noqa: ASYNC251 - blocking is the point
        await asyncio.sleep(0)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", default="1,40", help="comma-separated counts, run in turn")
    parser.add_argument("--max-connections", type=int, default=4)
    parser.add_argument("--busy-ms", type=float, default=0.0, help="loop busy between callbacks")
    parser.add_argument("--repeat", type=int, default=1, help="rounds per count")
    args = parser.parse_args()
    provisioner = Provisioner(
        os.environ["TENANTGW_POSTGRES_DSN"],
        os.environ["TENANTGW_REDIS_URL"],
        max_connections=args.max_connections,
    )
    stop = asyncio.Event()
    hog = asyncio.create_task(_hog(args.busy_ms, stop)) if args.busy_ms > 0 else None
    try:
        for count in (int(c) for c in args.tenants.split(",")):
            for _ in range(args.repeat):
                seconds, again = await _round(provisioner, count)
                print(
                    f"{count:4d} tenants at once: {seconds * 1000:8.0f} ms wall, "
                    f"{seconds * 1000 / count:6.0f} ms/tenant, {count / seconds:6.1f} tenants/s; "
                    f"ensured again (idle): {again * 1000:6.0f} ms"
                )
    finally:
        stop.set()
        if hog is not None:
            await hog
        await provisioner.close()


if __name__ == "__main__":
    asyncio.run(main())
