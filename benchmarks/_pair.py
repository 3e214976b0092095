"""The real stitched pair that the evaluation, supernetwork and search benchmarks share.

The pair comes from ``--supernet PATH`` when given. Otherwise it comes from the demo's
``prepare_pair``, which trains two timm parents on scikit-learn's digits and reuses its
artifacts between runs. Where the demo module is missing, a pair of small random-weight
models is built here instead. The page states which one was used.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from benchmarks._common import Context
from stitchc.runtime.data import DataOptions

__all__ = ["RealPair", "real_pair"]

logger = logging.getLogger(__name__)

#: Parents of the random-weight stand-in pair.
FALLBACK_SOURCES = ("timm:resnet10t,num_classes=10,in_chans=1", "timm:resnet18,num_classes=10,in_chans=1")


@dataclasses.dataclass(frozen=True)
class RealPair:
    """A trained supernetwork file and the data it was trained on.

    Attributes:
        supernet_path: The supernetwork file.
        data: Data source spec for :func:`stitchc.runtime.data.load_data`.
        data_options: The split options the pair was trained with.
        description: One sentence for the results page: where the pair came from.
    """

    supernet_path: Path
    data: str
    data_options: DataOptions
    description: str


def _data_options(fast: bool) -> DataOptions:
    # The same splits as the demo's: its quick mode caps the splits, its full mode keeps all.
    if fast:
        return DataOptions(seed=0, max_train=256, max_val=96, max_test=96)
    return DataOptions(seed=0)


def real_pair(context: Context) -> RealPair:
    """Return the real stitched pair for this run, preparing it first if needed."""
    options = _data_options(context.fast)
    if context.supernet is not None:
        return RealPair(context.supernet, "digits", options,
                        f"the supernetwork file `{context.supernet}` passed with `--supernet`, evaluated on digits")
    try:
        from stitchc.runtime.demo import DemoOptions, prepare_pair
    except ImportError as error:
        logger.warning("the demo module is not importable (%s); building a random-weight stand-in pair", error)
        return _fallback_pair(context, options)

    demo_options = DemoOptions.for_quick() if context.fast else DemoOptions()
    artifacts = prepare_pair(context.work_dir / ("pair-fast" if context.fast else "pair"), demo_options)
    sources = " and ".join(f"`{source.split(',weights=')[0]}`" for source in artifacts.sources)
    description = (f"the demo's pair ({sources}, trained for {demo_options.parent_epochs} epochs on digits at "
                   f"{'x'.join(map(str, demo_options.input_shape))}, stitches trained with least-squares "
                   f"initialization and {demo_options.stitch_epochs} epochs of AdamW)")
    return RealPair(Path(artifacts.supernet_path), artifacts.data, options, description)


def _fallback_pair(context: Context, options: DataOptions) -> RealPair:
    """Build a supernetwork from two random-weight parents and train its stitches briefly."""
    from stitchc import capture_source
    from stitchc.passes.build import insert_stitches
    from stitchc.passes.candidates import find_candidates, to_digraph
    from stitchc.passes.matching import solve_matching
    from stitchc.passes.supernet_file import save_supernet
    from stitchc.runtime.data import load_data
    from stitchc.runtime.train import TrainOptions, train_stitches

    path = context.work_dir / ("fallback-fast.stitch" if context.fast else "fallback.stitch")
    shape = (1, 1, 16, 16) if context.fast else (1, 1, 32, 32)
    description = (f"a stand-in pair of random-weight parents ({FALLBACK_SOURCES[0]} and {FALLBACK_SOURCES[1]}) "
                   "because the demo module was not importable, so accuracies are near chance")
    if path.exists():
        return RealPair(path, "digits", options, description)

    gm_a = capture_source(FALLBACK_SOURCES[0], shape).gm
    gm_b = capture_source(FALLBACK_SOURCES[1], shape).gm
    candidates = find_candidates(gm_a, gm_b)
    result = solve_matching(to_digraph(gm_a), to_digraph(gm_b), candidates)
    by_pair = {(candidate.a, candidate.b): candidate for candidate in candidates}
    supernet = insert_stitches(gm_a, gm_b, [by_pair[tuple(pair)] for pair in result.pairs])
    splits = load_data("digits", shape, options)
    train_stitches(supernet, splits.train, TrainOptions(init="lstsq", samples=256))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_supernet(path, supernet)
    return RealPair(path, "digits", options, description)
