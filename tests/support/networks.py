"""Removing what tests' deployments leave on Docker: the apps' containers and
their per-app networks (norn-<app>).

Docker hands each bridge network a subnet from a small default pool (about 30
of them), so tests must not leave theirs behind.
"""

from pathlib import Path

from tests.support.docker_images import docker


def remove_app_network(app_name: str) -> None:
    """Remove the app's containers, then norn-<app>; fine when they are missing."""
    listed = docker(["ps", "-aq", "--filter", f"label=norn.app={app_name}"], check=False)
    ids = listed.stdout.split() if listed.returncode == 0 else []
    if ids:
        docker(["rm", "-f", *ids], check=False)
    docker(["network", "rm", f"norn-{app_name}"], check=False)


def remove_networks_of_apps_dir(apps_dir: Path) -> None:
    """Remove the network of every app that has a directory in `apps_dir`."""
    if apps_dir.is_dir():
        for child in apps_dir.iterdir():
            if child.is_dir():
                remove_app_network(child.name)
