"""Browser helpers for the explorer's own checks: contrast, expand-all timing, reaching a row.

Shared by ``tests/test_browser_explorer.py`` and ``benchmarks/bench_browser.py``; the JupyterLab
session itself comes from ``tests/browser_harness.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat

__all__ = [
    "BIG_BLOCKS",
    "BIG_MODEL_CELL",
    "BIG_MODULES",
    "contrast_of_row",
    "reveal",
    "time_expand_all",
    "write_notebook",
]

BIG_BLOCKS = 100  # 100 blocks of 100 Linear(8, 8): 10,101 modules with the containers
BIG_MODULES = BIG_BLOCKS * BIG_BLOCKS + BIG_BLOCKS + 1
BIG_MODEL_CELL = f"""\
import torch
from torch import nn
from freeze_widgets import FreezeExplorer
with torch.device("meta"):  # structure only: 10,101 modules, no memory
    big = nn.Sequential(*[nn.Sequential(*[nn.Linear(8, 8) for _ in range({BIG_BLOCKS})])
                          for _ in range({BIG_BLOCKS})])
big_explorer = FreezeExplorer(big, title="big")
big_explorer
"""

# WCAG 2 contrast of each text part of a row against the background it is drawn on
# (semi-transparent colours blended over what lies below, as the eye sees them).
_CONTRAST_JS = """
(row) => {
  const parse = (c) => {
    const p = c.match(/rgba?\\(([^)]+)\\)/)[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c[3] > 0) layers.push(c);
      if (c[3] >= 1) break;
    }
    let out = [255, 255, 255];
    for (const c of layers.reverse()) out = out.map((v, k) => c[k] * c[3] + v * (1 - c[3]));
    return out;
  };
  const lum = (rgb) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(rgb[0]) + 0.7152 * f(rgb[1]) + 0.0722 * f(rgb[2]);
  };
  const out = {};
  for (const sel of ['.fw-name', '.fw-type', '.fw-row-counts', '.fw-state']) {
    const el = row.querySelector(sel);
    const bg = background(el);
    const fg = parse(getComputedStyle(el).color);
    const seen = fg.slice(0, 3).map((v, k) => v * fg[3] + bg[k] * (1 - fg[3]));
    const [hi, lo] = [lum(seen), lum(bg)].sort((a, b) => b - a);
    out[sel] = { ratio: (hi + 0.05) / (lo + 0.05), color: getComputedStyle(el).color,
                 background: `rgb(${bg.map(Math.round).join(', ')})` };
  }
  return out;
}
"""

_WATCH_EXPAND_JS = """
(tree, expected) => {
  const rec = { click: null, done: null, rendered: null };
  window.__fwExpand = rec;
  const onClick = (event) => {
    if (rec.click === null && event.target.closest('.fw-expand-all')) rec.click = performance.now();
  };
  document.addEventListener('click', onClick, { capture: true });
  const observer = new MutationObserver(() => {
    if (rec.done === null && tree.dataset.rows === String(expected)) {
      observer.disconnect();
      document.removeEventListener('click', onClick, { capture: true });
      // The rows are in the DOM; the next frame is when they can be painted.
      requestAnimationFrame(() => {
        rec.done = performance.now();
        rec.rendered = tree.querySelectorAll('.fw-row').length;
      });
    }
  });
  observer.observe(tree, { attributes: true, attributeFilter: ['data-rows'] });
}
"""


def contrast_of_row(row: Any) -> dict[str, dict[str, Any]]:
    """``{selector: {"ratio", "color", "background"}}`` for the row's name, type and counts."""
    result: dict[str, dict[str, Any]] = row.evaluate(_CONTRAST_JS)
    return result


def time_expand_all(page: Any, explorer: Any, expected_rows: int) -> tuple[float, int]:
    """Click the explorer's "expand all"; (ms from click to rows painted, rows in the DOM)."""
    tree = explorer.locator(".fw-tree").first
    tree.evaluate(_WATCH_EXPAND_JS, expected_rows)
    explorer.locator(".fw-expand-all").first.click()
    page.wait_for_function(
        "() => window.__fwExpand && window.__fwExpand.done !== null", timeout=60_000
    )
    rec = page.evaluate("() => window.__fwExpand")
    return float(rec["done"] - rec["click"]), int(rec["rendered"])


def reveal(explorer: Any, path: str) -> None:
    """Expand the row's ancestors and scroll it into view (tree.js ``el.fwReveal``)."""
    ok = explorer.locator(".fw-tree").first.evaluate(f"(el) => el.fwReveal({path!r})")
    if not ok:
        raise AssertionError(f"row {path!r} is not in the tree")


def write_notebook(folder: Path, name: str, cells: list[str]) -> Path:
    """A notebook with a kernelspec (no kernel dialog) and these code cells."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    path = folder / name
    nbformat.write(nb, str(path))
    return path
