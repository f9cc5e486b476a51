"""sfhfe-node: federated online continual learning, one node per machine.

A client node learns test-then-train from its own private stream, uploads only
aggregate insights to a coordinator and gossips expert weights to similar
peers. The coordinator holds no training data at all.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
