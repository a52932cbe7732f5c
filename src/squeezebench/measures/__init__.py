"""What is measured. Importing this package registers every built-in measure (size, latency, memory, quality,
environment); a new measure is one more module here with ``@register_measure``."""

from squeezebench.measures.base import MEASURES, Column, Measure, MeasureSession, Row, register_measure  # noqa: F401
from squeezebench.measures import environment, latency, memory, quality, serving, size  # noqa: F401  (registration)
