"""The record of one input reported and skipped (never fatal to the cohort): which source, which file, why."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Skipped:
    """One bad input: the catalog source (or kind), the file, and the error naming the problem."""

    source: str
    file: str
    error: str

    @classmethod
    def of(cls, source: str, path: Any, exc: BaseException) -> Skipped:
        """A skip record from an exception: ``"<ErrorClass>: <message>"``."""
        return cls(source, str(path), f"{type(exc).__name__}: {exc}")

    def to_dict(self) -> dict[str, str]:
        """The JSON / table form (run records, reports, the CLI)."""
        return asdict(self)


def as_dicts(records: list[Skipped]) -> list[dict[str, str]]:
    """Skip records as plain dicts for JSON and tables."""
    return [r.to_dict() for r in records]
