"""``optascan serve``: an OpenAI-compatible HTTP API, native endpoints for the flow and models, and a web page."""
