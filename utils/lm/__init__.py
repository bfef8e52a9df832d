"""Language-model machinery both tracks share: loading, LoRA, training, inference, serving."""
