"""``python -m sglang.srt.attention_sidecar``: see ``cli.py``."""
import sys

from sglang.srt.attention_sidecar.cli import main

if __name__ == "__main__":
    sys.exit(main())
