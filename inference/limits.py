"""Every cap the app enforces, in one place, so the UI, the API and the README state the same numbers.

Each cap protects memory or time on a small shared machine (2 CPU cores, one model for everyone).
"""

# Text typed by a user (any tab), before tokenizing.
MAX_TEXT_CHARS = 20_000
# Tokens in one tokenized text; the tokenizer view renders one coloured span per token.
MAX_TOKENIZE_TOKENS = 4_096
# Tokens of a prompt that is run through the model (forward pass, generation).
MAX_PROMPT_TOKENS = 2_048
# Hub ids: `owner/name`, 96 characters each part at most, an optional `@revision`.
MAX_MODEL_ID_CHARS = 200


def describe() -> dict[str, int]:
    """The caps as a plain dict, for the UI and the README."""
    return {
        "max_text_chars": MAX_TEXT_CHARS,
        "max_tokenize_tokens": MAX_TOKENIZE_TOKENS,
        "max_prompt_tokens": MAX_PROMPT_TOKENS,
    }
