"""Prove the LiteLLM proxy configuration that the operator renders, against the provider simulator.

Not a test: a script that starts the provider simulator and two real LiteLLM proxies (the pinned
version in ``.venv``) and drives them with the official ``anthropic`` and ``openai`` SDKs. It
prints one line per check and exits non-zero when a check fails. Findings are in
``docs/litellm-notes.md``.

    .venv/bin/python e2e/litellm_smoke.py            # from the repository root
    .venv/bin/python e2e/litellm_smoke.py --keep     # keep the work dir (configs, logs, events)

Proxy "plain": master key only, no database, our callbacks (loaded from a module file next to
config.yaml), router fallbacks, a model-group alias and a wildcard model name.
Proxy "auth": the same models plus ``general_settings.custom_auth`` (a module file next to
config.yaml) and the callbacks loaded from a package on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import yaml
from anthropic.types import Message, MessageParam, TextBlock, ToolParam, ToolUseBlock

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make ``e2e`` importable
    sys.path.insert(0, str(ROOT))

from e2e.ports import free_port  # noqa: E402
from e2e.provider_sim import SimulatorHandle, start_simulator  # noqa: E402

VENV_BIN = ROOT / ".venv" / "bin"
MASTER_KEY = "sk-smoke-master"
SIM_KEY = "sk-sim-provider"
TOOL: ToolParam = {
    "name": "get_weather",
    "description": "Weather of a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
}

# --------------------------------------------------------------------------- plugin modules

CALLBACKS_PY = '''\
"""A CustomLogger that appends every hook call it sees to $SMOKE_EVENTS (JSON lines)."""
import json
import os

from fastapi import HTTPException
from litellm.integrations.custom_logger import CustomLogger
from litellm.proxy._types import ProxyException


def _write(event):
    with open(os.environ["SMOKE_EVENTS"], "a") as f:
        f.write(json.dumps(event, default=str) + "\\n")


def _usage(obj):
    usage = getattr(obj, "usage", None)
    if usage is None and isinstance(obj, dict):
        usage = obj.get("usage")
    if usage is None:
        return None
    if hasattr(usage, "model_dump"):
        usage = usage.model_dump()
    return {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


def _common(kwargs):
    slo = kwargs.get("standard_logging_object") or {}
    meta = (kwargs.get("litellm_params") or {}).get("metadata") or {}
    return {
        "call_type": kwargs.get("call_type"),
        "model": kwargs.get("model"),
        "stream": kwargs.get("stream"),
        "model_group": meta.get("model_group"),
        "user_api_key_team_id": meta.get("user_api_key_team_id"),
        "user_api_key_user_id": meta.get("user_api_key_user_id"),
        "tenantgw_tag": meta.get("tenantgw_tag"),
        "slo_status": slo.get("status"),
        "slo_response_cost": slo.get("response_cost"),
        "slo_prompt_tokens": slo.get("prompt_tokens"),
        "slo_completion_tokens": slo.get("completion_tokens"),
        "slo_model": slo.get("model"),
        "slo_api_base": slo.get("api_base"),
        "slo_completion_start_time": slo.get("completionStartTime"),
        "slo_start_time": slo.get("startTime"),
    }


def _last_text(data):
    messages = data.get("messages") or [{}]
    content = messages[-1].get("content")
    return content if isinstance(content, str) else ""


class Recorder(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        # /v1/messages (and other new routes) carry LiteLLM's metadata in "litellm_metadata",
        # because "metadata" is a provider parameter there.
        key = "litellm_metadata" if "litellm_metadata" in data else "metadata"
        _write({"event": "pre_call", "call_type": call_type, "model": data.get("model"),
                "team_id": user_api_key_dict.team_id, "user_id": user_api_key_dict.user_id,
                "metadata_key": key})
        text = _last_text(data)
        if text == "BLOCK-PROXY":
            raise ProxyException(message="budget exceeded", type="budget_exceeded",
                                 param=None, code=429)
        if text == "BLOCK-HTTP":
            raise HTTPException(status_code=429, detail={"error": "budget exceeded"})
        if text == "BLOCK-VALUE":
            raise ValueError("budget exceeded")
        # A pre-call hook may edit the request: tag it so the success event can show it,
        # and map a client name to a model group (what tenantgw routing rules do).
        data.setdefault(key, {})["tenantgw_tag"] = "seen-by-pre-call"
        if str(data.get("model", "")).startswith("tg-route-me"):
            data["model"] = "fast-code"
        return data

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        _write({"event": "success", "response_cost": kwargs.get("response_cost"),
                "usage": _usage(response_obj), "response_type": type(response_obj).__name__,
                "latency_s": (end_time - start_time).total_seconds(), **_common(kwargs)})

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        exc = kwargs.get("exception")
        _write({"event": "failure", "exception": type(exc).__name__,
                "status_code": getattr(exc, "status_code", None),
                "message": str(exc)[:200], **_common(kwargs)})


recorder = Recorder()
'''

AUTH_PY = '''\
"""custom_auth for the smoke test: the key decides what happens."""
import json
import os

from fastapi import HTTPException, Request
from litellm.proxy._types import ProxyException, UserAPIKeyAuth


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    with open(os.environ["SMOKE_EVENTS"], "a") as f:
        f.write(json.dumps({"event": "auth", "path": request.url.path, "api_key": api_key}) + "\\n")
    if api_key == "raise-proxy-exception":
        raise ProxyException(message="tenant key rejected", type="authentication_error",
                             param=None, code=401)
    if api_key == "raise-http-exception":
        raise HTTPException(status_code=401, detail={"error": "tenant key rejected"})
    if api_key == "raise-value-error":
        raise ValueError("tenant key rejected")
    if api_key in ("sk-tenant-alice", os.environ["LITELLM_MASTER_KEY"]):
        return UserAPIKeyAuth(api_key=api_key, user_id="alice", team_id="tenant-smoke",
                              key_alias="alice")
    raise ProxyException(message="unknown key", type="authentication_error", param=None, code=401)
'''


def write_plugins(work: Path) -> None:
    (work / "tg_smoke_callbacks.py").write_text(CALLBACKS_PY)  # next to config.yaml
    (work / "tg_smoke_auth.py").write_text(AUTH_PY)
    pkg = work / "pythonpath" / "tg_smoke_pkg"  # a package reached only through PYTHONPATH
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "callbacks.py").write_text(CALLBACKS_PY)


# --------------------------------------------------------------------------- config


def render_config(
    sim_url: str, *, custom_auth: bool, fallbacks_in: str = "router_settings"
) -> dict[str, Any]:
    """The config shape the operator renders (one deployment per ModelAlias target)."""

    def deployment(name: str, upstream: str, cin: float, cout: float) -> dict[str, Any]:
        return {
            "model_name": name,
            "litellm_params": {
                "model": f"openai/{upstream}",
                "api_base": sim_url,
                "api_key": "os.environ/SIM_API_KEY",
            },
            "model_info": {"input_cost_per_token": cin, "output_cost_per_token": cout},
        }

    cfg: dict[str, Any] = {
        "model_list": [
            deployment("fast-code", "sim-fast", 0.30e-6, 1.20e-6),
            deployment("reasoning", "sim-reasoning", 3e-6, 15e-6),
            # a ModelAlias' wildcard client name, as its own model group
            deployment("claude-sonnet-4-5-*", "sim-fast", 0.30e-6, 1.20e-6),
        ],
        "router_settings": {
            # extra exact client names of a ModelAlias
            "model_group_alias": {"claude-sonnet-4-5": "fast-code"},
        },
        "litellm_settings": {
            "use_chat_completions_url_for_anthropic_messages": True,
            "callbacks": (
                ["tg_smoke_pkg.callbacks.recorder"]
                if custom_auth
                else ["tg_smoke_callbacks.recorder"]
            ),
            "request_timeout": 30,
            "telemetry": False,
        },
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
    }
    fallbacks: list[dict[str, list[str]]] = [
        {"fast-code": ["reasoning"]},
        {"claude-sonnet-4-5": ["reasoning"]},  # model_group_alias names need their own entry
        {"claude-sonnet-4-5-*": ["reasoning"]},  # never matches: the lookup uses the sent name
    ]
    if custom_auth:
        fallbacks.append({"*": ["reasoning"]})  # generic chain: does catch wildcard names
    cfg[fallbacks_in].update({"fallbacks": fallbacks, "num_retries": 1})
    if custom_auth:
        cfg["general_settings"]["custom_auth"] = "tg_smoke_auth.user_api_key_auth"
    return cfg


# --------------------------------------------------------------------------- proxy process


def rss_mb(pid: int) -> float:
    """RSS of a process and its descendants, in MiB."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total_kb, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
    return total_kb / 1024


