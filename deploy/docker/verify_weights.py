"""Fail the worker image build unless the baked-in model weights match their cards.

An image that silently lacks weights (a build context without `models/weights/`, a Git LFS
pointer instead of the file) would only fail on the first study in the hospital; checking the
sha256 of every registered model at build time moves that failure to the build.

Usage: python verify_weights.py [WEIGHTS_DIR]   (default: the installed registry's folder)
"""

from __future__ import annotations

import sys
from pathlib import Path

from models.registry import list_models, verify, weights_dir


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else None
    folder = weights_dir(root)
    cards = list_models(root)
    if not cards:
        print(f"no model cards in {folder}: the image would have no weights", file=sys.stderr)
        return 1
    failed = 0
    for card in cards:
        try:
            path = verify(card["name"], root)
        except (KeyError, ValueError, OSError, RuntimeError) as error:
            print(f"FAIL {card['name']}: {error}", file=sys.stderr)
            failed += 1
            continue
        print(f"ok   {card['name']} {card.get('version', '?')} {path.name} {card['sha256'][:12]}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
