"""Storage with a CREATEROLE admin: what the operator requires of its PostgreSQL, and the plan."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tenantgw.tenancy import StorageError
from tenantgw.tenancy.pg_catalog import check_admin
from tenantgw.tenancy.pg_plan import DefaultAcl, PgState, RoleState, plan_ensure
from tenantgw.tenancy.scram import scram_verifier

pytestmark = pytest.mark.unit

PASSWORD = "correct-horse-battery-staple-42"
ENDPOINT = "db:5432"


def _sql(steps: list[tuple[str, psycopg.sql.Composed]]) -> list[str]:
    return [statement.as_string(None) for _, statement in steps]


def admin_row(**over: Any) -> tuple[Any, ...]:
    """The columns of pg_catalog._DATABASE_SQL."""
    row: dict[str, Any] = {
        "database": "tenantgw",
        "admin": "tgw_admin",
        "superuser": False,
        "createrole": True,
        "inherit": True,
        "version": 150018,
        "owns_db": True,
        "owner": "tgw_admin",
        "public_open": False,
        "public_creates": False,
        "unexpected": [],
    } | over
    return tuple(row.values())


def test_a_superuser_or_a_createrole_owner_of_the_database_is_enough() -> None:
    assert check_admin(admin_row(), ENDPOINT).superuser is False
    su = check_admin(admin_row(superuser=True, createrole=False, owns_db=False), ENDPOINT)
    assert su.superuser
    assert su.server_version == 150018


@pytest.mark.parametrize(
    ("row", "says"),
    [
        (admin_row(createrole=False), "ALTER ROLE tgw_admin CREATEROLE"),
        (admin_row(owns_db=False, owner="postgres"), "ALTER DATABASE tenantgw OWNER TO tgw_admin"),
        (admin_row(inherit=False), "ALTER ROLE tgw_admin INHERIT"),
        (
            admin_row(superuser=True, unexpected=["billing (owner app, open to PUBLIC)"]),
            "not dedicated to tenantgw: it holds schema billing (owner app, open to PUBLIC)",
        ),
        (
            admin_row(unexpected=["billing (owner app)"], public_creates=True),
            "not dedicated to tenantgw: it holds schema billing (owner app)",
        ),
    ],
)
def test_a_missing_requirement_is_named_with_the_fix(row: tuple[Any, ...], says: str) -> None:
    with pytest.raises(StorageError, match=r"db:5432") as err:
        check_admin(row, ENDPOINT)
    assert says in str(err.value)


def test_a_closed_schema_of_someone_else_is_left_alone() -> None:
    assert check_admin(admin_row(unexpected=["billing (owner app)"]), ENDPOINT)


def test_noinherit_is_fine_on_16_where_each_grant_says_inherit() -> None:
    assert not check_admin(admin_row(inherit=False, version=160004), ENDPOINT).superuser


def test_a_createrole_admin_takes_membership_of_the_role_it_creates() -> None:
    state = PgState(database="tenantgw", admin_superuser=False, server_version=150018)
    statements = _sql(plan_ensure(state, "team-a", PASSWORD, connection_limit=50))
    assert statements[0].startswith('CREATE ROLE "tgw_team_a" WITH LOGIN NOSUPERUSER')
    assert statements[1] == 'GRANT "tgw_team_a" TO CURRENT_USER'
    assert 'CREATE SCHEMA "t_team_a" AUTHORIZATION "tgw_team_a"' in statements
    on_16 = PgState(database="tenantgw", admin_superuser=False, server_version=160004)
    assert _sql(plan_ensure(on_16, "team-a", PASSWORD, connection_limit=50))[1] == (
        'GRANT "tgw_team_a" TO CURRENT_USER WITH INHERIT TRUE, SET TRUE'
    )


def _createrole_state(**role: Any) -> PgState:
    fields: dict[str, Any] = {"verifier": None, "password_ok": True, "search_path": "t_team_a"}
    fields["default_acl"] = (DefaultAcl(kind="f", schema=None),)
    return PgState(
        database="tenantgw",
        admin_superuser=False,
        role=RoleState(**(fields | role)),
        schema_owner="tgw_team_a",
    )


def test_a_provisioned_tenant_costs_no_statement_without_reading_verifiers() -> None:
    assert plan_ensure(_createrole_state(), "team-a", PASSWORD, connection_limit=50) == []


def test_a_password_that_does_not_log_in_is_set_again() -> None:
    statements = _sql(
        plan_ensure(_createrole_state(password_ok=False), "team-a", PASSWORD, connection_limit=50)
    )
    assert len(statements) == 1
    assert statements[0].startswith('ALTER ROLE "tgw_team_a" PASSWORD \'SCRAM-SHA-256$')
    # A superuser's state carries the verifier; a login check result wins over it.
    state = _createrole_state(verifier=scram_verifier(PASSWORD), password_ok=False)
    assert len(plan_ensure(state, "team-a", PASSWORD, connection_limit=50)) == 1


def test_only_wrong_attributes_are_named_and_a_lost_membership_is_taken_back() -> None:
    state = _createrole_state(
        wrong_attributes=("NOCREATEDB",), connection_limit_ok=False, held_by_admin=False
    )
    assert _sql(plan_ensure(state, "team-a", PASSWORD, connection_limit=50)) == [
        'ALTER ROLE "tgw_team_a" WITH NOCREATEDB CONNECTION LIMIT 50',
        'GRANT "tgw_team_a" TO CURRENT_USER',
    ]
