"""The text of a completion in either of TRL's formats: standard (a string) or conversational (a list of messages)."""


def completion_text(completion) -> str:
    """
    The text of one completion, standard (`str`) or conversational (a list of messages).

    Example:
    ```python
    >>> completion_text([{"role": "assistant", "content": "a dog barks"}])
    'a dog barks'

    ```
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        if isinstance(content, list):  # multimodal message parts
            return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
        return content
    raise ValueError(f"completion of type {type(completion).__name__} is neither text nor a list of messages.")
