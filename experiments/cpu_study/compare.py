"""One sentence per comparison of the CPU-scale study: is a difference of means larger than the
seed-to-seed spread?  python experiments/cpu_study/compare.py runs/cpu_study

A difference counts as "exceeds the spread" when |mean_a - mean_b| > std_a + std_b (the sample
stds over seeds); otherwise it is within noise at this scale.
"""

from __future__ import annotations

import sys

import pandas as pd

from deblur.study.tables import read_runs

PSNR = "val/psnr"


def _stats(frame: pd.DataFrame, **where: str) -> tuple[float, float, int] | None:
    sel = frame
    for key, value in where.items():
        sel = sel[sel[key] == value]
    values = sel[PSNR].dropna()
    if values.empty:
        return None
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0, len(values)


def sentence(name_a: str, a, name_b: str, b) -> str:
    if a is None or b is None:
        return f"- {name_a} vs {name_b}: not both measured."
    diff = a[0] - b[0]
    spread = a[1] + b[1]
    verdict = "exceeds" if abs(diff) > spread else "is within"
    return (
        f"- {name_a} ({a[0]:.3f} ± {a[1]:.3f}, n={a[2]}) vs {name_b} ({b[0]:.3f} ± {b[1]:.3f}, "
        f"n={b[2]}): difference {diff:+.3f} dB {verdict} the seed spread ({spread:.3f})."
    )


def main(paths: list[str]) -> int:
    runs, _ = read_runs(paths)
    gan = runs[(runs["task"] == "gan") & (runs["status"] == "finished")].copy()
    gan["gain"] = gan[PSNR] - gan[f"input {PSNR}"]
    out = ["### Table 4.1 (PSNR, dB)"]
    t41 = gan[gan["experiment"] == "table4_1"]
    none = _stats(t41, loss="none")
    for loss in ("gan", "lsgan", "wgangp", "ragan"):
        for disc in ("single", "patch", "double"):
            out.append(sentence(f"{loss}/{disc}", _stats(t41, loss=loss, disc=disc), "none", none))
    for disc_a, disc_b in (("single", "patch"), ("single", "double"), ("patch", "double")):
        out.append(
            sentence(
                f"disc={disc_a} (all losses)",
                _stats(t41[t41["loss"] != "none"], disc=disc_a),
                f"disc={disc_b}",
                _stats(t41[t41["loss"] != "none"], disc=disc_b),
            )
        )
    inp = t41[f"input {PSNR}"].dropna()
    if not inp.empty:
        worst = t41.groupby(["loss", "disc"])["gain"].mean().min()
        out.append(
            f"- blurred input: {inp.iloc[0]:.3f} dB; the smallest cell gain over it is {worst:+.3f} dB."
        )
    for table, key in (("table4_3", "pretrained"), ("table4_4", "frozen")):
        sub = gan[gan["experiment"] == table]
        if sub.empty:
            continue
        out.append(f"\n### Table {table[5]}.{table[7]} (PSNR, dB)")
        for loss in sorted(sub["loss"].unique()):
            s = sub[sub["loss"] == loss]
            out.append(
                sentence(
                    f"{loss}, {key}=yes",
                    _stats(s, **{key: "yes"}),
                    f"{key}=no",
                    _stats(s, **{key: "no"}),
                )
            )
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
