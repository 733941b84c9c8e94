"""ROC AUC of every registered measure on the planted tasks' ground truth (the README's table).

For seeds 0-2 of ``planted`` and ``planted_noise``, each measure scores the trained model (from
the task cache) on the first 1,000 training examples; the AUC separates the first kernel's
signal rows (known important) from its nuisance rows (known irrelevant), as in
``tests/tasks/test_tasks_quality.py``. Prints a markdown table:
``python benchmarks/thresholding/planted_auc.py``.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

import importance as imp
import tasks
from tasks import planted

SEEDS = (0, 1, 2)
TASKS = ("planted", "planted_noise")
EXAMPLES = 1000


def first_kernel_aucs() -> dict[tuple[str, str], list[float]]:
    """(measure, task) -> ROC AUC per seed."""
    aucs: dict[tuple[str, str], list[float]] = {}
    for name in TASKS:
        x, y = tasks.get_task(name).train_data()
        for seed in SEEDS:
            run = tasks.trained(name, seed=seed, track=True)
            truth = planted.known_importance(run.model)[0]
            for measure in imp.available_measures():
                options = {"recorder": run.recorder} if imp.get_measure(measure).online else {}
                scores = imp.compute_importance(measure, run.model, (x[:EXAMPLES], y[:EXAMPLES]), **options)
                aucs.setdefault((measure, name), []).append(roc_auc_score(truth.ravel(), scores[0].ravel()))
    return aucs


def table(aucs: dict[tuple[str, str], list[float]]) -> str:
    lines = ["| measure | " + " | ".join(f"`{t}`" for t in TASKS) + " |",
             "| --- |" + " ---: |" * len(TASKS)]
    for measure in sorted({m for m, _ in aucs}):
        cells = [aucs[(measure, t)] for t in TASKS]
        lines.append(f"| `{measure}` | " + " | ".join(
            f"{np.mean(a):.2f} ({min(a):.2f}–{max(a):.2f})" for a in cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(first_kernel_aucs()))
