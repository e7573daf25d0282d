"""The dock's status line: what the run says, never cut.

Three lines tall, so a new message never re-lays out the scrolled panels (each layout pass beside napari's canvas
was an event-loop gap); a longer message scrolls inside it (a scroll bar appears) and its whole text is the
tooltip. It was a fixed-height label that cut its own instructions and the journal path.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFrame, QPlainTextEdit

LINES = 3


class StatusLine:
    """``value`` (get/set) like a magicgui Label; ``native`` the Qt widget."""

    def __init__(self, value: str = ""):
        self.native = w = QPlainTextEdit()
        w.setReadOnly(True)
        w.setFrameShape(QFrame.Shape.NoFrame)
        w.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        w.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        w.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        w.viewport().setAutoFillBackground(False)
        w.setStyleSheet("QPlainTextEdit { background: transparent; }")
        margins = w.contentsMargins()
        w.setFixedHeight(LINES * w.fontMetrics().lineSpacing() + 2 * int(w.document().documentMargin())
                         + margins.top() + margins.bottom() + 8)
        self.value = value

    @property
    def value(self) -> str:
        return self.native.toPlainText()

    @value.setter
    def value(self, text: str) -> None:
        text = str(text)
        if text != self.native.toPlainText():
            self.native.setPlainText(text)
            self.native.setToolTip(text)

    def is_cut(self) -> bool:
        """Whether the message is longer than the lines shown (then it scrolls)."""
        bar = self.native.verticalScrollBar()
        return bar.maximum() > 0
