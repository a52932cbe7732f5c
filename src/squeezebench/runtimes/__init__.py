"""What runs a variant. Importing this package registers every built-in runtime."""

from squeezebench.runtimes.base import RUNTIMES, Executable, Runtime, load_artifact, register_runtime  # noqa: F401
from squeezebench.runtimes import pytorch  # noqa: F401  (registers the default runtime)
from squeezebench.runtimes import onnxruntime  # noqa: F401  (ONNX Runtime)
from squeezebench.runtimes import openvino, torchscript  # noqa: F401  (OpenVINO, TorchScript; torch-compile registers with its method)
from squeezebench.runtimes import llamacpp  # noqa: F401  (llama.cpp; needs llama-cpp-python only when used)
