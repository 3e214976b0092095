"""The exception hierarchy of stitchc.

Every error that stitchc raises for bad input or a failed step derives from
:class:`StitchcError`, so a caller (and the CLI) can catch one type. Messages are
single sentences that name the value at fault and say what to do next.
"""

__all__ = [
    "StitchcError",
    "InvalidArgumentError",
    "UnsupportedModelError",
    "CaptureError",
    "ParityError",
    "MatchingError",
    "CyclicGraphError",
    "SolverUnavailableError",
    "InvalidGenotypeError",
    "SupernetFileError",
    "TrainingError",
    "EmitError",
    "DataError",
    "EvaluationError",
    "SearchError",
    "ResumeMismatchError",
]


class StitchcError(Exception):
    """Root of all errors raised by stitchc."""


class InvalidArgumentError(StitchcError, ValueError):
    """An option, a source string or an argument has an invalid value."""


class UnsupportedModelError(StitchcError):
    """A model source names an architecture or file kind that stitchc cannot load."""


class CaptureError(StitchcError):
    """Tracing a module into a torch.fx graph failed."""


class ParityError(CaptureError):
    """A captured graph does not reproduce the original module's output."""


class MatchingError(StitchcError):
    """The matching problem is malformed or could not be solved."""


class CyclicGraphError(MatchingError):
    """A graph given to the matcher already contains a cycle."""


class SolverUnavailableError(MatchingError):
    """The requested solver cannot run here (for example, OR-Tools is not installed)."""


class InvalidGenotypeError(InvalidArgumentError):
    """A genotype has the wrong length or a value outside its position's alphabet."""


class SupernetFileError(StitchcError):
    """A supernetwork file is missing, incomplete or corrupt."""


class TrainingError(StitchcError):
    """Stitch training failed, for example on a non-finite loss."""


class EmitError(StitchcError):
    """Emitting a subnetwork (GraphModule, torch.export archive or ONNX) failed."""


class DataError(InvalidArgumentError):
    """A data source is missing, malformed or does not fit the models."""


class EvaluationError(StitchcError):
    """Evaluating a subnetwork failed."""


class SearchError(StitchcError):
    """A search run could not start or continue."""


class ResumeMismatchError(SearchError):
    """A run directory was made with another supernetwork, layout or options."""
