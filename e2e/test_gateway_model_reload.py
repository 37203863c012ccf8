"""A new, changed or deleted ModelAlias reaches a serving gateway without restarting it.

The gateway runs from exactly what `render_tenant` makes for one Tenant. The tests render the
tenant again with other aliases and project the new ConfigMap files into the running
gateway's mount the way the kubelet does (a new timestamped directory, then an atomic swap of
the `..data` symlink the files point through), while the same gateway process keeps serving.
The pod template's config hash of both renders is the same: the operator does not roll the
pods for it (render.config.config_hash), so the process itself must take the new routing.

Through the real openai and anthropic SDKs: an added alias serves (with its fallback), a
removed one is refused in the client's own error shape, and the aliases that stayed serve
throughout. A config.yaml that changed beyond its model routing (what a rollout brings), or
that does not parse, leaves the routing in use as it was.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import yaml

from e2e.fixtures import Services
from e2e.helpers import eventually
from e2e.provider_sim import SimulatorHandle
from e2e.rendered_gateway import Gateway, alice_inputs, model_aliases, run_rendered_gateway
from tenantgw.api import Tenant
from tenantgw.render import RenderInputs, StorageEndpoints, render_tenant
from tenantgw.render.names import CONFIG_FILE, CONFIG_NAME, RULES_FILE

pytestmark = pytest.mark.e2e

TENANT = "reload-" + secrets.token_hex(3)
NAMESPACE = f"tenant-{TENANT}"
SIM_KEY = "sk-sim-" + secrets.token_hex(8)
CONFIG_MOUNT = "config"
"""The pod's volume of ConfigMap gateway-config (its local directory under the pod dir)."""

BASE = {"fast-code": {"targets": [{"provider": "compat", "model": "sim-fast"}]}}
WITH_DOCS = {
    **BASE,
    "docs": {
        "targets": [{"provider": "compat", "model": "sim-docs"}],
        "fallbacks": ["fast-code"],
    },
}


def tenant() -> Tenant:
    return Tenant.model_validate(
        {
            "apiVersion": "tenantgw.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": TENANT, "uid": "00000000-0000-4000-8000-00000000e10a"},
            "spec": {
                "providers": [
                    {
                        "name": "compat",
                        "type": "openai-compatible",
                        "apiBase": "http://127.0.0.1:9/v1",  # the simulator's, set below
                        "credentialsSecretRef": {"name": "compat", "key": "apiKey"},
                    }
                ],
                "keys": [{"name": "alice"}],
                "compliance": {"piiRedaction": {"mode": "off"}},
                "gateway": {"replicas": 1},
            },
        }
    )


def inputs_for(
    specs: dict[str, dict[str, Any]], sim: SimulatorHandle, storage: StorageEndpoints, key: str
) -> RenderInputs:
    base = tenant()
    provider = base.spec.providers[0].model_copy(update={"api_base": sim.url})
    spec = base.spec.model_copy(update={"providers": [provider]})
    aliases = model_aliases(NAMESPACE, specs)
    return alice_inputs(base.model_copy(update={"spec": spec}), aliases, storage, key)


def rendered(inputs: RenderInputs) -> tuple[dict[str, str], str]:
    """The ConfigMap's files and the pod template's config hash."""
    objects = render_tenant(inputs)
    data = next(
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == CONFIG_NAME
    )
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    digest = deployment["spec"]["template"]["metadata"]["annotations"]["tenantgw.io/config-hash"]
    return dict(data["data"]), str(digest)


