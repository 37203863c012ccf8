"""An async facade over the Kubernetes API for the few kinds tenantgw manages.

Calls go out on aiohttp (kopf's own HTTP client) on the operator's event loop. The official
client supplies only the credentials: it reads kubeconfig and the in-cluster ServiceAccount,
and refreshes tokens (a projected token, an exec plugin) when they are asked for. Its own
synchronous calls would need a thread per call and cost about four times the CPU.

Paths are built from a static table instead of discovery: the operator only ever touches the
kinds listed in `KINDS`, and optional ones are checked with `has_api()`.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import aiohttp
from kubernetes.client import Configuration
from kubernetes.config import load_incluster_config, load_kube_config
from kubernetes.config.config_exception import ConfigException
from requests.utils import should_bypass_proxies

from tenantgw.kube.cache import MISS, LiveCache

FIELD_MANAGER: Final = "tenantgw-operator"
USER_AGENT: Final = "tenantgw-operator"

JSON = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    """Where a kind lives in the API."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = (
            f"/api/{self.api_version}"
            if "/" not in self.api_version
            else f"/apis/{self.api_version}"
        )
        if self.namespaced:
            if namespace is None:
                raise ValueError(f"{self.kind} is namespaced: a namespace is required")
            base += f"/namespaces/{quote(namespace)}"
        base += f"/{self.plural}"
        return f"{base}/{quote(name)}" if name else base


_KIND_LIST: Final = [
    Kind("v1", "Namespace", "namespaces", False),
    Kind("v1", "ServiceAccount", "serviceaccounts", True),
    Kind("v1", "Secret", "secrets", True),
    Kind("v1", "ConfigMap", "configmaps", True),
    Kind("v1", "Service", "services", True),
    Kind("v1", "Event", "events", True),
    Kind("apps/v1", "Deployment", "deployments", True),
    Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", True),
    Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", True),
    Kind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", True),
    Kind("rbac.authorization.k8s.io/v1", "Role", "roles", True),
    Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", True),
    Kind("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors", True),
    Kind("monitoring.coreos.com/v1", "PrometheusRule", "prometheusrules", True),
    Kind("cert-manager.io/v1", "Certificate", "certificates", True),
    Kind("tenantgw.io/v1alpha1", "Tenant", "tenants", False),
    Kind("tenantgw.io/v1alpha1", "ModelAlias", "modelaliases", True),
    Kind("tenantgw.io/v1alpha1", "BudgetPolicy", "budgetpolicies", True),
]
KINDS: Final[dict[tuple[str, str], Kind]] = {(k.api_version, k.kind): k for k in _KIND_LIST}


def kind_of(obj: JSON) -> Kind:
    """The `Kind` of a rendered object, from its apiVersion and kind."""
    try:
        return KINDS[(obj["apiVersion"], obj["kind"])]
    except KeyError:
        raise ValueError(
            f"tenantgw does not manage {obj.get('apiVersion')}/{obj.get('kind')}"
        ) from None


