"""Load models from source strings: architectures, weight files, exported archives, captures.

A source string names one model with its options, so that each of two models on one
command line carries its own:

* ``timm:NAME[,key=value...]`` — a timm architecture; options go to ``timm.create_model``.
* ``torchvision:NAME[,key=value...]`` — a torchvision architecture; options go to
  ``torchvision.models.get_model``.
* ``PATH.pt2`` — a ``torch.export`` archive.
* ``PATH.pt`` / ``PATH.pth`` — a capture saved by stitchc (:func:`save_capture`), or a
  pickled whole ``nn.Module`` (only with ``trust_pickle=True``: unpickling runs code).

Option values are parsed as Python literals (``num_classes=10``, ``drop_rate=0.1``,
``pretrained=False``); anything else is kept as a string (``weights=path/to/file.pt``).
The options ``weights=FILE`` (a local state dict: ``.pt``, ``.pth`` or ``.safetensors``)
and ``output=KEY`` (the entry of a mapping output to capture) are stitchc's own.

Weights are random unless a weights file is given: nothing is downloaded. Random timm
models get ``zero_init_last=False`` where the architecture accepts it, because timm
otherwise zeroes the last normalization of every residual block, which makes every
block an identity and the network degenerate.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stitchc.capture import CaptureOptions, CaptureResult, capture, parse_input_shape
from stitchc.errors import InvalidArgumentError, UnsupportedModelError

__all__ = [
    "ModelSource",
    "parse_source",
    "load_model",
    "capture_source",
    "save_capture",
    "CAPTURE_FORMAT",
]

logger = logging.getLogger(__name__)

#: Format tag of the capture files written by :func:`save_capture`.
CAPTURE_FORMAT = "stitchc.capture/1"

_WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin")
_STITCHC_OPTIONS = ("weights", "output")


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """A parsed source string.

    Attributes:
        kind: ``"timm"``, ``"torchvision"``, ``"export"`` (a ``.pt2`` archive) or ``"file"``.
        name: Architecture name, or the file path for file kinds.
        options: Options parsed from the string, in their order.
        text: The source string as given.
    """

    kind: str
    name: str
    options: tuple[tuple[str, Any], ...]
    text: str

    @property
    def weights(self) -> str | None:
        """Path of the local weights file, if the source names one."""
        return dict(self.options).get("weights")

    @property
    def output_key(self) -> str | None:
        """Entry of a mapping output to capture, if the source names one."""
        return dict(self.options).get("output")


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_source(text: str) -> ModelSource:
    """Parse a model source string.

    Raises:
        InvalidArgumentError: the string has no known prefix and names no existing file,
            or an option is not written as ``key=value``.

    Example:
        >>> parse_source("timm:resnet18,num_classes=10,in_chans=1").options
        (('num_classes', 10), ('in_chans', 1))
    """
    prefix, _, rest = text.partition(":")
    if prefix in ("timm", "torchvision") and rest:
        # Split on commas that start a new "key=" so values may contain commas.
        parts = re.split(r",(?=\s*[A-Za-z_]\w*\s*=)", rest)
        name, options = parts[0].strip(), []
        for part in parts[1:]:
            key, separator, value = part.partition("=")
            if not separator:
                raise InvalidArgumentError(f"invalid option {part!r} in model source {text!r}; write key=value")
            options.append((key.strip(), _parse_value(value.strip())))
        if not name:
            raise InvalidArgumentError(f"model source {text!r} names no architecture, e.g. timm:resnet18")
        return ModelSource(prefix, name, tuple(options), text)

    path = Path(text)
    if path.suffix == ".pt2":
        return ModelSource("export", str(path), (), text)
    if path.suffix in (".pt", ".pth"):
        return ModelSource("file", str(path), (), text)
    raise InvalidArgumentError(
        f"unknown model source {text!r}; use timm:NAME, torchvision:NAME, a .pt2 torch.export "
        "archive or a .pt capture saved by stitchc (e.g. timm:resnet18,num_classes=10)"
    )


def load_model(source: str | ModelSource, *, trust_pickle: bool = False) -> nn.Module:
    """Build or load the model that a source string names, in eval mode.

    Raises:
        InvalidArgumentError: an option is unknown to the architecture, or pretrained
            weights are asked for without a local file.
        UnsupportedModelError: the architecture or file cannot be loaded.
        FileNotFoundError: a named file does not exist.
    """
    parsed = parse_source(source) if isinstance(source, str) else source
    if parsed.kind in ("timm", "torchvision"):
        model = _build_architecture(parsed)
        if parsed.weights is not None:
            load_weights(model, parsed.weights)
        return model.eval()
    path = Path(parsed.name)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} not found")
    if parsed.kind == "export":
        return torch.export.load(str(path)).module()
    return _load_torch_file(path, trust_pickle).eval()


def _architecture_factory(parsed: ModelSource):
    if parsed.kind == "timm":
        import timm

        if not timm.is_model(parsed.name):
            raise UnsupportedModelError(
                f"timm has no architecture {parsed.name!r}; list them with "
                "python -c \"import timm; print(timm.list_models())\""
            )
        return lambda **kwargs: timm.create_model(parsed.name, **kwargs)

    import torchvision

    if parsed.name not in torchvision.models.list_models():
        raise UnsupportedModelError(
            f"torchvision has no architecture {parsed.name!r}; list them with "
            "python -c \"import torchvision; print(torchvision.models.list_models())\""
        )
    builder = torchvision.models.get_model_builder(parsed.name)
    # Never download: both the weights and the backbone weights stay random.
    defaults = {"weights": None}
    if "weights_backbone" in inspect.signature(builder).parameters:
        defaults["weights_backbone"] = None
    return lambda **kwargs: builder(**{**defaults, **kwargs})


def _build_architecture(parsed: ModelSource) -> nn.Module:
    options = {key: value for key, value in parsed.options if key not in _STITCHC_OPTIONS}
    if options.get("pretrained") or (parsed.kind == "torchvision" and options.get("weights_backbone")):
        raise InvalidArgumentError(
            f"model source {parsed.text!r} asks for pretrained weights, which cannot be downloaded "
            "here; pass a local file instead: weights=path/to/file.pth (or .safetensors)"
        )
    factory = _architecture_factory(parsed)
    if parsed.kind == "timm" and parsed.weights is None and "zero_init_last" not in options:
        try:
            return factory(**options, zero_init_last=False)
        except TypeError as error:
            if "zero_init_last" not in str(error):
                raise _unknown_option_error(parsed, factory, options, error) from error
    try:
        return factory(**options)
    except TypeError as error:
        raise _unknown_option_error(parsed, factory, options, error) from error


def _unknown_option_error(parsed: ModelSource, factory, options: dict, error: TypeError) -> InvalidArgumentError:
    # The accepted options are the model class's constructor arguments; build the
    # model without options to find its class.
    try:
        model_type = type(factory())
        accepted = [name for name in inspect.signature(model_type.__init__).parameters
                    if name not in ("self", "args", "kwargs")]
    except Exception:  # noqa: BLE001 - only used to improve the message
        accepted = []
    accepted += list(_STITCHC_OPTIONS)
    return InvalidArgumentError(
        f"invalid option for {parsed.kind}:{parsed.name} in {parsed.text!r} ({error}); "
        f"accepted options: {', '.join(accepted)}"
    )


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local state dict (``.pt``, ``.pth``, ``.bin`` or ``.safetensors``) into ``model``.

    Raises:
        FileNotFoundError: the file does not exist.
        InvalidArgumentError: the file is no state dict or its keys or shapes do not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    elif path.suffix in _WEIGHT_SUFFIXES:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
    else:
        raise InvalidArgumentError(
            f"weights file {str(path)!r} has an unknown suffix; use one of {', '.join(_WEIGHT_SUFFIXES)}"
        )
    if not isinstance(state, dict):
        raise InvalidArgumentError(f"weights file {str(path)!r} contains a {type(state).__name__}, not a state dict")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise InvalidArgumentError(
            f"weights file {str(path)!r} does not fit {type(model).__name__}: "
            f"{str(error).splitlines()[0]}; check the architecture and its options (num_classes, in_chans)"
        ) from error


def _load_torch_file(path: Path, trust_pickle: bool) -> nn.Module:
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises UnpicklingError or RuntimeError
        if not trust_pickle:
            raise UnsupportedModelError(
                f"{str(path)!r} is not a stitchc capture or a plain tensor file; if it is a pickled "
                "nn.Module you trust, pass --trust-pickle (unpickling runs arbitrary code)"
            ) from error
        content = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(content, nn.Module):
            raise UnsupportedModelError(f"{str(path)!r} contains a {type(content).__name__}, not an nn.Module")
        logger.warning("loaded pickled module from %s (trusted)", path)
        return content
    if isinstance(content, dict) and content.get("format") == CAPTURE_FORMAT:
        model = load_model(content["source"])
        model.load_state_dict(content["state_dict"], strict=True)
        return model
    raise UnsupportedModelError(
        f"{str(path)!r} contains a state dict without an architecture; name one, e.g. "
        f"timm:resnet18,weights={path}"
    )


def capture_source(source: str, input_shape: tuple[int, ...] | str, *, trust_pickle: bool = False,
                   options: CaptureOptions | None = None) -> CaptureResult:
    """Load the model a source string names and capture it at ``input_shape``."""
    parsed = parse_source(source)
    model = load_model(parsed, trust_pickle=trust_pickle)
    if options is None:
        options = CaptureOptions(output_key=parsed.output_key)
    elif parsed.output_key is not None:
        options = dataclasses.replace(options, output_key=parsed.output_key)
    result = capture(model, parse_input_shape(input_shape), options)
    result.gm.meta["stitchc_source"] = source
    return result


def save_capture(path: str | Path, source: str, model: nn.Module, input_shape: tuple[int, ...]) -> None:
    """Write a capture file: the source string, the input shape and the model's weights.

    The file loads with ``torch.load(weights_only=True)``: it contains no pickled code.
    Loading it as a source rebuilds the architecture from ``source`` and restores the
    weights, so a random-weight model comes back bit-identical.
    """
    parse_source(source)
    state = {key: value.detach().clone() for key, value in model.state_dict().items()}
    torch.save({"format": CAPTURE_FORMAT, "source": source, "input_shape": list(input_shape),
                "state_dict": state}, Path(path))
