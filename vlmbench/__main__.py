"""``python -m vlmbench`` (also what ``torchrun`` and ``accelerate launch -m vlmbench`` run)."""

from vlmbench.cli import main

main()
