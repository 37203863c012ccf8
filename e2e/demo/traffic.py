"""The demo's traffic: a few dozen requests of both keys, several projects and aliases.

Developers' Claude Code (the anthropic SDK, real Claude names, a session id each) and CI
scripts (the openai SDK, the tenant's aliases) send requests through the example tenant's
gateway; some choose their project with the Tenant's `X-Project` header, one tries a project
the Tenant does not list and is refused. `tenantctl report` then shows where the money went.
"""

from __future__ import annotations

import subprocess
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anthropic
import openai

PROJECT_HEADER = "X-Project"  # examples/tenant.yaml spec.costLabels.header
SESSION_HEADER = "X-Claude-Code-Session-Id"
REFUSED_PROJECT = "marketing"  # not in spec.costLabels.allowedValues


@dataclass(frozen=True)
class Call:
    key: str
    model: str  # a Claude name (anthropic SDK, as Claude Code) or an alias (openai SDK)
    project: str | None  # the X-Project header; None: the key's own project label
    prompt: str

    @property
    def sdk(self) -> str:
        return "anthropic" if self.model.startswith("claude-") else "openai"


def plan() -> list[Call]:
    """38 requests: alice's Claude Code (Opus, Sonnet, Haiku background calls) on checkout and
    search, CI's scripts on ci, checkout and search, across fast-code, documentation,
    reasoning, refactoring and security-analysis (each served by its own provider's protocol:
    OpenRouter, OpenAI chat and Responses, Ollama, Azure)."""
    calls: list[Call] = []
    for i in range(6):
        calls.append(
            Call("alice", "claude-opus-5-5", None, f"add retries to the order client ({i})")
        )
    for i in range(4):
        calls.append(Call("alice", "claude-sonnet-4-5", "search", f"tune the ranking query ({i})"))
    for i in range(3):
        calls.append(Call("alice", "claude-haiku-4-5-20251001", None, f"title for chat {i}"))
    for i in range(2):
        calls.append(Call("alice", "claude-sonnet-4-5", None, f"explain the checkout flow ({i})"))
    for i in range(3):
        calls.append(Call("alice", "documentation", "search", f"document the indexer ({i})"))
    for i in range(2):
        calls.append(Call("alice", "reasoning", None, f"prove the lock is fair ({i})"))
    for i in range(5):
        calls.append(Call("ci", "fast-code", None, f"write a unit test for module {i}"))
    for i in range(3):
        calls.append(Call("ci", "documentation", "checkout", f"changelog entry for build {i}"))
    for i in range(3):
        calls.append(Call("ci", "refactoring", None, f"refactor the build script, step {i}"))
    for i in range(2):
        calls.append(Call("ci", "fast-code", "search", f"benchmark the indexer, case {i}"))
    for i in range(2):
        calls.append(Call("ci", "security-analysis", None, f"review the auth handler ({i})"))
    for i in range(3):
        calls.append(Call("ci", "claude-opus-5-5", "ci", f"triage flaky test {i}"))
    return calls


@dataclass
class Traffic:
    sent: int = 0
    by_key: Counter[str] = field(default_factory=Counter)
    by_project: Counter[str] = field(default_factory=Counter)
    by_model: Counter[str] = field(default_factory=Counter)
    sessions: list[str] = field(default_factory=list)
    refusal: str = ""
    """The gateway's message for a project the Tenant does not list."""


KEY_PROJECT = {"alice": "checkout", "ci": "ci"}  # examples/tenant.yaml spec.keys[].labels


def _send(url: str, key: str, call: Call, headers: Mapping[str, str]) -> None:
    if call.sdk == "anthropic":
        client = anthropic.Anthropic(
            base_url=url, api_key=key, max_retries=0, timeout=60, default_headers=headers
        )
        reply = client.messages.create(
            model=call.model, max_tokens=256, messages=[{"role": "user", "content": call.prompt}]
        )
        if not reply.content:
            raise RuntimeError(f"{call.model}: an empty answer")
        return
    oai = openai.OpenAI(
        base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60, default_headers=headers
    )
    completion = oai.chat.completions.create(
        model=call.model, messages=[{"role": "user", "content": call.prompt}]
    )
    if not completion.choices[0].message.content:
        raise RuntimeError(f"{call.model}: an empty answer")


def send_traffic(url: str, keys: Mapping[str, str], calls: Sequence[Call] | None = None) -> Traffic:
    """Send `calls` (default: `plan()`) through the gateway at `url`; every one must succeed.

    Alice's Claude-name requests carry a Claude Code session id (one per three requests, as a
    developer's few sessions of a day); then one request names a project outside the Tenant's
    list, and the gateway's 400 is kept to show.
    """
    traffic = Traffic()
    session = ""
    for n, call in enumerate(calls if calls is not None else plan()):
        headers: dict[str, str] = {}
        if call.project is not None:
            headers[PROJECT_HEADER] = call.project
        if call.key == "alice" and call.sdk == "anthropic":
            if n % 3 == 0 or not session:
                session = str(uuid.uuid4())
                traffic.sessions.append(session)
            headers[SESSION_HEADER] = session
        try:
            _send(url, keys[call.key], call, headers)
        except (anthropic.APIError, openai.APIError) as exc:
            raise RuntimeError(f"{call.key} -> {call.model}: {exc}") from exc
        traffic.sent += 1
        traffic.by_key[call.key] += 1
        traffic.by_project[call.project or KEY_PROJECT[call.key]] += 1
        traffic.by_model[call.model] += 1
    client = anthropic.Anthropic(
        base_url=url,
        api_key=keys["alice"],
        max_retries=0,
        timeout=60,
        default_headers={PROJECT_HEADER: REFUSED_PROJECT},
    )
    try:
        client.messages.create(
            model="claude-opus-5-5",
            max_tokens=64,
            messages=[{"role": "user", "content": "charge this to marketing"}],
        )
    except anthropic.BadRequestError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        error = body.get("error")
        traffic.refusal = str(error.get("message") if isinstance(error, dict) else exc)
    else:
        raise RuntimeError(f"{PROJECT_HEADER}: {REFUSED_PROJECT} was accepted")
    return traffic


def run_report(
    tenantctl: Sequence[str], env: Mapping[str, str], tenant: str, html: Path
) -> tuple[str, str]:
    """`tenantctl report <tenant>` (the table) and its html written to `html`: (table, stderr)."""
    table = subprocess.run(
        [*tenantctl, "report", tenant],
        env=dict(env), capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    if table.returncode != 0:
        raise RuntimeError(f"tenantctl report failed:\n{table.stderr[-2000:]}")
    html.parent.mkdir(parents=True, exist_ok=True)
    page = subprocess.run(
        [*tenantctl, "report", tenant, "--by", "key,project", "--format", "html", "-o", str(html)],
        env=dict(env), capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    if page.returncode != 0:
        raise RuntimeError(f"tenantctl report --format html failed:\n{page.stderr[-2000:]}")
    return table.stdout.rstrip(), (table.stderr + page.stderr).strip()
