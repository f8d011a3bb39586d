"""The deployment files agree with the code: Dockerfile, docker-compose.yml, .env.example.

No Docker engine runs where the tests run, so nothing here builds or starts a container. Instead
the files are parsed and every command, port and variable in them is checked against the code it
names (docs/api.md's process commands, `Settings`' fields, the routes), so they cannot rot silently.
"""

from __future__ import annotations

import configparser
import fnmatch
import importlib
import inspect
import json
import re
import shlex
import tomllib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlsplit

import pytest
import yaml
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from app.core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = ROOT / "pyproject.toml"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"

SERVICES = {"postgres", "redis", "migrate", "api", "worker", "deliveries", "proxy"}
APP_SERVICES = ("migrate", "api", "worker", "deliveries")
API_COMMAND = ["uvicorn", "app.main:app"]
WORKER_COMMAND = ["arq", "app.worker.WorkerSettings"]
DELIVERY_WORKER_COMMAND = ["arq", "app.worker.DeliveryWorkerSettings"]
MIGRATE_COMMAND = ["alembic", "upgrade", "head"]
# docs/api.md's environment variables (fixed names).
CONTRACT_VARIABLES = {
    "DATABASE_URL",
    "REDIS_URL",
    "SINCH_PROJECT_ID",
    "SINCH_KEY_ID",
    "SINCH_KEY_SECRET",
    "SINCH_API_BASE_URL",
    "SINCH_AUTH_URL",
    "SINCH_CALLBACK_SECRETS",
    "INTERNAL_API_TOKENS",
    "CALLBACK_MAX_BODY_BYTES",
    "RECONCILE_INTERVAL_SECONDS",
}
# Variables of the postgres image, not of the service.
POSTGRES_VARIABLES = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
# .env.example leaves these blank (Compose refuses to start without the password), so the tests
# resolve the compose file with stand-ins.
STAND_INS = {"POSTGRES_PASSWORD": "stand-in-password"}
# Where .env.example deliberately departs from the code's default, and why.
PRODUCTION_OVERRIDES = {
    "LOG_FORMAT": "json",  # containers log JSON lines; default is auto
    "WORKER_METRICS_HOST": "0.0.0.0",  # scraped from the compose network; default is loopback
}

_INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}"
)
_ENV_LINE = re.compile(r"^(?P<comment>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


# --- parsing -------------------------------------------------------------------------------


def settings_variables() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


def secret_variables() -> set[str]:
    """Fields typed `SecretStr` (alone, optional, or in a list)."""

    def is_secret(annotation: Any) -> bool:
        return annotation is SecretStr or any(is_secret(arg) for arg in get_args(annotation))

    return {
        name.upper() for name, field in Settings.model_fields.items() if is_secret(field.annotation)
    }


@cache
def env_example_lines() -> list[tuple[str, str, bool]]:
    """(name, value, commented out) for every `NAME=value` line of .env.example."""
    found = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = _ENV_LINE.match(line.strip())
        if match:
            found.append((match["name"], match["value"], match["comment"] is not None))
    return found


def env_example() -> dict[str, str]:
    """The variables .env.example sets (not the commented-out ones)."""
    lines = [(name, value) for name, value, commented in env_example_lines() if not commented]
    names = [name for name, _ in lines]
    assert len(names) == len(set(names)), f".env.example sets a variable twice: {names}"
    return dict(lines)


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Compose's interpolation: `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`,
    `${VAR?error}` and `$$`."""

    def replace(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, op, arg = match["name"], match["op"] or "", match["arg"]
        value = variables.get(name)
        if op in (":-", ":?") and value == "":
            value = None
        if value is not None:
            return value
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            raise AssertionError(f"docker-compose.yml requires {name}: {arg}")
        return ""

    return _INTERPOLATION.sub(replace, text)


def compose_references() -> set[str]:
    return {m["name"] for m in _INTERPOLATION.finditer(COMPOSE.read_text()) if m["name"]}


@cache
def raw_compose() -> dict[str, Any]:
    """docker-compose.yml with `${...}` left as written."""
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


@cache
def compose() -> dict[str, Any]:
    """docker-compose.yml as Compose sees it with .env.example as its .env."""
    data: dict[str, Any] = yaml.safe_load(
        interpolate(COMPOSE.read_text(), {**env_example(), **STAND_INS})
    )
    return data


def service(name: str, *, raw: bool = False) -> dict[str, Any]:
    services: dict[str, dict[str, Any]] = (raw_compose() if raw else compose())["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    return services[name]


def command(name: str) -> list[str]:
    value = service(name).get("command")
    assert value, f"service {name!r} has no command"
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


def environment(name: str, *, raw: bool = False) -> dict[str, str]:
    value = service(name, raw=raw).get("environment") or {}
    if isinstance(value, list):  # the `- NAME=value` form
        value = dict(item.split("=", 1) for item in value)
    return {str(key): "" if item is None else str(item) for key, item in value.items()}


def option(argv: list[str], flag: str) -> str:
    assert flag in argv, f"{flag} missing from {argv}"
    return argv[argv.index(flag) + 1]


def healthcheck_port(test: list[str] | str, path: str) -> int:
    text = " ".join(test) if isinstance(test, list) else test
    urls: list[str] = re.findall(r"https?://[^\s'\"]+", text)
    assert len(urls) == 1, f"expected one URL in the healthcheck {text!r}"
    url = urlsplit(urls[0])
    assert url.path == path, f"the healthcheck asks {url.path}, not {path}"
    assert url.port is not None
    return url.port


@cache
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation line"
    return instructions


def dockerfile_args(keyword: str) -> list[str]:
    return [arguments for kw, arguments in dockerfile() if kw == keyword]


def dockerfile_env() -> dict[str, str]:
    values: dict[str, str] = {}
    for arguments in dockerfile_args("ENV"):
        for token in shlex.split(arguments):
            name, _, value = token.partition("=")
            values[name] = value
    return values


def exec_form(arguments: str) -> list[str]:
    parsed = json.loads(arguments)
    assert isinstance(parsed, list), f"not an exec-form command: {arguments}"
    return [str(part) for part in parsed]


# --- Compose: services and their commands ----------------------------------------------------


def test_compose_has_the_services() -> None:
    assert set(compose()["services"]) == SERVICES


def test_app_services_run_the_one_image_built_here() -> None:
    images = {service(name).get("image") for name in APP_SERVICES}
    assert len(images) == 1, f"app services run different images: {images}"
    for name in APP_SERVICES:
        build = service(name).get("build")
        context = build if isinstance(build, str) else (build or {}).get("context")
        assert context in (".", "./"), f"{name} is not built from this repository"


def test_backing_services_have_images_and_healthchecks() -> None:
    assert service("postgres")["image"].split(":")[0] == "postgres"
    assert service("postgres")["image"] == "postgres:16"
    assert "pg_isready" in " ".join(service("postgres")["healthcheck"]["test"])
    assert service("postgres").get("volumes"), "PostgreSQL keeps its data in a volume"
    assert service("redis")["image"] == "redis:7"
    assert service("redis")["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]


def test_api_command_is_the_contract_and_resolves(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    argv = command("api")
    assert argv[:2] == API_COMMAND
    assert option(argv, "--host") == "0.0.0.0"

    module_name, _, attribute = argv[1].partition(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, "create_app", None)), "app.main:create_app is gone"
    assert "settings" in inspect.signature(module.create_app).parameters
    monkeypatch.chdir(tmp_path)  # no local .env: the app builds from defaults
    app = getattr(module, attribute)
    assert isinstance(app, FastAPI)
    # The OpenAPI document lists included routers' routes however FastAPI stores them.
    assert {"/healthz", "/readyz", "/metrics"} <= set(app.openapi()["paths"])


@pytest.mark.parametrize(
    ("name", "expected", "job"),
    [
        ("worker", WORKER_COMMAND, "process_event"),
        ("deliveries", DELIVERY_WORKER_COMMAND, "deliver"),
    ],
)
def test_worker_commands_resolve(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, expected: list[str], job: str
) -> None:
    argv = command(name)
    assert argv == expected

    module_name, _, attribute = argv[1].rpartition(".")
    monkeypatch.chdir(tmp_path)
    worker_settings = getattr(importlib.import_module(module_name), attribute)
    assert inspect.isclass(worker_settings)
    functions = getattr(worker_settings, "functions", None)
    assert functions, "WorkerSettings has no functions"
    names = {getattr(one, "name", getattr(one, "__name__", None)) for one in functions}
    assert job in names
    assert callable(getattr(worker_settings, "on_startup", None))


def test_migrate_runs_alembic_once_before_the_app() -> None:
    assert command("migrate") == MIGRATE_COMMAND
    assert str(service("migrate").get("restart")) == "no"
    assert service("migrate")["depends_on"]["postgres"]["condition"] == "service_healthy"

    ini = ROOT / "alembic.ini"
    assert ini.is_file()
    parser = configparser.ConfigParser(defaults={"here": str(ROOT)})
    parser.read(ini)
    location = parser["alembic"]["script_location"]
    assert (Path(location) / "env.py").is_file()
    assert any((Path(location) / "versions").glob("*.py"))


@pytest.mark.parametrize("name", ["api", "worker", "deliveries"])
def test_app_waits_for_migrations_and_redis(name: str) -> None:
    depends_on = service(name)["depends_on"]
    assert depends_on["migrate"]["condition"] == "service_completed_successfully"
    assert depends_on["redis"]["condition"] == "service_healthy"


# --- ports -----------------------------------------------------------------------------------


def test_api_port_agrees_everywhere() -> None:
    command_port = int(option(command("api"), "--port"))

    # Only the proxy is published; the API is reached through it (see the nginx tests below).
    assert "ports" not in service("api"), "the API must be reached through the proxy only"
    assert [str(item) for item in service("api")["expose"]] == [str(command_port)]

    (exposed,) = dockerfile_args("EXPOSE")
    assert exposed.split("/")[0] == str(command_port)

    (healthcheck,) = dockerfile_args("HEALTHCHECK")
    _, _, check = healthcheck.partition("CMD ")
    assert healthcheck_port(exec_form(check), "/healthz") == command_port


@pytest.mark.parametrize(
    ("name", "field"),
    [("worker", "worker_metrics_port"), ("deliveries", "delivery_worker_metrics_port")],
)
def test_worker_metrics_port_agrees_everywhere(name: str, field: str) -> None:
    port = Settings.model_fields[field].default
    variable = field.upper()
    assert int(env_example()[variable]) == port
    assert int(environment(name)[variable]) == port
    assert [str(item) for item in service(name)["expose"]] == [str(port)]
    assert healthcheck_port(service(name)["healthcheck"]["test"], "/metrics") == port


def test_only_the_api_answers_the_images_healthcheck() -> None:
    # The image's HEALTHCHECK asks the API; the other app containers must replace it.
    assert service("migrate")["healthcheck"] == {"disable": True}
    assert "healthcheck" in service("worker")
    assert "healthcheck" in service("deliveries")


# --- variables -------------------------------------------------------------------------------


def test_settings_read_plain_upper_case_names() -> None:
    assert not Settings.model_config.get("env_prefix")
    assert not Settings.model_config.get("case_sensitive")
    assert all(field.alias is None for field in Settings.model_fields.values())
    assert settings_variables() >= CONTRACT_VARIABLES


@pytest.mark.parametrize("name", APP_SERVICES)
def test_compose_passes_every_setting_and_nothing_else(name: str) -> None:
    assert set(environment(name)) == settings_variables()


def test_compose_passes_variables_through_under_their_own_names() -> None:
    for variable, value in environment("api", raw=True).items():
        if variable in ("DATABASE_URL", "REDIS_URL"):
            continue
        match = _INTERPOLATION.fullmatch(value)
        assert match is not None, f"{variable} is not passed through from .env: {value!r}"
        assert match["name"] == variable, f"{variable} is read from {match['name']}"


def test_compose_variables_are_documented_in_env_example() -> None:
    assert compose_references() <= set(env_example())
    assert compose_references() <= settings_variables() | POSTGRES_VARIABLES


def test_env_example_names_only_real_variables_and_every_setting() -> None:
    mentioned = {name for name, _, _ in env_example_lines()}
    assert mentioned <= settings_variables() | POSTGRES_VARIABLES
    assert settings_variables() <= mentioned
    assert set(env_example()) >= POSTGRES_VARIABLES


def test_env_example_comments_every_variable() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    for number, line in enumerate(lines):
        match = _ENV_LINE.match(line)
        if match and not match["comment"]:
            assert lines[number - 1].startswith("#"), f"{match['name']} has no comment above it"


def test_env_example_holds_no_secret() -> None:
    values = env_example()
    for name in secret_variables() | {"POSTGRES_PASSWORD"}:
        assert values.get(name, "") == "", f".env.example must leave {name} blank"


def test_env_example_is_valid_and_says_the_defaults() -> None:
    values = {name: value for name, value in env_example().items() if name in settings_variables()}
    given: dict[str, Any] = {name.lower(): value for name, value in values.items()}
    settings = Settings(_env_file=None, **given)
    defaults = Settings(_env_file=None)
    for name in values:
        field = name.lower()
        if name in PRODUCTION_OVERRIDES:
            assert values[name] == PRODUCTION_OVERRIDES[name]
        elif name not in secret_variables() and values[name]:
            assert getattr(settings, field) == getattr(defaults, field), (
                f".env.example's {name} is not the code's default"
            )


def test_database_url_is_postgres_service_with_asyncpg() -> None:
    url = make_url(environment("api")["DATABASE_URL"])
    postgres = environment("postgres")
    assert url.drivername == "postgresql+asyncpg"
    assert url.host == "postgres"
    assert "postgres" in SERVICES
    assert url.port in (None, 5432)
    assert url.username == postgres["POSTGRES_USER"]
    assert url.password == postgres["POSTGRES_PASSWORD"] == STAND_INS["POSTGRES_PASSWORD"]
    assert url.database == postgres["POSTGRES_DB"]


def test_redis_url_is_redis_service() -> None:
    url = urlsplit(environment("api")["REDIS_URL"])
    assert url.scheme == "redis"
    assert url.hostname == "redis"
    assert "redis" in SERVICES
    assert url.port in (None, 6379)


def test_image_defaults_survive_compose() -> None:
    # Compose sets every setting; an empty one counts as unset, which would undo the image's ENV.
    # So with a .env that leaves the variable out, compose's own default must be the image's.
    bare_env = yaml.safe_load(interpolate(COMPOSE.read_text(), STAND_INS))
    bare_api_env = bare_env["services"]["api"]["environment"]
    for name, value in dockerfile_env().items():
        if name in settings_variables():
            assert environment("api")[name] == value, f"compose overrides the image's {name}"
            assert str(bare_api_env[name]) == value, f"without {name} in .env compose drops it"


# --- Dockerfile --------------------------------------------------------------------------------


def test_dockerfile_base_user_and_workdir() -> None:
    (base,) = dockerfile_args("FROM")
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", base), base
    users = dockerfile_args("USER")
    assert users, "the image runs as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert dockerfile_args("WORKDIR")[-1] == "/app"

    env = dockerfile_env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["LOG_FORMAT"] == "json"


def test_dockerfile_var_is_writable_by_its_user() -> None:
    user = dockerfile_args("USER")[-1].split(":")[0]
    runs = " ".join(dockerfile_args("RUN"))
    assert "/app/var" in runs
    assert re.search(rf"chown\s+(-\S+\s+)*{re.escape(user)}(:\S+)?\s+/app/var", runs)


def test_dockerfile_installs_dependencies_before_the_code() -> None:
    steps = dockerfile()
    install = next(i for i, (kw, args) in enumerate(steps) if kw == "RUN" and "pip install" in args)
    copies = [(i, args.split()) for i, (kw, args) in enumerate(steps) if kw == "COPY"]
    before = [sources for i, sources in copies if i < install]
    assert before == [["pyproject.toml", "uv.lock", "./"]], f"copied before installing: {before}"
    copied = {Path(args[0]).as_posix() for i, args in copies if i > install}
    assert {"app", "migrations", "alembic.ini"} <= copied
    # The dev tools (simulator, sandbox, demo, launcher) stay out of the production image.
    assert not any(source.startswith("devtools") for source in copied), copied


def test_the_image_leaves_out_the_dev_tools_and_their_extras() -> None:
    install = next(args for kw, args in dockerfile() if kw == "RUN" and "pip install" in args)
    # `uv export` without --extra/--all-extras: neither the test tools nor the embedded servers.
    assert "--extra" not in install and "--all-extras" not in install
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    assert {"dev", "local"} <= set(extras)
    # And the service never imports them: `app` stands without `devtools`.
    for path in (ROOT / "app").rglob("*.py"):
        assert "devtools" not in path.read_text(), f"{path} names devtools"


def test_dockerfile_installs_exactly_the_lock() -> None:
    install = next(args for kw, args in dockerfile() if kw == "RUN" and "pip install" in args)
    assert "uv export --frozen --no-dev" in install
    assert "--require-hashes" in install


def test_the_lock_pins_the_arq_that_the_enqueue_script_was_written_for() -> None:
    pinned: list[str] = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    [arq] = [d for d in pinned if d.startswith("arq")]
    assert arq.startswith("arq=="), "the Lua enqueue relies on arq's internals: pin it exactly"
    locked = tomllib.loads((ROOT / "uv.lock").read_text())["package"]
    [entry] = [p for p in locked if p["name"] == "arq"]
    assert arq == f"arq=={entry['version']}"


def test_dockerfile_runs_the_api_and_checks_healthz() -> None:
    (cmd,) = dockerfile_args("CMD")
    assert exec_form(cmd) == command("api")
    (healthcheck,) = dockerfile_args("HEALTHCHECK")
    assert "/healthz" in healthcheck
    assert "curl" not in healthcheck
    assert "wget" not in healthcheck


def test_dockerignore_keeps_the_build_sources_and_drops_secrets() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        result = False
        for pattern in patterns:
            negated = pattern.startswith("!")
            bare = pattern.removeprefix("!").strip("/")
            if fnmatch.fnmatch(path, bare) or fnmatch.fnmatch(path, bare.removeprefix("**/")):
                result = not negated
        return result

    for needed in ("pyproject.toml", "alembic.ini", "app", "migrations"):
        assert not ignored(needed), f".dockerignore drops {needed}, which the image copies"
    for dropped in (".env", ".venv", ".git", "var", "devtools"):
        assert ignored(dropped), f".dockerignore lets {dropped} into the build context"


# --- the reverse proxy in front of the API (deploy/nginx.conf) --------------------------------


NginxBlock = list[tuple[str, list[str], Any]]
"""(directive, arguments, the nested block or None) in order."""

_NGINX_TOKEN = re.compile(
    r"""\s+|#[^\n]*"""  # blanks and comments
    r"""|"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'"""  # quoted arguments
    r"""|([{};])|([^\s{};"'#]+)"""  # punctuation, bare words
)


