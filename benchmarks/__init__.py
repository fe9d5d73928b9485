"""dpot's benchmarks (docs/benchmarks.md). Each module is a script, run as ``python benchmarks/<name>.py`` (its own
directory is then ``sys.path[0]``) or ``python -m benchmarks.<name>`` from the repository root; being a package
lets the tests import them as ``benchmarks.<name>`` (pyproject.toml's pytest ``pythonpath`` holds the root). A
module that uses a sibling (``markdown_section``, ``train_step``) imports it the way it was itself imported: from
the package when ``__package__`` is set, else as a top-level module.
"""
