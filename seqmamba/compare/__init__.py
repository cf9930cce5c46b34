"""``seqmamba compare``: one backbone shape trained on several tasks (domains) for the
same token budget, with a report and plots of how the domains differ."""
from .config import CompareConfig, CompareTask, load_compare_config, task_experiment
from .results import TaskResult
from .run import CompareResult, compare

__all__ = ["CompareConfig", "CompareResult", "CompareTask", "TaskResult", "compare", "load_compare_config",
           "task_experiment"]
