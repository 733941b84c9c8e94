"""Built-in importance measures. Importing this package registers them all.

The pruning criteria (obd, snip, grasp, hessian_diag in ``taylor``; lamp, synflow in
``data_free``; wanda in ``activation``) sit next to the continual-learning measures.
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