def parse_nginx(text: str) -> NginxBlock:
    """nginx's configuration syntax: directives ending in `;`, blocks in braces, `#` comments,
    quoted arguments. Raises AssertionError on anything unbalanced."""
    stack: list[NginxBlock] = [[]]
    words: list[str] = []
    position = 0
    while position < len(text):
        match = _NGINX_TOKEN.match(text, position)
        assert match is not None, f"nginx.conf: cannot read {text[position : position + 20]!r}"
        position = match.end()
        quoted = match[1] if match[1] is not None else match[2]
        if quoted is not None:
            words.append(quoted)
        elif match[4] is not None:
            words.append(match[4])
        elif match[3] == ";":
            assert words, "nginx.conf: an empty directive"
            stack[-1].append((words[0], words[1:], None))
            words = []
        elif match[3] == "{":
            assert words, "nginx.conf: a block without a name"
            block: NginxBlock = []
            stack[-1].append((words[0], words[1:], block))
            stack.append(block)
            words = []
        elif match[3] == "}":
            assert not words and len(stack) > 1, "nginx.conf: unbalanced braces"
            stack.pop()
    assert not words and len(stack) == 1, "nginx.conf: unterminated directive or block"
    return stack[0]


def nginx_blocks(block: NginxBlock, name: str) -> list[tuple[list[str], NginxBlock]]:
    return [(args, inner) for directive, args, inner in block if directive == name and inner]


