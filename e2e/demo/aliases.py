"""Every alias of the example tenant answers a real Claude Code turn, served by its own provider.

`python -m e2e.demo check --all-aliases` (and `make demo`, after its first Claude Code request)
runs one `claude -p --model <alias>` per ModelAlias of examples/model-aliases.yaml through the
example tenant's gateway, with the key `ci`, a few at a time. The provider simulator plays each
provider in its own wire protocol (the demo points every provider of the Tenant at the route of
its type, e2e/gateway_fixture.SIMULATOR_BASES); its `tool_plan` makes the model call Claude
Code's Read tool on a notes file, and the turn must answer with the codename written in it.

The tenant's ledger then says who served: every row of the turn's session that asked for the
alias must name the alias itself, one of ITS targets (provider and model) and `success`: an
answer from a fallback alias counts as a failure. The classifier alias (the Tenant's
`spec.autoMode.classifierAlias`) is played by the simulator as a safety judge: it answers a
verdicts object instead of calling a tool.

Nothing here depends on pytest: e2e/test_example_aliases.py runs the same check.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from e2e.claude import ClaudeCodeError, ClaudeRun, run_claude, seed_home
from e2e.demo.processes import table
from e2e.gateway_fixture import load_examples

CHECK_KEY = "ci"
"""The key the check runs with: CI's (no per-key tokens-per-minute limit; a dozen Claude Code
turns at once send more prompt tokens in a minute than alice's `tpm` allows)."""
PARALLEL = 4
"""Claude Code processes at once."""
PROMPT = "What is the release codename in notes.txt?"
LEDGER_WAIT_SECONDS = 30


@dataclass(frozen=True)
class ExampleAlias:
    """A ModelAlias of examples/: its targets (provider name, model) and the type of each
    provider of the Tenant (by name)."""

    name: str
    targets: tuple[tuple[str, str], ...]
    provider_types: Mapping[str, str]
    classifier: bool
    """The Tenant's auto-mode classifier alias: the simulator answers it as a safety judge."""


def example_aliases() -> list[ExampleAlias]:
    """The ModelAliases of examples/model-aliases.yaml, in the file's order."""
    docs = load_examples()
    tenant = docs["tenant"][0]
    types = {p["name"]: p["type"] for p in tenant["spec"]["providers"]}
    classifier = (tenant["spec"].get("autoMode") or {}).get("classifierAlias")
    aliases = []
    for doc in docs["model-aliases"]:
        targets = tuple((t["provider"], t["model"]) for t in doc["spec"]["targets"])
        aliases.append(
            ExampleAlias(
                name=doc["metadata"]["name"],
                targets=targets,
                provider_types=types,
                classifier=doc["metadata"]["name"] == classifier,
            )
        )
    return aliases


@dataclass(frozen=True)
class AliasResult:
    """One alias's Claude Code turn and the ledger rows of its requests for the alias."""

    alias: str
    served: tuple[tuple[str, str], ...]
    """(provider type, `<provider>/<model>`) of each distinct row, as the ledger names them."""
    statuses: tuple[str, ...]
    requests: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    """Prompt tokens read from or written to the provider's prompt cache (not in `input`)."""
    cost_usd: Decimal
    answer: str
    problems: tuple[str, ...]
    notes: tuple[str, ...]
    """Not failures: requests of the turn that failed although the turn answered."""
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.problems


