"""Stand-in for get-pip.py, for ansible-test's sanity virtualenvs.

ansible-test bootstraps pip in each virtualenv by downloading a get-pip.py
script from a host these machines cannot reach. This script does the same
job from what is here: pip from the standard library's ensurepip, then the
pip version ansible-test asked for, from the package index.
`make sanity` saves it where ansible-test looks for its cached copy.
"""
from __future__ import annotations

import ensurepip
import os
import subprocess
import sys

# get-pip.py options that pip itself does not take
_GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}


def main() -> int:
    ensurepip.bootstrap(upgrade=True)
    # ensurepip points PIP_CONFIG_FILE at /dev/null; the install below needs the machine's pip config.
    env = {k: v for k, v in os.environ.items() if k != "PIP_CONFIG_FILE"}
    args = [arg for arg in sys.argv[1:] if arg not in _GET_PIP_ONLY]
    return subprocess.call([sys.executable, "-m", "pip", "install", *args], env=env)


if __name__ == "__main__":
    sys.exit(main())
