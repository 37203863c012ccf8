"""A serving worker's model routing follows config.yaml (`tenantgw.gateway.modelsync`), with a
real LiteLLM Router and LiteLLM's proxy module, in a fresh interpreter (the proxy's globals
are changed)."""

from __future__ import annotations

import pytest
from tests.unit.test_gateway_trim import run

from tenantgw.api.gateway_config import MODEL_ROUTING, split_model_routing

pytestmark = pytest.mark.unit


def test_split_takes_the_routing_and_leaves_the_rest() -> None:
    config = {
        "model_list": [{"model_name": "a"}],
        "litellm_settings": {"fallbacks": [{"a": ["b"]}], "num_retries": 1},
        "router_settings": {"routing_strategy": "simple-shuffle", "model_group_alias": {"x": "a"}},
        "general_settings": {"custom_auth": "m.f"},
    }
    routing, rest = split_model_routing(config)
    assert sorted(routing) == sorted(MODEL_ROUTING)
    assert rest == {
        "litellm_settings": {"num_retries": 1},
        "router_settings": {"routing_strategy": "simple-shuffle"},
        "general_settings": {"custom_auth": "m.f"},
    }
    assert "fallbacks" in config["litellm_settings"], "the input is left as it was"
    # Paths a file lacks are left out, not made up.
    assert split_model_routing({"general_settings": {}}) == ({}, {"general_settings": {}})


def test_a_worker_applies_a_new_routing_and_keeps_it_when_the_file_is_wrong() -> None:
    out = run(
        """
        import logging, os, tempfile, yaml
        from pathlib import Path
        from litellm import Router
        from litellm.proxy import proxy_server
        from tenantgw.gateway import modelsync

        logging.basicConfig(level=logging.INFO, format="%(message)s")

        def deployment(alias, model):
            return {"model_name": alias,
                    "litellm_params": {"model": f"openai/{model}", "api_key": "sk-x",
                                       "api_base": "http://127.0.0.1:9/v1"},
                    "model_info": {"id": f"{alias}-0"}}

        def config(*aliases, fallbacks=None, retries=1):
            return {"model_list": [deployment(a, "m-" + a) for a in aliases],
                    "litellm_settings": {"num_retries": retries,
                                         **({"fallbacks": fallbacks} if fallbacks else {})},
                    "router_settings": {"routing_strategy": "simple-shuffle",
                                        "model_group_alias": {"claude-x": aliases[0]}}}

        directory = Path(tempfile.mkdtemp())
        path = directory / "config.yaml"
        version = [0]

        def write(text):  # a new file behind the same path, as the kubelet's symlink swap
            version[0] += 1
            target = directory / f"v{version[0]}.yaml"
            target.write_text(text)
            link = directory / "tmp-link"
            link.symlink_to(target.name)
            os.replace(link, path)

        write(yaml.safe_dump(config("fast")))
        router = Router(model_list=config("fast")["model_list"],
                        model_group_alias={"claude-x": "fast"})
        proxy_server.llm_router = router
        sync = modelsync.ModelRouting(path, router)

        def names():
            return sorted({d["model_name"] for d in router.model_list})

        assert sync.check() is False  # nothing changed

        write(yaml.safe_dump(config("fast", "docs", fallbacks=[{"docs": ["fast"]}])))
        assert sync.check() is True
        assert names() == ["docs", "fast"]
        assert router.fallbacks == [{"docs": ["fast"]}]
        assert router.model_group_alias == {"claude-x": "fast"}
        # What the proxy lists (/v1/models), as it sets it at start from the router.
        assert proxy_server.llm_model_list == router.get_model_list()
        assert "docs" in {m["model_name"] for m in proxy_server.llm_model_list}
        # The usage-counting trim follows the new deployments.
        assert getattr(router._increment_deployment_usage, "__tenantgw_trimmed__")[0] == \\
            frozenset({"fast-0", "docs-0"})

        # The same routing in a new file: nothing to do.
        write(yaml.safe_dump(config("fast", "docs", fallbacks=[{"docs": ["fast"]}])))
        assert sync.check() is False

        # Fallbacks LiteLLM refuses: the routing in use stays, whole.
        write(yaml.safe_dump(config("fast", fallbacks=[{"fast": ["docs"], "docs": ["fast"]}])))
        assert sync.check() is False
        assert names() == ["docs", "fast"]

        # A change beyond the routing (what a rollout brings): not applied, not even its routing.
        write(yaml.safe_dump(config("fast", retries=3)))
        assert sync.check() is False
        assert names() == ["docs", "fast"]

        # A file that does not parse, or is gone: the routing in use stays.
        write("model_list: [unclosed\\n")
        assert sync.check() is False
        path.unlink()
        assert sync.check() is False
        assert names() == ["docs", "fast"]

        # The file as rendered again: an alias removed.
        write(yaml.safe_dump(config("fast")))
        assert sync.check() is True
        assert names() == ["fast"]
        print("ok")
        """
    )
    assert out.strip().endswith("ok"), out


def test_a_change_between_the_baseline_and_litellms_start_is_applied_at_the_first_look() -> None:
    """The worker reads the file before LiteLLM's start-up does (`modelsync.baseline`): an
    alias that lands while LiteLLM starts is served after the first look, not missed."""
    out = run(
        """
        import os, tempfile, yaml
        from pathlib import Path
        from litellm import Router
        from litellm.proxy import proxy_server
        from tenantgw.gateway import modelsync

        def config(*aliases):
            return {"model_list": [
                {"model_name": a, "litellm_params": {"model": f"openai/m-{a}", "api_key": "k",
                 "api_base": "http://127.0.0.1:9/v1"}, "model_info": {"id": f"{a}-0"}}
                for a in aliases]}

        directory = Path(tempfile.mkdtemp())
        path = directory / "config.yaml"
        (directory / "v1.yaml").write_text(yaml.safe_dump(config("fast")))
        path.symlink_to("v1.yaml")
        routing = modelsync.baseline(str(path))
        assert routing is not None and routing.check() is False  # not serving yet

        # LiteLLM's start-up reads v1, then the kubelet's swap lands before the first look (a
        # baseline read after LiteLLM's start-up would have taken v2 as the routing in use).
        (directory / "v2.yaml").write_text(yaml.safe_dump(config("fast", "docs")))
        (directory / "link").symlink_to("v2.yaml")
        os.replace(directory / "link", path)
        proxy_server.llm_router = Router(model_list=config("fast")["model_list"])
        routing.router = proxy_server.llm_router  # what `modelsync.start` does
        assert routing.check() is True
        assert sorted({d["model_name"] for d in routing.router.model_list}) == ["docs", "fast"]
        assert modelsync.baseline(str(directory / "missing.yaml")) is None
        print("ok")
        """
    )
    assert out.strip().endswith("ok"), out
