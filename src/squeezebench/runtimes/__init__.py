"""What runs a variant. Importing this package registers every built-in runtime."""

from squeezebench.runtimes.base import RUNTIMES, Executable, Runtime, load_artifact, register_runtime  # noqa: F401
from squeezebench.runtimes import pytorch  # noqa: F401  (registers the default runtime)
from squeezebench.runtimes import onnxruntime  # noqa: F401  (ONNX Runtime)
from squeezebench.runtimes import openvino, torchscript  # noqa: F401  (OpenVINO, TorchScript)
from squeezebench.runtimes import torch_compile  # noqa: F401  (PyTorch + torch.compile at load)
from squeezebench.runtimes import llamacpp  # noqa: F401  (llama.cpp; needs llama-cpp-python only when used)
from squeezebench.runtimes import ctranslate2  # noqa: F401  (CTranslate2; needs ctranslate2 only when used)
