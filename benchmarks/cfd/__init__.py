"""CFD comparison benchmark: pinngs against analytic solutions and reference CFD (issue 6).

    python benchmarks/cfd/run.py --quick | --full

See benchmarks/cfd/run.py and benchmarks/results/cfd/README.md.
"""
