"""Result files and the typed record schema they hold."""

from squeezebench.results.schema import Record, RunDoc  # noqa: F401
from squeezebench.results.store import SCHEMA_VERSION, RunFile, iter_records, read_run  # noqa: F401
