"""The one path every table of the project takes to text: a pandas DataFrame to Markdown or LaTeX.

Used by the thesis tables (:mod:`deblur.study.report`), ``deblur.evaluate`` and
``deblur.robustness``. Values are formatted per column; a missing value prints as ``—``, never 0.
"""

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
    """A GitHub-flavoured Markdown table of ``frame`` (columns aligned, cells kept as written):
    ``formats`` maps a column to a format spec (``".2f"``, ``"+.2f"``)."""
    formats = formats or {}
    texts = {col: [_text(v, formats.get(col, "")) for v in frame[col]] for col in frame.columns}
    return pd.DataFrame(texts).to_markdown(index=False, disable_numparse=True)


def _text(value: object, spec: str) -> str:
    missing = value is None or (isinstance(value, float) and not math.isfinite(value))
    return MISSING if missing else format(value, spec)


def latex(frame: pd.DataFrame, caption: str, escape_columns: tuple[str, ...] = ()) -> str:
    r"""A booktabs ``table`` of ``frame``: headers and ``escape_columns`` LaTeX-escaped, the other
    cells written as given (they may hold math such as ``$28.10 \pm 0.10$``), and ``caption``
    too (escape its text with :func:`escape_latex`)."""
    style = frame.style.hide(axis="index").format_index(escape="latex", axis=1)
    if escape_columns:
        style = style.format(escape="latex", subset=list(escape_columns))
    columns = "l" + "c" * (frame.shape[1] - 1)
    return style.to_latex(
        hrules=True,
        column_format=columns,
        caption=caption,
        position="ht",
        position_float="centering",
    )
