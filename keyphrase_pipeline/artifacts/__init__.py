"""What the stages make and serve: the model registry (``registry``: versions, the champion, ``CROSS_LATEST``,
exports) and the published serving versions with their reader (``serving``)."""
