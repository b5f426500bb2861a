"""Removing the per-app Docker networks (norn-<app>) that tests' deployments create.

Docker hands each bridge network a subnet from a small default pool (about 30
of them), so tests must not leave theirs behind.
"""

from pathlib import Path

from tests.support.docker_images import docker


def remove_app_network(app_name: str) -> None:
    """Remove norn-<app>; fine when it is missing (or still in use: then it stays)."""
    docker(["network", "rm", f"norn-{app_name}"], check=False)


def remove_networks_of_apps_dir(apps_dir: Path) -> None:
    """Remove the network of every app that has a directory in `apps_dir`."""
    if apps_dir.is_dir():
        for child in apps_dir.iterdir():
            if child.is_dir():
                remove_app_network(child.name)
