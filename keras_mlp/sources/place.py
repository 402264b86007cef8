"""What a place of the dataset search raises when it lacks the set
(`keras_mlp.sources.find` collects the messages into one line)."""


class NotHere(Exception):
    """One place of the search did not have the data; the message says which and why."""


def first_line(error):
    """`"Type: first line of the message"`: an error's cause, short enough for one line."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
