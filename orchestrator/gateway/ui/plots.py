"""A benchmark run's accuracy-against-cost plot as inline SVG, drawn on the server by the same
figure the CLI's plot.png comes from (`orchestrator.bench.report.figure`)."""

from __future__ import annotations

import io
import re
import threading
from typing import Any

from orchestrator.bench.report import figure

_PYPLOT = threading.Lock()  # pyplot's figure manager is process-global: one drawing at a time


def accuracy_cost_svg(results: dict[str, Any]) -> str:
    """The `<svg>` element (no XML prologue, no fixed size: it scales to its container)."""
    import matplotlib.pyplot as plt

    with _PYPLOT:
        fig = figure(results)
        try:
            buf = io.StringIO()
            fig.savefig(buf, format="svg")
        finally:
            plt.close(fig)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    return re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r'<svg\1 width="100%"', svg, count=1)
