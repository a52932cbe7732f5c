"""What is measured. Importing this package registers every built-in measure (size, latency, contention, memory,
quality, generation, environment); a new measure is one more module here with ``@register_measure``."""

from squeezebench.measures.base import MEASURES, Column, Measure, MeasureSession, Row, register_measure  # noqa: F401
from squeezebench.measures import (contention, environment, generation, latency, memory, quality,  # noqa: F401
                                   size)  # (registration)
