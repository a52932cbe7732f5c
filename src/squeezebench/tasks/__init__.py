"""Tasks and metrics. Importing this package registers every built-in task."""

from squeezebench.tasks.base import TASKS, EvalResult, Task, register_task  # noqa: F401
from squeezebench.tasks import (  # noqa: F401  (registration)
    causal_lm,
    image_classification,
    sentence_embedding,
    speech_recognition,
    text_classification,
    text_generation,
    token_classification,
)
