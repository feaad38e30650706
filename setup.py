"""Map the repo's component folders onto the `frugal.*` namespace.

The folders `operator/`, `serving/`, `compression/` and `schema/` have no `__init__.py` so that
running Python from the repo root never shadows the standard library's `operator` module; setuptools
maps them to `frugal.operator`, `frugal.serving`, `frugal.compression`, `frugal.schema` (the
artifact files' models, shared by the other three) and `frugal.storage` (file and object-store
locations, shared the same way). `crds/` ships as package data so the local
validator reads the very files the API server gets.
"""

from setuptools import find_namespace_packages, setup

COMPONENTS = {
    "frugal.operator": "operator",
    "frugal.serving": "serving",
    "frugal.compression": "compression",
    "frugal.schema": "schema",
    "frugal.storage": "storage",
    "frugal.operator.crds": "crds",
}

packages: list[str] = []
package_dir: dict[str, str] = {}
for package, folder in COMPONENTS.items():
    packages.append(package)
    package_dir[package] = folder
    if package.endswith(".crds"):
        continue
    for sub in find_namespace_packages(where=folder, exclude=["*__pycache__*"]):
        packages.append(f"{package}.{sub}")

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={package: ["py.typed", "*.yaml", "*.json", "**/*.yaml", "**/*.json"] for package in packages},
)
