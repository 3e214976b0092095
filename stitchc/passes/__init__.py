"""Graph passes: candidates, matching, building, pruning and cost counting.

Passes are pure graph transformations and solvers: they run no training and no
evaluation, and never mutate their inputs.
"""
