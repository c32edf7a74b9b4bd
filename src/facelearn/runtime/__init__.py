"""Process-level plumbing shared by the entry points (``facelearn.train``, ``evaluate``, ``embed``): how many
threads each part of a run may use (``threads``), and how a multi-process run ends (``distributed``)."""
