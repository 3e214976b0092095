"""Multiply-accumulate (MAC) and parameter counts per fx node.

Conventions, chosen to agree with ``torch.utils.flop_counter.FlopCounterMode`` divided
by two (FlopCounterMode counts a multiply-add as two FLOPs):

* One MAC is one multiplication followed by one addition.
* Counted: convolutions and transposed convolutions (with groups), linear layers,
  matrix products (``matmul``, ``mm``, ``bmm``, ``addmm``, ``baddbmm``, ``einsum``
  lowered by torch to those), ``scaled_dot_product_attention`` (the Q·Kᵀ and the
  attention·V products) and ``nn.MultiheadAttention`` (input projections, both
  products and the output projection).
* Not counted: biases, normalization, activations, pooling, element-wise arithmetic,
  softmax, reshapes. FlopCounterMode leaves them out too.
* Counts depend only on shapes, never on ``requires_grad`` or train/eval mode.

Formulas live in a registry keyed by module type or function, filled by
:func:`register_module_macs` and :func:`register_function_macs`, so users can add a
count for their own layers. A leaf module with no registered formula (a user's custom
block kept whole) is counted by running it once under FlopCounterMode, which the
capture logs.
"""

from __future__ import annotations

import logging
import math
import operator
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "register_module_macs",
    "register_function_macs",
    "module_macs",
    "function_macs",
    "count_with_flop_counter",
    "conv_macs",
    "linear_macs",
    "matmul_macs",
    "sdpa_macs",
]

logger = logging.getLogger(__name__)

ModuleFormula = Callable[[nn.Module, tuple, dict, Any], int]
FunctionFormula = Callable[[tuple, dict, Any], int]

# Registries: a module type (matched along its MRO) or a callable target
# (function or method name) -> formula. Filled once at import time below; users
# may add entries, never replace one.
_MODULE_FORMULAS: dict[type, ModuleFormula] = {}
_FUNCTION_FORMULAS: dict[Any, FunctionFormula] = {}


def register_module_macs(*module_types: type) -> Callable[[ModuleFormula], ModuleFormula]:
    """Register a MAC formula ``f(module, args, kwargs, output) -> int`` for module types.

    Raises:
        ValueError: a formula for one of the types is already registered.
    """

    def decorator(formula: ModuleFormula) -> ModuleFormula:
        for module_type in module_types:
            if module_type in _MODULE_FORMULAS:
                raise ValueError(f"a MAC formula for {module_type.__qualname__} is already registered")
            _MODULE_FORMULAS[module_type] = formula
        return formula

    return decorator


def register_function_macs(*targets: Any) -> Callable[[FunctionFormula], FunctionFormula]:
    """Register a MAC formula ``f(args, kwargs, output) -> int`` for functions or method names.

    A target is a callable (``torch.matmul``) for ``call_function`` nodes or a string
    (``"matmul"``) for ``call_method`` nodes, whose first argument is the tensor itself.

    Raises:
        ValueError: a formula for one of the targets is already registered.
    """

    def decorator(formula: FunctionFormula) -> FunctionFormula:
        for target in targets:
            if target in _FUNCTION_FORMULAS:
                raise ValueError(f"a MAC formula for {target!r} is already registered")
            _FUNCTION_FORMULAS[target] = formula
        return formula

    return decorator


def find_module_formula(module: nn.Module) -> ModuleFormula | None:
    """Return the formula registered for ``module``'s type or its nearest base, or None."""
    for klass in type(module).__mro__:
        if klass in _MODULE_FORMULAS:
            return _MODULE_FORMULAS[klass]
    return None


