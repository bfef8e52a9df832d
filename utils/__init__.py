"""emocause: emotion recognition, emotion-cause pair extraction and empathetic dialogue with LLMs.

Three floors, each importing only from the ones below it:

- ``utils.ecf`` (notebooks 01-06, SemEval-2024 Task 3) and ``utils.ed`` (07-09, EmpatheticDialogues): the two
  tracks, which never import each other;
- ``utils.lm``: what both tracks train and run models with (sources, memory plan, loading, the training
  parameters and trainer, inference, serving);
- the shared ground: ``params`` (notebook parameters), ``env`` and ``bootstrap`` (where a notebook runs),
  ``io`` (atomic writes), ``text`` and ``scores`` (word-cloud words, label scores), ``plots``, ``tables``,
  ``tracking`` (the experiment log), ``progress``; and on top, asking each notebook's config class only,
  ``run`` (the papermill series) and ``docs`` (the rendered pages).
"""

__version__ = "0.1.0"
