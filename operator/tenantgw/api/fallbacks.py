"""The fallback closure of a ModelAlias: every alias a request for it may end up served by.

LiteLLM follows fallbacks transitively: when alias A fails it tries A's fallbacks in order, and
when fallback B fails too it tries B's own fallbacks before A's next one (a depth-first walk
that never repeats an alias). So a request for A can be served by any alias reachable from A,
and every control that depends on the serving alias (data residency, alias-scoped budgets) has
to hold for all of them. The operator (`tenantgw.reconcile.validate`) and the gateway
(`tenantgw.gateway.residency`, `tenantgw.gateway.fallbacks`) both use this one walk.

Pure: the caller says how to read an alias's fallbacks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable


def fallback_paths(
    start: str, fallbacks_of: Callable[[str], Iterable[str]]
) -> dict[str, tuple[str, ...]]:
    """Each alias reachable from `start` through fallbacks, with the first path that reaches it.

    In the order LiteLLM tries them (depth first, each alias once); `start` itself is not
    included, even when a cycle leads back to it. A path runs from `start` to the alias:
    `{"b": ("a", "b"), "c": ("a", "b", "c")}` for a -> b -> c. `fallbacks_of` returns the
    fallbacks of one alias (empty for an unknown one).
    """
    found: dict[str, tuple[str, ...]] = {}
    stack: list[tuple[str, tuple[str, ...]]] = [(start, (start,))]
    while stack:
        name, path = stack.pop()
        if name != start:
            if name in found:
                continue
            found[name] = path
        # Reversed, so the first fallback is walked first.
        for fallback in reversed(list(fallbacks_of(name))):
            if fallback != start and fallback not in found:
                stack.append((fallback, (*path, fallback)))
    return found


def fallback_closure(start: str, fallbacks_of: Callable[[str], Iterable[str]]) -> tuple[str, ...]:
    """The aliases reachable from `start` through fallbacks, in the order LiteLLM tries them."""
    return tuple(fallback_paths(start, fallbacks_of))
