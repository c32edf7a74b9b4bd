"""Process-level plumbing shared by the entry points (``facelearn.train``, ``evaluate``, ``embed``): how many
threads each part of a run may use (``threads``), the process layout and when a checkpoint may resume on another
(``layout``), checkpoints that survive interruptions (``checkpointing``), default roots and the config resolvers
(``paths``), optional Hydra plugins (``plugins``), and how a multi-process run ends (``distributed``)."""
