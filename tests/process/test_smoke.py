import httpx


def test_serves_hello(start_server):
    server = start_server("basic:app")
    response = httpx.get(server.url + "/")
    assert response.status_code == 200
    assert response.text == "Hello, world!"
    assert response.headers["server"] == "asgid"
