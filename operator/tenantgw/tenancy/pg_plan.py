"""What a tenant's PostgreSQL role and schema look like, and the statements that fix them.

Pure: `plan_ensure(state, ...)` turns what the catalogs say (read by pg_catalog) into the
statements that bring the tenant to the wanted state, [] when it is there already. Every name
goes through `psycopg.sql.Identifier`; the password only as a SCRAM verifier literal.

The wanted state of tenant t (role R = tgw_t, schema S = t_t, database D):
- R: LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS, CONNECTION LIMIT n,
  no expiry, a SCRAM-SHA-256 password, member of no role, `search_path = S` for all databases
  and no per-database override;
- S owned by R, no privilege on it for anyone else (not PUBLIC, not other tenants);
- D: CONNECT granted to R explicitly, CREATE neither to R nor to PUBLIC;
- schema public: no privilege for PUBLIC or R; no other non-system schema usable by R or PUBLIC;
- R's default privileges grant nothing to others, and its functions are not executable by
  PUBLIC (objects R creates stay R's alone);
- an admin that is not a superuser (CREATEROLE) is a member of R that can SET ROLE to it and
  inherits its privileges: that is how it creates, closes and drops R's schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg import sql

from tenantgw.tenancy.naming import role_name, schema_name
from tenantgw.tenancy.scram import scram_matches, scram_verifier

# A change: what it does (for logs and errors) and the statement.
Step = tuple[str, sql.Composed]

PUBLIC = ""  # how the state names the PUBLIC pseudo-role among grantees
ROLE_ATTRIBUTES = (
    "LOGIN", "NOSUPERUSER", "NOCREATEDB", "NOCREATEROLE", "NOREPLICATION", "NOBYPASSRLS",
)  # fmt: skip
DEFAULT_ACL_KINDS = {
    "r": "TABLES",
    "S": "SEQUENCES",
    "f": "FUNCTIONS",
    "T": "TYPES",
    "n": "SCHEMAS",
    "L": "LARGE OBJECTS",
}


@dataclass(frozen=True)
class DefaultAcl:
    """One pg_default_acl row of the tenant role: grantees other than the role itself."""

    kind: str  # pg_default_acl.defaclobjtype
    schema: str | None  # None: the role's global default privileges
    grantees: tuple[str, ...] = ()


@dataclass(frozen=True)
class RoleState:
    """What the catalogs say about an existing tenant role."""

    verifier: str | None = field(repr=False)  # pg_authid.rolpassword (None: not readable)
    wrong_attributes: tuple[str, ...] = ()  # of ROLE_ATTRIBUTES, those that do not hold
    connection_limit_ok: bool = True
    expires: bool = False  # VALID UNTIL set to a date
    # Whether the role has the tenant's password, when found out by logging in as it (the
    # admin cannot read verifiers unless it is a superuser); None: compare `verifier`.
    password_ok: bool | None = None
    held_by_admin: bool = True  # the admin may SET ROLE to it and has its privileges
    memberships: tuple[str, ...] = ()
    search_path: str | None = None  # ALTER ROLE ... SET search_path, all databases
    database_search_path: bool = False  # an ALTER ROLE ... IN DATABASE override exists
    connect_granted: bool = True  # CONNECT granted to the role itself, not only via PUBLIC
    creates_in_database: bool = False
    uses_public_schema: bool = False
    default_acl: tuple[DefaultAcl, ...] = ()


@dataclass(frozen=True)
class PgState:
    """The database-wide and per-tenant facts that provisioning depends on."""

    database: str
    admin_superuser: bool = True
    server_version: int = 150000  # server_version_num
    public_schema_open: bool = False  # PUBLIC holds USAGE or CREATE on schema public
    public_creates_in_database: bool = False
    role: RoleState | None = None
    schema_owner: str | None = None  # None: no schema
    schema_grantees: tuple[str, ...] = ()  # grantees on the tenant schema other than its owner
    foreign_schemas: tuple[str, ...] = ()  # other schemas the role or PUBLIC may use


def grantee(name: str) -> sql.Composable:
    """A role name from the state as SQL: '' is PUBLIC."""
    return sql.SQL("PUBLIC") if name == PUBLIC else sql.Identifier(name)


class _Plan:
    def __init__(self) -> None:
        self.steps: list[Step] = []

    def add(self, description: str, template: str, *args: sql.Composable) -> None:
        self.steps.append((description, sql.SQL(template).format(*args)))


def plan_ensure(
    state: PgState, tenant_name: str, password: str, *, connection_limit: int
) -> list[Step]:
    """The statements that bring the tenant's role and schema to the wanted state; [] if none."""
    role, schema = role_name(tenant_name), schema_name(tenant_name)
    r, s, db = sql.Identifier(role), sql.Identifier(schema), sql.Identifier(state.database)
    attributes = sql.SQL(
        "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS CONNECTION LIMIT {}"
    ).format(sql.Literal(connection_limit))
    plan = _Plan()
    add = plan.add
    if state.public_schema_open:
        add(
            "revoke PUBLIC's privileges on schema public", "REVOKE ALL ON SCHEMA public FROM PUBLIC"
        )
    if state.public_creates_in_database:
        add(
            "revoke PUBLIC's CREATE on the database", "REVOKE CREATE ON DATABASE {} FROM PUBLIC", db
        )

    current = state.role
    if current is None:
        verifier = sql.Literal(scram_verifier(password))
        add(f"create role {role}", "CREATE ROLE {} WITH {} PASSWORD {}", r, attributes, verifier)
        current = RoleState(verifier=None, connect_granted=False, held_by_admin=False)
    else:
        # Only what is wrong: a CREATEROLE admin may not even name SUPERUSER, REPLICATION or
        # BYPASSRLS (and on 16+ CREATEDB unless it has it), so a sound role is never touched.
        wrong = [a for a in ROLE_ATTRIBUTES if a in current.wrong_attributes]
        if not current.connection_limit_ok:
            wrong.append(f"CONNECTION LIMIT {connection_limit:d}")
        if current.expires:
            wrong.append("VALID UNTIL 'infinity'")
        if wrong:
            add(f"reset the attributes of role {role}", "ALTER ROLE {} WITH " + " ".join(wrong), r)
        password_ok = (
            current.password_ok
            if current.password_ok is not None
            else scram_matches(current.verifier, password)
        )
        if not password_ok:
            verifier = sql.Literal(scram_verifier(password))
            add(f"set the password of role {role}", "ALTER ROLE {} PASSWORD {}", r, verifier)
        for other in current.memberships:
            add(f"revoke {other} from {role}", "REVOKE {} FROM {}", sql.Identifier(other), r)
    if not state.admin_superuser and not current.held_by_admin:
        # The schema is created for the role and later dropped through it: the admin must be
        # able to act as the role (on 16+ the creator only gets ADMIN OPTION by itself).
        options = " WITH INHERIT TRUE, SET TRUE" if state.server_version >= 160000 else ""
        add(f"let the admin act as {role}", "GRANT {} TO CURRENT_USER" + options, r)
    if current.search_path != schema:
        add(f"set the search_path of {role}", "ALTER ROLE {} SET search_path = {}", r, s)
    if current.database_search_path:
        add(
            f"drop the per-database search_path of {role}",
            "ALTER ROLE {} IN DATABASE {} RESET search_path",
            r,
            db,
        )
    if not current.connect_granted:
        add(f"grant CONNECT on the database to {role}", "GRANT CONNECT ON DATABASE {} TO {}", db, r)
    if current.creates_in_database:
        add(
            f"revoke CREATE on the database from {role}",
            "REVOKE CREATE ON DATABASE {} FROM {}",
            db,
            r,
        )
    if current.uses_public_schema:
        add(f"revoke schema public from {role}", "REVOKE ALL ON SCHEMA public FROM {}", r)

    if state.schema_owner is None:
        add(f"create schema {schema}", "CREATE SCHEMA {} AUTHORIZATION {}", s, r)
    elif state.schema_owner != role:
        add(f"give schema {schema} to {role}", "ALTER SCHEMA {} OWNER TO {}", s, r)
    for name in state.schema_grantees:
        add(
            f"revoke schema {schema} from {name or 'PUBLIC'}",
            "REVOKE ALL ON SCHEMA {} FROM {}",
            s,
            grantee(name),
        )
    for other in state.foreign_schemas:
        who = sql.SQL(", ").join([grantee(PUBLIC), *([r] if state.role else [])])
        add(
            f"revoke schema {other} from PUBLIC and {role}",
            "REVOKE ALL ON SCHEMA {} FROM {}",
            sql.Identifier(other),
            who,
        )
    _plan_default_acl(plan, current.default_acl, r, role)
    return plan.steps


