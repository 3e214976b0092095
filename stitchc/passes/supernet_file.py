"""Supernetwork files: everything later commands need to rebuild a supernetwork.

A file holds the two model sources, the input shape, the matched pairs, the build
options and the weights of both parents and every stitch (random-weight parents
cannot be rebuilt otherwise). It is a ``torch.save`` of plain containers and tensors,
so it loads with ``torch.load(weights_only=True)``: no pickled code. Loading captures
both sources again, rebuilds the same graph (capture and build are deterministic) and
loads the weights, after checking that nothing is missing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from stitchc.errors import InvalidArgumentError, StitchcError, SupernetFileError, UnsupportedModelError
from stitchc.passes.build import BuildOptions, Supernet, insert_stitches

__all__ = ["SUPERNET_FORMAT", "save_supernet", "load_supernet"]

logger = logging.getLogger(__name__)

#: Format tag stored in every supernetwork file.
SUPERNET_FORMAT = "stitchc.supernet/1"

_REQUIRED = ("format", "sources", "input_shape", "matches", "options", "state_dict")


def save_supernet(path: str | Path, supernet: Supernet, extra: dict[str, Any] | None = None) -> None:
    """Write ``supernet`` to ``path``.

    Args:
        path: Output file (``.stitch`` by convention).
        supernet: A supernetwork whose parents were captured from source strings.
        extra: Plain JSON-like values stored under ``"extra"`` (a training report, for example).

    Raises:
        SupernetFileError: a parent's source string is unknown, so the file could not
            be loaded again.
    """
    if any(source is None for source in supernet.sources):
        raise SupernetFileError(
            "a parent of this supernetwork has no source string, so a file could not rebuild it; "
            "capture the parents with stitchc.capture_source() (or save them with stitchc capture -o)"
        )
    state = {key: value.detach().cpu().clone() for key, value in supernet.state_dict().items()}
    content = {
        "format": SUPERNET_FORMAT,
        "sources": list(supernet.sources),
        "input_shape": list(supernet.input_shape),
        "matches": [match.to_json() for match in supernet.matches],
        "options": {"ensemble": supernet.options.ensemble, "seed": supernet.options.seed},
        "state_dict": state,
        "extra": extra or {},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(content, path)
    logger.info("wrote supernetwork file %s (%d matches, %d tensors)", path, len(supernet.matches), len(state))


def read_supernet_file(path: str | Path) -> dict[str, Any]:
    """Load a supernetwork file's content and check its fields, without rebuilding.

    Raises:
        SupernetFileError: the file is missing, is no supernetwork file, or lacks a field.
    """
    path = Path(path)
    if not path.is_file():
        raise SupernetFileError(f"supernetwork file {str(path)!r} not found; write one with stitchc build")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError and others
        raise SupernetFileError(f"{str(path)!r} is not a readable supernetwork file ({type(error).__name__}: "
                                f"{str(error).splitlines()[0] if str(error) else ''})") from error
    if not isinstance(content, dict) or content.get("format") != SUPERNET_FORMAT:
        found = content.get("format") if isinstance(content, dict) else type(content).__name__
        raise SupernetFileError(f"{str(path)!r} is not a supernetwork file (format {found!r}, expected "
                                f"{SUPERNET_FORMAT!r}); write one with stitchc build")
    missing = [field for field in _REQUIRED if field not in content]
    if missing:
        raise SupernetFileError(f"supernetwork file {str(path)!r} lacks {', '.join(missing)}; write it again "
                                "with stitchc build")
    for index, match in enumerate(content["matches"]):
        if not isinstance(match, dict) or not {"a", "b", "kind"} <= set(match):
            raise SupernetFileError(f"match {index} of {str(path)!r} lacks a, b or kind; write it again with "
                                    "stitchc build")
    return content


def load_supernet(path: str | Path) -> Supernet:
    """Rebuild the supernetwork stored in ``path``, weights included.

    Raises:
        SupernetFileError: the file is missing, incomplete (the message names up to
            five missing or unexpected tensors) or corrupt (a tensor of the wrong shape),
            or a parent cannot be captured from its stored source again.
    """
    from stitchc.sources import capture_source

    content = read_supernet_file(path)
    input_shape = tuple(content["input_shape"])
    parents = []
    for label, source in zip("AB", content["sources"]):
        try:
            parents.append(capture_source(source, input_shape).gm)
        except (StitchcError, FileNotFoundError) as error:
            raise SupernetFileError(
                f"parent {label} of {str(path)!r} could not be rebuilt from its source {source!r}: {error}"
            ) from error
    triples = [(match["a"], match["b"], match["kind"]) for match in content["matches"]]
    stored_options = content["options"]
    options = BuildOptions(ensemble=stored_options.get("ensemble", "logits"), seed=stored_options.get("seed", 0))
    try:
        supernet = insert_stitches(parents[0], parents[1], triples, options)
    except (InvalidArgumentError, UnsupportedModelError, StitchcError) as error:
        raise SupernetFileError(f"the matches stored in {str(path)!r} do not fit the rebuilt parents: {error}") from error
    _load_weights(supernet, content["state_dict"], path)
    logger.info("loaded supernetwork %s: %d matches", path, len(supernet.matches))
    return supernet


def _load_weights(supernet: Supernet, state: dict, path) -> None:
    expected = supernet.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors ({', '.join(missing[:5])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors ({', '.join(unexpected[:5])})")
        raise SupernetFileError(f"supernetwork file {str(path)!r} is incomplete: {'; '.join(parts)}; write it "
                                "again with stitchc build")
    corrupt = [key for key, value in expected.items()
               if not isinstance(state[key], torch.Tensor) or tuple(state[key].shape) != tuple(value.shape)]
    if corrupt:
        key = corrupt[0]
        found = tuple(state[key].shape) if isinstance(state[key], torch.Tensor) else type(state[key]).__name__
        raise SupernetFileError(f"supernetwork file {str(path)!r} is corrupt: tensor {key!r} has shape {found}, "
                                f"expected {tuple(expected[key].shape)} ({len(corrupt)} such tensors)")
    supernet.load_state_dict(state, strict=True)
