"""GLUE metrics as an `evaluate` module that loads from this folder, offline.

`evaluate.load("glue", ...)` fetches its script from the Hub; this module is the same metric (same
names and values per task: accuracy; F1 for MRPC/QQP; Matthews correlation for CoLA; Pearson and
Spearman for STS-B), computed by emp-hf's tested implementation (scikit-learn, scipy).

    import evaluate
    from emp_hf.metrics import GLUE_METRIC
    metric = evaluate.load(GLUE_METRIC, "mrpc")
    metric.compute(predictions=[0, 1, 1], references=[0, 1, 0])
"""

import datasets
import evaluate
import numpy as np

from emp_hf.glue import TASKS, glue_metric_values

_CITATION = """\
@inproceedings{wang2019glue,
  title={{GLUE}: A Multi-Task Benchmark and Analysis Platform for Natural Language Understanding},
  author={Wang, Alex and Singh, Amanpreet and Michael, Julian and Hill, Felix and Levy, Omer and Bowman, Samuel R.},
  booktitle={International Conference on Learning Representations},
  year={2019}
}
"""
_DESCRIPTION = "GLUE metrics per task (the config name): " + ", ".join(TASKS) + "."
_INPUTS = """
predictions: predicted labels (class ids; scores for stsb).
references: gold labels (class ids; scores for stsb).
Returns accuracy; accuracy and f1 (mrpc, qqp); matthews_correlation (cola); pearson and spearmanr (stsb).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class Glue(evaluate.Metric):
    def _info(self):
        if self.config_name not in TASKS:
            raise KeyError(f"Unknown GLUE task {self.config_name!r}; choose one of: {', '.join(TASKS)}.")
        dtype = "float32" if TASKS[self.config_name].is_regression else "int64"
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS,
            features=datasets.Features({"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}),
            format="numpy",
        )

    def _compute(self, predictions, references):
        return glue_metric_values(TASKS[self.config_name], np.asarray(predictions), np.asarray(references))
