"""A tiny loss-curve plot for the dock: log10 of the total loss per evaluation (QPainter only)."""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget


class LossPlot(QWidget):
    """Total loss against evaluation, log scale; dashed lines where a coarse-to-fine level starts."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(70)
        self.setMaximumHeight(110)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("Total loss (log scale) per objective evaluation; dashed lines: a new, finer level starts")
        self._values: list[tuple[int, float]] = []
        self._levels: list[int] = []
        self._total = 1

    def clear(self, total: int = 1) -> None:
        self._values, self._levels, self._total = [], [], max(1, int(total))
        self.update()

    def add(self, step: int, total_loss: float, new_level: bool = False) -> None:
        if total_loss > 0 and math.isfinite(total_loss):
            self._values.append((int(step), math.log10(total_loss)))
        if new_level and step > 1:
            self._levels.append(int(step))

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        p = QPainter(self)
        try:
            p.setRenderHint(QPainter.RenderHint.Antialiasing)
            r = self.rect().adjusted(4, 4, -4, -14)
            text = self.palette().color(self.foregroundRole())
            grid = QColor(text)
            grid.setAlpha(60)
            p.setPen(QPen(grid, 1))
            p.drawRect(r)
            if len(self._values) < 2:
                p.setPen(text)
                p.drawText(r, Qt.AlignmentFlag.AlignCenter, "loss curve")
                return
            ys = [v for _, v in self._values]
            lo, hi = min(ys), max(ys)
            if hi - lo < 1e-9:
                lo, hi = lo - 0.5, hi + 0.5

            def pt(step: int, y: float) -> QPointF:
                return QPointF(r.left() + (step - 1) / max(1, self._total - 1) * r.width(),
                               r.bottom() - (y - lo) / (hi - lo) * r.height())

            pen = QPen(grid, 1, Qt.PenStyle.DashLine)
            p.setPen(pen)
            for s in self._levels:
                a, b = pt(s, lo), pt(s, hi)
                p.drawLine(a, b)
            path = QPainterPath(pt(*self._values[0]))
            for s, y in self._values[1:]:
                path.lineTo(pt(s, y))
            p.setPen(QPen(QColor(90, 170, 255), 1.6))
            p.drawPath(path)
            p.setPen(text)
            f = p.font()
            f.setPointSizeF(max(6.0, f.pointSizeF() * 0.8))
            p.setFont(f)
            p.drawText(4, self.height() - 2, f"loss 1e{hi:.1f} ... 1e{lo:.1f}   step {self._values[-1][0]}/{self._total}")
        finally:
            p.end()