def _plan_default_acl(
    plan: _Plan, rows: tuple[DefaultAcl, ...], r: sql.Identifier, role: str
) -> None:
    functions_closed = any(
        row.kind == "f" and row.schema is None and PUBLIC not in row.grantees for row in rows
    )
    if not functions_closed:
        plan.add(
            f"revoke the default EXECUTE on {role}'s functions from PUBLIC",
            "ALTER DEFAULT PRIVILEGES FOR ROLE {} REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC",
            r,
        )
    for row in rows:
        kind = DEFAULT_ACL_KINDS.get(row.kind)
        if kind is None:
            continue
        where = sql.SQL("IN SCHEMA {}").format(sql.Identifier(row.schema or ""))
        for name in row.grantees:
            if row.kind == "f" and row.schema is None and name == PUBLIC:
                continue  # the statement above
            plan.add(
                f"revoke default privileges on {role}'s {kind.lower()} from {name or 'PUBLIC'}",
                "ALTER DEFAULT PRIVILEGES FOR ROLE {} {} REVOKE ALL ON {} FROM {}",
                r,
                where if row.schema else sql.SQL(""),
                sql.SQL(kind),
                grantee(name),
            )


def plan_remove(tenant_name: str, *, has_schema: bool, has_role: bool) -> list[Step]:
    """Drop the schema with everything in it, then what the role still owns, then the role."""
    role, schema = role_name(tenant_name), schema_name(tenant_name)
    r = sql.Identifier(role)
    plan = _Plan()
    if has_schema:
        plan.add(
            f"drop schema {schema}", "DROP SCHEMA IF EXISTS {} CASCADE", sql.Identifier(schema)
        )
    if has_role:
        plan.add(f"hand what {role} owns to the admin", "REASSIGN OWNED BY {} TO CURRENT_USER", r)
        plan.add(f"drop the privileges of {role}", "DROP OWNED BY {}", r)
        plan.add(f"drop role {role}", "DROP ROLE {}", r)
    return plan.steps