@dataclass
class Proxy:
    name: str
    work: Path
    config: dict[str, Any]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    startup_s: float = 0.0
    rss_start_mb: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def events_file(self) -> Path:
        return self.work / "events.jsonl"

    def start(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        cfg_path = self.work / "config.yaml"
        cfg_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        write_plugins(self.work)
        self.events_file.write_text("")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LITELLM_", "OPENAI_"))}
        env.update(
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS="True",
            LITELLM_MASTER_KEY=MASTER_KEY,
            SIM_API_KEY=SIM_KEY,
            SMOKE_EVENTS=str(self.events_file),
            PYTHONPATH=str(self.work / "pythonpath"),
            NO_PROXY="*",
        )
        log = (self.work / "proxy.log").open("wb")
        cmd = [
            str(VENV_BIN / "litellm"),
            "--config",
            str(cfg_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.started_at = time.monotonic()
        # cwd is not the config dir, to show that plugin modules resolve next to config.yaml
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tempfile.gettempdir()
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        assert self.proc is not None
        while time.monotonic() - self.started_at < timeout:
            if self.proc.poll() is not None:
                tail = (self.work / "proxy.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"proxy {self.name} exited {self.proc.returncode}:\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health/liveliness", timeout=1).status_code == 200:
                    self.startup_s = time.monotonic() - self.started_at
                    self.rss_start_mb = rss_mb(self.proc.pid)
                    return
            time.sleep(0.1)
        raise RuntimeError(f"proxy {self.name} not ready after {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def events(self) -> list[dict[str, Any]]:
        lines = self.events_file.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def mark(self) -> int:
        return len(self.events())

    def wait_events(
        self, since: int, pred: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            new = self.events()[since:]
            if pred(new) or time.monotonic() > deadline:
                return new
            time.sleep(0.05)

    def anthropic(self, key: str = MASTER_KEY) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=key, max_retries=0, timeout=60)

    def openai(self, key: str = MASTER_KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=60)


# --------------------------------------------------------------------------- checks


class Checks:
    def __init__(self) -> None:
        self.failed: list[str] = []
        self.facts: dict[str, Any] = {}

    @contextlib.contextmanager
    def check(self, name: str) -> Iterator[dict[str, Any]]:
        info: dict[str, Any] = {}
        try:
            yield info
        except Exception as exc:
            self.failed.append(name)
            print(f"FAIL {name}: {type(exc).__name__}: {exc}", flush=True)
        else:
            detail = json.dumps(info, default=str) if info else ""
            print(f"ok   {name} {detail}", flush=True)
            self.facts[name] = info


def successes(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "success"]


def text_of(msg: Message) -> str:
    return "".join(b.text for b in msg.content if isinstance(b, TextBlock))


def raw_error(url: str, path: str, key: str, body: dict[str, Any], header: str) -> dict[str, Any]:
    headers = {"anthropic-version": "2023-06-01"}
    if key:  # no key: no credential header at all
        headers.update(
            {"x-api-key": key} if header == "x-api-key" else {"Authorization": f"Bearer {key}"}
        )
    r = httpx.post(url + path, json=body, headers=headers, timeout=30)
    try:
        payload: Any = r.json()
    except ValueError:
        payload = r.text
    return {"status": r.status_code, "body": payload}


MESSAGES_BODY: dict[str, Any] = {
    "model": "fast-code",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "hi"}],
}
CHAT_BODY: dict[str, Any] = {"model": "fast-code", "messages": [{"role": "user", "content": "hi"}]}


def run_plain(p: Proxy, sim: SimulatorHandle, c: Checks) -> None:
    with c.check("plain: health endpoints without auth") as info:
        for path in ("/health/liveliness", "/health/readiness", "/health"):
            r = httpx.get(p.url + path, timeout=10)
            info[path] = [r.status_code, r.text[:80]]
        assert info["/health/liveliness"][0] == 200
        assert info["/health/readiness"][0] == 200

    with c.check("plain: bad key, no DB") as info:
        info["chat"] = raw_error(p.url, "/v1/chat/completions", "sk-wrong", CHAT_BODY, "bearer")
        info["messages"] = raw_error(p.url, "/v1/messages", "sk-wrong", MESSAGES_BODY, "x-api-key")
        info["no_key"] = raw_error(p.url, "/v1/messages", "", MESSAGES_BODY, "x-api-key")
        assert info["chat"]["status"] == 400

    with c.check("plain: openai SDK chat non-stream + stream") as info:
        sim.reset()
        oa = p.openai()
        done = oa.chat.completions.create(
            model="fast-code", messages=[{"role": "user", "content": "hi"}]
        )
        assert done.choices[0].message.content == "Hello from sim-fast", done
        info["model"] = done.model
        text, usage = "", None
        for ch in oa.chat.completions.create(
            model="fast-code",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        ):
            text += "".join(x.delta.content or "" for x in ch.choices)
            usage = ch.usage or usage
        assert text == "Hello from sim-fast", text
        info["stream_usage"] = usage.model_dump(exclude_none=True) if usage else None
        upstream = sim.requests()[-1]
        info["upstream_auth"] = upstream["headers"].get("Authorization")
        info["upstream_stream_options"] = upstream["body"].get("stream_options")
        assert upstream["headers"].get("Authorization") == f"Bearer {SIM_KEY}"

    with c.check("plain: anthropic SDK /v1/messages non-stream (+ cost callback)") as info:
        sim.reset()
        m0 = p.mark()
        msg = p.anthropic().messages.create(**MESSAGES_BODY)
        assert msg.content[0].text == "Hello from sim-fast", msg
        info["stop_reason"] = msg.stop_reason
        info["usage"] = msg.usage.model_dump(exclude_none=True)
        info["upstream_path"] = sim.requests()[-1]["path"]
        assert info["upstream_path"] == "/v1/chat/completions"
        info["upstream_body_keys"] = sorted(sim.requests()[-1]["body"])
        ev = p.wait_events(m0, lambda e: bool(successes(e)))
        info["pre_call"] = [e for e in ev if e["event"] == "pre_call"]
        info["success"] = successes(ev)
        assert successes(ev), ev
        assert successes(ev)[0]["response_cost"], ev
        assert successes(ev)[0]["tenantgw_tag"] == "seen-by-pre-call", ev

    with c.check("plain: anthropic SDK /v1/messages stream (+ cost callback)") as info:
        m0 = p.mark()
        text = ""
        with p.anthropic().messages.stream(**MESSAGES_BODY) as stream:
            for t in stream.text_stream:
                text += t
            final = stream.get_final_message()
        assert text == "Hello from sim-fast", text
        info["final_usage"] = final.usage.model_dump(exclude_none=True)
        info["upstream_stream_options"] = sim.requests()[-1]["body"].get("stream_options")
        ev = p.wait_events(m0, lambda e: bool(successes(e)))
        info["success"] = successes(ev)
        assert successes(ev), ev
        assert successes(ev)[0]["response_cost"], ev

    with c.check("plain: anthropic SDK tool round trip") as info:
        ac = p.anthropic()
        msgs: list[MessageParam] = [{"role": "user", "content": "weather in Paris?"}]
        first = ac.messages.create(
            model="fast-code",
            max_tokens=64,
            tools=[TOOL],
            messages=msgs,
        )
        tu = next(b for b in first.content if isinstance(b, ToolUseBlock))
        info["first"] = {"stop_reason": first.stop_reason, "tool": tu.name, "input": tu.input}
        assert first.stop_reason == "tool_use"
        assert tu.input == {"city": "echo"}
        msgs += [
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},  # type: ignore[misc]
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": tu.id, "content": "Sunny, 21C"}],
            },
        ]
        second = ac.messages.create(
            model="fast-code",
            max_tokens=64,
            tools=[TOOL],
            messages=msgs,
        )
        info["second"] = text_of(second)
        assert info["second"] == "Tool said: Sunny, 21C"
        # streamed tool use
        with ac.messages.stream(
            model="fast-code",
            max_tokens=64,
            tools=[TOOL],
            messages=msgs[:1],
        ) as stream:
            final = stream.get_final_message()
        info["streamed"] = [b.model_dump(include={"type", "name", "input"}) for b in final.content]
        assert final.stop_reason == "tool_use"

    with c.check("plain: /v1/messages/count_tokens") as info:
        n = p.anthropic().messages.count_tokens(
            model="fast-code", messages=[{"role": "user", "content": "hello " * 50}]
        )
        info["input_tokens"] = n.input_tokens
        info["upstream_called"] = any("count" in r["path"] for r in sim.requests())
        assert n.input_tokens > 0

    with c.check("plain: model_group_alias claude-sonnet-4-5 -> fast-code") as info:
        sim.reset()
        msg = p.anthropic().messages.create(**{**MESSAGES_BODY, "model": "claude-sonnet-4-5"})
        info["response_model"] = msg.model
        info["upstream_model"] = sim.requests()[-1]["model"]
        assert info["upstream_model"] == "sim-fast"

    with c.check("plain: wildcard model_name claude-sonnet-4-5-*") as info:
        sim.reset()
        msg = p.anthropic().messages.create(
            **{**MESSAGES_BODY, "model": "claude-sonnet-4-5-20250929"}
        )
        info["response_model"] = msg.model
        info["upstream_model"] = sim.requests()[-1]["model"]
        info["text"] = msg.content[0].text
        info["v1_models"] = sorted(m.id for m in p.openai().models.list().data)
        try:
            p.anthropic().messages.create(**{**MESSAGES_BODY, "model": "claude-opus-4-1"})
            info["unknown_model"] = "served"
        except anthropic.APIStatusError as exc:
            info["unknown_model"] = [exc.status_code, str(exc.body)[:160]]

    with c.check("plain: fallback fast-code -> reasoning on upstream 500") as info:
        sim.reset()
        sim.configure(fail_models={"sim-fast": "500"})
        m0 = p.mark()
        raw = httpx.post(
            p.url + "/v1/messages",
            json=MESSAGES_BODY,
            timeout=60,
            headers={"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01"},
        )
        info["status"] = raw.status_code
        info["text"] = raw.json()["content"][0]["text"]
        info["upstream_models"] = [r["model"] for r in sim.requests()]
        info["headers"] = {
            k: v
            for k, v in raw.headers.items()
            if (k.startswith("x-litellm") and "fallback" in k)
            or k
            in (
                "x-litellm-model-group",
                "x-litellm-response-cost",
                "x-litellm-model-api-base",
                "x-litellm-attempted-retries",
            )
        }
        ev = p.wait_events(m0, lambda e: bool(successes(e)))
        info["events"] = [
            (
                e["event"],
                e.get("model"),
                e.get("model_group"),
                e.get("response_cost") or e.get("status_code"),
            )
            for e in ev
        ]
        assert info["text"] == "Hello from sim-reasoning"

    with c.check("plain: fallback for alias, wildcard and hook-rewritten names") as info:
        for name in ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "tg-route-me-1"):
            sim.reset()
            sim.configure(fail_models={"sim-fast": "500"})
            try:
                msg = p.anthropic().messages.create(**{**MESSAGES_BODY, "model": name})
                info[name] = [msg.content[0].text, msg.model, [r["model"] for r in sim.requests()]]
            except anthropic.APIStatusError as exc:
                info[name] = [exc.status_code, [r["model"] for r in sim.requests()]]

    with c.check("plain: fallback on upstream 429 (openai SDK)") as info:
        sim.reset()
        sim.configure(fail_models={"sim-fast": "429"})
        done = p.openai().chat.completions.create(
            model="fast-code", messages=[{"role": "user", "content": "x"}]
        )
        info["text"] = done.choices[0].message.content
        info["upstream_models"] = [q["model"] for q in sim.requests()]
        assert info["text"] == "Hello from sim-reasoning"

    with c.check("plain: failure callback on upstream 500 (no fallback)") as info:
        sim.reset()
        sim.configure(fail_models={"sim-reasoning": "500"})
        m0 = p.mark()
        for path, body, hdr in (
            ("/v1/messages", {**MESSAGES_BODY, "model": "reasoning"}, "x-api-key"),
            ("/v1/chat/completions", {**CHAT_BODY, "model": "reasoning"}, "bearer"),
        ):
            info[path] = raw_error(p.url, path, MASTER_KEY, body, hdr)
        info["upstream_calls"] = len(sim.requests())
        ev = p.wait_events(m0, lambda e: sum(x["event"] == "failure" for x in e) >= 2)
        info["failures"] = [e for e in ev if e["event"] == "failure"]
        assert info["failures"], ev
        sim.reset()

    with c.check("plain: exceptions raised in async_pre_call_hook") as info:
        for text in ("BLOCK-PROXY", "BLOCK-HTTP", "BLOCK-VALUE"):
            msgs = [{"role": "user", "content": text}]
            info[text] = {
                "/v1/messages": raw_error(
                    p.url,
                    "/v1/messages",
                    MASTER_KEY,
                    {**MESSAGES_BODY, "messages": msgs},
                    "x-api-key",
                ),
                "/v1/chat/completions": raw_error(
                    p.url,
                    "/v1/chat/completions",
                    MASTER_KEY,
                    {**CHAT_BODY, "messages": msgs},
                    "bearer",
                ),
            }

    with c.check("plain: stream + fault mid-way (disconnect)") as info:
        sim.reset()
        sim.configure(fail_next=["disconnect"], reply="one two three four five")
        try:
            text = ""
            with p.anthropic().messages.stream(**{**MESSAGES_BODY, "model": "reasoning"}) as s:
                for t in s.text_stream:
                    text += t
            info["client_saw"] = text
        except Exception as exc:
            info["client_error"] = f"{type(exc).__name__}: {str(exc)[:120]}"
        info["upstream_calls"] = len(sim.requests())
        sim.reset()


