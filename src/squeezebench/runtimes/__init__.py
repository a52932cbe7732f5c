"""What runs a variant. Importing this package registers every built-in runtime."""

from squeezebench.runtimes.base import RUNTIMES, Executable, Runtime, load_artifact, register_runtime  # noqa: F401
from squeezebench.runtimes import pytorch  # noqa: F401  (registers the default runtime)
