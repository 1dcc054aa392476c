"""The ``llm`` example: chat completions from a causal language model, scored by reproducing them."""
