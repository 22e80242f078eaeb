"""The ``onnxq`` command the wheel installs: the Rust command line, run in
this process (the same arguments, output and exit codes as the binary)."""

import sys

from . import _onnxq


def main() -> None:
    argv = ["onnxq", *sys.argv[1:]]
    sys.exit(_onnxq.main(argv))


if __name__ == "__main__":
    main()
