"""A FastAPI WebSocket endpoint under asgid.

    asgid examples.fastapi_ws:app               # from the repository root

``/ws?name=you`` greets, then echoes: text comes back as ``"echo: <text>"``,
bytes come back as they are, and the text ``{"op": "close"}`` makes the server
close with code 4000 and reason "bye". A client that goes away ends the loop
with ``WebSocketDisconnect``; a reload closes open sockets with 1012 and a
shutdown with 1001, so clients know to reconnect.
"""

from __future__ import annotations

import json

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

app = FastAPI(title="asgid WebSocket example")


@app.websocket("/ws")
async def echo(websocket: WebSocket, name: str = "stranger") -> None:
    await websocket.accept()
    await websocket.send_text(f"hello {name}")
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                await websocket.send_bytes(message.get("bytes") or b"")
            elif _is_close_request(text):
                await websocket.close(code=4000, reason="bye")
                return
            else:
                await websocket.send_text(f"echo: {text}")
    except WebSocketDisconnect:
        return


def _is_close_request(text: str) -> bool:
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("op") == "close"
