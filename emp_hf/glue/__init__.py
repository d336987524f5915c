"""GLUE for the runner: the tasks, their data and metrics (`tasks`), and the Trainer script's pieces (`runner`)."""

from .tasks import (
    TASKS,
    GlueTask,
    _read_split,  # noqa: F401 - the file readers' entry point, used by tests
    compute_glue_metrics,
    get_task,
    glue_metric_values,
    load_files,
    load_local,
    local_split_files,
    main_metric,
    validate_rows,
)

__all__ = [
    "TASKS", "GlueTask", "compute_glue_metrics", "get_task", "glue_metric_values", "load_files", "load_local",
    "local_split_files", "main_metric", "validate_rows",
]
