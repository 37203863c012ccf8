"""tenantgw.tenancy without servers: names, URLs, SCRAM verifiers, the SQL plan, the ACL check."""

from __future__ import annotations

import base64
from urllib.parse import quote

import psycopg.conninfo
import pytest
import redis

from tenantgw.tenancy import (
    Provisioner,
    StorageError,
    TenantStorage,
    key_prefix,
    password_from,
    redis_username,
    role_name,
    schema_name,
)
from tenantgw.tenancy.naming import check_password, generate_password, tenant_redis_url
from tenantgw.tenancy.pg_plan import (
    ROLE_ATTRIBUTES,
    DefaultAcl,
    PgState,
    RoleState,
    plan_ensure,
    plan_remove,
)
from tenantgw.tenancy.redis_acl import (
    COMMAND_RULES,
    CommandTable,
    allowed_commands,
    parse_getuser,
    password_hash,
    setuser_rules,
    user_drift,
)
from tenantgw.tenancy.scram import scram_matches, scram_verifier

pytestmark = pytest.mark.unit

ADMIN_DSN = "postgresql://tenantgw_admin:adminpw@127.0.0.1:55432/tenantgw"
ADMIN_REDIS = "redis://admin:adminpw@127.0.0.1:56379/0"
PASSWORD = "Abcdefghijklmnop0123456789_-xyz"
# What PostgreSQL 15 stored for `CREATE ROLE ... PASSWORD 'pencil'` (password_encryption=scram).
PG_PENCIL = (
    "SCRAM-SHA-256$4096:j29JEIuX0UZooxQdTrjQ+A==$K1CNCOV3HuppyCNYdQjizoTzd/j8ntBvQVlyuao2qaM="
    ":7Pr/qQq8tmiMHKCkVkwxnULXUwSPrGqxFPdgdTBEPYw="
)


# --------------------------------------------------------------------------- names


def test_names_of_a_tenant() -> None:
    assert role_name("engineering-team") == "tgw_engineering_team"
    assert schema_name("engineering-team") == "t_engineering_team"
    assert redis_username("engineering-team") == "tgw:engineering-team"
    assert key_prefix("engineering-team") == "t:{engineering-team}:"  # one Cluster slot


def test_the_longest_tenant_name_still_fits_a_postgres_identifier() -> None:
    name = "a" * 56
    assert len(role_name(name)) <= 63
    assert len(schema_name(name)) <= 63


@pytest.mark.parametrize(
    "name",
    ["", "A", "team_a", "-team", "team-", "a" * 57, "team.a", "t:x", "te am", "tëam", "x*"],
)
def test_names_that_cannot_name_storage_are_refused(name: str) -> None:
    with pytest.raises(StorageError, match="DNS label of at most 56"):
        role_name(name)


# --------------------------------------------------------------------------- passwords and URLs


def test_generated_passwords_are_long_random_and_usable() -> None:
    first, second = generate_password(), generate_password()
    assert first != second
    assert len(first) >= 40
    assert check_password(first, "t") == first


@pytest.mark.parametrize("password", ["short", "has a space " * 3, "ünïcode-password-123", ""])
def test_unusable_passwords_are_refused_with_a_way_out(password: str) -> None:
    with pytest.raises(StorageError, match="pass None"):
        check_password(password, "team-a")


def test_redis_url_encodes_the_colon_of_the_user_and_redis_py_reads_it_back() -> None:
    password = "p@ss:w/rd%#?x" + "y" * 8
    url = tenant_redis_url("team-a", password, "redis.tenantgw-system.svc", 6379, 0)
    assert url.startswith("redis://tgw%3Ateam-a:")
    kwargs = redis.Redis.from_url(url).connection_pool.connection_kwargs
    assert kwargs["username"] == "tgw:team-a"
    assert kwargs["password"] == password
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("redis.tenantgw-system.svc", 6379, 0)
    assert password_from(url) == password


