"""The Serving tab: a burst of requests served by transformers' continuous-batching engine, a static batch and one at a time."""
