"""Language-model machinery both tracks share: loading, LoRA, training, inference, serving."""

import logging

# bitsandbytes (0.50) on a CPU with AVX512-BF16 asks the `kernels` package (a transformers dependency) for a CPU
# 4-bit kernel from the hub when it is imported; that is remote code, which stays refused, and bitsandbytes falls
# back to its own kernel, logging a warning that every page would show as a stderr box. Keep that logger quiet.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
