"""Runs: check a run before it starts, report it, compare runs, sweep a parameter.

- `preflight`: every checkable mistake fails before training;
- `report`: `metrics.json`, plots and tables of one run;
- `compare`: read finished runs and compare them;
- `selection`: which runs belong in one comparison (one task, one metric);
- `sweep`: `make sweep`, one notebook run per rank, then the comparison.
"""

from gemma_lora.runs import compare
from gemma_lora.runs import preflight
from gemma_lora.runs import report
from gemma_lora.runs import selection
from gemma_lora.runs import sweep
from gemma_lora.runs.report import write_config

__all__ = ["compare", "preflight", "report", "selection", "sweep", "write_config"]
