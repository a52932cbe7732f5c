"""Result files: schema, atomic writes, migration."""

from squeezebench.results.store import SCHEMA_VERSION, RunFile, iter_records, read_run  # noqa: F401
