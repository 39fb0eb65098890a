"""The package layout, found rather than listed: fastcycle/ installs as `fastcycle`, and the top-level
folders kernels/ and export/ install as `fastcycle.kernels` and `fastcycle.export`, so nothing generic
like `kernels` lands in a user's site-packages. Every package below those three folders is found at
build time, so a new subpackage cannot be left out of the wheel. The rest of the metadata is in
pyproject.toml; pyproject alone cannot combine discovery with this folder mapping."""

from setuptools import find_packages, setup

ROOTS = {"fastcycle": "fastcycle", "fastcycle.kernels": "kernels", "fastcycle.export": "export"}

setup(
    package_dir=ROOTS,
    packages=[
        p for name, folder in ROOTS.items() for p in (name, *(f"{name}.{s}" for s in find_packages(folder)))
    ],
)
