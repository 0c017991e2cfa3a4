"""shotlab: how well does a pretrained GPT-style LM classify text with 0, 1, k or all labels?"""

__version__ = "0.1.0"


class ShotlabError(ValueError):
    """A mistake a user can fix (config, data, paths); its message is one line saying how."""