def project(directory: Path, files: dict[str, str]) -> None:
    """Update a mounted ConfigMap as the kubelet does (its AtomicWriter): the files go to a new
    timestamped directory, `..data` is swapped to it in one rename, and each file is a symlink
    through `..data`; the previous version's directory is removed."""
    previous = os.readlink(directory / "..data") if (directory / "..data").is_symlink() else None
    version = directory / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{secrets.token_hex(4)}"
    version.mkdir()
    for name, text in files.items():
        (version / name).write_text(text)
    staged = directory / "..data_tmp"
    staged.unlink(missing_ok=True)
    staged.symlink_to(version.name)
    os.replace(staged, directory / "..data")
    for name in files:
        link = directory / name
        if not link.is_symlink():
            temporary = directory / f".{name}.link"
            temporary.symlink_to(Path("..data") / name)
            os.replace(temporary, link)  # a plain file the first time: now a symlink
    if previous is not None:
        for stale in (directory / previous).iterdir():
            stale.unlink()
        (directory / previous).rmdir()


class Tenancy:
    """The running gateway and what re-rendering its tenant needs."""

    def __init__(self, gateway: Gateway, mount: Path, made: dict[str, Any]) -> None:
        self.gateway = gateway
        self.mount = mount
        self.made = made

    def files(self, specs: dict[str, dict[str, Any]]) -> tuple[dict[str, str], str]:
        return rendered(inputs_for(specs, self.made["sim"], self.made["storage"], self.made["key"]))

    def serve(self, specs: dict[str, dict[str, Any]]) -> str:
        """Project the files of a tenant with these aliases; their config hash."""
        files, digest = self.files(specs)
        project(self.mount, files)
        return digest

    def log(self) -> str:
        return self.gateway.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def tenancy(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenancy]:
    made: dict[str, Any] = {}

    def first(sim: SimulatorHandle, storage: StorageEndpoints, key: str) -> RenderInputs:
        made.update(sim=sim, storage=storage, key=key)
        return inputs_for(BASE, sim, storage, key)

    workdir = tmp_path_factory.mktemp("model-reload")
    with run_rendered_gateway(
        services,
        workdir,
        role_prefix="tg_reload",
        inputs=first,
        provider_secrets={"compat": {"apiKey": SIM_KEY}},
        simulator_kwargs={"api_key": SIM_KEY},
    ) as gateway:
        t = Tenancy(gateway, workdir / "pod" / CONFIG_MOUNT, made)
        assert (t.mount / CONFIG_FILE).exists(), sorted(p.name for p in t.mount.iterdir())
        yield t


def chat(gateway: Gateway, model: str, marker: str) -> str:
    reply = gateway.openai().chat.completions.create(
        model=model, max_tokens=16, messages=[{"role": "user", "content": marker}]
    )
    assert reply.choices[0].message.content
    return str(gateway.upstream(marker)["body"]["model"])


def serves(gateway: Gateway, model: str) -> Callable[[], str | None]:
    """A check for `eventually`: the provider model that served `model`, None while refused."""

    def check() -> str | None:
        try:
            return chat(gateway, model, "probe-" + secrets.token_hex(4))
        except (openai.NotFoundError, openai.BadRequestError):
            return None  # the rules file and config.yaml are looked at apart, each once a second

    return check


def test_a_new_alias_serves_without_a_restart_and_its_hash_is_unchanged(
    tenancy: Tenancy,
) -> None:
    """US: a platform engineer adds a ModelAlias; developers use it on the running gateway,
    whose in-flight streams a restart would have cut."""
    gateway = tenancy.gateway
    _, base_hash = tenancy.files(BASE)
    with pytest.raises(openai.NotFoundError):
        chat(gateway, "docs", "before-" + secrets.token_hex(4))  # not an alias yet

    assert tenancy.serve(WITH_DOCS) == base_hash, "an alias must not roll the pods"

    assert eventually(serves(gateway, "docs"), 30, "the new alias docs") == "sim-docs"
    assert "model routing reloaded" in tenancy.log()

    # The anthropic SDK too, and the alias that was there all along still serves.
    marker = "anthropic-" + secrets.token_hex(4)
    message = gateway.anthropic().messages.create(
        model="docs", max_tokens=16, messages=[{"role": "user", "content": marker}]
    )
    assert message.content
    assert gateway.upstream(marker)["body"]["model"] == "sim-docs"
    assert chat(gateway, "fast-code", "still-" + secrets.token_hex(4)) == "sim-fast"

    # Its fallback came with it: docs failing over to fast-code within one request.
    gateway.sim.configure(fail_models={"sim-docs": "503"})
    try:
        marker = "fallback-" + secrets.token_hex(4)
        reply = gateway.openai().chat.completions.create(
            model="docs", max_tokens=16, messages=[{"role": "user", "content": marker}]
        )
        assert reply.choices[0].message.content
        assert [c["body"]["model"] for c in gateway.calls(marker)][-1] == "sim-fast"
    finally:
        gateway.sim.reset()


