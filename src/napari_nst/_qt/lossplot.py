"""A tiny loss-curve plot for the dock: the total loss per evaluation on a log axis (QPainter only)."""

from __future__ import annotations

import math
from typing import Any

from qtpy.QtCore import QPointF, QRect, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

#: the colour of the lines where settings changed during the run took effect
MARK_COLOUR = QColor(255, 150, 40)


def readable(value: float) -> str:
    """A loss as a person reads it: ``40``, ``4.5``, ``0.4``, ``0.0035``, ``1234``; an exponent
    only outside 0.001 ... 100000 (``2.5e-05``, ``3e+07``)."""
    v = float(value)
    if v == 0 or not math.isfinite(v):
        return str(v if not math.isfinite(v) else 0)
    if 100 <= abs(v) < 1e5:
        return f"{v:.0f}"
    if 1e-3 <= abs(v) < 100:
        return f"{v:.2g}"
    return f"{v:.1e}".replace(".0e", "e")


def decade_ticks(lo: float, hi: float) -> list[int]:
    """Exponents k with 10**k inside [10**lo, 10**hi] (lo, hi are log10 values)."""
    return list(range(math.ceil(lo - 1e-9), math.floor(hi + 1e-9) + 1))


class LossPlot(QWidget):
    """Total loss against evaluation on a log axis, with a labelled line at each power of ten and
    the highest and lowest loss written out; dashed lines where a coarse-to-fine level starts."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(70)
        self.setMaximumHeight(110)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip(
            "Total loss per objective evaluation, log axis (lines at 0.1, 1, 10 ...); "
            "dashed lines: a new, finer level starts; orange lines: settings changed during the run"
        )
        self._values: list[tuple[int, float]] = []
        self._levels: list[int] = []
        self._marks: list[tuple[int, str]] = []
        self._total = 1

    def clear(self, total: int = 1) -> None:
        self._values, self._levels, self._marks, self._total = [], [], [], max(1, int(total))
        self.update()

    def mark(self, step: int, text: str) -> None:
        """A line at ``step`` where settings changed during the run took effect, ``text`` beside it."""
        self._marks.append((int(step), str(text)))

    @property
    def marks(self) -> list[tuple[int, str]]:
        """The steps marked and their texts."""
        return list(self._marks)

    def add(self, step: int, total_loss: float, new_level: bool = False) -> None:
        if total_loss > 0 and math.isfinite(total_loss):
            self._values.append((int(step), math.log10(total_loss)))
        if new_level and step > 1:
            self._levels.append(int(step))

    def caption(self) -> str:
        """The line under the plot: ``loss 40 → 0.4 (log axis)   step 12/100``."""
        if not self._values:
            return ""
        first, last = 10 ** self._values[0][1], 10 ** self._values[-1][1]
        return f"loss {readable(first)} → {readable(last)} (log axis)   step {self._values[-1][0]}/{self._total}"

    def paintEvent(self, event: object) -> None:  # noqa: N802 - Qt's name
        p = QPainter(self)
        try:
            p.setRenderHint(QPainter.RenderHint.Antialiasing)
            f = p.font()
            f.setPointSizeF(max(6.0, f.pointSizeF() * 0.8))
            p.setFont(f)
            r = self.rect().adjusted(4 + p.fontMetrics().horizontalAdvance("0.001 "), 4, -4, -14)
            text = self.palette().color(self.foregroundRole())
            grid = QColor(text)
            grid.setAlpha(60)
            p.setPen(QPen(grid, 1))
            p.drawRect(r)
            if len(self._values) < 2:
                p.setPen(text)
                p.drawText(r, Qt.AlignmentFlag.AlignCenter, "loss curve")
                return
            self._draw_curve(p, r, text, grid)
            p.setPen(text)
            p.drawText(4, self.height() - 2, self.caption())
        finally:
            p.end()

    def _draw_curve(self, p: QPainter, r: QRect, text: QColor, grid: QColor) -> None:
        ys = [v for _, v in self._values]
        lo, hi = min(ys), max(ys)
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5

        def pt(step: float, y: float) -> QPointF:
            return QPointF(
                r.left() + (step - 1) / max(1, self._total - 1) * r.width(),
                r.bottom() - (y - lo) / (hi - lo) * r.height(),
            )

        p.setPen(QPen(grid, 1, Qt.PenStyle.DashLine))
        for s in self._levels:
            p.drawLine(pt(s, lo), pt(s, hi))
        fm = p.fontMetrics()
        labels: dict[float, float] = {k: 10.0**k for k in decade_ticks(lo, hi)}  # lines at powers of ten ...
        if len(labels) < 2:  # ... and, on a short range, the extremes written out
            labels.update({lo: 10**lo, hi: 10**hi})
        for y, value in sorted(labels.items()):
            at = pt(1, y)
            p.setPen(QPen(grid, 1, Qt.PenStyle.DotLine))
            p.drawLine(at, QPointF(r.right(), at.y()))
            p.setPen(text)
            label = readable(value)
            base = min(max(at.y() + fm.ascent() / 2 - 1, r.top() + fm.ascent() - 2), r.bottom())  # inside the frame
            p.drawText(QPointF(r.left() - fm.horizontalAdvance(label) - 3, base), label)
        path = QPainterPath(pt(*self._values[0]))
        for s, y in self._values[1:]:
            path.lineTo(pt(s, y))
        p.setPen(QPen(QColor(90, 170, 255), 1.6))
        p.drawPath(path)
        self._draw_marks(p, pt, lo, hi, r)

    def _draw_marks(self, p: QPainter, pt: Any, lo: float, hi: float, r: QRect) -> None:
        """Settings changed during the run: a solid line at the step, what changed at its top."""
        fm = p.fontMetrics()
        for step, text in self._marks:
            top, bottom = pt(step, hi), pt(step, lo)
            p.setPen(QPen(MARK_COLOUR, 1.4))
            p.drawLine(top, bottom)
            label = fm.elidedText(text, Qt.TextElideMode.ElideRight, max(20, r.right() - int(top.x()) - 4))
            x = min(top.x() + 3, r.right() - fm.horizontalAdvance(label))
            p.drawText(QPointF(x, r.top() + fm.ascent()), label)
