"""The audit trail of a real Claude Code session, through the example tenant (`bodies: redacted`).

User story: a developer pastes a customer's e-mail address and card number into Claude Code; the
tool turn still completes, the tenant's audit trail holds one record per call naming the key,
the alias, the provider and the region that served it and what was redacted, and neither the
records nor their stored (encrypted) bodies hold the raw e-mail or card number.
"""

from __future__ import annotations

import io
import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kubernetes.client import ApiClient

from e2e.claude import ClaudeCodeError, run_claude, seed_home
from e2e.fixtures import Services
from e2e.gateway_fixture import ExampleGateway
from e2e.helpers import eventually
from tenantgw.api.tenant import OPERATOR_NAMESPACE
from tenantgw.cli import audit as cli
from tenantgw.cli.onboard import onboard

pytestmark = pytest.mark.e2e

EMAIL = "jane.customer@example.org"
CARD = "4111 1111 1111 1111"


def test_claude_code_through_an_audited_tenant_leaves_no_raw_pii_in_the_trail(
    example_gateway: ExampleGateway,
    kube: ApiClient,
    services: Services,
    tmp_path: Path,
) -> None:
    gw = example_gateway
    project, home = tmp_path / "project", tmp_path / "home"
    project.mkdir()
    home.mkdir()
    token = f"tgw-{secrets.token_hex(6)}"
    notes = project / "notes.txt"
    notes.write_text(f"The release codename is {token}.\n")
    seed_home(home, [project])
    env = onboard(kube, gw.tenant, "alice", base_url=gw.url).env()
    since = datetime.now(UTC) - timedelta(seconds=1)
    gw.simulator.reset()
    gw.simulator.configure(tool_plan={"tool": "Read", "arguments": {"file_path": str(notes)}})
    try:
        run = run_claude(
            f"Customer {EMAIL} paid with card {CARD}. What is the release codename in notes.txt?",
            project=project,
            home=home,
            gateway_env=env,
            model="fast-code",
        )
    except ClaudeCodeError as exc:
        pytest.fail(str(exc), pytrace=False)
    finally:
        gw.simulator.reset()
    assert run.returncode == 0, run.describe()
    assert run.result["num_turns"] >= 2, run.describe()
    assert token in run.result["result"], run.describe()

    admin = cli.admin_for(services.postgres_dsn)

    def records() -> list[dict[str, object]]:
        out = io.StringIO()
        import asyncio

        asyncio.run(cli.export(admin, gw.tenant, out, since=since, bodies=True))
        found = [json.loads(line) for line in out.getvalue().splitlines()]
        mine = [r for r in found if r.get("kind") == "request" and r.get("alias") == "fast-code"]
        return found if len(mine) >= 2 else []

    found = eventually(records, 30, "audit records of Claude Code's two fast-code calls")
    text = json.dumps(found)
    assert EMAIL not in text
    assert CARD not in text
    assert CARD.replace(" ", "") not in text
    calls = [r for r in found if r.get("kind") == "request" and r.get("alias") == "fast-code"]
    for record in calls:
        assert record["key"] == "alice"
        assert record["decision"] == "admitted"
        assert record["region"] in ("us-east-1", "us-west-2")
        assert record["provider"]
        assert record["request_digest"]
        assert isinstance(record["body"], dict)  # decrypted: the redacted request and response
    assert any(r["pii"].get("EMAIL") and r["pii"].get("CREDIT_CARD") for r in calls)  # type: ignore[union-attr]
    assert "[REDACTED_EMAIL]" in text
    # The trail verifies against the operator's public key.
    import asyncio

    keys = cli.public_key_from_cluster(kube, OPERATOR_NAMESPACE)
    verdict = asyncio.run(cli.verify(admin, gw.tenant, keys))
    assert verdict.ok, verdict.problem
