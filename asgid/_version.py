import importlib.util

__version__ = "0.1.0"


def build() -> str:
    """How this install runs its hot path: ``compiled`` (mypyc, see setup.py) or not."""
    spec = importlib.util.find_spec("asgid.worker._protocol")
    origin = (spec.origin or "") if spec is not None else ""
    return "pure Python" if origin.endswith(".py") else "compiled"
