"""Imports the modules of the built-in measures; their decorators register them.

The measure registry imports this module the first time it is read (the path an entry-point
plugin takes too). The pruning criteria (obd, snip, grasp, hessian_diag in ``taylor``; lamp,
synflow in ``data_free``; wanda in ``activation``) sit next to the continual-learning measures.
"""

from importance.measures import (  # noqa: F401
    activation,
    basic,
    controls,
    data_free,
    fisher,
    mas,
    taylor,
    trajectory,
)
