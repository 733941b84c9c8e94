"""Thresholding sweep. (Being written.)"""


def threshold_sweep(model, scores, data, *, thresholds=None, scope="global", replace="noise", seed=0):
    raise NotImplementedError("threshold_sweep is being written (issue 2)")
