"""The playbooks' runnable blocks: docs/model-selection.md and docs/cost-optimization.md.

A playbook marks what a test runs with an HTML comment before a fenced block:

- `<!-- playbook: apply -->` before a `yaml` block: the objects are applied to the cluster, in
  the order of the documents (the Tenant first), so the doc's YAML is the tested tenant.
- `<!-- playbook: run -->` before a `console` block: each `$ ` line (continued by a trailing
  backslash) is run with bash, as a platform engineer would with `.dev/env` sourced; the lines
  after it are its output. `run exact` compares the output as is; `run shape` compares it with
  every number masked, for the columns that change from run to run (latencies, an A/B split).

The docs name the tenant `checkout-team` and the times `2026-03-02T09:00Z` ... ; a test run
uses its own tenant and times (`Substitution`), in the commands and back in the output.
`TENANTGW_UPDATE_PLAYBOOKS=1` writes each block's observed output into the doc instead of
comparing (review the diff: the numbers change only when the product does).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from tenantgw.tenancy.naming import schema_name

DOC_TENANT = "checkout-team"
MARK = re.compile(
    r"^<!-- playbook: (apply|run exact|run shape) -->\n```(\w+)\n(.*?)^```$", re.M | re.S
)
UPDATE = os.environ.get("TENANTGW_UPDATE_PLAYBOOKS") == "1"
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
REGENERATE = "TENANTGW_UPDATE_PLAYBOOKS=1 .venv/bin/pytest e2e/test_playbooks.py"


@dataclass(frozen=True)
class Block:
    kind: str  # apply | run exact | run shape
    lang: str
    body: str
    start: int  # offset of the body in the doc
    end: int


@dataclass(frozen=True)
class Command:
    command: str  # as written, continuation lines joined
    output: str  # as documented


def blocks(text: str) -> list[Block]:
    return [
        Block(m.group(1), m.group(2), m.group(3), m.start(3), m.end(3)) for m in MARK.finditer(text)
    ]


def commands(body: str) -> list[Command]:
    """The `$ ` commands of a console block with the output documented after each."""
    found: list[Command] = []
    lines = body.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            raise ValueError(f"a console block must start with '$ ': {lines[i]!r}")
        parts = [lines[i][2:]]
        while parts[-1].endswith("\\") and i + 1 < len(lines):
            i += 1
            parts.append(lines[i])
        i += 1
        out: list[str] = []
        while i < len(lines) and not lines[i].startswith("$ "):
            out.append(lines[i])
            i += 1
        found.append(Command("\n".join(parts), "\n".join(out)))
    return found


@dataclass(frozen=True)
class Substitution:
    """The doc's tenant and times, and a test run's."""

    tenant: str
    times: Mapping[str, datetime]  # doc literal (e.g. 2026-03-02T10:00Z) -> the run's time

    def pairs(self) -> list[tuple[str, str]]:
        out = [(DOC_TENANT, self.tenant), (schema_name(DOC_TENANT), schema_name(self.tenant))]
        out += [(literal, when.isoformat()) for literal, when in self.times.items()]
        return out

    def forward(self, text: str) -> str:
        for doc, run in self.pairs():
            text = re.sub(rf"(?<![\w]){re.escape(doc)}(?![\w])", run, text)
        return text

    def back(self, text: str) -> str:
        text = text.replace(self.tenant, DOC_TENANT)
        text = text.replace(schema_name(self.tenant), schema_name(DOC_TENANT))
        for literal, when in self.times.items():
            shown = datetime.fromisoformat(literal).isoformat()
            text = text.replace(when.isoformat(), shown)
        return text


def apply_objects(doc: Path, sub: Substitution) -> list[dict[str, Any]]:
    """The objects of the doc's `apply` blocks, with the run's tenant."""
    objects: list[dict[str, Any]] = []
    for block in blocks(doc.read_text()):
        if block.kind == "apply":
            objects += [o for o in yaml.safe_load_all(sub.forward(block.body)) if o]
    return objects


VERDICT = re.compile(r"differ \(p < N\)|no significant difference")


def mask(text: str) -> str:
    """Numbers masked, verdicts of the A/B tests and the order and padding of lines ignored:
    what a `run shape` block keeps is which lines there are and what they name."""
    lines = (VERDICT.sub("VERDICT", NUMBER.sub("N", line)) for line in text.splitlines())
    return "\n".join(sorted(" ".join(line.split()) for line in lines))


def run_commands(doc: Path, sub: Substitution, env: Mapping[str, str], cwd: Path) -> list[str]:
    """Run every `run` block of `doc`; return the differences from the documented output
    (empty when the doc holds). With TENANTGW_UPDATE_PLAYBOOKS=1 the doc is rewritten."""
    text = doc.read_text()
    problems: list[str] = []
    edits: list[tuple[int, int, str]] = []
    for block in blocks(text):
        if block.kind == "apply":
            continue
        new_body: list[str] = []
        for cmd in commands(block.body):
            proc = subprocess.run(
                ["bash", "-o", "pipefail", "-c", sub.forward(cmd.command.replace("\\\n", " "))],
                env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=180, check=False,
            )  # fmt: skip
            if proc.returncode != 0:
                problems.append(f"{doc.name}: `{cmd.command}` failed: {proc.stdout}{proc.stderr}")
                new_body.append(f"$ {cmd.command}\n{cmd.output}".rstrip("\n"))
                continue
            observed = sub.back(proc.stdout).rstrip("\n")
            new_body.append(f"$ {cmd.command}\n{observed}".rstrip("\n"))
            want, got = cmd.output.rstrip("\n"), observed
            if block.kind == "run shape":
                want, got = mask(want), mask(got)
            if want != got:
                problems.append(
                    f"{doc.name}: `{cmd.command}` ({block.kind}) shows\n{observed}\n"
                    f"but the doc says\n{cmd.output}"
                )
        edits.append((block.start, block.end, "\n".join(new_body) + "\n"))
    if UPDATE:
        for start, end, body in reversed(edits):
            text = text[:start] + body + text[end:]
        doc.write_text(text)
        return [p for p in problems if "` failed: " in p]
    return [*problems, *([f"to accept the observed outputs: {REGENERATE}"] if problems else [])]


def checked_docs(root: Path) -> Sequence[Path]:
    return (root / "docs" / "model-selection.md", root / "docs" / "cost-optimization.md")
