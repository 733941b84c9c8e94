"""What each layer family costs the per-example engine on a real architecture (issue 21).

Usage (from the repository root)::

    python -m benchmarks.per_example.profile_families MobileNetV2 [measure] [n] [batch]

Prints one JSON line: the plain compiled gradient pass's process CPU seconds over ``n``
examples, the engine's, their ratio, the path counts, the load average, and per family the CPU
seconds the engine saves when that family's moments are skipped
(:func:`benchmarks.per_example.test_per_example_applications.family_costs`).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from benchmarks.per_example.app_models import MODELS, build
from benchmarks.per_example.test_per_example_applications import (
    MEASURES,
    family_costs,
    over_batches,
    path_counts,
    plain_step,
    timed,
)
from importance.checks import check_choice


def main(argv: list[str]) -> None:
    name = argv[0]
    measure = argv[1] if len(argv) > 1 else "fisher_empirical"
    n = int(argv[2]) if len(argv) > 2 else 32
    batch = int(argv[3]) if len(argv) > 3 else 16
    check_choice("model", name, MODELS)
    check_choice("measure", measure, MEASURES)  # objective() reads anything else as Fisher
    model, data = build(name, n)
    plain = plain_step(model, measure)
    over_batches(plain, data, batch)
    plain_cpu = float(np.median([timed(lambda: over_batches(plain, data, batch))[1]
                                 for _ in range(3)]))
    costs = family_costs(model, data, measure, batch)
    print(json.dumps({
        "model": name, "measure": measure, "examples": n, "batch": batch, "plain_cpu": plain_cpu,
        "ratio": costs["engine_cpu"] / plain_cpu,
        "family_costs": {k: round(v, 3) for k, v in costs.items()},
        "paths": path_counts(model), "load": os.getloadavg()[0],
    }))


if __name__ == "__main__":
    main(sys.argv[1:])
