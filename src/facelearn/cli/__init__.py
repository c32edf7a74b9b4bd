"""What the entry points (``facelearn.train``, ``facelearn.evaluate``, ``facelearn.export``, ...) share: the checks
of a composed config that run before any data is read (``schema``: every ``_target_`` node against the signature
it will be called with; ``validate``: cross-option rules, files, checkpoints) and the one-line error wrapper."""
