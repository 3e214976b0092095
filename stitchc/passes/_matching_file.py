"""The matching file: a JSON record of a solved matching that later steps rebuild from.

Its keys are a stable interface read by other tools:

``format``
    ``"stitchc-matching/1"``.
``pairs``
    A list of objects with ``a``, ``b`` (stable node names), ``kind`` (stitch kind) and
    ``shape_a``, ``shape_b`` (output shapes, batch first), in A's topological order.
``num_matches``, ``genotype_length``
    The number of pairs m and 2 * m + 1.
``status``, ``objective``, ``objective_kind``, ``upper_bound``, ``gap``, ``solver``, ``seconds``
    From the solve (``status`` is ``"optimal"`` only when proven).
``model_a``, ``model_b``, ``input_shape``
    The model source strings and the shared input shape, enough to capture both again.
``candidates``
    The number of candidate pairs offered to the solver.
``granularity``
    What counted as a layer node, because match counts depend on it.
``components``
    Per independent component: node and candidate counts, objective, bound and method.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

from stitchc.errors import InvalidArgumentError
from stitchc.passes.candidates import Candidate
from stitchc.passes.matching import MatchingResult

__all__ = ["MATCHING_FORMAT", "MatchingRecord", "matching_record", "save_matching", "load_matching"]

MATCHING_FORMAT = "stitchc-matching/1"

_REQUIRED_KEYS = (
    "pairs", "num_matches", "genotype_length", "status", "objective", "upper_bound",
    "solver", "seconds", "model_a", "model_b", "input_shape", "candidates", "granularity",
)


@dataclasses.dataclass(frozen=True)
class MatchingRecord:
    """The content of a matching file; see the module docstring for each key."""

    pairs: tuple[Candidate, ...]
    status: str
    objective: float
    objective_kind: str
    upper_bound: float
    gap: float
    solver: str
    seconds: float
    model_a: str
    model_b: str
    input_shape: tuple[int, ...]
    candidates: int
    granularity: str
    components: tuple[dict, ...] = ()

    @property
    def num_matches(self) -> int:
        """Number of matched pairs."""
        return len(self.pairs)

    @property
    def genotype_length(self) -> int:
        """Length of a genotype of the supernetwork: two switches per match plus the output switch."""
        return 2 * len(self.pairs) + 1

    def to_json(self) -> dict[str, Any]:
        """Return the JSON object written to the matching file."""
        return {
            "format": MATCHING_FORMAT,
            "pairs": [
                {"a": p.a, "b": p.b, "kind": p.kind, "shape_a": list(p.shape_a), "shape_b": list(p.shape_b)}
                for p in self.pairs
            ],
            "num_matches": self.num_matches,
            "genotype_length": self.genotype_length,
            "status": self.status,
            "objective": self.objective,
            "objective_kind": self.objective_kind,
            "upper_bound": self.upper_bound,
            "gap": self.gap,
            "solver": self.solver,
            "seconds": self.seconds,
            "model_a": self.model_a,
            "model_b": self.model_b,
            "input_shape": list(self.input_shape),
            "candidates": self.candidates,
            "granularity": self.granularity,
            "components": list(self.components),
        }


def matching_record(
    result: MatchingResult,
    candidates: Sequence[Candidate],
    *,
    model_a: str,
    model_b: str,
    input_shape: Sequence[int],
    granularity: str,
    objective_kind: str = "count",
) -> MatchingRecord:
    """Combine a solve result with the candidates it chose from into a record."""
    by_pair = {(c.a, c.b): c for c in candidates}
    return MatchingRecord(
        pairs=tuple(by_pair[pair] for pair in result.pairs),
        status=result.status,
        objective=result.objective,
        objective_kind=objective_kind,
        upper_bound=result.upper_bound,
        gap=result.gap,
        solver=result.solver,
        seconds=result.seconds,
        model_a=model_a,
        model_b=model_b,
        input_shape=tuple(input_shape),
        candidates=len(candidates),
        granularity=granularity,
        components=tuple(dataclasses.asdict(s) for s in result.components),
    )


def save_matching(path: str | Path, record: MatchingRecord) -> None:
    """Write ``record`` as indented JSON to ``path``."""
    Path(path).write_text(json.dumps(record.to_json(), indent=2) + "\n")


def load_matching(path: str | Path) -> MatchingRecord:
    """Read a matching file written by :func:`save_matching`.

    Raises:
        InvalidArgumentError: the file is missing, is not JSON, lacks a required key or
            states a count that disagrees with its pairs.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidArgumentError(f"matching file {path} does not exist; write one with `stitchc match`") from None
    except json.JSONDecodeError as error:
        raise InvalidArgumentError(f"matching file {path} is not valid JSON ({error}); write it again with `stitchc match`") from error
    if not isinstance(data, dict):
        raise InvalidArgumentError(f"matching file {path} holds a {type(data).__name__}, expected a JSON object")
    missing = [key for key in _REQUIRED_KEYS if key not in data]
    if missing:
        raise InvalidArgumentError(f"matching file {path} lacks the keys {', '.join(missing)}; write it again with `stitchc match`")
    try:
        pairs = tuple(
            Candidate(p["a"], p["b"], p["kind"], tuple(p["shape_a"]), tuple(p["shape_b"])) for p in data["pairs"]
        )
    except (KeyError, TypeError) as error:
        raise InvalidArgumentError(f"matching file {path} has a malformed pair ({error!r}); each needs a, b, kind, shape_a and shape_b") from error
    if data["num_matches"] != len(pairs) or data["genotype_length"] != 2 * len(pairs) + 1:
        raise InvalidArgumentError(
            f"matching file {path} lists {len(pairs)} pairs but states num_matches {data['num_matches']} "
            f"and genotype_length {data['genotype_length']}; write it again with `stitchc match`"
        )
    return MatchingRecord(
        pairs=pairs,
        status=data["status"],
        objective=data["objective"],
        objective_kind=data.get("objective_kind", "count"),
        upper_bound=data["upper_bound"],
        gap=data.get("gap", 0.0),
        solver=data["solver"],
        seconds=data["seconds"],
        model_a=data["model_a"],
        model_b=data["model_b"],
        input_shape=tuple(data["input_shape"]),
        candidates=data["candidates"],
        granularity=data["granularity"],
        components=tuple(data.get("components", ())),
    )
