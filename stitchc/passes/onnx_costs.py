"""Count the MACs and parameters of an ONNX model from its own graph.

Shapes come from ONNX shape inference after the symbolic batch axis is bound to a
concrete size; where inference cannot resolve an operand of a counted op, the model
is run once on zeros with onnxruntime to read that shape. Per-op formulas follow the conventions of :mod:`stitchc.costs` (one
MAC is one multiply-add; biases, normalization, activations and element-wise ops are
not counted):

* ``Conv``: ``numel(output) * W.shape[1] * prod(kernel)`` (``W`` is ``[c_out, c_in / groups, *kernel]``).
* ``ConvTranspose``: ``numel(input) * W.shape[1] * prod(kernel)``.
* ``Gemm``: ``M * N * K``; ``MatMul``: the broadcast batch times ``n * k * p``, which
  covers attention written as two matrix products.
* ``Attention`` (opset 23): ``batch * heads * L * S * (E + Ev)`` per head dimension,
  the Q·Kᵀ and attention·V products, as :func:`stitchc.costs.sdpa_macs`.

Parameters are the elements of every initializer except the running mean and
variance inputs of ``BatchNormalization``, which are buffers in PyTorch, not parameters.
Scalar and integer initializers (shape constants) are not counted either.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter
from pathlib import Path

import onnx
from onnx import shape_inference

from stitchc.costs import matmul_macs
from stitchc.errors import InvalidArgumentError

__all__ = ["OnnxCosts", "count_onnx"]

logger = logging.getLogger(__name__)

_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
                onnx.TensorProto.BFLOAT16}


@dataclasses.dataclass(frozen=True)
class OnnxCosts:
    """MACs and parameters of one ONNX model at one batch size.

    Attributes:
        macs: Multiply-adds of one forward pass at ``batch_size``.
        params: Parameter elements (see the module docstring for what counts).
        batch_size: The size the symbolic batch axis was bound to.
        macs_by_op: MACs per ONNX op type.
        uncounted_ops: Op types that may cost MACs but have no formula here
            (``Einsum``, for example), so ``macs`` leaves them out.
    """

    macs: int
    params: int
    batch_size: int
    macs_by_op: dict[str, int]
    uncounted_ops: tuple[str, ...]


def count_onnx(model: str | Path | onnx.ModelProto, batch_size: int = 1) -> OnnxCosts:
    """Count the MACs and parameters of an ONNX model.

    Args:
        model: A path to an ``.onnx`` file or a loaded ``ModelProto``.
        batch_size: The size to bind every symbolic first axis of the graph inputs to.

    Raises:
        InvalidArgumentError: the file cannot be read, or a counted op has an input
            whose shape shape inference could not determine.
    """
    if not isinstance(model, onnx.ModelProto):
        try:
            model = onnx.load(str(model))
        except Exception as error:  # noqa: BLE001 - onnx raises DecodeError, OSError and others
            raise InvalidArgumentError(f"cannot read ONNX file {str(model)!r}: {error}") from error
    model = _bind_batch(model, batch_size)
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes = _known_shapes(inferred)
    unknown = _unknown_operands(inferred, shapes)
    if unknown:
        shapes.update(_runtime_shapes(model, unknown))

    macs_by_op: Counter[str] = Counter()
    uncounted: set[str] = set()
    for node in inferred.graph.node:
        macs = _node_macs(node, shapes)
        if macs is None:
            if node.op_type in ("Einsum", "QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger"):
                uncounted.add(node.op_type)
            continue
        macs_by_op[node.op_type] += macs
    if uncounted:
        logger.warning("ONNX ops without a MAC formula were not counted: %s", ", ".join(sorted(uncounted)))
    return OnnxCosts(macs=sum(macs_by_op.values()), params=_count_params(inferred), batch_size=batch_size,
                     macs_by_op=dict(macs_by_op), uncounted_ops=tuple(sorted(uncounted)))


def _bind_batch(model: onnx.ModelProto, batch_size: int) -> onnx.ModelProto:
    bound = onnx.ModelProto()
    bound.CopyFrom(model)
    initializers = {initializer.name for initializer in bound.graph.initializer}
    for graph_input in bound.graph.input:
        if graph_input.name in initializers:
            continue
        dims = graph_input.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = batch_size
    # Drop the exporter's symbolic shapes so inference recomputes every one concretely.
    del bound.graph.value_info[:]
    for graph_output in bound.graph.output:
        graph_output.type.tensor_type.ClearField("shape")
    return bound


def _known_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    shapes = {}
    values = list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output)
    for value in values:
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape"):
            continue
        dims = tensor_type.shape.dim
        if all(dim.HasField("dim_value") for dim in dims):
            shapes[value.name] = tuple(int(dim.dim_value) for dim in dims)
    for initializer in model.graph.initializer:
        shapes[initializer.name] = tuple(int(size) for size in initializer.dims)
    return shapes


_COUNTED_OPERANDS = {"Conv": (1, "out"), "ConvTranspose": (0, 1), "Gemm": (0, 1), "MatMul": (0, 1),
                     "Attention": (0, 1, 2)}


def _unknown_operands(model: onnx.ModelProto, shapes: dict) -> list[str]:
    names = []
    for node in model.graph.node:
        for index in _COUNTED_OPERANDS.get(node.op_type, ()):
            name = node.output[0] if index == "out" else node.input[index]
            if name not in shapes and name not in names:
                names.append(name)
    return names


def _runtime_shapes(model: onnx.ModelProto, names: list[str]) -> dict[str, tuple[int, ...]]:
    """Find shapes that static inference missed by running the model once on zeros.

    Shape inference stops at reshapes whose target shape is computed from the input's
    own (symbolic) shape, as the torch exporter writes ``flatten``; onnxruntime knows
    those shapes once the batch size is bound.
    """
    import numpy as np
    import onnxruntime

    probed = onnx.ModelProto()
    probed.CopyFrom(model)
    for name in names:
        probed.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = onnxruntime.InferenceSession(probed.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {}
    for graph_input in session.get_inputs():
        if not all(isinstance(size, int) for size in graph_input.shape):
            raise InvalidArgumentError(
                f"input {graph_input.name!r} has symbolic axes {graph_input.shape} besides the batch axis; "
                "export the model with static shapes apart from the batch"
            )
        dtype = np.float32 if "float" in graph_input.type else np.int64
        feeds[graph_input.name] = np.zeros(graph_input.shape, dtype=dtype)
    values = session.run(names, feeds)
    logger.debug("onnxruntime supplied %d shapes that shape inference missed", len(names))
    return {name: tuple(int(size) for size in value.shape) for name, value in zip(names, values)}


def _shape(shapes: dict[str, tuple[int, ...]], name: str, node: onnx.NodeProto) -> tuple[int, ...]:
    if name not in shapes:
        raise InvalidArgumentError(
            f"shape inference could not determine the shape of {name!r}, an input of {node.op_type} "
            f"node {node.name!r}; pass a model whose shapes are static apart from the batch axis"
        )
    return shapes[name]


def _attribute(node: onnx.NodeProto, name: str, default):
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def _node_macs(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> int | None:
    op = node.op_type
    if op == "Conv":
        weight = _shape(shapes, node.input[1], node)
        output = _shape(shapes, node.output[0], node)
        return math.prod(output) * weight[1] * math.prod(weight[2:])
    if op == "ConvTranspose":
        weight = _shape(shapes, node.input[1], node)
        data = _shape(shapes, node.input[0], node)
        return math.prod(data) * weight[1] * math.prod(weight[2:])
    if op == "Gemm":
        a = _shape(shapes, node.input[0], node)
        b = _shape(shapes, node.input[1], node)
        rows, inner = (a[1], a[0]) if _attribute(node, "transA", 0) else (a[0], a[1])
        columns = b[0] if _attribute(node, "transB", 0) else b[1]
        return rows * inner * columns
    if op == "MatMul":
        return matmul_macs(_shape(shapes, node.input[0], node), _shape(shapes, node.input[1], node))
    if op == "Attention":
        return _attention_macs(node, shapes)
    return None


def _attention_macs(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> int:
    query = _shape(shapes, node.input[0], node)
    key = _shape(shapes, node.input[1], node)
    value = _shape(shapes, node.input[2], node)
    if len(query) == 4:
        # [batch, heads, length, head size]
        batch, heads, length, embed = query
        return batch * heads * length * key[-2] * (embed + value[-1])
    # 3-D inputs [batch, length, heads * head size]: the head split cancels out.
    batch, length, hidden = query
    return batch * length * key[1] * (hidden + value[-1])


def _count_params(model: onnx.ModelProto) -> int:
    buffers = set()
    for node in model.graph.node:
        if node.op_type == "BatchNormalization":
            buffers.update(node.input[3:5])
    total = 0
    for initializer in model.graph.initializer:
        if initializer.name in buffers or initializer.data_type not in _FLOAT_TYPES:
            continue
        if len(initializer.dims) == 0:
            continue
        total += math.prod(initializer.dims)
    return total

