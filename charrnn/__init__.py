"""charrnn: character-level recurrent language models from the command line and from Python.

    import charrnn
    model = charrnn.load("runs/demo")
    print("".join(model.generate("sharks", length=100, seed=1)))
    run = charrnn.train("configs/tiny.yaml", out="runs/mine")

The API (charrnn.api: `load`, `train`, `Model`, `Score`) is imported on first use, so that
`import charrnn`, `charrnn --version` and `--help` never import torch.
"""

__version__ = "0.1.0"

_API = ("load", "train", "Model", "Score")


def __getattr__(name: str):
    if name in _API:
        from charrnn import api
        return getattr(api, name)
    raise AttributeError(f"module 'charrnn' has no attribute {name!r}")


def __dir__() -> list:
    return sorted([*globals(), *_API])
