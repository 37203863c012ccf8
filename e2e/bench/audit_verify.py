"""Time and peak memory of `tenantctl audit verify` on a long trail, against the real PostgreSQL.

`python -m e2e.bench.audit_verify [--records N] [--pythonpath DIR]`: provisions a throwaway
tenant, writes N synthetic request records (default 200,000; chained and every fourth with a
1 KB body, as the gateway writes them) with the admin credentials through COPY, signs a
checkpoint at the head, then runs `python -m tenantgw.cli.main audit verify` as a child process
and prints its wall time and peak RSS. `--pythonpath` runs another checkout's tenantctl on the
same trail (to compare versions). The tenant is removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from tenantgw.api.audit_trail import (
    FORMAT_VERSION,
    GENESIS,
    audit_schema,
    b64,
    canonical,
    generate_signing_key,
    record_hash,
)
from tenantgw.tenancy import Provisioner

ROOT = Path(__file__).resolve().parents[2]


def _content(seq: int) -> dict[str, object]:
    return {
        "kind": "request", "seq": seq, "v": FORMAT_VERSION, "request_id": secrets.token_hex(16),
        "key": f"dev-{seq % 40}", "route": "anthropic_messages",
        "requested_model": "claude-sonnet-4-5", "alias": "fast-code", "served_alias": "fast-code",
        "provider": "sim", "provider_model": "qwen/qwen3-coder", "region": "us-east-1",
        "decision": "admitted", "outcome": "success", "pii": {"EMAIL": seq % 3},
        "tokens": {"input": 12000 + seq % 977, "output": 300}, "cost_usd": 0.0041,
        "request_digest": secrets.token_hex(32), "body": "redacted" if seq % 4 == 0 else "none",
    }  # fmt: skip


def write_trail(dsn: str, tenant: str, records: int) -> None:
    """Append `records` chained records in one COPY (admin credentials)."""
    schema = audit_schema(tenant)
    start = datetime.now(UTC) - timedelta(days=1)
    prev = GENESIS
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        copy_sql = (
            f'COPY "{schema}".records (seq, event_id, ts, kind, key_name, content, body, '
            "body_key_id, prev_hash, hash) FROM STDIN"
        )
        with cur.copy(copy_sql.encode()) as copy:
            for seq in range(1, records + 1):
                content = _content(seq)
                text = canonical(content)
                body = os.urandom(1024) if seq % 4 == 0 else None
                h = record_hash(prev, text, body)
                copy.write_row(
                    (seq, f"bench-{seq}", start + timedelta(milliseconds=seq), "request",
                     content["key"], text, body, "dk-bench" if body else None, prev, h)
                )  # fmt: skip
                prev = h


async def _checkpoint(provisioner: Provisioner, tenant: str, private: bytes) -> int | None:
    return await provisioner.audit.checkpoint(tenant, private)


def run_verify(dsn: str, tenant: str, public: bytes, pythonpath: str) -> tuple[float, int, str]:
    """(seconds, peak RSS in KiB, output) of one `tenantctl audit verify` child process."""
    env = {**os.environ, "PYTHONPATH": pythonpath, "TENANTGW_POSTGRES_DSN": dsn}
    cmd = [sys.executable, "-m", "tenantgw.cli.main", "audit", "verify", tenant,
           "--public-key", b64(public)]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - start
    assert proc.stdout is not None
    out = proc.stdout.read().decode(errors="replace").strip()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"verify failed ({proc.returncode}): {out}")
    return seconds, usage.ru_maxrss, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--pythonpath", action="append", default=[])
    args = parser.parse_args()
    dsn = os.environ["TENANTGW_POSTGRES_DSN"]
    provisioner = Provisioner(dsn, os.environ["TENANTGW_REDIS_URL"])
    tenant = f"bench-verify-{secrets.token_hex(3)}"
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(provisioner.ensure(tenant))
        started = time.monotonic()
        write_trail(dsn, tenant, args.records)
        print(f"{args.records} records written in {time.monotonic() - started:.1f} s")
        private, public = generate_signing_key()
        loop.run_until_complete(_checkpoint(provisioner, tenant, private))
        paths = args.pythonpath or [f"{ROOT / 'operator'}{os.pathsep}{ROOT}"]
        for path in paths:
            seconds, rss_kib, out = run_verify(dsn, tenant, public, path)
            print(f"tenantctl audit verify ({path.split(os.pathsep)[0]}): {seconds:.1f} s, "
                  f"peak RSS {rss_kib / 1024:.0f} MiB: {out}")  # fmt: skip
    finally:
        loop.run_until_complete(provisioner.remove(tenant))
        loop.run_until_complete(provisioner.close())
        loop.close()


if __name__ == "__main__":
    main()
