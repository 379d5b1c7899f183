"""Train the class-agnostic promptable 2D network (bundle ``promptable_2d``) on CPU, and ship it.

The same script as ``promptable_3d`` with ``--dims 2`` (shared design, sampling and simulated
interaction; 2D material from ``build_sources_2d``): plan and rule in docs/PLAN_prompt.md.

Usage: ``nice -n -5 python bundles/promptable_2d/scripts/train.py --minutes 40 --batch 4``
(any option of ``bundles/promptable_3d/scripts/train.py``).
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    script = Path(__file__).resolve().parents[2] / "promptable_3d" / "scripts" / "train.py"
    sys.argv = [str(script), "--dims", "2", *sys.argv[1:]]
    runpy.run_path(str(script), run_name="__main__")
