"""What is measured. Importing this package registers every built-in measure (size, latency, contention, memory,
quality, generation, environment, serving, the collapse and training flags); a new measure is one more module here with ``@register_measure``."""

from squeezebench.measures.base import MEASURES, Column, Measure, MeasureSession, Row, register_measure  # noqa: F401
from squeezebench.measures import (collapse, contention, environment, generation, latency, memory,  # noqa: F401
                                   quality, serving, size, training)  # (registration)
