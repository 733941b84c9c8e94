"""importance: weight-importance measures for Keras 3 / TensorFlow models.

Public API::

    import importance as imp

    @imp.register_measure("my_measure")
    def my_measure(model, data, **options): ...   # one array per trainable weight

    imp.available_measures()
    scores = imp.compute_importance("fisher", model, (x, y), labels="exact")
    scores = imp.aggregate(scores, model, level="unit", reduce="mean")
    curve = imp.threshold_sweep(model, scores, (x, y), thresholds=[0, 0.5, 1])
"""

from importance.aggregation import AggregationWarning, aggregate
from importance.measures import (
    available_measures,
    compute_importance,
    get_measure,
    register_measure,
    register_tracker,
    track,
    unregister_measure,
)
from importance.online import Recorder, Tracker
from importance.registry import PluginWarning
from importance.scores import ImportanceError, validate_scores
from importance.thresholding import threshold_sweep

__all__ = [
    "AggregationWarning",
    "ImportanceError",
    "PluginWarning",
    "Recorder",
    "Tracker",
    "aggregate",
    "available_measures",
    "compute_importance",
    "get_measure",
    "register_measure",
    "register_tracker",
    "threshold_sweep",
    "track",
    "unregister_measure",
    "validate_scores",
]

__version__ = "0.1.0"
