"""Everything that runs tensors or jobs: stitch training, evaluation, executors, search."""
