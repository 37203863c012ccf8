"""kopf's connection to the API server, with a bounded number of connections.

kopf logs in with the official client's configuration (in-cluster ServiceAccount, else
kubeconfig) and opens an aiohttp session without a connection limit. Its own writes are few
(the finalizer of each new Tenant), but at start it sends them all at once: with a thousand
Tenants found at start, a thousand PATCHes in flight, far past the API server's limit of
mutating requests in flight (`--max-mutating-requests-inflight`, 200 by default; API Priority
and Fairness queues and then refuses the same way). The refused ones come back as 429 and kopf
retries each after a backoff of seconds: in the 1000-tenant benchmark, 1,741 refused patches
and the Tenants behind them waiting.

The session here is kopf's own, with the same credentials, headers and TLS, but at most
`CONNECTIONS` connections: kopf's watch streams hold one each for as long as they run, and
the rest carry its requests, which wait for a free connection instead of being refused.
"""

from __future__ import annotations

import warnings
from typing import Any, Final

import aiohttp
import kopf

CONNECTIONS: Final = 64
"""kopf's connections: one per watch stream (about twenty kinds) and the rest for its patches.
With the operator's own client (16 connections) that stays well under the API server's 200
mutating requests in flight."""


async def login(**kwargs: Any) -> kopf.AiohttpSession | None:
    """kopf's login via the official client's configuration, in a session of `CONNECTIONS`."""
    info = kopf.login_via_client(**kwargs)
    if info is None:
        return None
    with warnings.catch_warnings():  # as kopf does: its own deprecation of basic auth
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="kopf")
        auth = info.as_aiohttp_basic_auth()
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=CONNECTIONS, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),
        auth=auth,
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        aiohttp_session=session,
        server=info.server,
        default_namespace=info.default_namespace,
        priority=info.priority,
        expiration=info.expiration,
    )