def simulator_config(simulator_root: str, changes: Mapping[str, Any]) -> None:
    """POST /_sim/config: change the running simulator's behaviour."""
    request = urllib.request.Request(  # noqa: S310 (loopback)
        f"{simulator_root}/_sim/config",
        data=json.dumps(changes).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310
        resp.read()


@dataclass(frozen=True)
class _Turn:
    alias: ExampleAlias
    run: ClaudeRun | None
    error: str | None
    seconds: float


def _turn(alias: ExampleAlias, project: Path, home: Path, env: Mapping[str, str]) -> _Turn:
    seed_home(home, [project])
    started = time.monotonic()
    try:
        run = run_claude(
            PROMPT,
            project=project,
            home=home,
            gateway_env=env,
            model=alias.name,
            max_retries=0,
            timeout=300,
        )
    except ClaudeCodeError as exc:
        return _Turn(alias, None, str(exc), time.monotonic() - started)
    return _Turn(alias, run, None, time.monotonic() - started)


def _rows(dsn: str, session: str, alias: str) -> list[dict[str, Any]]:
    query = (
        "select alias, provider, provider_model, status, input_tokens, output_tokens,"
        " cache_read_tokens, cache_write_tokens, cost_usd from usage"
        " where session_id = %s and requested_model = %s order by ts"
    )
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        cur = conn.execute(query, (session, alias))
        names = [c.name for c in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _verify(turn: _Turn, codename: str, dsn: str) -> AliasResult:
    alias = turn.alias
    problems: list[str] = []
    answer, session = "", ""
    if turn.run is None:
        problems.append(f"Claude Code failed: {turn.error}")
    else:
        try:
            result = turn.run.result
        except ClaudeCodeError as exc:
            result = {}
            problems.append(str(exc))
        answer = " ".join(str(result.get("result", "")).split())
        session = str(result.get("session_id") or "")
        if turn.run.returncode != 0 or result.get("is_error") is not False:
            problems.append(f"Claude Code answered with an error: {answer[:300]!r}")
        elif alias.classifier:
            if not answer.startswith('{"verdicts"'):
                problems.append(f"the classifier answered {answer[:200]!r}, not verdicts")
        elif codename not in answer:
            problems.append(f"the answer does not hold the file's codename: {answer[:200]!r}")
    # The gateway writes a row just after each reply: wait for the turn's answered requests
    # (two: the Read call and the answer to its result; one for the classifier).
    wanted = 1 if alias.classifier else 2
    rows: list[dict[str, Any]] = []
    deadline = time.monotonic() + LEDGER_WAIT_SECONDS
    while session and time.monotonic() < deadline:
        rows = _rows(dsn, session, alias.name)
        if sum(1 for r in rows if r["status"] == "success") >= wanted:
            break
        time.sleep(0.5)
    answered = sum(1 for r in rows if r["status"] == "success")
    if session and answered < wanted:
        problems.append(
            f"{answered} answered requests in the ledger (session {session}), expected {wanted}"
        )
    notes: list[str] = []
    targets = set(alias.targets)
    served: list[tuple[str, str]] = []
    for row in rows:
        name = f"{row['provider']}/{row['provider_model']}"
        kind = alias.provider_types.get(row["provider"], "?")
        if (kind, name) not in served:
            served.append((kind, name))
        if row["alias"] != alias.name:
            problems.append(f"served by the fallback alias {row['alias']} ({name})")
        elif (row["provider"], row["provider_model"]) not in targets:
            problems.append(f"served by {name}, not a target of the alias")
        if row["status"] != "success":
            # Claude Code resends a request the API refused for a feature it tried (e.g. a
            # mid-conversation system message to a model it does not know): a failure only
            # when the turn did not answer (above).
            notes.append(f"a request of the turn ended {row['status']} ({name})")
    return AliasResult(
        alias=alias.name,
        served=tuple(served),
        statuses=tuple(sorted({str(r["status"]) for r in rows})),
        requests=len(rows),
        input_tokens=sum(int(r["input_tokens"] or 0) for r in rows),
        output_tokens=sum(int(r["output_tokens"] or 0) for r in rows),
        cached_tokens=sum(
            int(r["cache_read_tokens"] or 0) + int(r["cache_write_tokens"] or 0) for r in rows
        ),
        cost_usd=sum((Decimal(r["cost_usd"] or 0) for r in rows), Decimal(0)),
        answer=answer,
        problems=tuple(dict.fromkeys(problems)),
        notes=tuple(dict.fromkeys(notes)),
        seconds=turn.seconds,
    )


def check_aliases(
    *,
    gateway_env: Mapping[str, str],
    simulator_root: str,
    dsn: str,
    workdir: Path,
    aliases: Sequence[ExampleAlias] | None = None,
    parallel: int = PARALLEL,
) -> list[AliasResult]:
    """One Claude Code turn per alias (default: all of examples/), `parallel` at a time.

    `gateway_env` is what `tenantctl onboard` exports (base URL and key); `dsn` the tenant's
    ledger. The simulator's tool plan is set for the check and cleared after it.
    """
    chosen = list(aliases if aliases is not None else example_aliases())
    project = workdir / "project"
    project.mkdir(parents=True, exist_ok=True)
    codename = f"tgw-{secrets.token_hex(4)}"
    notes = project / "notes.txt"
    notes.write_text(f"The release codename is {codename}.\n")
    plan = {"tool": "Read", "arguments": {"file_path": str(notes.resolve())}}
    simulator_config(simulator_root, {"tool_plan": plan})
    try:
        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            turns = list(
                pool.map(
                    lambda a: _turn(a, project, workdir / f"home-{a.name}", gateway_env), chosen
                )
            )
    finally:
        simulator_config(simulator_root, {"tool_plan": None})
    return [_verify(turn, codename, dsn) for turn in turns]


HEADER = (
    "alias", "provider type", "served by", "status", "requests", "in", "cached", "out",
    "cost USD",
    "seconds", "check",
)  # fmt: skip


def lines(results: Sequence[AliasResult]) -> str:
    """One line per alias: the provider type and model that served it (from the ledger), the
    rows' status, tokens and cost, then what went wrong with those that failed."""
    rows = [
        [
            r.alias,
            ", ".join(dict.fromkeys(kind for kind, _ in r.served)) or "-",
            ", ".join(name for _, name in r.served) or "-",
            ",".join(r.statuses) or "-",
            str(r.requests),
            str(r.input_tokens),
            str(r.cached_tokens),
            str(r.output_tokens),
            f"{r.cost_usd:.6f}",
            f"{r.seconds:.0f}",
            "ok" if r.ok else "FAILED",
        ]
        for r in results
    ]
    problems = [f"  {r.alias}: FAILED: {problem}" for r in results for problem in r.problems]
    notes = [f"  {r.alias}: note: {note}" for r in results for note in r.notes]
    return "\n".join([table(HEADER, rows), *problems, *notes])
