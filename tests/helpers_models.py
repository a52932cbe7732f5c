"""Own-model entry points used by tests through ``python:tests.helpers_models:NAME``."""

import torch

from squeezebench.models.bundle import ImagePreprocessing, ModelBundle


class TinyCNN(torch.nn.Module):
    def __init__(self, classes: int = 3):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1))
        self.fc = torch.nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


def tiny_cnn(pretrained: bool = True) -> ModelBundle:
    torch.manual_seed(0)
    return ModelBundle(module=TinyCNN().eval(), source={},
                       image=ImagePreprocessing(resize=32, crop=32, mean=(0.5,) * 3, std=(0.5,) * 3))


def broken(pretrained: bool = True):
    """A model function that crashes, to test that one failing variant does not stop a run."""
    raise RuntimeError("this model is broken on purpose")


def crash_on_load(pretrained: bool = True) -> ModelBundle:
    """Loads fine for the build, then kills the measuring process outright (a hard crash, not an exception)."""
    import os

    if not pretrained:  # the measure phase rebuilds the skeleton with pretrained=False
        os._exit(17)
    return tiny_cnn()