def nginx_values(block: NginxBlock, name: str) -> list[list[str]]:
    return [args for directive, args, inner in block if directive == name and inner is None]


def nginx_value(block: NginxBlock, name: str) -> str:
    values = nginx_values(block, name)
    assert len(values) == 1 and len(values[0]) == 1, f"nginx.conf: {name} is {values}"
    return values[0][0]


def nginx_seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)?", value)
    assert match, f"not an nginx time: {value}"
    return int(match[1]) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match[2]]


def nginx_bytes(value: str) -> int:
    match = re.fullmatch(r"(\d+)([kKmM])?", value)
    assert match, f"not an nginx size: {value}"
    return int(match[1]) * {"": 1, "k": 1024, "m": 1024 * 1024}[(match[2] or "").lower()]


@cache
def nginx() -> NginxBlock:
    return parse_nginx(NGINX_CONF.read_text())


def nginx_server() -> NginxBlock:
    [(_, http)] = nginx_blocks(nginx(), "http")
    [(_, server)] = nginx_blocks(http, "server")
    return server


def nginx_locations() -> dict[str, NginxBlock]:
    return {args[0]: location for args, location in nginx_blocks(nginx_server(), "location")}


def nginx_location() -> NginxBlock:
    locations = nginx_locations()
    # Every path goes through "/", but the change feed's, which holds requests open longer.
    assert set(locations) == {"/", "/v1/changes"}
    return locations["/"]


