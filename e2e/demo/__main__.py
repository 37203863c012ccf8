"""`make demo`: the example tenant end to end on this machine, with one real Claude Code request.

    python -m e2e.demo up      # after `make cluster-up services-up` (the Makefile does both)
    python -m e2e.demo check --all-aliases   # a Claude Code turn per alias of the running demo
    python -m e2e.demo down    # stops what `up` started in the background (by pid)

`up` applies the CRDs and the operator's RBAC, runs the operator as its ServiceAccount, the
provider simulator on :18080, applies examples/ with each provider's apiBase set to the
simulator's route of its protocol (the one change to examples/, which keeps the real
providers' URLs: the operator renders the simulator's URLs itself) and, once the Tenant is
Ready, runs the tenant's gateway on :4000 from the `tenantgw-gateway` image (docker/build.sh,
`make images`, builds it first when it is missing and finds it cached afterwards) as the
rendered Deployment's pod: its command and args, its env with the Secrets' values, its
ConfigMap and Secret volumes with exactly what the operator rendered, read-only root
filesystem, the pod's numeric user, every capability dropped (e2e/demo/container.py).
`DEMO_GATEWAY=process` runs the same as a local process instead (`tenantctl dev gateway`),
where podman cannot run containers. Then Claude Code reads a file
through the gateway (`claude -p`), and runs interactively in a tmux pane in auto mode: a command
the tenant's classifier allows runs without a prompt, one it flags is blocked. Then every alias
of examples/ answers a `claude -p` turn of its own, each served by its own provider (the
ledger's provider and model per alias; e2e/demo/aliases.py). Then a few dozen requests of both keys
(alice, ci), several projects (the Tenant's `X-Project` values) and aliases go through the
gateway (e2e/demo/traffic.py). The tenant URL, the onboarding environment, the fleet's managed
settings, what the interactive session showed, the usage rows and `tenantctl report
engineering-team` are printed; the html report (with its plots) is written to
.dev/demo/report.html.

The three background processes keep running (the gateway's is the podman running container
tenantgw-demo-gateway); their pids are in .dev/demo/*.pid and their logs in
.dev/logs/demo-*.log. Running `up` again reuses those still alive (the gateway is restarted
when the operator rendered a different Deployment, ConfigMap or Secret for it, or the image
changed). `down` stops the three (the gateway drains, its container is removed); it never
touches the control plane, PostgreSQL or Redis (`make demo-down` stops those after it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import redis
from kubernetes.client import ApiClient
from kubernetes.config import new_client_from_config

from e2e.claude import ClaudeCodeError, claude_binary, pinned_version, run_claude, seed_home
from e2e.claude_tui import DANGEROUS, HARMLESS, AutoModeStory, ClaudeSession, auto_mode_story
from e2e.containers import Image, ImageError, built_images
from e2e.demo import aliases as demo_aliases
from e2e.demo import container as demo_container
from e2e.demo import traffic as demo_traffic
from e2e.demo.processes import (
    LOGS,
    MARKERS,
    STATE,
    DemoError,
    http_ok,
    port_busy,
    running_pid,
    say,
    start_background,
    step,
    stop_background,
    table,
    wait_http,
)
from e2e.fixtures import DEV, ROOT, Cluster, _read_env
from e2e.gateway_fixture import (
    EXAMPLE_JUDGE_MODEL,
    EXAMPLE_NAMESPACE,
    EXAMPLE_TENANT,
    apply_examples,
    example_simulator_config,
    wait_example_configured,
)
from e2e.helpers import K8s
from e2e.operator_fixture import install_crds_and_rbac, service_account_kubeconfig
from tenantgw.api.periods import budget_counter_key

GATEWAY_PORT = 4000
SIMULATOR_PORT = 18080
OPERATOR_HEALTH_PORT = 18081
GATEWAY_URL = f"http://127.0.0.1:{GATEWAY_PORT}"
SIMULATOR_URL = f"http://127.0.0.1:{SIMULATOR_PORT}"
KEY = "alice"
BUDGET_POLICY = "engineering-daily"
GATEWAY_STARTUP_SECONDS = 240
GATEWAY_MODE_ENV = "DEMO_GATEWAY"
GATEWAY_MODES = ("image", "process")
BIN = Path(sys.executable).parent
REPORT_HTML = STATE / "report.html"


# --------------------------------------------------------------------------- the steps


def load_cluster() -> tuple[Cluster, dict[str, str]]:
    """The control plane and services `make cluster-up services-up` started."""
    missing = [f for f in ("cluster.env", "services.env") if not (DEV / f).exists()]
    if missing:
        raise DemoError(f".dev/{missing[0]} is missing: run `make cluster-up services-up` first")
    env = _read_env(DEV / "cluster.env")
    cluster = Cluster(kubeconfig=Path(env["KUBECONFIG"]), bin_dir=Path(env["PATH"].split(":")[0]))
    return cluster, _read_env(DEV / "services.env")


def ensure_operator(cluster: Cluster, services: dict[str, str]) -> None:
    step("applying the CRDs and the operator's RBAC", lambda: install_crds_and_rbac(cluster))
    pid = running_pid("operator")
    if pid is not None:
        say(f"operator: already running (pid {pid})")
        return
    if port_busy(OPERATOR_HEALTH_PORT):
        raise DemoError(
            f"port {OPERATOR_HEALTH_PORT} (operator health) is taken by another process"
        )
    kubeconfig = STATE / "operator.kubeconfig"
    STATE.mkdir(parents=True, exist_ok=True)
    step(
        "minting the operator's ServiceAccount token",
        lambda: service_account_kubeconfig(cluster, kubeconfig),
    )
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "TENANTGW_POSTGRES_DSN": services["TENANTGW_POSTGRES_DSN"],
        "TENANTGW_REDIS_URL": services["TENANTGW_REDIS_URL"],
    }
    pid, log_file = start_background(
        "operator",
        [
            str(BIN / "kopf"),
            "run",
            "--standalone",
            "--all-namespaces",
            f"--liveness=http://127.0.0.1:{OPERATOR_HEALTH_PORT}/healthz",
            "-m",
            MARKERS["operator"][0],
        ],
        env,
    )
    took = wait_http(
        "operator", f"http://127.0.0.1:{OPERATOR_HEALTH_PORT}/healthz", pid, log_file, 90
    )
    say(
        f"operator: started as ServiceAccount tenantgw-system/tenantgw-operator (pid {pid}, "
        f"live after {took:.1f}s, log {log_file.relative_to(ROOT)})"
    )


def ensure_simulator() -> None:
    pid = running_pid("simulator")
    if pid is not None:
        say(f"provider simulator: already running on {SIMULATOR_URL}/v1 (pid {pid})")
        return
    if port_busy(SIMULATOR_PORT):
        raise DemoError(f"port {SIMULATOR_PORT} is taken by another process: stop it first")
    pid, log_file = start_background(
        "simulator",
        [
            sys.executable,
            "-m",
            MARKERS["simulator"][0],
            "--port",
            str(SIMULATOR_PORT),
            "--judge-models",
            EXAMPLE_JUDGE_MODEL,
        ],
    )
    wait_http("provider simulator", f"{SIMULATOR_URL}/_sim/health", pid, log_file, 30)
    say(
        f"provider simulator: started on {SIMULATOR_URL}/v1 (pid {pid}, "
        f"log {log_file.relative_to(ROOT)})"
    )


def ensure_judge() -> None:
    """The simulator plays the example's classifier model and its Ollama has the example's
    models, even one started by an older demo."""
    _simulator_config(example_simulator_config())


def ensure_tenant(k8s: K8s) -> dict[str, Any]:
    started = time.monotonic()
    step(
        "applying examples/ (each provider's apiBase: the simulator)",
        lambda: apply_examples(k8s, simulator_root=SIMULATOR_URL),
    )
    step(
        f"waiting for Tenant {EXAMPLE_TENANT} to be Ready with every alias of examples/",
        lambda: wait_example_configured(k8s, 120),
    )
    say(
        f"examples/ applied, each provider's apiBase the simulator's route of its protocol; "
        f"Tenant {EXAMPLE_TENANT} Ready after {time.monotonic() - started:.1f}s"
    )
    return k8s.tenant(EXAMPLE_TENANT)


def gateway_mode() -> str:
    """$DEMO_GATEWAY: `image` (the default: the gateway image as its pod would run it) or
    `process` (`tenantctl dev gateway`, the same files and env, no podman needed)."""
    mode = os.environ.get(GATEWAY_MODE_ENV, "").strip() or "image"
    if mode not in GATEWAY_MODES:
        raise DemoError(f"{GATEWAY_MODE_ENV}={mode!r}: use one of {', '.join(GATEWAY_MODES)}")
    return mode


def gateway_image() -> Image:
    """The gateway image of this checkout: docker/build.sh (`make images`) builds what is
    missing, and finds every layer cached when nothing changed."""
    say("images: docker/build.sh (`make images`; cached layers when nothing changed)")
    try:
        image = built_images()["gateway"]
    except ImageError as exc:
        raise DemoError(f"the images could not be built: {exc}") from None
    say(f"images: gateway {image.id.removeprefix('sha256:')[:12]} ({image.size // 1_000_000} MB)")
    return image


def stop_gateway() -> None:
    """The gateway process or container's podman (SIGTERM: it drains), then the container."""
    stop_background("gateway")
    demo_container.remove()


