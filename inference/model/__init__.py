"""The one place that knows how a Hugging Face causal LM is loaded and built.

    loading    bundled GGUF files, hub ids, local folders -> model and tokenizer (trust_remote_code=False)
    session    ModelSession (model, tokenizer, lock, analysis cache) and the shared sessions
    anatomy    which module plays which part: embedding, decoder layers and their attention / MLP, final
               norm, LM head, positions; the facts the header states
    vocab      readable pieces of token ids, EOS and pad ids
    kv         the KV cache's size: the formula's numbers and the bytes the cache tensors hold
    run        one forward pass (logits_to_keep, a KV cache), the LM head on its own
    hooks      named hook points to read or write during any forward pass

No other module reaches into `model.model.layers`.
"""