def module_macs(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> int | None:
    """Return the MACs of one module call, or None when no formula is registered."""
    formula = find_module_formula(module)
    return None if formula is None else int(formula(module, args, kwargs, output))


def function_macs(target: Any, args: tuple, kwargs: dict, output: Any) -> int:
    """Return the MACs of one ``call_function`` or ``call_method`` node (0 if not counted)."""
    formula = _FUNCTION_FORMULAS.get(target)
    return 0 if formula is None else int(formula(args, kwargs, output))


def count_with_flop_counter(module: nn.Module, args: tuple, kwargs: dict) -> int:
    """Count the MACs of one call of ``module`` by running it under FlopCounterMode."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*args, **kwargs)
    return counter.get_total_flops() // 2


# ---------------------------------------------------------------------------
# Formulas.


def conv_macs(weight_shape: tuple[int, ...], output_shape: tuple[int, ...], transposed: bool,
              input_shape: tuple[int, ...]) -> int:
    """Return the MACs of a (transposed) convolution.

    A convolution computes, for each output element, ``c_in / groups * prod(kernel)``
    multiply-adds, so MACs = ``numel(output) * weight.shape[1] * prod(kernel)``
    (``weight`` is ``[c_out, c_in / groups, *kernel]``). A transposed convolution
    scatters every input element into ``weight.shape[1] * prod(kernel)`` outputs
    (``weight`` is ``[c_in, c_out / groups, *kernel]``), so MACs =
    ``numel(input) * weight.shape[1] * prod(kernel)``.
    """
    per_element = weight_shape[1] * math.prod(weight_shape[2:])
    elements = math.prod(input_shape) if transposed else math.prod(output_shape)
    return elements * per_element


def linear_macs(input_shape: tuple[int, ...], out_features: int) -> int:
    """Return the MACs of ``x @ W.T`` for ``x`` of ``[..., in]``: ``numel(x) * out``."""
    return math.prod(input_shape) * out_features


def matmul_macs(a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> int:
    """Return the MACs of ``torch.matmul(a, b)`` with broadcasting.

    1-D operands are promoted as torch does. The result ``[..., n, p]`` costs ``k``
    multiply-adds per element, where ``k`` is the contracted size.
    """
    a = list(a_shape)
    b = list(b_shape)
    if len(a) == 1:
        a = [1] + a
    if len(b) == 1:
        b = b + [1]
    batch = torch.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    return math.prod(batch) * a[-2] * a[-1] * b[-1]


def sdpa_macs(q_shape: tuple[int, ...], k_shape: tuple[int, ...], v_shape: tuple[int, ...]) -> int:
    """Return the MACs of scaled dot-product attention.

    For ``q`` of ``[..., L, E]``, ``k`` of ``[..., S, E]`` and ``v`` of ``[..., S, Ev]``:
    Q·Kᵀ costs ``L * S * E`` and attention·V costs ``L * S * Ev``, per batch element.
    """
    batch = math.prod(torch.broadcast_shapes(tuple(q_shape[:-2]), tuple(k_shape[:-2])))
    length, embed = q_shape[-2], q_shape[-1]
    source = k_shape[-2]
    return batch * length * source * (embed + v_shape[-1])


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(value.shape)


@register_module_macs(nn.Conv1d, nn.Conv2d, nn.Conv3d)
def _conv_module(module, args, kwargs, output) -> int:
    return conv_macs(_shape(module.weight), _shape(output), False, _shape(args[0]))


@register_module_macs(nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
def _conv_transpose_module(module, args, kwargs, output) -> int:
    return conv_macs(_shape(module.weight), _shape(output), True, _shape(args[0]))


@register_module_macs(nn.Linear)
def _linear_module(module, args, kwargs, output) -> int:
    return linear_macs(_shape(args[0]), module.out_features)


@register_module_macs(nn.Bilinear)
def _bilinear_module(module, args, kwargs, output) -> int:
    # out[o] = x1ᵀ W[o] x2: in1 * in2 multiply-adds per output element for W·x2,
    # plus in1 for the outer product with x1. FlopCounterMode has no bilinear rule,
    # so this follows the same convention by hand.
    batch = math.prod(_shape(args[0])[:-1])
    return batch * module.out_features * (module.in1_features * module.in2_features + module.in1_features)


@register_module_macs(nn.MultiheadAttention)
def _multihead_attention_module(module, args, kwargs, output) -> int:
    query, key, value = (kwargs.get(name, args[i] if len(args) > i else None)
                         for i, name in enumerate(("query", "key", "value")))
    if not module.batch_first and query.dim() == 3:
        # [L, N, E] -> count with batch first; the product is the same.
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    if query.dim() == 2:
        query, key, value = (t.unsqueeze(0) for t in (query, key, value))
    batch, length, embed = query.shape
    source = key.shape[1]
    heads = module.num_heads
    head_dim = embed // heads
    projections = batch * (length * embed * embed + source * module.kdim * embed + source * module.vdim * embed)
    attention = batch * heads * length * source * head_dim * 2
    out_projection = batch * length * embed * embed
    return projections + attention + out_projection


@register_function_macs(F.conv1d, F.conv2d, F.conv3d)
def _conv_function(args, kwargs, output) -> int:
    weight = kwargs.get("weight", args[1] if len(args) > 1 else None)
    return conv_macs(_shape(weight), _shape(output), False, _shape(args[0]))


@register_function_macs(F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)
def _conv_transpose_function(args, kwargs, output) -> int:
    weight = kwargs.get("weight", args[1] if len(args) > 1 else None)
    return conv_macs(_shape(weight), _shape(output), True, _shape(args[0]))


@register_function_macs(F.linear)
def _linear_function(args, kwargs, output) -> int:
    weight = kwargs.get("weight", args[1] if len(args) > 1 else None)
    return linear_macs(_shape(args[0]), weight.shape[0])


@register_function_macs(torch.matmul, operator.matmul, torch.mm, torch.bmm, "matmul", "mm", "bmm",
                        "__matmul__")
def _matmul_function(args, kwargs, output) -> int:
    other = kwargs.get("other", kwargs.get("mat2", args[1] if len(args) > 1 else None))
    return matmul_macs(_shape(args[0]), _shape(other))


@register_function_macs(torch.addmm, torch.baddbmm, "addmm", "baddbmm")
def _addmm_function(args, kwargs, output) -> int:
    return matmul_macs(_shape(args[1]), _shape(args[2]))


@register_function_macs(F.scaled_dot_product_attention)
def _sdpa_function(args, kwargs, output) -> int:
    query, key, value = (kwargs.get(name, args[i] if len(args) > i else None)
                         for i, name in enumerate(("query", "key", "value")))
    return sdpa_macs(_shape(query), _shape(key), _shape(value))


@register_function_macs(torch.einsum)
def _einsum_function(args, kwargs, output) -> int:
    # torch lowers einsum to bmm; counting it through FlopCounterMode keeps the
    # two conventions equal without re-deriving torch's contraction order.
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        torch.einsum(*args, **kwargs)
    return counter.get_total_flops() // 2


@register_module_macs(
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
    nn.PReLU,
    nn.Embedding,
)
def _uncounted_module(module, args, kwargs, output) -> int:
    # Normalization (timm's fused norm + activation layers included, as subclasses
    # of BatchNorm2d), PReLU and embedding lookups do no multiply-adds under this
    # convention; registered so that their parameters do not send them to the
    # FlopCounterMode fallback.
    return 0


# ATen overloads, as they appear in graphs from torch.export archives (.pt2 sources).
_aten = torch.ops.aten
register_function_macs(_aten.conv1d.default, _aten.conv2d.default, _aten.conv3d.default)(_conv_function)
register_function_macs(_aten.linear.default)(_linear_function)
register_function_macs(_aten.matmul.default, _aten.mm.default, _aten.bmm.default)(_matmul_function)
register_function_macs(_aten.addmm.default, _aten.baddbmm.default)(_addmm_function)
register_function_macs(_aten.scaled_dot_product_attention.default)(_sdpa_function)


@register_function_macs(_aten.convolution.default)
def _aten_convolution(args, kwargs, output) -> int:
    # aten.convolution(input, weight, bias, stride, padding, dilation, transposed, ...)
    transposed = bool(args[6]) if len(args) > 6 else False
    return conv_macs(_shape(args[1]), _shape(output), transposed, _shape(args[0]))
