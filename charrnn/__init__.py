"""charrnn: character-level recurrent language models from the command line.

Only the version lives here, so that `charrnn --version` and `--help` never import torch.
"""

__version__ = "0.1.0"
