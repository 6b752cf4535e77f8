"""charrnn: character-level recurrent language models from the command line and from Python.

    import charrnn
    model = charrnn.load("runs/demo")
    print("".join(model.generate("sharks", length=100, seed=1)))
    run = charrnn.train("configs/tiny.yaml", out="runs/mine")

The API (charrnn.api: `load`, `train`, `Model`, `Score`) is imported on first use, so that
`import charrnn`, `charrnn --version` and `--help` never import torch.
"""

import sys
import types

__version__ = "0.1.0"

_API = ("load", "Model", "Score")


def __getattr__(name: str):
    if name in _API:
        from charrnn import api
        return getattr(api, name)
    raise AttributeError(f"module 'charrnn' has no attribute {name!r}")


def __dir__() -> list:
    return sorted([*globals(), *_API, "train"])


class _TrainModule(types.ModuleType):
    """The module charrnn.train (the training loop), which, called, is the API's train():
    `charrnn.train(config_or_path, **overrides)`; `charrnn.train.train` stays the loop's."""

    def __call__(self, config_or_path=None, /, **options):
        from charrnn.api import train
        return train(config_or_path, **options)


class _Package(types.ModuleType):
    """`charrnn.train` names both a submodule and the API's train(): it is always the
    submodule, made callable (the import system's own assignment of it is kept out)."""

    @property
    def train(self) -> types.ModuleType:
        import importlib
        module = importlib.import_module("charrnn.train")
        if not isinstance(module, _TrainModule):
            module.__class__ = _TrainModule
        return module

    @train.setter
    def train(self, module) -> None:
        pass


sys.modules[__name__].__class__ = _Package