def tenantctl_gateway_argv(cluster: Cluster) -> list[str]:
    return [
        str(BIN / "tenantctl"),
        "--kubeconfig",
        str(cluster.kubeconfig),
        "dev",
        "gateway",
        EXAMPLE_TENANT,
        "--port",
        str(GATEWAY_PORT),
        "--workdir",
        str(STATE / "gateway"),
    ]


def ensure_gateway(api: ApiClient, cluster: Cluster) -> str:
    """The example tenant's gateway on GATEWAY_URL, from exactly the Deployment, ConfigMap and
    Secrets the operator rendered; restarted when any of them (or the image) changed since it
    started. Returns how it runs, for the summary."""
    mode = gateway_mode()
    rendered = step(
        "reading the gateway's Deployment, ConfigMap and Secrets",
        lambda: demo_container.read_pod(api, EXAMPLE_NAMESPACE),
    )
    if mode == "image":
        image = gateway_image()
        fingerprint = rendered.fingerprint(image.id)
        how = (
            f"container {demo_container.CONTAINER} of image "
            f"{image.id.removeprefix('sha256:')[:12]} (ghcr.io/tenantgw/gateway), run as "
            "Deployment gateway's pod"
        )
    else:
        tenantctl = tenantctl_gateway_argv(cluster)
        fingerprint = rendered.fingerprint(json.dumps(tenantctl))
        how = "tenantctl dev gateway (a process, $DEMO_GATEWAY=process)"
    stamp = STATE / "gateway.fingerprint"
    pid = running_pid("gateway")
    if pid is not None:
        same = stamp.exists() and stamp.read_text() == fingerprint
        if same and http_ok(f"{GATEWAY_URL}/health/readiness"):
            say(f"gateway: already running on {GATEWAY_URL} (pid {pid}): {how}")
            return how
        say("gateway: rendered, built or started differently since it started: restarting it")
    stop_gateway()  # also a container an earlier demo left behind
    if port_busy(GATEWAY_PORT):
        raise DemoError(f"port {GATEWAY_PORT} is taken by another process: stop it first")
    if mode == "image":
        mounts, env = demo_container.write_pod_files(rendered, STATE / "gateway-pod")
        argv = demo_container.run_argv(
            rendered, image.id, workdir=STATE, mounts=mounts, env=env, port=GATEWAY_PORT
        )
        pid, log_file = start_background("gateway", argv)
        shown = [a for a in argv if not a.startswith("--env-file")]
        say(f"gateway: {shlex.join(shown)}")
    else:
        pid, log_file = start_background("gateway", tenantctl, cluster.env())
        say(f"gateway: {shlex.join(['tenantctl', *tenantctl[3:]])}")
    stamp.write_text(fingerprint)
    took = wait_http(
        "gateway", f"{GATEWAY_URL}/health/readiness", pid, log_file, GATEWAY_STARTUP_SECONDS
    )
    say(
        f"gateway: ready on {GATEWAY_URL} after {took:.0f}s (pid {pid}, "
        f"log {log_file.relative_to(ROOT)})"
    )
    return how


