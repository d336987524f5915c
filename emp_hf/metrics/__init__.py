"""`evaluate` metric modules shipped inside emp-hf, loadable without the Hub.

    import evaluate
    from emp_hf.metrics import GLUE_METRIC
    metric = evaluate.load(GLUE_METRIC, "mrpc")   # a local folder: works with HF_HUB_OFFLINE=1
"""

from pathlib import Path

#: Folder of the GLUE metric module (pass it to `evaluate.load` with a task name as the config).
GLUE_METRIC = str(Path(__file__).resolve().parent / "glue")

__all__ = ["GLUE_METRIC"]
