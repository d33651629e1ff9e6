"""The activation store: recording a model over a text, and reading what it recorded."""
