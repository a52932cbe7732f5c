"""squeezebench: what did each compression method really buy, and what did it cost?"""

__version__ = "0.1.0"
