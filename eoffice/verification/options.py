"""Verification options and their picklable wire form (parent -> worker child)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from asn1crypto import x509

RevocationMode = Literal["require", "soft", "off"]

#: SHA-1 and RSA < 2048 bits are tolerated only for signatures proven older than this.
DEFAULT_WEAK_ALGORITHMS_BEFORE = datetime(2019, 1, 1, tzinfo=UTC)


@dataclass
class VerifyOptions:
    """Settings for one verification run (shared by every file of a batch)."""

    trust_roots: list[x509.Certificate] = field(default_factory=list)
    revocation: RevocationMode = "require"
    time_limit_s: float = 30.0
    memory_limit_mb: int = 1024
    weak_algorithms_before: datetime = DEFAULT_WEAK_ALGORITHMS_BEFORE
    decree30: bool = False

    def to_wire(self) -> dict[str, Any]:
        """Plain-data form that crosses the process boundary cheaply and safely."""
        return {
            "trust_roots": [c.dump() for c in self.trust_roots],
            "revocation": self.revocation,
            "time_limit_s": float(self.time_limit_s),
            "memory_limit_mb": int(self.memory_limit_mb),
            "weak_algorithms_before": self.weak_algorithms_before.isoformat(),
            "decree30": bool(self.decree30),
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> VerifyOptions:
        """Inverse of :meth:`to_wire`."""
        cutoff = datetime.fromisoformat(data["weak_algorithms_before"])
        if cutoff.tzinfo is None:
            cutoff = cutoff.replace(tzinfo=UTC)
        return cls(
            trust_roots=[x509.Certificate.load(b) for b in data["trust_roots"]],
            revocation=data["revocation"],
            time_limit_s=data["time_limit_s"],
            memory_limit_mb=data["memory_limit_mb"],
            weak_algorithms_before=cutoff,
            decree30=data["decree30"],
        )