def test_tenant_storage_from_the_admin_endpoints() -> None:
    storage = Provisioner(ADMIN_DSN, ADMIN_REDIS).storage("team-a", PASSWORD)
    assert storage.postgres_dsn == (f"postgresql://tgw_team_a:{PASSWORD}@127.0.0.1:55432/tenantgw")
    assert storage.redis_url == f"redis://tgw%3Ateam-a:{PASSWORD}@127.0.0.1:56379/0"
    params = psycopg.conninfo.conninfo_to_dict(storage.postgres_dsn)
    assert params["user"] == "tgw_team_a"
    assert params["password"] == PASSWORD
    assert params["dbname"] == "tenantgw"


def test_gateways_can_reach_storage_by_other_names() -> None:
    provisioner = Provisioner.from_env(
        {
            "TENANTGW_POSTGRES_DSN": ADMIN_DSN + "?sslmode=require",
            "TENANTGW_REDIS_URL": ADMIN_REDIS,
            "TENANTGW_TENANT_POSTGRES_HOST": "postgres.tenantgw-system.svc",
            "TENANTGW_TENANT_POSTGRES_PORT": "5432",
            "TENANTGW_TENANT_REDIS_HOST": "fd00::20",
            "TENANTGW_TENANT_REDIS_PORT": "6380",
        }
    )
    assert provisioner is not None
    storage = provisioner.storage("team-a", PASSWORD)
    assert storage.postgres_dsn == (
        f"postgresql://tgw_team_a:{PASSWORD}@postgres.tenantgw-system.svc:5432/tenantgw"
        "?sslmode=require"
    )
    assert storage.redis_url == f"redis://tgw%3Ateam-a:{PASSWORD}@[fd00::20]:6380/0"
    assert redis.Redis.from_url(storage.redis_url).connection_pool.connection_kwargs["host"] == (
        "fd00::20"
    )


def test_special_characters_in_passwords_survive_the_dsn() -> None:
    password = "p@ss:w/rd%#?&=x" + "y" * 8
    dsn = Provisioner(ADMIN_DSN, ADMIN_REDIS).storage("team-a", password).postgres_dsn
    assert f":{quote(password, safe='')}@" in dsn
    assert psycopg.conninfo.conninfo_to_dict(dsn)["password"] == password
    assert password_from(dsn) == password


def test_password_from_a_url_without_one_says_what_to_do() -> None:
    with pytest.raises(StorageError, match="no password"):
        password_from("postgresql://tgw_a@db:5432/tenantgw")


def test_storage_repr_does_not_show_passwords() -> None:
    storage = TenantStorage(
        postgres_dsn="postgresql://u:SECRET@h/d", redis_url="redis://u:SECRET@h"
    )
    assert "SECRET" not in repr(storage)


# --------------------------------------------------------------------------- configuration


def test_no_admin_variables_means_storage_is_not_configured() -> None:
    assert Provisioner.from_env({}) is None


def test_half_a_configuration_is_an_error() -> None:
    with pytest.raises(StorageError, match="TENANTGW_REDIS_URL is not: set both or neither"):
        Provisioner.from_env({"TENANTGW_POSTGRES_DSN": ADMIN_DSN})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TENANTGW_TENANT_REDIS_PORT": "http"}, "TENANTGW_TENANT_REDIS_PORT must be a port"),
        ({"TENANTGW_POSTGRES_DSN": "postgresql://u:p@h:5432"}, "names no database"),
        ({"TENANTGW_POSTGRES_DSN": "postgresql:///tenantgw"}, "TENANTGW_TENANT_POSTGRES_HOST"),
        ({"TENANTGW_REDIS_URL": "http://admin:pw@h:1/0"}, "must look like redis://"),
    ],
)
def test_bad_configuration_says_which_variable(env: dict[str, str], message: str) -> None:
    base = {"TENANTGW_POSTGRES_DSN": ADMIN_DSN, "TENANTGW_REDIS_URL": ADMIN_REDIS}
    with pytest.raises(StorageError, match=message):
        Provisioner.from_env(base | env)


# --------------------------------------------------------------------------- SCRAM


