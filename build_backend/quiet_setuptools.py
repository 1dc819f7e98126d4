"""docvlm's build backend: setuptools' own, without the notice it prints on every editable install.

pyproject maps tasks/ and converters/ into the docvlm package, so setuptools installs `pip install -e .` through an
import finder and says so each time ("Editable installation. Please be careful with folders in your working
directory..."): a note about setuptools, not about this install, which pip shows even with -q. Only that notice is
filtered, and only while the editable wheel is built; every other warning passes.
"""

import warnings

from setuptools import build_meta
from setuptools.build_meta import *  # noqa: F403 (the PEP 517 and PEP 660 hooks, unchanged)
from setuptools.warnings import InformationOnly


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    """setuptools' build_editable, less its "Editable installation." notice."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Editable installation", category=InformationOnly)
        return build_meta.build_editable(wheel_directory, config_settings, metadata_directory)
