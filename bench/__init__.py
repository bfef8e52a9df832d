"""Side-by-side benchmark of the prompt styles: ``python -m bench`` (``--help`` for the options).

One process trains and runs the original MECPE ``per_utterance`` recipe and the project's
``conversation`` default on the same model and the same conversations, for the emotion and the
cause stage, prints markdown tables of the measurements and of their ratios, and writes JSON.
Every number comes from the run itself: nothing is copied from earlier measurements.
"""