def test_an_edited_alias_serves_its_new_target(tenancy: Tenancy) -> None:
    """The deployment keeps its id (fast-code-0) and takes the new model."""
    gateway = tenancy.gateway
    tenancy.serve(BASE)
    edited = {"fast-code": {"targets": [{"provider": "compat", "model": "sim-fast-2"}]}}
    assert tenancy.serve(edited) == tenancy.files(BASE)[1]
    assert eventually(
        lambda: serves(gateway, "fast-code")() == "sim-fast-2", 30, "fast-code on sim-fast-2"
    )
    tenancy.serve(BASE)
    assert eventually(lambda: serves(gateway, "fast-code")() == "sim-fast", 30, "and back")


def test_a_deleted_alias_is_refused_in_the_clients_shape(tenancy: Tenancy) -> None:
    gateway = tenancy.gateway
    tenancy.serve(WITH_DOCS)
    eventually(serves(gateway, "docs"), 30, "docs to serve")
    tenancy.serve(BASE)

    def refused() -> anthropic.APIStatusError | None:
        try:
            gateway.anthropic().messages.create(
                model="docs", max_tokens=16, messages=[{"role": "user", "content": "gone?"}]
            )
        except anthropic.APIStatusError as exc:
            return exc
        return None

    exc = eventually(refused, 30, "the deleted alias docs to be refused")
    assert 400 <= exc.status_code < 500, exc.status_code
    body = exc.body
    assert isinstance(body, dict), body
    assert body.get("type") == "error", body
    assert "docs" in json.dumps(body)
    assert chat(gateway, "fast-code", "kept-" + secrets.token_hex(4)) == "sim-fast"


def test_a_change_beyond_the_model_routing_waits_for_the_rollout(tenancy: Tenancy) -> None:
    """Only the routing is taken while serving: a file that also changed what LiteLLM reads at
    start (its hash changed, so the operator rolls the pods) is left to the new pod whole."""
    gateway = tenancy.gateway
    tenancy.serve(BASE)
    files, digest = tenancy.files(WITH_DOCS)
    config = yaml.safe_load(files[CONFIG_FILE])
    config["litellm_settings"]["num_retries"] += 1
    project(tenancy.mount, {**files, CONFIG_FILE: yaml.safe_dump(config, sort_keys=False)})
    eventually(lambda: "changed beyond its model routing" in tenancy.log(), 30, "the warning")
    with pytest.raises((openai.BadRequestError, openai.NotFoundError)):
        chat(gateway, "docs", "not-yet-" + secrets.token_hex(4))  # LiteLLM has no such model
    assert chat(gateway, "fast-code", "served-" + secrets.token_hex(4)) == "sim-fast"

    # A file that does not parse: the routing in use stays.
    project(tenancy.mount, {CONFIG_FILE: "model_list: [unclosed\n", RULES_FILE: files[RULES_FILE]})
    eventually(lambda: "does not parse" in tenancy.log(), 30, "the parse error to be logged")
    assert chat(gateway, "fast-code", "parse-" + secrets.token_hex(4)) == "sim-fast"

    # The rendered file again: routing follows it.
    assert tenancy.serve(WITH_DOCS) == digest
    again = eventually(serves(gateway, "docs"), 30, "docs once the file is rendered again")
    assert again == "sim-docs"
