"""Finding the app: ASGI 2 adaptation, factories, and clear import errors (exit 4)."""

from __future__ import annotations

import httpx
import pytest

EXIT_APP_LOAD = 4


def assert_no_asgid_traceback(output: str) -> None:
    for internal in ("asgid/worker", "asgid/cli", "asgid/supervisor", "asgid/_run", "importlib"):
        assert internal not in output, output


@pytest.mark.parametrize(
    ("target", "args", "text"),
    [
        ("loading:ASGI2App", (), "asgi2 /hello"),
        ("loading:asgi2_function", ("--lifespan", "off"), "asgi2 function"),
        ("loading:plain_function", (), "plain function"),
        ("loading:asgi3_instance", (), "asgi3 instance"),
        ("loading:namespace.inner", (), "plain function"),
        ("loading:create_app", ("--factory",), "from factory"),
        ("loading:ASGI2App", ("--interface", "asgi2"), "asgi2 /hello"),
    ],
    ids=[
        "asgi2-class",
        "asgi2-function",
        "plain-function-returning-coroutine",
        "asgi3-instance",
        "dotted-attribute",
        "factory",
        "explicit-asgi2",
    ],
)
def test_app_shapes(start_server, target, args, text):
    server = start_server(target, *args)
    assert httpx.get(server.url + "/hello").text == text
    assert "Traceback" not in server.output()


def test_factory_is_called_once_per_worker(start_server):
    server = start_server("loading:create_app", "--factory")
    with httpx.Client() as client:
        for _ in range(3):
            assert client.get(server.url + "/").text == "from factory"
    assert server.output().count("FACTORY called") == 1


def run_failing(start_server, target, *args):
    server = start_server(target, *args, wait=False)
    assert server.wait(20) == EXIT_APP_LOAD
    return server.output()


def test_missing_module(start_server):
    output = run_failing(start_server, "no_such_module:app")
    assert "no_such_module" in output
    assert "Traceback" not in output


def test_missing_package_module(start_server):
    output = run_failing(start_server, "loading.sub:app")
    assert "loading.sub" in output
    assert "Traceback" not in output


def test_missing_attribute(start_server):
    output = run_failing(start_server, "loading:no_such_app")
    assert "no_such_app" in output
    assert "loading" in output
    assert "Traceback" not in output


def test_missing_nested_attribute(start_server):
    output = run_failing(start_server, "loading:namespace.missing")
    assert "namespace.missing" in output
    assert "Traceback" not in output


def test_missing_dependency_of_the_app_module(start_server):
    # The app module exists; something it imports does not: name that.
    output = run_failing(start_server, "broken_import:app")
    assert "helper_that_does_not_exist" in output
    assert 'broken_import.py", line' in output
    assert_no_asgid_traceback(output)


def test_module_raising_on_import(start_server):
    output = run_failing(start_server, "raising_module:app")
    assert "module-level failure in configure()" in output
    assert 'raising_module.py", line' in output
    assert_no_asgid_traceback(output)


def test_not_callable(start_server):
    output = run_failing(start_server, "loading:not_callable")
    assert "not callable" in output
    assert "Traceback" not in output


def test_factory_raising(start_server):
    output = run_failing(start_server, "loading:failing_factory", "--factory")
    assert "factory could not build the app" in output
    assert_no_asgid_traceback(output)


def test_factory_returning_a_non_app(start_server):
    output = run_failing(start_server, "loading:not_callable", "--factory")
    assert "not callable" in output


@pytest.mark.parametrize("target", ["loading", "loading:", ":app"])
def test_malformed_target(start_server, target):
    server = start_server(target, wait=False)
    assert server.wait(20) != 0
    output = server.output()
    assert "module:attribute" in output
    assert "Traceback" not in output
