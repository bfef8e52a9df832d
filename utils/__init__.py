"""emocause: emotion recognition, emotion-cause pair extraction and empathetic dialogue with LLMs.

Modules are named for what they hold: ``data`` (ECF loading, validation, splits), ``io``
(atomic artifact writes), ``scoring`` (the official SemEval-2024 Task 3 scorer and emotion
metrics), ``baselines``, ``env`` (notebook environment), ``config`` (notebook parameters),
``run`` (the papermill series runner).
"""

__version__ = "0.1.0"
