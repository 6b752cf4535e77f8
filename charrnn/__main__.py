"""`python -m charrnn` runs the command line (also the entry point for torchrun)."""

from charrnn.cli.app import main

if __name__ == "__main__":
    main()
