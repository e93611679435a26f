"""The spine: request → worker thread → backend → events. See ``generate.py`` for the whole trip."""
