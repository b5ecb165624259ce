"""labkit: thirty recent machine-learning methods, each small, tested and runnable in seconds.

``import labkit`` is cheap: torch, pandas and plotly load only when a run or a figure needs them.

>>> import labkit
>>> labkit.get_method("rpo").title[:20]
'Provably Mitigating '
"""

from .core.params import PRESETS, Param
from .core.registry import METHODS, available_methods, get_method

__version__ = "0.1.0"


def load(method):
    """The module of a method (by slug, short name or id), e.g. ``labkit.load("rpo").run()``."""
    return get_method(method).load()


def run(method, preset: str = "quick", seed: int = 0, device: str = "auto", **overrides):
    """Run a method by name: ``labkit.run("ensloss", preset="quick", lr=0.003)``."""
    return load(method).run(preset=preset, seed=seed, device=device, **overrides)


__all__ = ["PRESETS", "Param", "METHODS", "available_methods", "get_method", "load", "run", "__version__"]
