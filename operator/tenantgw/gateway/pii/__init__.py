"""Detection and redaction of personal data and secrets in prompts, before they leave the gateway.

A match becomes `[REDACTED_<ENTITY>]`; in "block" mode the request is refused naming the
entity types found, never the values. The package is split along its seams:

* `checks`: checksums and heuristics (Luhn, IBAN mod-97, entropy) matches are validated with;
* `detectors`: one regex and validator per way an entity is written;
* `scanner`: finding and redacting in one text, with a cache for resent conversations;
* `walk`: which texts of a request body a model reads (Anthropic, OpenAI, Responses shapes);
* `policy`: the tenant's mode applied to a request, large scans in a process pool within a
  deadline, failing closed.
"""

from tenantgw.gateway.pii.checks import iban_ok, looks_random, luhn_ok, shannon_entropy
from tenantgw.gateway.pii.detectors import ALL_ENTITIES, DETECTORS, Detector, placeholder
from tenantgw.gateway.pii.policy import (
    ScanPool,
    ScanUnavailableError,
    apply_pii_policy,
    apply_pii_policy_async,
    redact_text,
    scan_pool,
    scan_text,
)
from tenantgw.gateway.pii.scanner import Finding, Scanner, scanner_for
from tenantgw.gateway.pii.walk import edit_request_texts, request_texts

__all__ = [
    "ALL_ENTITIES",
    "DETECTORS",
    "Detector",
    "Finding",
    "ScanPool",
    "ScanUnavailableError",
    "Scanner",
    "apply_pii_policy",
    "apply_pii_policy_async",
    "edit_request_texts",
    "iban_ok",
    "looks_random",
    "luhn_ok",
    "placeholder",
    "redact_text",
    "request_texts",
    "scan_pool",
    "scan_text",
    "scanner_for",
    "shannon_entropy",
]
