"""App shapes for tests/test_app_loading.py: ASGI 2 and 3, factories, non-apps."""


async def _hello(send, text):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": text.encode()})


class ASGI2App:
    """ASGI 2: app(scope) returns an instance awaited with (receive, send)."""

    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        if self.scope["type"] == "lifespan":
            message = await receive()
            assert message["type"] == "lifespan.startup"
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        await _hello(send, f"asgi2 {self.scope['path']}")


def asgi2_function(scope):
    async def instance(receive, send):
        await _hello(send, "asgi2 function")

    return instance


async def _coroutine_app(scope, receive, send):
    if scope["type"] == "http":
        await _hello(send, "plain function")


def plain_function(scope, receive, send):
    """Not ``async def``, but returns a coroutine: still ASGI 3."""
    return _coroutine_app(scope, receive, send)


class ASGI3Callable:
    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            await _hello(send, "asgi3 instance")


asgi3_instance = ASGI3Callable()


def create_app():
    print("FACTORY called", flush=True)

    async def app(scope, receive, send):
        if scope["type"] == "http":
            await _hello(send, "from factory")

    return app


def failing_factory():
    raise ValueError("factory could not build the app")


not_callable = "just a string"

namespace = type("Namespace", (), {"inner": staticmethod(_coroutine_app)})
