"""Dashboard components: each has a ``root`` model, a ``source`` (its data) and an
``update(...)``; ``layout``, ``state`` and ``shared`` are the plain helpers they share."""
