"""One look per measure across every figure of a run: colour, line style, and emphasis.

A reader matches a line to its legend by colour first and line style second, so a measure must
keep both in every figure of a run, whichever subset of measures a figure draws.
:func:`measure_styles` assigns them once, from every measure in the run's records, best ranked
first: 20 well-separated colours (matplotlib's ``tab20``, dark shades first, then light), then
the same colours again with another dash pattern, so up to 80 measures get a distinct pair. The
baselines (``random``, ``uniform``) are always black and grey, so they read as references.

Emphasis: a figure with many lines draws the measures it is about (the best ranked, and the
baselines) bold and the others thin and faded (:func:`line_kwargs`), so the lines that carry
the message are not lost among the rest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

BASELINE_STYLES = {
    "random": ("#000000", "-"),
    "uniform": ("#7f7f7f", "--"),
}
DASHES = ("-", "--", ":", "-.")
# tab20 reordered: the ten dark shades first, then the ten light ones, so that runs with up to ten
# measures get only strong colours.
_TAB20 = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
    "#17becf", "#393b79", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#dbdb8d", "#9edae5", "#637939",
)


@dataclasses.dataclass(frozen=True)
class LineStyle:
    """How one measure is drawn: ``colour`` (hex) and ``dash`` (a matplotlib line style)."""

    colour: str
    dash: str


def measure_styles(measures: Iterable[str]) -> dict[str, LineStyle]:
    """A fixed :class:`LineStyle` per measure name, in the order given.

    Call it once per run with every measure of the run's records, best ranked first (the
    strongest colours go first), and draw every figure from the result, so the same measure
    has the same look in all of them. Repeated names are styled once.
    """
    styles: dict[str, LineStyle] = {}
    others = [m for m in dict.fromkeys(measures) if m not in BASELINE_STYLES]
    for name, (colour, dash) in BASELINE_STYLES.items():
        styles[name] = LineStyle(colour, dash)
    for i, name in enumerate(others):
        styles[name] = LineStyle(_TAB20[i % len(_TAB20)], DASHES[(i // len(_TAB20)) % len(DASHES)])
    return styles


def line_kwargs(style: LineStyle, *, emphasised: bool) -> dict[str, object]:
    """matplotlib ``plot`` keywords for a line drawn in ``style``, bold or faded."""
    if emphasised:
        return {"color": style.colour, "linestyle": style.dash, "linewidth": 2.0, "alpha": 1.0,
                "zorder": 3}
    return {"color": style.colour, "linestyle": style.dash, "linewidth": 0.9, "alpha": 0.45,
            "zorder": 2}