def run_auth(p: Proxy, sim: SimulatorHandle, c: Checks) -> None:
    with c.check("auth: custom_auth key accepted, identity reaches callbacks") as info:
        sim.reset()
        m0 = p.mark()
        msg = p.anthropic("sk-tenant-alice").messages.create(**MESSAGES_BODY)
        info["text"] = msg.content[0].text
        r = p.openai("sk-tenant-alice").chat.completions.create(
            model="fast-code", messages=[{"role": "user", "content": "x"}]
        )
        info["chat"] = r.choices[0].message.content
        ev = p.wait_events(m0, lambda e: len(successes(e)) >= 2)
        info["auth_calls"] = [(e["path"], e["api_key"]) for e in ev if e["event"] == "auth"]
        info["success"] = [
            (
                e["call_type"],
                e["user_api_key_team_id"],
                e["user_api_key_user_id"],
                e["response_cost"],
            )
            for e in successes(ev)
        ]
        assert info["text"] == "Hello from sim-fast"

    with c.check("auth: fallback configured in litellm_settings") as info:
        sim.reset()
        sim.configure(fail_models={"sim-fast": "429"})
        msg = p.anthropic("sk-tenant-alice").messages.create(**MESSAGES_BODY)
        info["text"] = msg.content[0].text
        info["upstream_models"] = [r["model"] for r in sim.requests()]
        sim.reset()
        assert info["text"] == "Hello from sim-reasoning"

    with c.check("auth: generic '*' fallback catches a wildcard name") as info:
        sim.reset()
        sim.configure(fail_models={"sim-fast": "500"})
        msg = p.anthropic().messages.create(
            **{**MESSAGES_BODY, "model": "claude-sonnet-4-5-20250929"}
        )
        info["text"] = msg.content[0].text
        info["upstream_models"] = [r["model"] for r in sim.requests()]
        sim.reset()

    with c.check("auth: no key / master key through custom_auth") as info:
        m0 = p.mark()
        info["no_key"] = raw_error(p.url, "/v1/messages", "", MESSAGES_BODY, "x-api-key")
        info["master_key"] = raw_error(
            p.url, "/v1/messages", MASTER_KEY, MESSAGES_BODY, "x-api-key"
        )["status"]
        info["auth_calls"] = [
            (e["path"], e["api_key"]) for e in p.events()[m0:] if e["event"] == "auth"
        ]

    with c.check("auth: exceptions raised in custom_auth") as info:
        for key in (
            "raise-proxy-exception",
            "raise-http-exception",
            "raise-value-error",
            "sk-unknown",
        ):
            info[key] = {
                "/v1/messages": raw_error(p.url, "/v1/messages", key, MESSAGES_BODY, "x-api-key"),
                "/v1/chat/completions": raw_error(
                    p.url, "/v1/chat/completions", key, CHAT_BODY, "bearer"
                ),
            }
        try:
            p.anthropic("raise-proxy-exception").messages.create(**MESSAGES_BODY)
        except anthropic.APIStatusError as exc:
            info["anthropic_sdk_exception"] = type(exc).__name__
        try:
            p.openai("raise-proxy-exception").chat.completions.create(
                model="fast-code", messages=[{"role": "user", "content": "x"}]
            )
        except openai.APIStatusError as exc:
            info["openai_sdk_exception"] = type(exc).__name__

    with c.check("auth: health endpoints bypass custom_auth") as info:
        m0 = p.mark()
        for path in ("/health/liveliness", "/health/readiness"):
            info[path] = httpx.get(p.url + path, timeout=10).status_code
        info["auth_calls"] = [e for e in p.events()[m0:] if e["event"] == "auth"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--print-config", action="store_true", help="print the rendered configs")
    args = ap.parse_args(argv)
    if not (VENV_BIN / "litellm").exists():
        print(f"missing {VENV_BIN / 'litellm'}; run make setup", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="litellm-smoke-"))
    sim_url, sim = start_simulator()
    proxies = [
        Proxy("plain", work / "plain", render_config(sim_url, custom_auth=False)),
        Proxy(
            "auth",
            work / "auth",
            render_config(sim_url, custom_auth=True, fallbacks_in="litellm_settings"),
        ),
    ]
    checks = Checks()
    try:
        for p in proxies:  # one after the other, so that the start-up times are honest
            if args.print_config:
                print(f"# {p.name}\n" + yaml.safe_dump(p.config, sort_keys=False))
            p.start()
            p.wait_ready()
            print(
                f"ok   {p.name}: ready in {p.startup_s:.1f}s, RSS {p.rss_start_mb:.0f} MiB",
                flush=True,
            )
        run_plain(proxies[0], sim, checks)
        run_auth(proxies[1], sim, checks)
        for p in proxies:
            assert p.proc is not None
            print(f"ok   {p.name}: RSS after checks {rss_mb(p.proc.pid):.0f} MiB", flush=True)
    finally:
        for p in proxies:
            p.stop()
        sim.stop()
        if args.keep:
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if checks.failed:
        print(textwrap.fill("FAILED: " + ", ".join(checks.failed), 100))
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
