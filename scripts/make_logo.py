"""Draw logo.png: three learning curves emerging from noise into clean,
ordered signals — the competition's theme, "from noise to knowledge".

Run from the repository root: python scripts/make_logo.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

OUT = Path("logo.png")
COLORS = ["#f2a541", "#e4572e", "#a600ff"]  # small, medium, large


def main() -> None:
    rng = np.random.default_rng(7)
    fig = plt.figure(figsize=(4, 4), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    ax.add_patch(plt.Circle((0.5, 0.5), 0.49, color="#14112b"))
    x = np.linspace(0.12, 0.88, 240)
    t = (x - 0.12) / 0.76
    for i, color in enumerate(COLORS):
        clean = 0.28 + (0.16 + 0.1 * i) * (1 - np.exp(-4 * t))
        noise = rng.normal(0, 0.05, x.size) * np.exp(-5 * t)  # noise fades as training goes on
        ax.plot(x, clean + noise, color=color, lw=2.6, solid_capstyle="round")
    ax.text(0.5, 0.78, "E2LM", ha="center", va="center", color="white", fontsize=40, fontweight="bold",
            family="DejaVu Sans")
    ax.text(0.5, 0.17, "from noise to knowledge", ha="center", va="center", color="#cfc8ff", fontsize=12,
            family="DejaVu Sans")
    fig.savefig(OUT, transparent=True)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
