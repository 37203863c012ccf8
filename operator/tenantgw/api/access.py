"""Tenant principals: who administers or views a tenant, as RoleBinding subjects.

The operator binds these in the tenant namespace (render/access.py); the Tenant is
cluster-scoped and platform-owned, so only platform principals decide who they are.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from tenantgw.api.common import CamelModel, DnsLabel, ShortString, cel, validations

SUBJECT_NAMESPACE_MESSAGE = "namespace is only set for subjects of kind ServiceAccount"
# Groups that stand for every client: a binding to one would make the world a tenant principal.
EVERYONE_GROUPS = ("system:authenticated", "system:unauthenticated", "system:anonymous")
SUBJECT_EVERYONE_MESSAGE = (
    "name must not be system:authenticated, system:unauthenticated or system:anonymous: "
    "that would make every client a tenant principal"
)


class Subject(CamelModel):
    """A person, group or ServiceAccount, as in a RoleBinding's subjects."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("self.kind == 'ServiceAccount' || !has(self.namespace)", SUBJECT_NAMESPACE_MESSAGE),
            cel(f"!(self.name in {list(EVERYONE_GROUPS)})", SUBJECT_EVERYONE_MESSAGE),
        )
    )

    kind: Literal["Group", "User", "ServiceAccount"] = Field(
        description="Group, User or ServiceAccount."
    )
    name: ShortString = Field(description="Name of the group, user or ServiceAccount.")
    namespace: DnsLabel | None = Field(
        default=None,
        description="Namespace of a ServiceAccount; the tenant's namespace when omitted.",
    )

    @model_validator(mode="after")
    def _checks(self) -> Subject:
        if self.namespace is not None and self.kind != "ServiceAccount":
            raise ValueError(SUBJECT_NAMESPACE_MESSAGE)
        if self.name in EVERYONE_GROUPS:
            raise ValueError(SUBJECT_EVERYONE_MESSAGE)
        return self
