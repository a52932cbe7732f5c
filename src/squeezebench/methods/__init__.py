"""Compression methods. Importing this package registers every built-in method."""

from squeezebench.methods.base import (  # noqa: F401
    METHODS,
    ExportResult,
    Method,
    MethodConfig,
    MethodContext,
    chain_spec,
    parse_chain,
    parse_method,
    register_export,
    register_method,
)
from squeezebench.methods import precision  # noqa: F401  (registers original, fp16, bf16)
