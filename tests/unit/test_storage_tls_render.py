"""The storage CA files a gateway pod mounts: read from the operator's admin DSN and URL, put
into Secret `gateway`, and named by the tenant's DSN and URL at their mounted path."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tenantgw.render import StorageEndpoints
from tenantgw.render.storage_tls import pod_storage, storage_tls_data, storage_tls_items
from tenantgw.tenancy import Provisioner, StorageError

pytestmark = pytest.mark.unit

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
DSN = "postgresql://tgw_a:pw-0123456789abcdef@pg:5432/db?sslmode=verify-full&sslrootcert={}"
URL = "rediss://tgw%3Aa:pw-0123456789abcdef@redis:6380/0?ssl_ca_certs={}"


def test_the_operator_reads_the_ca_files_its_admin_dsn_and_url_name(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text(CA)
    provisioner = Provisioner(DSN.format(ca), URL.format(ca))
    assert provisioner.tls_files() == {"sslrootcert": CA, "ssl_ca_certs": CA}
    system = Provisioner(DSN.format("system"), "redis://admin:pw@redis:6379/0")
    assert system.tls_files() == {}, "libpq's system bundle is the image's own"


def test_an_unreadable_ca_file_is_a_storage_error_naming_the_setting(tmp_path: Path) -> None:
    provisioner = Provisioner(DSN.format(tmp_path / "missing.crt"), URL.format(tmp_path))
    with pytest.raises(StorageError, match=r"TENANTGW_POSTGRES_DSN: sslrootcert=.*missing\.crt"):
        provisioner.tls_files()


def test_the_pod_gets_the_mounted_paths_and_the_secret_the_files() -> None:
    storage = StorageEndpoints(
        DSN.format("/op/ca.crt"), URL.format("/op/ca.crt"), {"sslrootcert": CA, "ssl_ca_certs": CA}
    )
    pod = pod_storage(storage)
    assert pod is not None
    assert pod.postgres_dsn == DSN.format("/etc/tenantgw/secret/postgres-ca.crt")
    assert pod.redis_url == URL.format("/etc/tenantgw/secret/redis-ca.crt")
    assert pod_storage(pod) == pod, "a DSN kept from the Secret (storage outage) stays the same"
    assert storage_tls_data(storage) == {"postgres-ca.crt": CA, "redis-ca.crt": CA}
    assert storage_tls_items(storage) == [
        {"key": "redis-ca.crt", "path": "redis-ca.crt"},
        {"key": "postgres-ca.crt", "path": "postgres-ca.crt"},
    ]
    plain = dataclasses.replace(storage, tls_files={})
    assert pod_storage(plain) == plain, "without CA files nothing changes"
    assert storage_tls_items(plain) == []