def test_scram_verifier_is_the_one_postgres_computes() -> None:
    salt = base64.b64decode("j29JEIuX0UZooxQdTrjQ+A==")
    assert scram_verifier("pencil", salt=salt) == PG_PENCIL


def test_scram_matches_only_the_right_password() -> None:
    assert scram_matches(PG_PENCIL, "pencil")
    assert not scram_matches(PG_PENCIL, "pencil2")
    assert scram_matches(scram_verifier(PASSWORD), PASSWORD)
    assert scram_verifier(PASSWORD) != scram_verifier(PASSWORD)  # salted


@pytest.mark.parametrize(
    "stored", [None, "", "md5" + "0" * 32, "SCRAM-SHA-256$x", "SCRAM-SHA-256$4096:!!$a:b"]
)
def test_anything_but_a_scram_verifier_does_not_match(stored: str | None) -> None:
    assert not scram_matches(stored, "pencil")


# --------------------------------------------------------------------------- the SQL plan


def _sql(steps: list[tuple[str, psycopg.sql.Composed]]) -> list[str]:
    return [statement.as_string(None) for _, statement in steps]


def _provisioned(**role: object) -> PgState:
    """The state after a successful ensure() of team-a with PASSWORD, with overrides."""
    fields: dict[str, object] = {
        "verifier": scram_verifier(PASSWORD),
        "search_path": "t_team_a",
        "default_acl": (DefaultAcl(kind="f", schema=None),),
    }
    return PgState(
        database="tenantgw",
        role=RoleState(**(fields | role)),  # type: ignore[arg-type]
        schema_owner="tgw_team_a",
    )


def test_a_provisioned_tenant_needs_no_statement() -> None:
    assert plan_ensure(_provisioned(), "team-a", PASSWORD, connection_limit=50) == []


def test_a_new_tenant_gets_role_schema_and_privileges() -> None:
    state = PgState(database="tenantgw", public_schema_open=True)
    statements = _sql(plan_ensure(state, "team-a", PASSWORD, connection_limit=50))
    assert statements[0] == "REVOKE ALL ON SCHEMA public FROM PUBLIC"
    assert statements[1].startswith(
        'CREATE ROLE "tgw_team_a" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION '
        "NOBYPASSRLS CONNECTION LIMIT 50 PASSWORD 'SCRAM-SHA-256$4096:"
    )
    assert statements[2:] == [
        'ALTER ROLE "tgw_team_a" SET search_path = "t_team_a"',
        'GRANT CONNECT ON DATABASE "tenantgw" TO "tgw_team_a"',
        'CREATE SCHEMA "t_team_a" AUTHORIZATION "tgw_team_a"',
        'ALTER DEFAULT PRIVILEGES FOR ROLE "tgw_team_a" REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC',
    ]
    assert all(PASSWORD not in statement for statement in statements)


def test_a_changed_password_is_set_again_and_only_it() -> None:
    state = _provisioned(verifier=scram_verifier("another-password-0123"))
    statements = _sql(plan_ensure(state, "team-a", PASSWORD, connection_limit=50))
    assert len(statements) == 1
    assert statements[0].startswith('ALTER ROLE "tgw_team_a" PASSWORD \'SCRAM-SHA-256$')


