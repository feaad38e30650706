"""report.png: every variant's metric against latency and against size, chosen ones marked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from frugal.schema.artifact_format import ReportRow


def plot(rows: Sequence[ReportRow], metric: str, path: Path) -> Path:
    """Draw kept variants as dots, dropped as grey crosses, chosen as stars (report.json's rows)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for axis, key, label in (
        (axes[0], "batchMs", "latency at serving batch (ms, median)"),
        (axes[1], "sizeBytes", "size (bytes)"),
    ):
        for row in rows:
            x = row.size_bytes if key == "sizeBytes" else (row.latency.batch_ms if row.latency else None)
            y = row.metric.value if row.metric else None
            if x is None or y is None:
                continue
            style: dict[str, object] = {"marker": "x", "color": "0.6"} if row.status == "dropped" else {"marker": "o"}
            if row.chosen:
                style = {"marker": "*", "color": "tab:red", "s": 160}
            axis.scatter([x], [y], **style)
            axis.annotate(row.name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        axis.set_xlabel(label)
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
    axes[1].set_xscale("log")
    figure.suptitle("frugal compression variants (grey x: dropped, red star: chosen)")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
