"""The one path of every table to text (thesis tables, evaluate, robustness): a DataFrame to
Markdown or LaTeX, values formatted per column, a missing value as ``—``, never 0."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

MISSING = "—"
_TEX = str.maketrans({c: "\\" + c for c in "&%$#_{}"} | {"~": r"\textasciitilde{}"})


def escape_latex(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (for captions and labels)."""
    return str(text).translate(_TEX)


def markdown(frame: pd.DataFrame, formats: Mapping[str, str] | None = None) -> str:
    """A GitHub Markdown table of ``frame``; ``formats``: column -> format spec (``".2f"``)."""

    def text(value: object, spec: str) -> str:
        missing = value is None or (isinstance(value, float) and not math.isfinite(value))
        return MISSING if missing else format(value, spec)

    formats = formats or {}
    texts = {col: [text(v, formats.get(col, "")) for v in frame[col]] for col in frame.columns}
    return pd.DataFrame(texts).to_markdown(index=False, disable_numparse=True)


def latex(frame: pd.DataFrame, caption: str, escape_columns: tuple[str, ...] = ()) -> str:
    r"""A booktabs ``table``: headers and ``escape_columns`` escaped, other cells and ``caption`` as
    given (math such as ``$28.10 \pm 0.10$``; escape text with :func:`escape_latex`)."""
    style = frame.style.hide(axis="index").format_index(escape="latex", axis=1)
    style = style.format(escape="latex", subset=list(escape_columns))
    return style.to_latex(
        hrules=True,
        column_format="l" + "c" * (frame.shape[1] - 1),
        caption=caption,
        position="ht",
        position_float="centering",
    )