def test_drift_that_would_open_a_door_is_closed() -> None:
    state = PgState(
        database="tenantgw",
        public_creates_in_database=True,
        role=RoleState(
            verifier=scram_verifier(PASSWORD),
            wrong_attributes=ROLE_ATTRIBUTES[::-1],  # in any order: the plan keeps its own
            connection_limit_ok=False,
            expires=True,
            memberships=("tgw_team_b",),
            search_path="public",
            database_search_path=True,
            creates_in_database=True,
            uses_public_schema=True,
            default_acl=(
                DefaultAcl(kind="f", schema=None, grantees=("",)),
                DefaultAcl(kind="r", schema="t_team_a", grantees=("tgw_team_b",)),
            ),
        ),
        schema_owner="tenantgw_admin",
        schema_grantees=("", "tgw_team_b"),
        foreign_schemas=("t_team_b",),
    )
    assert _sql(plan_ensure(state, "team-a", PASSWORD, connection_limit=50)) == [
        'REVOKE CREATE ON DATABASE "tenantgw" FROM PUBLIC',
        'ALTER ROLE "tgw_team_a" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION '
        "NOBYPASSRLS CONNECTION LIMIT 50 VALID UNTIL 'infinity'",
        'REVOKE "tgw_team_b" FROM "tgw_team_a"',
        'ALTER ROLE "tgw_team_a" SET search_path = "t_team_a"',
        'ALTER ROLE "tgw_team_a" IN DATABASE "tenantgw" RESET search_path',
        'REVOKE CREATE ON DATABASE "tenantgw" FROM "tgw_team_a"',
        'REVOKE ALL ON SCHEMA public FROM "tgw_team_a"',
        'ALTER SCHEMA "t_team_a" OWNER TO "tgw_team_a"',
        'REVOKE ALL ON SCHEMA "t_team_a" FROM PUBLIC',
        'REVOKE ALL ON SCHEMA "t_team_a" FROM "tgw_team_b"',
        'REVOKE ALL ON SCHEMA "t_team_b" FROM PUBLIC, "tgw_team_a"',
        'ALTER DEFAULT PRIVILEGES FOR ROLE "tgw_team_a" REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC',
        'ALTER DEFAULT PRIVILEGES FOR ROLE "tgw_team_a" IN SCHEMA "t_team_a" REVOKE ALL ON TABLES '
        'FROM "tgw_team_b"',
    ]


def test_remove_drops_schema_then_role() -> None:
    assert _sql(plan_remove("team-a", has_schema=True, has_role=True)) == [
        'DROP SCHEMA IF EXISTS "t_team_a" CASCADE',
        'REASSIGN OWNED BY "tgw_team_a" TO CURRENT_USER',
        'DROP OWNED BY "tgw_team_a"',
        'DROP ROLE "tgw_team_a"',
    ]
    assert plan_remove("team-a", has_schema=False, has_role=False) == []


# --------------------------------------------------------------------------- the Redis ACL


# A slice of Redis 7's COMMAND reply: [name, arity, flags, first, last, step, categories, ...].
COMMANDS = [
    ["get", 2, [], 1, 1, 1, ["@read", "@string", "@fast"], [], [], []],
    ["set", -3, [], 1, 1, 1, ["@write", "@string", "@slow"], [], [], []],
    ["keys", 2, [], 0, 0, 0, ["@keyspace", "@read", "@slow", "@dangerous"], [], [], []],
    ["scan", -2, [], 0, 0, 0, ["@keyspace", "@read", "@slow"], [], [], []],
    ["flushall", -1, [], 0, 0, 0, ["@keyspace", "@write", "@slow", "@dangerous"], [], [], []],
    ["eval", -3, [], 0, 0, 0, ["@slow", "@scripting"], [], [], []],
    ["multi", 1, [], 0, 0, 0, ["@fast", "@transaction"], [], [], []],
    ["publish", 3, [], 0, 0, 0, ["@pubsub", "@fast"], [], [], []],
    ["select", 2, [], 0, 0, 0, ["@fast", "@connection"], [], [], []],
    [
        "client", -2, [], 0, 0, 0, ["@slow"], [], [],
        [
            ["client|id", 2, [], 0, 0, 0, ["@slow", "@connection"], [], [], []],
            ["client|kill", -3, [], 0, 0, 0, ["@admin", "@slow", "@dangerous", "@connection"],
             [], [], []],
            ["client|tracking", -3, [], 0, 0, 0, ["@slow", "@connection"], [], [], []],
        ],
    ],
]  # fmt: skip
TABLE = CommandTable.parse(COMMANDS)


def test_the_rules_allow_data_scripts_and_transactions_only() -> None:
    allowed = allowed_commands(COMMAND_RULES, TABLE)
    assert allowed == frozenset({"get", "set", "eval", "multi", "client|id"})


