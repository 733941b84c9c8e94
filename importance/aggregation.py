"""Aggregation of importance scores to weight, unit or layer level. (Being written.)"""


def aggregate(scores, model, *, level="weight", reduce="mean"):
    raise NotImplementedError("aggregate is being written (issue 2)")
