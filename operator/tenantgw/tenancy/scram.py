"""SCRAM-SHA-256 verifiers as PostgreSQL stores them in pg_authid.rolpassword.

The operator computes the verifier itself, so the plain password never travels in a CREATE or
ALTER ROLE statement (where `log_statement = ddl` would write it to the server log), and it can
tell whether a stored verifier matches a password without changing anything.
Format (RFC 5803): `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, base64 parts.
Passwords are printable ASCII (see naming.check_password), for which SASLprep is the identity.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

PREFIX = "SCRAM-SHA-256$"
ITERATIONS = 4096  # PostgreSQL's default (scram_iterations)
SALT_BYTES = 16


def _keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return hashlib.sha256(client_key).digest(), server_key


def scram_verifier(
    password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS
) -> str:
    """The verifier PostgreSQL would store for this password."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    stored_key, server_key = _keys(password, salt, iterations)

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"{PREFIX}{iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def scram_matches(verifier: str | None, password: str) -> bool:
    """Whether a stored rolpassword is a SCRAM verifier of this password (MD5 or NULL: no)."""
    if not verifier or not verifier.startswith(PREFIX):
        return False
    try:
        params, keys = verifier.removeprefix(PREFIX).split("$")
        iterations_text, salt_b64 = params.split(":")
        stored_b64, server_b64 = keys.split(":")
        iterations = int(iterations_text)
        salt = base64.b64decode(salt_b64, validate=True)
        stored_key = base64.b64decode(stored_b64, validate=True)
        server_key = base64.b64decode(server_b64, validate=True)
    except ValueError:
        return False
    if not 1 <= iterations <= 10_000_000:
        return False
    expected_stored, expected_server = _keys(password, salt, iterations)
    return hmac.compare_digest(stored_key, expected_stored) and hmac.compare_digest(
        server_key, expected_server
    )
