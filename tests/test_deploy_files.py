"""The deployment files a host reads: docker-compose.yml, Dockerfile, requirements.txt, pyproject's extras.

No Docker engine runs in the test environment, so compose is checked as YAML (PyYAML comes with
``uvicorn[standard]``): health checks that check something real, the read-only config directory instead of
a file bind that Docker would replace with a directory, the HTTPS profile, the same worker command as the
Procfile.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # no stubs in the dev extras

ROOT = Path(__file__).resolve().parents[1]


def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_web_and_worker_have_health_checks_that_check_something_real() -> None:
    services = compose()["services"]
    web = " ".join(services["web"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/readyz" in web and "urlopen" in web
    worker = services["worker"]["healthcheck"]["test"]
    assert worker == ["CMD", "python", "-m", "worker.healthcheck"]
    assert importlib.util.find_spec("worker.healthcheck") is not None


def test_the_rules_come_from_a_read_only_directory_docker_never_creates() -> None:
    services = compose()["services"]
    for name in ("web", "worker", "eventsub"):
        [volume] = services[name]["volumes"]
        assert isinstance(volume, dict), f"{name}: a short-form file bind turns a missing file into a directory"
        assert volume["type"] == "bind" and volume["read_only"] is True
        assert volume["bind"]["create_host_path"] is False
        assert (ROOT / volume["source"]).is_dir()
        assert services[name]["environment"]["REWARDS_FILE"] == f"{volume['target']}/rewards.toml"
        assert not volume["target"].startswith("/app"), "the mount must not hide the image's code"


def test_an_https_profile_puts_caddy_in_front_of_web() -> None:
    data = compose()
    caddy = data["services"]["caddy"]
    assert caddy["profiles"] == ["https"]
    command = caddy["command"][-1]
    assert "caddy reverse-proxy" in command and "--to web:8000" in command
    assert '--from "$${PUBLIC_DOMAIN:?' in command, "the domain comes from the environment, checked at start"
    assert caddy["environment"]["PUBLIC_DOMAIN"] == "${PUBLIC_DOMAIN:-}"
    assert {"80:80", "443:443"} <= set(caddy["ports"])
    assert {"caddy-data", "caddy-config"} <= set(data["volumes"])
    # Compose interpolates every service, profiles or not: a required ${VAR:?} would break plain `up`.
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    assert not re.search(r"(?<!\$)\$\{PUBLIC_DOMAIN:\?", text)


def test_the_compose_worker_and_eventsub_run_the_procfiles_commands() -> None:
    procfile = dict(line.split(":", 1) for line in (ROOT / "Procfile").read_text(encoding="utf-8").splitlines())
    for name in ("worker", "eventsub"):
        assert compose()["services"][name]["command"] == shlex.split(procfile[name])


def test_the_image_runs_as_a_user_that_cannot_rewrite_the_code() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "chown" not in dockerfile, "the code stays root's"
    assert "chmod -R go-w /app" in dockerfile
    lines = [line.strip() for line in dockerfile.splitlines()]
    user_at = lines.index("USER wetbot")
    assert all(not line.startswith(("COPY", "RUN")) for line in lines[user_at:]), "nothing installed as the user"


def test_heroku_style_hosts_find_a_requirements_file_that_installs_the_project() -> None:
    requirements = [
        line.strip()
        for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert requirements == ["."]
    assert (ROOT / ".python-version").read_text(encoding="utf-8").strip() == "3.11"


def test_dev_extras_pin_httpx2_to_its_major_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert "httpx2>=2,<3" in project["optional-dependencies"]["dev"]
