"""Finding and redacting entities in one text, with a cache for the long texts clients resend."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from tenantgw.gateway.pii.detectors import ALL_ENTITIES, DETECTORS, PRIORITY, placeholder
from tenantgw.gateway.pii.normalize import Normalized


@dataclass(frozen=True)
class Finding:
    entity: str
    start: int
    end: int


class Scanner:
    """Finds and redacts a fixed set of entity types; safe to share between requests."""

    CACHE_MIN_CHARS = 512
    CACHE_MAX_CHARS = 32 * 1024 * 1024

    def __init__(self, entities: Iterable[str]) -> None:
        wanted = {entity.upper() for entity in entities}
        unknown = wanted - set(ALL_ENTITIES)
        if unknown:
            raise ValueError(f"unknown PII entities: {', '.join(sorted(unknown))}")
        self.entities = frozenset(wanted)
        self.detectors = tuple(d for d in DETECTORS if d.entity in wanted)
        self._cache: OrderedDict[str, tuple[str, dict[str, int]]] = OrderedDict()
        self._cached_chars = 0
        self._lock = threading.Lock()

    def find(self, text: str) -> list[Finding]:
        """Non-overlapping findings in `text`, in order; overlaps go to the stronger entity.

        The detectors read the text normalized (see `normalize`); the spans are the original's.
        """
        normalized = Normalized(text)
        found: list[tuple[int, int, int, str]] = []
        for detector in self.detectors:
            for span in detector.spans(normalized.text):
                start, end = normalized.span(*span)
                found.append((start, -(end - start), PRIORITY[detector.entity], detector.entity))
        if not found:
            return []
        found.sort(key=lambda f: (f[0], f[2], f[1]))
        result: list[Finding] = []
        for start, negative_length, _, entity in found:
            end = start - negative_length
            if result and start < result[-1].end:
                last = result[-1]
                # keep the earlier match unless this one is stronger and covers it
                if PRIORITY[entity] < PRIORITY[last.entity] and end >= last.end:
                    result[-1] = Finding(entity, min(start, last.start), end)
                continue
            result.append(Finding(entity, start, end))
        return result

    def cached(self, text: str) -> tuple[str, dict[str, int]] | None:
        """What `redact(text)` returned before, if it is remembered."""
        if len(text) < self.CACHE_MIN_CHARS:
            return None
        with self._lock:
            hit = self._cache.get(text)
            if hit is None:
                return None
            self._cache.move_to_end(text)
            return hit[0], dict(hit[1])

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        """`text` with every finding replaced by its placeholder, and the counts per entity."""
        if not text or not self.detectors:
            return text, {}
        hit = self.cached(text)
        if hit is not None:
            return hit
        findings = self.find(text)
        counts: dict[str, int] = {}
        if findings:
            parts: list[str] = []
            position = 0
            for finding in findings:
                parts.append(text[position : finding.start])
                parts.append(placeholder(finding.entity))
                counts[finding.entity] = counts.get(finding.entity, 0) + 1
                position = finding.end
            parts.append(text[position:])
            redacted = "".join(parts)
        else:
            redacted = text
        self.remember(text, redacted, counts)
        return redacted, counts

    def remember(self, text: str, redacted: str, counts: dict[str, int]) -> None:
        """Keep the result of scanning a long text (short ones are not kept)."""
        if len(text) < self.CACHE_MIN_CHARS:
            return
        size = len(text) + (len(redacted) if redacted is not text else 0)
        if size > self.CACHE_MAX_CHARS // 4:
            return
        with self._lock:
            if text in self._cache:
                return
            self._cache[text] = (redacted, dict(counts))
            self._cached_chars += size
            while self._cached_chars > self.CACHE_MAX_CHARS and self._cache:
                old_text, (old_redacted, _) = self._cache.popitem(last=False)
                self._cached_chars -= len(old_text) + (
                    len(old_redacted) if old_redacted is not old_text else 0
                )


_scanners: dict[frozenset[str], Scanner] = {}
_scanners_lock = threading.Lock()


def scanner_for(entities: Iterable[str]) -> Scanner:
    """The shared Scanner of an entity set (an empty set means every entity)."""
    key = frozenset(e.upper() for e in entities) or frozenset(ALL_ENTITIES)
    scanner = _scanners.get(key)
    if scanner is None:
        with _scanners_lock:
            scanner = _scanners.get(key)
            if scanner is None:
                scanner = Scanner(key)
                _scanners[key] = scanner
    return scanner
