"""The operator's network settings: read from its environment, refused with a clear message."""

from __future__ import annotations

import pytest

from tenantgw.reconcile.settings import Settings, SettingsError
from tenantgw.render.inputs import DEFAULT_CLUSTER_CIDRS, Peer

pytestmark = pytest.mark.unit


def test_defaults_keep_gateways_out_of_private_ranges() -> None:
    network = Settings().network
    assert network.cluster_cidrs == DEFAULT_CLUSTER_CIDRS
    assert network.dns == (Peer(namespace="kube-system", pod_labels=(("k8s-app", "kube-dns"),)),)


def test_cluster_cidrs_and_dns_peers_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TENANTGW_CLUSTER_CIDRS", "10.244.0.0/16, 10.96.0.0/12")
    monkeypatch.setenv(
        "TENANTGW_DNS_PEERS",
        '[{"cidr": "169.254.20.10/32"}, {"namespace": "dns", "podLabels": {"app": "coredns"}}]',
    )
    network = Settings.from_env().network
    assert network.cluster_cidrs == ("10.244.0.0/16", "10.96.0.0/12")
    assert network.dns == (
        Peer(cidr="169.254.20.10/32"),
        Peer(namespace="dns", pod_labels=(("app", "coredns"),)),
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("TENANTGW_CLUSTER_CIDRS", "10.0.0.0/8,pods", "TENANTGW_CLUSTER_CIDRS: 'pods'"),
        ("TENANTGW_DNS_PEERS", "kube-system", "TENANTGW_DNS_PEERS is not JSON"),
        ("TENANTGW_DNS_PEERS", "[]", "must be a non-empty list"),
        ("TENANTGW_DNS_PEERS", '[{"cidr": "dns"}]', "TENANTGW_DNS_PEERS[0].cidr"),
        ("TENANTGW_DNS_PEERS", '[{"podLabels": {}}]', "TENANTGW_DNS_PEERS[0] needs"),
    ],
)
def test_a_bad_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Settings.from_env()
