"""Time the fast and the reference CycleGAN training step; see cyclelib/bench.py (or `cyclelib bench`)."""
from cyclelib.bench import main

if __name__ == "__main__":
    main()
