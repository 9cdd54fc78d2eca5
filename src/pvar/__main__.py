"""``python -m pvar``: the command line (also what ``accelerate launch -m pvar train ...`` runs)."""

from pvar.cli import main

if __name__ == "__main__":
    main()
