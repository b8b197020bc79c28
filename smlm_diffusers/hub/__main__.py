"""``python -m smlm_diffusers.hub card | push`` (:mod:`smlm_diffusers.hub.cli`)."""

from .cli import main

if __name__ == "__main__":
    main()