def onboarding(cluster: Cluster, key: str = KEY) -> tuple[str, dict[str, str]]:
    """`tenantctl onboard` output for `key`, and the environment it exports."""
    argv = [str(BIN / "tenantctl"), "onboard", EXAMPLE_TENANT, "--key", key, "--url", GATEWAY_URL]
    proc = subprocess.run(
        argv, env=cluster.env(), capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise DemoError(f"tenantctl onboard failed:\n{proc.stderr[-2000:]}")
    env: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = shlex.split(value)[0] if value else ""
    return proc.stdout.strip(), env


def managed_settings(cluster: Cluster) -> tuple[str, str]:
    """`tenantctl onboard --format managed-settings`: (the file, where it goes)."""
    argv = [
        str(BIN / "tenantctl"),
        "onboard",
        EXAMPLE_TENANT,
        "--key",
        KEY,
        "--url",
        GATEWAY_URL,
        "--format",
        "managed-settings",
    ]
    proc = subprocess.run(
        argv, env=cluster.env(), capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise DemoError(f"tenantctl onboard --format managed-settings failed:\n{proc.stderr}")
    return proc.stdout.strip(), proc.stderr.strip()


def _simulator_config(changes: dict[str, Any]) -> None:
    demo_aliases.simulator_config(SIMULATOR_URL, changes)


def claude_request(env: dict[str, str]) -> tuple[str, dict[str, Any], float]:
    """One `claude -p` turn that reads a file through the gateway; (prompt, result, start)."""
    project, home = STATE / "project", STATE / "home"
    project.mkdir(parents=True, exist_ok=True)
    codename = f"tgw-{secrets.token_hex(4)}"
    notes = project / "notes.txt"
    notes.write_text(f"The release codename is {codename}.\n")
    seed_home(home, [project])
    prompt = "What is the release codename in notes.txt?"
    # The simulator plays the model: its first answer calls Claude Code's Read tool on the file.
    _simulator_config({"tool_plan": {"tool": "Read", "arguments": {"file_path": str(notes)}}})
    started = time.time() - 1
    say(
        f"Claude Code {pinned_version()}: claude -p {shlex.quote(prompt)} --model fast-code "
        "--output-format json --allowedTools Read"
    )
    try:
        run = run_claude(prompt, project=project, home=home, gateway_env=env, model="fast-code")
        result = run.result
    except ClaudeCodeError as exc:
        raise DemoError(f"Claude Code failed: {exc}") from None
    finally:
        _simulator_config({"tool_plan": None})
    if run.returncode != 0 or result.get("is_error") or codename not in str(result.get("result")):
        raise DemoError(f"Claude Code did not answer from the file:\n{run.describe()}")
    return prompt, result, started


def claude_args(shell: str) -> list[str]:
    """The arguments of the `alias claude=...` line `tenantctl onboard` prints."""
    for line in shell.splitlines():
        if line.startswith("alias claude="):
            return shlex.split(shlex.split(line.removeprefix("alias claude="))[0])[1:]
    raise DemoError(f"tenantctl onboard printed no `alias claude=` line:\n{shell}")


def interactive_check(shell: str, env: dict[str, str]) -> AutoModeStory:
    """Claude Code interactive in a tmux pane, in auto mode: one reviewed command runs, one
    flagged command is blocked, `/status` shows the server check on."""
    project, home = STATE / "project-interactive", STATE / "home-interactive"
    project.mkdir(parents=True, exist_ok=True)
    seed_home(home, [project])
    transcript = LOGS / "demo-claude-interactive.txt"
    transcript.write_text("")
    where = transcript.relative_to(ROOT)
    say(f"Claude Code {pinned_version()} interactive (tmux), auto mode: screens in {where}")
    try:
        with ClaudeSession(
            project=project,
            home=home,
            gateway_env=env,
            args=tuple(claude_args(shell)),
            transcript=transcript,
        ) as claude:
            story = auto_mode_story(claude)
    except ClaudeCodeError as exc:
        raise DemoError(f"the interactive session went wrong ({where}): {exc}") from None
    problems = []
    if "isn't recognized" in story.start:
        problems.append("the start-up screen warns of an unrecognized model")
    if "Tool said: 42" not in story.harmless:
        problems.append("the harmless command did not run without a prompt")
    if "Blocked by auto mode" not in story.dangerous:
        problems.append("the dangerous command was not blocked by the server's verdict")
    if not re.search(r"Auto mode server:\s+Enabled", story.status):
        problems.append("/status does not show the server check on")
    if problems:
        raise DemoError(f"interactive check failed ({where}): " + "; ".join(problems))
    return story


def alias_check(
    cluster: Cluster, k8s: K8s, names: Sequence[str] = ()
) -> list[demo_aliases.AliasResult]:
    """A `claude -p --model <alias>` turn per alias of examples/ (or of `names`), key ci."""
    chosen = demo_aliases.example_aliases()
    unknown = sorted(set(names) - {a.name for a in chosen})
    if unknown:
        raise DemoError(f"examples/ has no ModelAlias {', '.join(unknown)}")
    if names:
        chosen = [a for a in chosen if a.name in names]
    _, env = onboarding(cluster, demo_aliases.CHECK_KEY)
    dsn = k8s.secret_value(EXAMPLE_NAMESPACE, "gateway", "postgresDsn")
    say(
        f"Claude Code {pinned_version()}: claude -p {demo_aliases.PROMPT!r} --model <alias> "
        f"for each of {len(chosen)} aliases (key {demo_aliases.CHECK_KEY}, "
        f"{demo_aliases.PARALLEL} at a time)"
    )
    try:
        return demo_aliases.check_aliases(
            gateway_env=env,
            simulator_root=SIMULATOR_URL,
            dsn=dsn,
            workdir=STATE / "aliases",
            aliases=chosen,
        )
    except ClaudeCodeError as exc:
        raise DemoError(f"Claude Code failed: {exc}") from None


def print_alias_check(results: Sequence[demo_aliases.AliasResult]) -> None:
    print(
        f"Every alias of examples/, one Claude Code turn each (claude -p --model <alias>, key "
        f"{demo_aliases.CHECK_KEY}; who served: the tenant's ledger):"
    )
    print(demo_aliases.lines(results))


def usage_rows(dsn: str, since: float) -> list[tuple[Any, ...]]:
    """The request's rows in the tenant's ledger (metering writes them just after the reply)."""
    query = (
        "select ts, key_name, requested_model, alias, provider, provider_model, input_tokens,"
        " output_tokens, cost_usd, latency_ms, status, session_id from usage"
        " where ts >= to_timestamp(%s) and key_name = %s order by ts"
    )
    deadline = time.monotonic() + 30
    rows: list[tuple[Any, ...]] = []
    while time.monotonic() < deadline:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            rows = conn.execute(query, (since, KEY)).fetchall()
        if sum(1 for r in rows if r[3] == "fast-code") >= 2:
            return rows
        time.sleep(0.5)
    raise DemoError(
        f"no usage rows of key {KEY} reached the ledger within 30s: see "
        f"{(LOGS / 'demo-gateway.log').relative_to(ROOT)}"
    )


def send_traffic(k8s: K8s) -> demo_traffic.Traffic:
    """A few dozen requests of both keys, several projects and aliases (e2e/demo/traffic.py)."""
    keys = {
        name: k8s.secret_value(EXAMPLE_NAMESPACE, f"gateway-key-{name}", "apiKey")
        for name in ("alice", "ci")
    }
    calls = demo_traffic.plan()
    say(f"sending {len(calls)} requests of keys alice and ci through {GATEWAY_URL}")
    try:
        return demo_traffic.send_traffic(GATEWAY_URL, keys, calls)
    except RuntimeError as exc:
        raise DemoError(
            f"a request of the demo's traffic failed: {exc} (see "
            f"{(LOGS / 'demo-gateway.log').relative_to(ROOT)})"
        ) from None


def report(cluster: Cluster, services: dict[str, str]) -> str:
    """`tenantctl report engineering-team` (table); the html goes to REPORT_HTML."""
    env = {**cluster.env(), "TENANTGW_POSTGRES_DSN": services["TENANTGW_POSTGRES_DSN"]}
    try:
        table, _ = demo_traffic.run_report(
            [str(BIN / "tenantctl")], env, EXAMPLE_TENANT, REPORT_HTML
        )
    except RuntimeError as exc:
        raise DemoError(str(exc)) from None
    return table


def budget_spent_usd(redis_url: str) -> float:
    key = budget_counter_key(EXAMPLE_TENANT, BUDGET_POLICY, "daily", datetime.now(UTC))
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        raw: bytes | None = client.get(key)  # type: ignore[assignment]
    finally:
        client.close()
    return int(raw or 0) / 1_000_000


# --------------------------------------------------------------------------- commands


def up() -> None:
    cluster, services = load_cluster()
    api: ApiClient = new_client_from_config(config_file=str(cluster.kubeconfig))
    k8s = K8s(api)
    ensure_operator(cluster, services)
    ensure_simulator()
    ensure_judge()
    tenant = ensure_tenant(k8s)
    how = ensure_gateway(api, cluster)
    shell, env = onboarding(cluster)
    fleet, fleet_note = managed_settings(cluster)
    prompt, result, started = claude_request(env)
    story = interactive_check(shell, env)
    dsn = k8s.secret_value(EXAMPLE_NAMESPACE, "gateway", "postgresDsn")
    rows = usage_rows(dsn, started)
    checked = alias_check(cluster, k8s)
    if not all(r.ok for r in checked):
        print_alias_check(checked)
        raise DemoError("an alias of examples/ was not served by its own provider (above)")
    sent = send_traffic(k8s)
    spend_report = report(cluster, services)
    spent = budget_spent_usd(services["TENANTGW_REDIS_URL"])
    api.close()

    answer = " ".join(str(result.get("result", "")).split())
    print()
    models = ", ".join(tenant["status"].get("models", []))
    print(f"Tenant {EXAMPLE_TENANT} is Ready; its gateway serves {models}")
    print(f"  tenant URL (status.url)  {tenant['status'].get('url')}")
    print(f"  local gateway            {GATEWAY_URL}   ({how})")
    print(
        f"  providers                the simulator {SIMULATOR_URL} (each provider's apiBase: "
        "the route of its protocol)"
    )
    print()
    print(f"Onboarding: tenantctl onboard {EXAMPLE_TENANT} --key {KEY} --url {GATEWAY_URL}")
    print(shell)
    print()
    print(
        f"For a fleet: tenantctl onboard {EXAMPLE_TENANT} --key {KEY} --url {GATEWAY_URL} "
        "--format managed-settings"
    )
    print(fleet)
    print(fleet_note)
    print()
    print(f"Claude Code: {prompt!r} -> {answer!r}")
    print(
        f"  {result.get('num_turns')} turns (the Read tool ran), is_error={result.get('is_error')},"
        f" {result.get('duration_ms')} ms"
    )
    print()
    print("Claude Code interactive, auto mode (the tenant's classifier alias reviews each call):")
    print(f"  {HARMLESS!r} ran without a prompt; {DANGEROUS!r} was blocked:")
    blocked = next(
        (ln.strip() for ln in story.dangerous.splitlines() if "Auto mode:" in ln), "(blocked)"
    )
    print(f"    {blocked}")
    status = " ".join(
        next(ln for ln in story.status.splitlines() if "Auto mode server:" in ln).split()
    )
    print(f"  /status: {status}; session {story.session_id}")
    window = next((ln.strip() for ln in story.context.splitlines() if "tokens (" in ln), "")
    print(f"  /context: {window.strip(' ⛀⛁⛶⛝')} (no unrecognized-model warning)")
    print()
    print_alias_check(checked)
    print()
    print(f"Usage rows in the tenant's ledger (schema of tenant {EXAMPLE_TENANT}, key {KEY}):")
    print(
        table(
            [
                "time (UTC)",
                "key",
                "requested",
                "alias",
                "provider/model",
                "in",
                "out",
                "cost USD",
                "latency",
                "status",
                "session",
            ],
            [
                [
                    r[0].astimezone(UTC).strftime("%H:%M:%S"),
                    r[1],
                    r[2],
                    r[3],
                    f"{r[4]}/{r[5]}",
                    str(r[6]),
                    str(r[7]),
                    f"{r[8]:.6f}",
                    f"{r[9]} ms" if r[9] is not None else "-",
                    r[10],
                    r[11] or "-",
                ]
                for r in rows
            ],
        )
    )
    print()
    print(
        f"Traffic: {sent.sent} requests, keys "
        + ", ".join(f"{k} {n}" for k, n in sorted(sent.by_key.items()))
        + "; projects "
        + ", ".join(f"{p} {n}" for p, n in sorted(sent.by_project.items()))
        + "; models "
        + ", ".join(f"{m} {n}" for m, n in sorted(sent.by_model.items()))
    )
    print(f"  {demo_traffic.PROJECT_HEADER}: {demo_traffic.REFUSED_PROJECT} was refused (400):")
    print(f"    {sent.refusal}")
    print()
    print(f"$ tenantctl report {EXAMPLE_TENANT}")
    print(spend_report)
    print()
    print(
        f"html report (plots: spend over time, by model, budget burn-down, savings): "
        f"{REPORT_HTML.relative_to(ROOT)}"
    )
    print(
        f"Budget {BUDGET_POLICY}: {spent:.6f} of 100 USD spent today "
        f"(Redis t:{{{EXAMPLE_TENANT}}}:budget:{BUDGET_POLICY}:<day>)"
    )
    print()
    pids = ", ".join(f"{name} {running_pid(name)}" for name in ("operator", "simulator", "gateway"))
    if gateway_mode() == "image":
        pids += f"; container {demo_container.CONTAINER}"
    print(f"Left running ({pids}; pids in .dev/demo/, logs in .dev/logs/demo-*.log).")
    print(f"Try it:  export PATH={claude_binary().parent}:$PATH")
    print(
        f'         eval "$(.venv/bin/tenantctl --kubeconfig .dev/kubeconfig onboard '
        f'{EXAMPLE_TENANT} --key {KEY} --url {GATEWAY_URL})"'
    )
    print("         claude      # the alias hands Claude Code the context window")
    print("Stop:    make demo-down")


def down() -> None:
    stop_gateway()
    for name in ("simulator", "operator"):
        stop_background(name)


def check(names: Sequence[str]) -> int:
    """`check --all-aliases` (or `--alias NAME`...): the alias check against the running demo."""
    missing = [name for name in ("simulator", "gateway") if running_pid(name) is None]
    if missing:
        raise DemoError(f"the demo's {missing[0]} is not running: run `make demo` first")
    cluster, _ = load_cluster()
    api: ApiClient = new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        results = alias_check(cluster, K8s(api), names)
    finally:
        api.close()
    print()
    print_alias_check(results)
    return 0 if all(r.ok for r in results) else 1


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m e2e.demo", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("up", help="start (or reuse) everything and run the demo")
    sub.add_parser("down", help="stop what `up` started in the background")
    chk = sub.add_parser("check", help="a Claude Code turn per alias of the running demo")
    which = chk.add_mutually_exclusive_group()
    which.add_argument(
        "--all-aliases", action="store_true", help="every ModelAlias of examples/ (the default)"
    )
    which.add_argument(
        "--alias", action="append", default=[], metavar="NAME", help="only this alias (repeat)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.command in (None, "up"):
        up()
    elif args.command == "down":
        down()
    else:
        return check(args.alias)
    return 0


if __name__ == "__main__":
    sys.exit(main())
