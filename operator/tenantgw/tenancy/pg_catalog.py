"""Reading a tenant's PostgreSQL state from the catalogs: reads only, for pg_plan.

Two kinds of admin role work (docs/operations.md, "Storage"):
- a superuser: the catalogs say everything, including the stored password verifier;
- a CREATEROLE role that owns the database: pg_authid is out of its reach, so whether the tenant
  role still has the tenant's password is found out by logging in as it (postgres.py).
Either way the database must be tenantgw's alone: tenantgw closes it, schema public and every
schema in it to PUBLIC, so `check_admin` refuses one where that would change another
application's schema (a schema other than tenants' that PUBLIC may use, or such a schema next
to a database or schema public still open to PUBLIC).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from tenantgw.api.audit_trail import audit_schema
from tenantgw.tenancy.errors import StorageError
from tenantgw.tenancy.naming import SCHEMA_PREFIX, role_name, schema_name
from tenantgw.tenancy.pg_plan import DefaultAcl, PgState, RoleState

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
PG16 = 160000  # CREATEROLE changed: the creator gets ADMIN OPTION, SET/INHERIT are separate

_DATABASE_SQL = r"""
SELECT current_database(), current_user, r.rolsuper, r.rolcreaterole, r.rolinherit,
       current_setting('server_version_num')::int,
       pg_has_role(current_user, d.datdba, 'USAGE'), pg_get_userbyid(d.datdba),
       coalesce((SELECT has_schema_privilege('public', n.oid, 'USAGE')
                        OR has_schema_privilege('public', n.oid, 'CREATE')
                 FROM pg_namespace n WHERE n.nspname = 'public'), false),
       has_database_privilege('public', current_database(), 'CREATE'),
       ARRAY(SELECT format('%%s (owner %%s%%s)', n.nspname, pg_get_userbyid(n.nspowner),
                           CASE WHEN has_schema_privilege('public', n.oid, 'USAGE')
                                     OR has_schema_privilege('public', n.oid, 'CREATE')
                                THEN ', open to PUBLIC' ELSE '' END)
             FROM pg_namespace n
             WHERE n.nspname NOT LIKE 'pg\_%%' AND n.nspname <> 'information_schema'
               AND n.nspname <> 'public' AND NOT starts_with(n.nspname, %(prefix)s)
             ORDER BY 1)
FROM pg_roles r, pg_database d
WHERE r.rolname = current_user AND d.datname = current_database()
"""

# pg_authid.rolpassword only for a superuser; everyone else reads pg_roles.
_ROLE_SQL = """
SELECT a.oid, {verifier},
       ARRAY_REMOVE(ARRAY[
         CASE WHEN NOT a.rolcanlogin THEN 'LOGIN' END,
         CASE WHEN a.rolsuper THEN 'NOSUPERUSER' END,
         CASE WHEN a.rolcreatedb THEN 'NOCREATEDB' END,
         CASE WHEN a.rolcreaterole THEN 'NOCREATEROLE' END,
         CASE WHEN a.rolreplication THEN 'NOREPLICATION' END,
         CASE WHEN a.rolbypassrls THEN 'NOBYPASSRLS' END], NULL),
       a.rolconnlimit = %(limit)s,
       a.rolvaliduntil IS NOT NULL AND a.rolvaliduntil <> 'infinity',
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
                 FROM pg_namespace n WHERE n.nspname = 'public'), false),
       pg_has_role(current_user, a.oid, 'USAGE') AND pg_has_role(current_user, a.oid, %(set)s)
FROM {table} a WHERE a.rolname = %(role)s
"""
_ROLE_SQL_SUPERUSER = _ROLE_SQL.format(verifier="a.rolpassword", table="pg_authid")
_ROLE_SQL_CREATEROLE = _ROLE_SQL.format(verifier="NULL", table="pg_roles")


@dataclass(frozen=True)
class AdminState:
    """Who the admin role is and what it may do in this database."""

    name: str
    superuser: bool
    server_version: int


def check_admin(row: tuple[Any, ...], endpoint: str) -> AdminState:
    """The admin's powers from the first columns of _DATABASE_SQL, or a StorageError saying
    exactly what is missing."""
    database, admin, superuser, createrole, inherit, version, owns_db, owner = row[:8]
    public_open, public_creates, unexpected = row[8], row[9], list(row[10])
    where = f"PostgreSQL at {endpoint}"
    if not superuser and not createrole:
        raise StorageError(
            f"the admin role {admin} of {where} has neither SUPERUSER nor CREATEROLE: tenantgw "
            "needs one of them to create tenant roles; fix TENANTGW_POSTGRES_DSN or run "
            f"ALTER ROLE {admin} CREATEROLE"
        )
    if not superuser and not owns_db:
        raise StorageError(
            f"the admin role {admin} of {where} is not a superuser, so it must own database "
            f"{database} (owner: {owner}) to grant CONNECT and close schema public: run "
            f"ALTER DATABASE {database} OWNER TO {admin}"
        )
    if not superuser and not inherit and version < PG16:
        raise StorageError(
            f"the admin role {admin} of {where} is NOINHERIT: with CREATEROLE it manages tenant "
            f"schemas through its membership in the tenant roles; run ALTER ROLE {admin} INHERIT"
        )
    # Schemas that are not tenants' are left alone, as long as leaving them alone is safe:
    # tenantgw would have to close them (or schema public, or CREATE on the database) to PUBLIC.
    must_close = any(s.endswith(", open to PUBLIC)") for s in unexpected)
    if unexpected and (must_close or public_open or public_creates):
        raise StorageError(
            f"database {database} of {where} is not dedicated to tenantgw: it holds schema "
            f"{', '.join(unexpected)}, and tenantgw closes its database, schema public and every "
            "other schema to PUBLIC so that tenants cannot reach each other. Give tenantgw a "
            f"database of its own (CREATE DATABASE tenantgw OWNER {admin}) and point "
            "TENANTGW_POSTGRES_DSN at it"
        )
    return AdminState(name=str(admin), superuser=bool(superuser), server_version=int(version))


# Grantees other than the owner, PUBLIC as ''.
_DEFAULT_ACL_SQL = """
SELECT d.defaclobjtype::text, n.nspname,
       ARRAY(SELECT DISTINCT CASE WHEN x.grantee = 0 THEN '' ELSE pg_get_userbyid(x.grantee) END
             FROM aclexplode(d.defaclacl) x WHERE x.grantee <> d.defaclrole ORDER BY 1)
FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
WHERE d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = %(role)s) ORDER BY 1, 2
"""

_SCHEMA_SQL = """
SELECT pg_get_userbyid(n.nspowner),
       ARRAY(SELECT DISTINCT CASE WHEN x.grantee = 0 THEN '' ELSE pg_get_userbyid(x.grantee) END
             FROM aclexplode(n.nspacl) x WHERE x.grantee <> n.nspowner ORDER BY 1)
FROM pg_namespace n WHERE n.nspname = %(schema)s
"""

# Schemas of other tenants (and any other non-system schema) that the role could use; its own
# audit trail's schema (tenancy/audit.py: USAGE and INSERT/SELECT only) is not foreign.
_FOREIGN_SQL = r"""
SELECT n.nspname
FROM pg_namespace n LEFT JOIN pg_roles r ON r.rolname = %(role)s
WHERE n.nspname NOT LIKE 'pg\_%%'
  AND n.nspname NOT IN ('information_schema', 'public', %(schema)s, %(audit)s)
  AND (has_schema_privilege('public', n.oid, 'USAGE')
       OR has_schema_privilege('public', n.oid, 'CREATE')
       OR coalesce(has_schema_privilege(r.oid, n.oid, 'USAGE'), false)
       OR coalesce(has_schema_privilege(r.oid, n.oid, 'CREATE'), false))
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


def _role_query(admin: AdminState) -> str:
    return _ROLE_SQL_SUPERUSER if admin.superuser else _ROLE_SQL_CREATEROLE


async def read_state(
    conn: Conn,
    tenant_name: str,
    *,
    connection_limit: int,
    endpoint: str,
    admin: AdminState | None = None,
) -> tuple[PgState, AdminState]:
    """Read everything plan_ensure needs, with reads only; and the admin's powers.

    `admin`: what the last read said about the admin. Given, all reads go to the server in one
    round trip (a pipeline), the role read in the form that admin can run; when the database
    read says the admin changed since, the role is read again. Without it, one by one.
    """
    role, schema = role_name(tenant_name), schema_name(tenant_name)
    params = {
        "prefix": SCHEMA_PREFIX,
        "role": role,
        "schema": schema,
        "audit": audit_schema(tenant_name),
        "limit": connection_limit,
        "set": "SET" if (admin and admin.server_version >= PG16) else "MEMBER",
    }
    queries = [_DATABASE_SQL, _SCHEMA_SQL, _FOREIGN_SQL, _DEFAULT_ACL_SQL]
    if admin is not None:
        async with conn.pipeline():
            cursors = [await conn.execute(q, params) for q in [*queries, _role_query(admin)]]
        rows = [await cur.fetchall() for cur in cursors]
    else:
        rows = []
        for query in queries:
            cur = await conn.execute(query, params)
            rows.append(await cur.fetchall())
    database_row = rows[0][0]
    now = check_admin(database_row, endpoint)
    if admin is None or now != admin:
        params["set"] = "SET" if now.server_version >= PG16 else "MEMBER"
        cur = await conn.execute(_role_query(now), params)
        role_rows = await cur.fetchall()
    else:
        role_rows = rows[4]
    return _state(now, database_row, rows[1], rows[2], rows[3], role_rows), now


def _state(
    admin: AdminState,
    database_row: tuple[Any, ...],
    schema_rows: list[tuple[Any, ...]],
    foreign_rows: list[tuple[Any, ...]],
    default_acl_rows: list[tuple[Any, ...]],
    role_rows: list[tuple[Any, ...]],
) -> PgState:
    role_state = None
    if role_rows:
        role_row = role_rows[0]
        role_state = RoleState(
            verifier=role_row[1],
            wrong_attributes=tuple(role_row[2]),
            connection_limit_ok=bool(role_row[3]),
            expires=bool(role_row[4]),
            memberships=tuple(role_row[5]),
            search_path=_search_path(role_row[6]),
            database_search_path=bool(role_row[7]),
            connect_granted=bool(role_row[8]),
            creates_in_database=bool(role_row[9]),
            uses_public_schema=bool(role_row[10]),
            held_by_admin=bool(role_row[11]),
            default_acl=tuple(
                DefaultAcl(kind=kind, schema=nsp, grantees=tuple(grantees))
                for kind, nsp, grantees in default_acl_rows
            ),
        )
    schema_row = schema_rows[0] if schema_rows else None
    return PgState(
        database=database_row[0],
        admin_superuser=admin.superuser,
        server_version=admin.server_version,
        public_schema_open=bool(database_row[8]),
        public_creates_in_database=bool(database_row[9]),
        role=role_state,
        schema_owner=schema_row[0] if schema_row else None,
        schema_grantees=tuple(schema_row[1]) if schema_row else (),
        foreign_schemas=tuple(name for (name,) in foreign_rows),
    )