def test_the_change_feed_is_proxied_alike_with_room_for_its_waits() -> None:
    locations = nginx_locations()
    general, feed = locations["/"], locations["/v1/changes"]
    differing = {"proxy_read_timeout"}
    assert [d for d in feed if d[0] not in differing] == [
        d for d in general if d[0] not in differing
    ]
    # A long-poll waits up to 30 s; a stream is silent at most 15 s between comments.
    assert nginx_seconds(nginx_value(feed, "proxy_read_timeout")) >= 30 + 15
    assert nginx_value(feed, "proxy_buffering") == "off"  # events go out as they come


def test_the_proxy_runs_the_official_nginx_with_this_config() -> None:
    proxy = service("proxy")
    image, _, tag = proxy["image"].partition(":")
    assert image == "nginx"
    # `server ... resolve` in an upstream needs nginx 1.27.3 or later (any 1.27.x image now is).
    major, minor, *_ = (int(part) for part in re.findall(r"\d+", tag))
    assert (major, minor) >= (1, 27), f"nginx {tag} predates the upstream `resolve` parameter"
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]
    assert NGINX_CONF.is_file()
    assert proxy["depends_on"]["api"]["condition"] == "service_healthy"


def test_the_proxy_is_published_where_the_api_was_and_forwards_to_the_api_port() -> None:
    listen = nginx_value(nginx_server(), "listen")
    [published] = service("proxy")["ports"]
    host_port, container_port = str(published).split(":")[-2:]
    assert container_port == listen
    assert host_port == option(command("api"), "--port")  # clients keep the same URL

    [(upstream_args, upstream)] = nginx_blocks(nginx_blocks(nginx(), "http")[0][1], "upstream")
    [server] = nginx_values(upstream, "server")
    assert server[0] == f"api:{option(command('api'), '--port')}"
    assert "api" in SERVICES
    assert nginx_value(nginx_location(), "proxy_pass") == f"http://{upstream_args[0]}"


