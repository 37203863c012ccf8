"""A loopback LLM provider speaking the real wire protocols (OpenAI chat completions first).

    from e2e.provider_sim import start_simulator
    url, sim = start_simulator()          # url == "http://127.0.0.1:<port>/v1"
    sim.fail_next("500", "429")
    ...
    sim.stop()

or ``python -m e2e.provider_sim --port 18080``; see ``server`` for the behaviour.
"""

from e2e.provider_sim.server import (
    PROTOCOLS,
    ChatRequest,
    Message,
    ProviderError,
    Reply,
    SimConfig,
    Simulator,
    SimulatorHandle,
    ToolSpec,
    build_app,
    example_arguments,
    plan_reply,
    running_simulator,
    serve,
    start_simulator,
)

__all__ = [
    "PROTOCOLS",
    "ChatRequest",
    "Message",
    "ProviderError",
    "Reply",
    "SimConfig",
    "Simulator",
    "SimulatorHandle",
    "ToolSpec",
    "build_app",
    "example_arguments",
    "plan_reply",
    "running_simulator",
    "serve",
    "start_simulator",
]
