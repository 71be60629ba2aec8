"""One module per part of the page: the top bar and the Train, Evaluate & Predict, Chat and Export tabs."""

from .chat import create_chat, wire_chat
from .context import ChatHolder, Context
from .eval import create_eval, wire_eval
from .export import create_export, wire_export
from .top import create_top, wire_top
from .train import create_train, wire_train

__all__ = ["ChatHolder", "Context", "create_chat", "create_eval", "create_export", "create_top", "create_train",
           "wire_chat", "wire_eval", "wire_export", "wire_top", "wire_train"]
