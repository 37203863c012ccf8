"""CPU the audit trail adds per request, measured in-process against the real PostgreSQL.

`python -m e2e.bench.audit_cpu [--requests N] [--bodies none|redacted|full]`: provisions a
throwaway tenant (role, schema, audit schema), runs N requests of Claude Code's size (a ~60 KB
body: system prompt, tools, a conversation) through the hooks the gateway calls
(`admitted()` then `finished()`), waits until the writer has chained, encrypted and inserted
every record, and prints the process CPU time per request (hooks + writer; Postgres's own CPU
is not counted). Run with `make bench` (docs/benchmarks.md) or alone.

With `--pii redact` (the default) the tenant redacts PII itself: each request and its answer go
through the tenant's policy first, as in the gateway (not counted: that CPU is the policy's),
and the audit reuses what the policy scanned; `--pii off` makes the audit scan everything.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import time
from datetime import UTC, datetime

from tenantgw.gateway import pii, pii_response
from tenantgw.gateway.audit import AuditTrail
from tenantgw.gateway.context import RequestContext
from tenantgw.gateway.files import Rules
from tenantgw.gateway.usage import UsageRecord
from tenantgw.tenancy import Provisioner


def _request(i: int) -> dict[str, object]:
    tools = [
        {"name": f"tool_{t}", "description": "d" * 400, "input_schema": {"type": "object"}}
        for t in range(20)
    ]
    turns = [
        {"role": "user" if n % 2 == 0 else "assistant", "content": f"turn {n} " + "x" * 2000}
        for n in range(20)
    ]
    return {"model": "fast-code", "system": "s" * 8000, "tools": tools, "messages": turns,
            "max_tokens": 4096, "stream": True, "n": i}  # fmt: skip


async def measure(requests: int, bodies: str, redaction: str = "redact") -> float:
    provisioner = Provisioner(os.environ["TENANTGW_POSTGRES_DSN"], os.environ["TENANTGW_REDIS_URL"])
    tenant = f"bench-audit-{secrets.token_hex(3)}"
    storage = await provisioner.ensure(tenant)
    compliance = {"audit": {"bodies": bodies}, "pii_redaction": {"mode": redaction}}
    rules = Rules.model_validate({"tenant": tenant, "compliance": compliance})
    try:
        with tempfile.TemporaryDirectory() as spool:
            trail = AuditTrail(storage.postgres_dsn, tenant, lambda: rules, spool)
            await trail.start()
            served = []
            for i in range(requests):  # what the gateway does before the audit hooks run
                ctx = RequestContext(tenant, "alice", secrets.token_hex(16), "fast-code",
                                     "fast-code", call_type="anthropic_messages")  # fmt: skip
                body = _request(i)
                answer = {"type": "message", "content": [{"type": "text", "text": "ok " * 200}]}
                if redaction != "off":
                    ctx.pii_counts = pii.apply_pii_policy(body, redaction, ())
                    pii_response.redact_response(ctx, rules, answer)
                served.append((ctx, body, answer))
            start = time.process_time()
            for i, (ctx, body, answer) in enumerate(served):
                trail.admitted(ctx, body, None)
                rec = UsageRecord(
                    *(ctx.request_id, datetime.now(UTC), tenant, "alice", "fast-code"),
                    *("fast-code", "sim", "m", "us-east-1", 1000, 100, 0, 0, 0.01, None),
                    *(10, 10, "success", 200, None, None, True),
                )
                trail.finished(ctx, rec, answer)
                if i % 32 == 31:
                    await asyncio.sleep(0)  # let the writer run, as between requests
            await trail.drain()
            cpu = time.process_time() - start
            await trail.stop()
            assert trail.written == requests, (trail.written, trail.last_error)
    finally:
        await provisioner.remove(tenant)
        await provisioner.close()
    return cpu / requests * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--bodies", action="append", default=[])
    parser.add_argument("--pii", choices=["redact", "off"], default="redact")
    args = parser.parse_args()
    for bodies in args.bodies or ["none", "redacted"]:
        ms = asyncio.run(measure(args.requests, bodies, args.pii))
        print(
            f"audit CPU per request (bodies={bodies}, piiRedaction={args.pii}, ~60 KB request): "
            f"{ms:.3f} ms"
        )


if __name__ == "__main__":
    main()