class KubeError(Exception):
    """An API call failed; `status` is the HTTP status (0 when no answer came).

    `causes` are the reasons of the Status object's `details.causes`, e.g. `NamespaceTerminating`
    when the namespace lifecycle admission refused new content in a namespace being deleted.
    """

    def __init__(
        self, status: int, reason: str, message: str, causes: tuple[str, ...] = ()
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.causes = causes

    @classmethod
    def from_answer(cls, status: int, reason: str, text: str) -> KubeError:
        """From an error answer: the Status object's reason, message and causes when it has
        them."""
        message = text
        causes: tuple[str, ...] = ()
        try:
            body = json.loads(text or "{}")
            reason, message = body.get("reason", reason), body.get("message", message)
            details = body.get("details") or {}
            causes = tuple(str(c.get("reason") or "") for c in details.get("causes") or ())
        except (ValueError, AttributeError):
            pass
        return cls(status, str(reason or ""), str(message or ""), causes)


def _ssl_context(config: Configuration) -> ssl.SSLContext | bool:
    """TLS as the configuration says: its CA, its client certificate, or no verification."""
    if not config.verify_ssl:
        return False
    context = ssl.create_default_context(cafile=config.ssl_ca_cert or None)
    if config.cert_file:
        context.load_cert_chain(config.cert_file, config.key_file or None)
    if config.assert_hostname is False:
        context.check_hostname = False
    return context


def load_configuration() -> Configuration:
    """In-cluster credentials when running in a pod, else `$KUBECONFIG` / ~/.kube/config."""
    config = Configuration()
    try:
        load_incluster_config(client_configuration=config)
    except ConfigException:
        load_kube_config(client_configuration=config)
    return config


class Kube:
    """Async calls to the API server; `writes` counts the non-GET ones.

    With a `cache` (kube/cache.py), reads of the kinds it holds are answered from the watch
    caches and every write's answer is handed to it.
    """

    TIMEOUT: Final = 30.0
    """Seconds one call may take, its answer included."""
    RETRIES: Final = 2
    """Tries again of a call whose connection failed (mostly a kept-alive connection the
    server had closed). The operator's writes bear a repeat: applies and merge patches are
    idempotent, and a repeated delete finds the object gone."""

    def __init__(self, config: Configuration | None = None, *, connections: int = 16) -> None:
        self._config = config or load_configuration()
        self._connections = connections
        self._ssl = _ssl_context(self._config)
        # Options of every request, decided once from the configuration: the proxy it names
        # (kubeconfig's proxy-url, or HTTPS_PROXY as the official client reads it) unless
        # NO_PROXY exempts the server (aiohttp's trust_env would look that up in a thread on
        # every call), and the name the server's certificate is checked against.
        self._request_options: dict[str, Any] = {}
        proxy = self._config.proxy
        if proxy and not should_bypass_proxies(
            self._config.host, no_proxy=self._config.no_proxy or ""
        ):
            self._request_options["proxy"] = proxy
        if self._config.tls_server_name:
            self._request_options["server_hostname"] = self._config.tls_server_name
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.writes = 0
        self._apis: dict[tuple[str, str], tuple[bool, float]] = {}
        self.cache: LiveCache | None = None

    def _client(self) -> aiohttp.ClientSession:
        """The session of the running loop: a session belongs to the loop that made it."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections, ssl=self._ssl),
                timeout=aiohttp.ClientTimeout(total=self.TIMEOUT),
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            )
            self._loop = loop
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    def _auth(self) -> dict[str, str]:
        """Credential headers, asked for on every call: the official client refreshes an
        expiring token (projected ServiceAccount token, exec plugin) when it is read."""
        return {
            a["key"]: str(a["value"])
            for a in self._config.auth_settings().values()
            if a.get("in") == "header" and a.get("value")
        }

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> JSON:
        if method != "GET":
            self.writes += 1
        data = None if body is None else json.dumps(body, separators=(",", ":"))
        headers = {**self._auth(), "Content-Type": content_type}
        url = self._config.host.rstrip("/") + path  # the host may carry a path (a proxy's)
        for attempt in range(self.RETRIES + 1):
            try:
                async with self._client().request(
                    method,
                    url,
                    params=query or None,
                    data=data,
                    headers=headers,
                    **self._request_options,
                ) as resp:
                    raw = await resp.read()
                    if resp.status >= 400:
                        text = raw.decode("utf-8", "replace")
                        raise KubeError.from_answer(resp.status, resp.reason or "", text)
                    return json.loads(raw) if raw else {}
            except TimeoutError:  # before the connection errors: a timeout is one of them too
                raise KubeError(
                    0, "Timeout", f"{method} {path}: no answer in {self.TIMEOUT:g} s"
                ) from None
            except aiohttp.ClientConnectionError as exc:
                if attempt < self.RETRIES:
                    continue
                raise KubeError(0, "Unreachable", f"{method} {path}: {exc!r}") from None
        raise AssertionError("unreachable")

    async def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> JSON | None:
        """The object, or None when it does not exist."""
        if self.cache is not None:
            hit = self.cache.lookup(api_version, kind, name, namespace)
            if hit is not MISS:
                return hit  # type: ignore[no-any-return]
        try:
            return await self._call("GET", KINDS[(api_version, kind)].path(namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(
        self, api_version: str, kind: str, namespace: str | None = None, *, selector: str = ""
    ) -> list[JSON]:
        if self.cache is not None and namespace:
            cached = self.cache.list(api_version, kind, namespace, selector)
            if cached is not None:
                return cached
        k = KINDS[(api_version, kind)]
        path = (
            k.path(namespace)
            if k.namespaced and namespace
            else k.path()
            if not k.namespaced
            else ""
        )
        if not path:  # every namespace
            base = f"/api/{k.api_version}" if "/" not in k.api_version else f"/apis/{k.api_version}"
            path = f"{base}/{k.plural}"
        query = [("labelSelector", selector)] if selector else []
        items: list[JSON] = (await self._call("GET", path, query=query)).get("items", [])
        return items

    async def apply(self, obj: JSON, *, field_manager: str = FIELD_MANAGER) -> JSON:
        """Server-side apply under our field manager, taking ownership of conflicting fields."""
        k = kind_of(obj)
        meta = obj["metadata"]
        path = k.path(meta.get("namespace"), meta["name"])
        query = [("fieldManager", field_manager), ("force", "true")]
        return self._wrote(
            await self._call(
                "PATCH", path, body=obj, query=query, content_type="application/apply-patch+yaml"
            )
        )

    async def apply_status(self, obj: JSON, *, field_manager: str = FIELD_MANAGER) -> JSON:
        """Server-side apply of the status subresource of one of our custom resources."""
        k = kind_of(obj)
        meta = obj["metadata"]
        path = k.path(meta.get("namespace"), meta["name"]) + "/status"
        query = [("fieldManager", field_manager), ("force", "true")]
        return self._wrote(
            await self._call(
                "PATCH", path, body=obj, query=query, content_type="application/apply-patch+yaml"
            )
        )

    async def patch_status(
        self, api_version: str, kind: str, name: str, namespace: str | None, status: JSON
    ) -> JSON:
        """Merge-patch the status subresource; lists in `status` replace the live ones whole."""
        path = KINDS[(api_version, kind)].path(namespace, name) + "/status"
        return self._wrote(
            await self._call(
                "PATCH", path, body={"status": status}, content_type="application/merge-patch+json"
            )
        )

    async def merge_patch(
        self, api_version: str, kind: str, name: str, namespace: str | None, patch: JSON
    ) -> JSON:
        """JSON merge patch of an object; lists in `patch` replace the live ones whole."""
        path = KINDS[(api_version, kind)].path(namespace, name)
        return self._wrote(
            await self._call("PATCH", path, body=patch, content_type="application/merge-patch+json")
        )

    async def create(self, obj: JSON) -> JSON:
        k = kind_of(obj)
        return await self._call("POST", k.path(obj["metadata"].get("namespace")), body=obj)

    async def delete(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> bool:
        """Delete in the background (dependents are garbage-collected); False if already gone."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        try:
            await self._call("DELETE", KINDS[(api_version, kind)].path(namespace, name), body=body)
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        finally:
            if self.cache is not None:
                self.cache.deleted(api_version, kind, name, namespace)
        return True

    async def peek(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> JSON | None:
        """Like `get()`, but for a kind the cache holds its answer alone: an object it has
        not seen counts as missing (for the apply path, where missing means "apply")."""
        if self.cache is not None and self.cache.holds(api_version, kind):
            hit = self.cache.lookup(api_version, kind, name, namespace)
            return None if hit is MISS else hit
        return await self.get(api_version, kind, name, namespace)

    def _wrote(self, answer: JSON) -> JSON:
        if self.cache is not None:
            self.cache.wrote(answer)
        return answer

    async def has_api(self, group_version: str, kind: str, *, ttl: float = 60.0) -> bool:
        """Whether the API server serves `kind` in `group_version` (optional CRDs).

        Remembered for `ttl` seconds: a CRD installed later is noticed within a minute.
        """
        known = self._apis.get((group_version, kind))
        if known and known[1] > time.monotonic():
            return known[0]
        found = await self._discover(group_version, kind)
        self._apis[(group_version, kind)] = (found, time.monotonic() + ttl)
        return found

    async def _discover(self, group_version: str, kind: str) -> bool:
        base = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
        try:
            resources = (await self._call("GET", base)).get("resources", [])
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return any(r.get("kind") == kind for r in resources)
