"""Reading a tenant's PostgreSQL state from the catalogs: reads only, for pg_plan.

Needs a superuser (pg_authid.rolpassword is readable by superusers only).
"""

from __future__ import annotations

from typing import Any

import psycopg

from tenantgw.tenancy.errors import StorageError
from tenantgw.tenancy.naming import role_name, schema_name
from tenantgw.tenancy.pg_plan import DefaultAcl, PgState, RoleState

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

_DATABASE_SQL = """
SELECT current_database(), current_user,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
       coalesce((SELECT has_schema_privilege('public', n.oid, 'USAGE')
                        OR has_schema_privilege('public', n.oid, 'CREATE')
                 FROM pg_namespace n WHERE n.nspname = 'public'), false),
       has_database_privilege('public', current_database(), 'CREATE')
"""

_ROLE_SQL = """
SELECT a.oid, a.rolpassword,
       a.rolcanlogin AND NOT a.rolsuper AND NOT a.rolcreatedb AND NOT a.rolcreaterole
         AND NOT a.rolreplication AND NOT a.rolbypassrls AND a.rolconnlimit = %(limit)s
         AND (a.rolvaliduntil IS NULL OR a.rolvaliduntil = 'infinity'),
       ARRAY(SELECT pg_get_userbyid(m.roleid) FROM pg_auth_members m
             WHERE m.member = a.oid ORDER BY 1),
       (SELECT s.setconfig FROM pg_db_role_setting s
        WHERE s.setrole = a.oid AND s.setdatabase = 0),
       EXISTS (SELECT 1 FROM pg_db_role_setting s, unnest(s.setconfig) c
               WHERE s.setrole = a.oid AND starts_with(c, 'search_path=')
                 AND s.setdatabase = (SELECT oid FROM pg_database
                                      WHERE datname = current_database())),
       EXISTS (SELECT 1 FROM pg_database d, aclexplode(d.datacl) x
               WHERE d.datname = current_database() AND x.grantee = a.oid
                 AND x.privilege_type = 'CONNECT'),
       has_database_privilege(a.oid, current_database(), 'CREATE'),
       coalesce((SELECT has_schema_privilege(a.oid, n.oid, 'USAGE')
                        OR has_schema_privilege(a.oid, n.oid, 'CREATE')
                 FROM pg_namespace n WHERE n.nspname = 'public'), false)
FROM pg_authid a WHERE a.rolname = %(role)s
"""

# Grantees other than the owner, PUBLIC as ''.
_DEFAULT_ACL_SQL = """
SELECT d.defaclobjtype::text, n.nspname,
       ARRAY(SELECT DISTINCT CASE WHEN x.grantee = 0 THEN '' ELSE pg_get_userbyid(x.grantee) END
             FROM aclexplode(d.defaclacl) x WHERE x.grantee <> d.defaclrole ORDER BY 1)
FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
WHERE d.defaclrole = %(oid)s::oid ORDER BY 1, 2
"""

_SCHEMA_SQL = """
SELECT pg_get_userbyid(n.nspowner),
       ARRAY(SELECT DISTINCT CASE WHEN x.grantee = 0 THEN '' ELSE pg_get_userbyid(x.grantee) END
             FROM aclexplode(n.nspacl) x WHERE x.grantee <> n.nspowner ORDER BY 1)
FROM pg_namespace n WHERE n.nspname = %(schema)s
"""

# Schemas of other tenants (and any other non-system schema) that the role could use.
_FOREIGN_SQL = r"""
SELECT n.nspname FROM pg_namespace n
WHERE n.nspname NOT LIKE 'pg\_%%' AND n.nspname NOT IN ('information_schema', 'public', %(schema)s)
  AND (has_schema_privilege('public', n.oid, 'USAGE')
       OR has_schema_privilege('public', n.oid, 'CREATE')
       OR coalesce(has_schema_privilege(%(oid)s::oid, n.oid, 'USAGE'), false)
       OR coalesce(has_schema_privilege(%(oid)s::oid, n.oid, 'CREATE'), false))
ORDER BY 1
"""


def _search_path(setconfig: list[str] | None) -> str | None:
    for entry in setconfig or []:
        if entry.startswith("search_path="):
            return entry.removeprefix("search_path=")
    return None


async def one(
    conn: Conn, query: str, params: dict[str, Any] | None = None
) -> tuple[Any, ...] | None:
    """The first row of a query, or None."""
    cur = await conn.execute(query, params)
    return await cur.fetchone()


async def read_state(
    conn: Conn, tenant_name: str, *, connection_limit: int, endpoint: str
) -> PgState:
    """Read everything plan_ensure needs, with reads only."""
    role, schema = role_name(tenant_name), schema_name(tenant_name)
    row = await one(conn, _DATABASE_SQL)
    assert row is not None
    database, admin, superuser, public_open, public_creates = row
    if not superuser:
        raise StorageError(
            f"the admin role {admin} of PostgreSQL at {endpoint} is not a superuser: tenantgw "
            "needs one to manage tenant roles, passwords and default privileges; "
            "fix TENANTGW_POSTGRES_DSN"
        )
    role_row = await one(conn, _ROLE_SQL, {"role": role, "limit": connection_limit})
    role_state = None
    oid = None
    if role_row is not None:
        oid = role_row[0]
        cur = await conn.execute(_DEFAULT_ACL_SQL, {"oid": oid})
        default_acl = tuple(
            DefaultAcl(kind=kind, schema=nsp, grantees=tuple(grantees))
            for kind, nsp, grantees in await cur.fetchall()
        )
        role_state = RoleState(
            verifier=role_row[1],
            attributes_ok=bool(role_row[2]),
            memberships=tuple(role_row[3]),
            search_path=_search_path(role_row[4]),
            database_search_path=bool(role_row[5]),
            connect_granted=bool(role_row[6]),
            creates_in_database=bool(role_row[7]),
            uses_public_schema=bool(role_row[8]),
            default_acl=default_acl,
        )
    schema_row = await one(conn, _SCHEMA_SQL, {"schema": schema})
    cur = await conn.execute(_FOREIGN_SQL, {"schema": schema, "oid": oid})
    foreign = tuple(name for (name,) in await cur.fetchall())
    return PgState(
        database=database,
        public_schema_open=bool(public_open),
        public_creates_in_database=bool(public_creates),
        role=role_state,
        schema_owner=schema_row[0] if schema_row else None,
        schema_grantees=tuple(schema_row[1]) if schema_row else (),
        foreign_schemas=foreign,
    )
