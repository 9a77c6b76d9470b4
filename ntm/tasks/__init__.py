"""Task registry: a new task is one module here plus one YAML in conf/task/, registered below."""

from ntm.tasks.associative_recall import AssociativeRecallTask
from ntm.tasks.base import Task, TaskConfig
from ntm.tasks.copy import CopyTask
from ntm.tasks.ngram import NGramTask
from ntm.tasks.priority_sort import PrioritySortTask
from ntm.tasks.repeat_copy import RepeatCopyTask

TASKS: dict[str, type[Task]] = {
    "copy": CopyTask,
    "repeat_copy": RepeatCopyTask,
    "associative_recall": AssociativeRecallTask,
    "ngram": NGramTask,
    "priority_sort": PrioritySortTask,
}


def make_task(config: TaskConfig) -> Task:
    return TASKS[config.name](config)


__all__ = ["TASKS", "Task", "TaskConfig", "make_task"]
