"""The HTTP API (FastAPI): thin routes over service functions."""
