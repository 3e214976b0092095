"""Emit a pruned subnetwork as a file, verify it, and count the costs of emitted files.

The output path's form picks the format:

* ``.pt2``: a ``torch.export`` archive with a dynamic batch axis. It loads with
  ``torch.export.load`` without unpickling, and its ``.module()`` is a GraphModule.
  This is the safe default.
* ``.pt``: ``torch.save`` of the GraphModule. Like any pickled module it loads only
  with ``torch.load(..., weights_only=False)``, which runs code from the file, so
  load only files you trust.
* a folder (a path ending in ``/`` or without a suffix): ``GraphModule.to_folder``,
  the module's readable Python source plus its weights.
* ``.onnx``: the torch.export-based ONNX exporter (needs ``onnxscript``), one
  self-contained file with a dynamic batch axis, checked against PyTorch with
  onnxruntime at two batch sizes.

Every form carries the provenance map (node and parameter or initializer → ``"A"``,
``"B"``, ``"stitch:K"``): ``stitchc_provenance.json`` inside a ``.pt2`` archive or a
folder, ``NAME.pt.provenance.json`` beside a ``.pt`` file (a pickled GraphModule
drops its ``meta``), and the ``stitchc.provenance``
metadata entry of an ONNX model.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.fx
from torch.utils.flop_counter import FlopCounterMode

from stitchc.errors import EmitError, InvalidArgumentError
from stitchc.ir import total_macs, total_params

__all__ = ["emit_model", "emit_format", "load_emitted", "count_emitted", "PROVENANCE_FILE"]

logger = logging.getLogger(__name__)

#: Name of the provenance entry inside a ``.pt2`` archive or an emitted folder.
PROVENANCE_FILE = "stitchc_provenance.json"
_ONNX_METADATA_KEY = "stitchc.provenance"
_ONNX_SHAPE_KEY = "stitchc.input_shape"
_TOLERANCE = 1e-4
# torch.export specializes an axis of size 1, so the batch axis is traced at this size.
_TRACE_BATCH = 2
_ASSERT_TARGETS = ("_assert_scalar", "_assert_tensor_metadata", "sym_constrain_range_for_size",
                   "sym_constrain_range", "_assert_async")


def emit_format(path: str | Path) -> str:
    """Return ``"pt2"``, ``"pt"``, ``"onnx"`` or ``"folder"`` for an output path.

    Raises:
        InvalidArgumentError: the suffix is none of ``.pt2``, ``.pt``, ``.onnx``.
    """
    text = str(path)
    suffix = Path(text).suffix.lower()
    if text.endswith(("/", "\\")) or suffix == "" or Path(text).is_dir():
        return "folder"
    if suffix in (".pt2", ".pt", ".onnx"):
        return suffix[1:]
    raise InvalidArgumentError(
        f"unknown output format {suffix!r} in {text!r}; use .pt2, .pt, .onnx or a folder path ending in /"
    )


def emit_model(gm: torch.fx.GraphModule, path: str | Path, input_shape: tuple[int, ...] | None = None,
               verify: bool = True) -> dict[str, Any]:
    """Write ``gm`` (a pruned subnetwork) to ``path`` in the format its form names.

    Args:
        gm: A GraphModule from :func:`stitchc.passes.prune.prune_to_genotype`.
        path: Output path; see the module docstring for the formats.
        input_shape: Example input shape; defaults to the shape recorded in ``gm.meta``.
        verify: Load the written file back and compare its output with ``gm``'s at two
            batch sizes (always with onnxruntime for ``.onnx``).

    Returns:
        ``format``, ``path``, ``macs``, ``params``, ``seconds`` and, when verified,
        ``max_abs_diff`` and ``batch_sizes``.

    Raises:
        EmitError: export failed, or the written model differs from ``gm`` by more than
            the tolerance (1e-4 times the output's largest magnitude, at least 1e-4).
    """
    started = time.perf_counter()
    kind = emit_format(path)
    path = Path(path)
    input_shape = tuple(input_shape or gm.meta.get("stitchc_input_shape") or ())
    if not input_shape:
        raise InvalidArgumentError("no input shape is known for this module; pass input_shape")
    gm = copy.deepcopy(gm).eval()
    provenance = gm.meta.get("stitchc_provenance") or {}

    if kind == "pt2":
        _write_pt2(gm, path, input_shape, provenance)
    elif kind == "pt":
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(gm, path)
        # A pickled GraphModule loses its meta, so the provenance goes beside it.
        _sidecar(path).write_text(json.dumps({"input_shape": list(input_shape), **provenance}, indent=1))
    elif kind == "folder":
        gm.to_folder(path, module_name="Subnetwork")
        (path / PROVENANCE_FILE).write_text(json.dumps(
            {"input_shape": list(input_shape), **provenance}, indent=1))
    else:
        provenance = _write_onnx(gm, path, input_shape, provenance)

    result: dict[str, Any] = {"format": kind, "path": str(path), "macs": total_macs(gm),
                              "params": total_params(gm)}
    if verify or kind == "onnx":
        batch_sizes = (1, 3)
        result["max_abs_diff"] = _verify(gm, path, kind, input_shape, batch_sizes)
        result["batch_sizes"] = list(batch_sizes)
    if kind == "onnx":
        result["provenance_initializers"] = len(provenance.get("initializers", {}))
    result["seconds"] = time.perf_counter() - started
    logger.info("emitted %s (%s) in %.2f s", path, kind, result["seconds"])
    return result


def _example(input_shape: tuple[int, ...], batch: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *input_shape[1:]), generator=generator)


def _export(gm: torch.fx.GraphModule, input_shape: tuple[int, ...]) -> torch.export.ExportedProgram:
    batch = torch.export.Dim("batch", min=1)
    try:
        program = torch.export.export(gm, (_example(input_shape, _TRACE_BATCH),), dynamic_shapes=({0: batch},))
    except Exception as error:  # noqa: BLE001 - torch.export raises many error types
        raise EmitError(f"torch.export failed on the subnetwork: {type(error).__name__}: "
                        f"{str(error).splitlines()[0] if str(error) else ''}") from error
    return program


def _write_pt2(gm, path: Path, input_shape, provenance) -> None:
    program = _export(gm, input_shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {PROVENANCE_FILE: json.dumps({"input_shape": list(input_shape), **provenance})}
    torch.export.save(program, str(path), extra_files=extra)


def _remove_assertions(program: torch.export.ExportedProgram) -> int:
    """Erase the runtime shape assertions torch.export adds; return how many were erased."""
    graph = program.graph_module.graph
    removed = 0
    for node in list(graph.nodes):
        name = getattr(node.target, "__name__", str(node.target))
        if node.op == "call_function" and any(target in name for target in _ASSERT_TARGETS) and not node.users:
            graph.erase_node(node)
            removed += 1
    program.graph_module.recompile()
    return removed


def _write_onnx(gm, path: Path, input_shape, provenance) -> dict:
    import onnx

    if importlib.util.find_spec("onnxscript") is None:
        raise EmitError("ONNX export needs the onnxscript package; install it with pip install onnxscript")
    program = _export(gm, input_shape)
    removed = _remove_assertions(program)
    logger.debug("removed %d assertion nodes before ONNX export", removed)
    try:
        onnx_program = torch.onnx.export(program, dynamo=True, optimize=False, verbose=False)
    except Exception as error:  # noqa: BLE001 - the exporter raises many error types
        raise EmitError(f"ONNX export failed: {type(error).__name__}: {str(error).splitlines()[0]}") from error
    model = onnx_program.model_proto
    onnx_provenance = {
        "nodes": provenance.get("nodes", {}),
        "initializers": _initializer_origins(model, provenance.get("parameters", {})),
    }
    entry = model.metadata_props.add()
    entry.key, entry.value = _ONNX_METADATA_KEY, json.dumps(onnx_provenance)
    entry = model.metadata_props.add()
    entry.key, entry.value = _ONNX_SHAPE_KEY, json.dumps(list(input_shape))
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path), save_as_external_data=False)
    return onnx_provenance


def _initializer_origins(model, parameters: dict[str, str]) -> dict[str, str]:
    """Map every initializer to an origin by its name or by the module scope of its consumer.

    A module that is no subnetwork (a plain capture) has no provenance, and the map is empty.
    """
    if not parameters:
        return {}
    origins = {}
    scopes = {}
    for node in model.graph.node:
        scope = next((prop.value for prop in node.metadata_props if prop.key == "pkg.torch.onnx.name_scopes"), "")
        for name in node.input:
            scopes.setdefault(name, scope)
    for initializer in model.graph.initializer:
        name = initializer.name
        origin = parameters.get(name) or _origin_from_scope(scopes.get(name, ""), parameters)
        if origin is None:
            raise EmitError(f"initializer {name!r} of the ONNX model has no known origin; this is a stitchc bug")
        origins[name] = origin
    return origins


def _origin_from_scope(scope: str, parameters: dict[str, str]) -> str | None:
    # The scope lists module paths such as ['', 'a.layer1.0.bn1', 'batch_norm'].
    for part in scope.strip("[]").replace("'", "").split(", "):
        for prefix, origin in (("a.", "A"), ("b.", "B"), ("stitches.", None)):
            if part.startswith(prefix):
                return origin or f"stitch:{part.split('.')[1]}"
    return None


def load_emitted(path: str | Path, *, trust_pickle: bool = False):
    """Load an emitted ``.pt2``, ``.pt`` or folder as a module, or an ``.onnx`` as an onnxruntime session.

    Raises:
        InvalidArgumentError: a ``.pt`` file is loaded without ``trust_pickle=True``.
    """
    kind = emit_format(path)
    if kind == "pt2":
        return torch.export.load(str(path)).module()
    if kind == "pt":
        if not trust_pickle:
            raise InvalidArgumentError(
                f"{str(path)!r} is a pickled GraphModule and loading it runs code from the file; pass "
                "trust_pickle=True (or --trust-pickle) only for files you trust, or emit a .pt2 instead"
            )
        return torch.load(str(path), weights_only=False)
    if kind == "folder":
        return _import_folder(Path(path))
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _import_folder(path: Path) -> torch.nn.Module:
    name = f"stitchc_emitted_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path / "module.py",
                                                  submodule_search_locations=[str(path)])
    if spec is None or spec.loader is None:
        raise EmitError(f"cannot import the emitted folder {str(path)!r}: module.py is missing")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module.Subnetwork().eval()


def _run_loaded(loaded, x: torch.Tensor) -> torch.Tensor:
    if isinstance(loaded, torch.nn.Module):
        with torch.no_grad():
            return loaded(x)
    name = loaded.get_inputs()[0].name
    return torch.from_numpy(loaded.run(None, {name: x.numpy()})[0])


def _verify(gm, path: Path, kind: str, input_shape, batch_sizes) -> float:
    loaded = load_emitted(path, trust_pickle=True)
    worst = 0.0
    for batch in batch_sizes:
        x = _example(input_shape, batch, seed=batch)
        with torch.no_grad():
            expected = gm(x)
        actual = _run_loaded(loaded, x)
        if tuple(actual.shape) != tuple(expected.shape):
            raise EmitError(f"the emitted {kind} model returns shape {tuple(actual.shape)} at batch {batch}, "
                            f"expected {tuple(expected.shape)}")
        diff = float((actual.float() - expected).abs().max())
        tolerance = _TOLERANCE * max(1.0, float(expected.abs().max()))
        if not diff <= tolerance:
            raise EmitError(f"the emitted {kind} model differs from the subnetwork by {diff:.3g} (max abs) at "
                            f"batch {batch}, above the tolerance {tolerance:.3g}")
        worst = max(worst, diff)
    return worst


def count_emitted(path: str | Path, input_shape: tuple[int, ...] | None = None, *,
                  trust_pickle: bool = False) -> dict[str, Any]:
    """Count the MACs and parameters of an emitted ``.pt2``, ``.pt``, folder or any ``.onnx`` model.

    ONNX models are counted from their own graph (:func:`stitchc.passes.onnx_costs.count_onnx`).
    Torch models are run once under ``FlopCounterMode`` (MACs are its FLOPs / 2, the
    convention of :mod:`stitchc.costs`), and their parameters are counted once each.

    Args:
        path: The emitted file or folder.
        input_shape: Input shape, batch first; defaults to the one stored with the model
            (for ONNX, a batch of 1 with the model's own static axes).
        trust_pickle: Allow loading a pickled ``.pt`` file.

    Returns:
        ``{"format", "macs", "params", "input_shape"}``.
    """
    kind = emit_format(path)
    if kind == "onnx":
        from stitchc.passes.onnx_costs import count_onnx
        import onnx

        model = onnx.load(str(path))
        stored = {prop.key: prop.value for prop in model.metadata_props}
        shape = input_shape or tuple(json.loads(stored.get(_ONNX_SHAPE_KEY, "null")) or ())
        costs = count_onnx(model, batch_size=shape[0] if shape else 1)
        return {"format": kind, "macs": costs.macs, "params": costs.params,
                "input_shape": list(shape) if shape else None, "macs_by_op": costs.macs_by_op}

    module = load_emitted(path, trust_pickle=trust_pickle)
    shape = input_shape or _stored_input_shape(path, kind, module)
    if not shape:
        raise InvalidArgumentError(f"no input shape is stored with {str(path)!r}; pass one (--input-shape)")
    x = _example(tuple(shape), shape[0])
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    params = sum(parameter.numel() for parameter in module.parameters())
    return {"format": kind, "macs": counter.get_total_flops() // 2, "params": params, "input_shape": list(shape)}


def _stored_input_shape(path, kind: str, module) -> tuple[int, ...] | None:
    if kind == "pt2":
        extra = {PROVENANCE_FILE: ""}
        torch.export.load(str(path), extra_files=extra)
        return tuple(json.loads(extra[PROVENANCE_FILE] or "{}").get("input_shape") or ()) or None
    if kind == "folder":
        stored = json.loads((Path(path) / PROVENANCE_FILE).read_text())
        return tuple(stored.get("input_shape") or ()) or None
    sidecar = _sidecar(Path(path))
    if sidecar.is_file():
        return tuple(json.loads(sidecar.read_text()).get("input_shape") or ()) or None
    return None


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".provenance.json")