def test_the_proxy_bounds_slow_clients_within_the_services_own_deadlines() -> None:
    server = nginx_server()
    read_timeout = Settings.model_fields["callback_read_timeout_seconds"].default
    for name in ("client_header_timeout", "client_body_timeout", "send_timeout"):
        assert 1 <= nginx_seconds(nginx_value(server, name)) <= read_timeout, name

    from app.callbacks.endpoint import COMMIT_TIMEOUT_SECONDS

    location = nginx_location()
    assert nginx_seconds(nginx_value(location, "proxy_connect_timeout")) <= 10
    # The API answers within its own deadlines; the proxy must not give up before it does.
    assert nginx_seconds(nginx_value(location, "proxy_read_timeout")) > COMMIT_TIMEOUT_SECONDS
    assert nginx_seconds(nginx_value(location, "proxy_send_timeout")) > 0


def test_the_proxy_passes_whole_bodies_and_headers_unchanged() -> None:
    server, location = nginx_server(), nginx_location()
    cap = Settings.model_fields["callback_max_body_bytes"].default
    max_body = nginx_bytes(nginx_value(server, "client_max_body_size"))
    # A bit above the API's cap: the API answers its own 413 (a problem document).
    assert cap < max_body <= cap * 1.25
    # Bodies are held in memory, never in a temporary file, and sent on only once complete.
    assert nginx_bytes(nginx_value(server, "client_body_buffer_size")) >= max_body
    assert nginx_value(location, "proxy_request_buffering") == "on"
    # Nothing drops or rewrites the signature header or the body.
    headers = {args[0].lower() for args in nginx_values(location, "proxy_set_header")}
    assert "x-sinch-signature" not in headers
    assert "content-length" not in headers
    for directive in ("proxy_pass_request_body", "proxy_pass_request_headers"):
        assert nginx_values(location, directive) in ([], [["on"]])
    assert nginx_values(server, "underscores_in_headers") in ([], [["off"]])
    directives = {directive for directive, _, _ in server + location}
    assert not directives & {"proxy_set_body", "sub_filter", "rewrite", "proxy_hide_header"}