# Stream commands as Redis 7 categorises them: the gateway's ledger spools usage rows in a stream.
STREAM_COMMANDS = [
    ["xadd", -5, [], 1, 1, 1, ["@write", "@stream", "@fast"], [], [], []],
    ["xlen", 2, [], 1, 1, 1, ["@read", "@stream", "@fast"], [], [], []],
    ["xrange", -4, [], 1, 1, 1, ["@read", "@stream", "@slow"], [], [], []],
    ["xrevrange", -4, [], 1, 1, 1, ["@read", "@stream", "@slow"], [], [], []],
    ["xdel", -3, [], 1, 1, 1, ["@write", "@stream", "@fast"], [], [], []],
    ["evalsha", -3, [], 0, 0, 0, ["@slow", "@scripting"], [], [], []],
]  # fmt: skip


def test_the_rules_let_the_ledger_spool_in_a_stream() -> None:
    allowed = allowed_commands(COMMAND_RULES, CommandTable.parse(COMMANDS + STREAM_COMMANDS))
    assert allowed is not None
    assert {"xadd", "xlen", "xrange", "xrevrange", "xdel", "evalsha"} <= allowed


def test_rules_that_redis_words_differently_allow_the_same() -> None:
    reworded = ["-@all", "+@string", "+@scripting", "+@transaction", "+client|id"]
    assert allowed_commands(reworded, TABLE) == allowed_commands(COMMAND_RULES, TABLE)
    assert allowed_commands(["+@all"], TABLE) == frozenset(TABLE.categories)
    assert allowed_commands(["+select|0"], TABLE) is None


def _user(password: str = PASSWORD, changes: dict[str, object] | None = None) -> dict[str, object]:
    user: dict[str, object] = {
        "flags": ["on", "sanitize-payload"],
        "passwords": [password_hash(password)],
        "commands": "-@all +@string +@scripting +@transaction +client|id",
        "keys": "~t:{team-a}:*",
        "channels": "",
        "selectors": [],
    }
    return user | (changes or {})


def test_a_provisioned_user_has_no_drift() -> None:
    assert user_drift(_user(), "team-a", PASSWORD, TABLE) == []


@pytest.mark.parametrize(
    ("changes", "drift"),
    [
        ({"flags": ["off"]}, ["flags"]),
        ({"flags": ["on", "allkeys"]}, ["flags"]),
        ({"passwords": []}, ["password"]),
        ({"keys": "~*"}, ["keys"]),
        ({"keys": "~t:{team-a}:* ~t:{team-b}:*"}, ["keys"]),
        ({"keys": "~t:team-a:*"}, ["keys"]),  # the pattern before the hash tag: re-applied
        ({"channels": "&*"}, ["channels"]),
        ({"selectors": [["commands", "+@all"]]}, ["selectors"]),
        ({"commands": "-@all +@string +@scripting +@transaction +client|id +keys"}, ["commands"]),
    ],
)
def test_user_drift_is_found(changes: dict[str, object], drift: list[str]) -> None:
    assert user_drift(_user(changes=changes), "team-a", PASSWORD, TABLE) == drift


def test_a_missing_user_and_a_new_password_are_drift() -> None:
    assert user_drift(None, "team-a", PASSWORD, TABLE) == ["missing"]
    assert user_drift(_user("old-password-0123456"), "team-a", PASSWORD, TABLE) == ["password"]


def test_setuser_starts_from_nothing_and_sends_only_the_hash() -> None:
    rules = setuser_rules("team-a", PASSWORD)
    assert rules[:5] == [
        "reset",
        "on",
        "#" + password_hash(PASSWORD),
        "~t:{team-a}:*",
        "resetchannels",
    ]
    assert PASSWORD not in " ".join(rules)


def test_getuser_replies_of_resp2_and_resp3() -> None:
    assert parse_getuser(None) is None
    assert parse_getuser(["flags", ["on"], "keys", "~x"]) == {"flags": ["on"], "keys": "~x"}
    assert parse_getuser({"flags": ["on"]}) == {"flags": ["on"]}
