"""OpenAI-compatible HTTP API (`lmf api`): FastAPI routes over a ChatModel."""
