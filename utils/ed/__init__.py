"""The empathetic-dialogue track (EmpatheticDialogues): notebooks 07-09.

data (read, clean, split) · config (the notebooks' parameters) · eda (07's figures) ·
prompts (instructions and training examples) · predict (classify, respond) ·
evaluate (08/09's metrics, rating items, CSVs) · textmetrics (BLEU, ROUGE, perplexity) ·
rubric (human rating sheets) · chat (``python -m utils.ed.chat``).
"""
