"""Options and fixtures shared by tests/ and e2e/: the local control plane, services, operator."""

import pytest

pytest_plugins = [
    "e2e.fixtures",
    "e2e.operator_fixture",
    "e2e.gateway_fixture",
    "e2e.conformance",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/ from the current rendering instead of comparing with it",
    )
