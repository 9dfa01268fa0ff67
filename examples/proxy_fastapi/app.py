"""A FastAPI application whose users log in with a session cookie, with tidings mounted at
``/realtime`` and asking this application, through its proxies, who may connect, subscribe and
publish (docs/tutorial/your-apps-login.md walks through it).

    python examples/proxy_fastapi/app.py            # then open http://127.0.0.1:8000/

Users: ``alice`` / ``wonderland`` (a member of ``room:lobby`` and ``room:staff``) and ``bob`` /
``builder`` (``room:lobby`` only). No token is minted anywhere: the browser's session cookie
goes with tidings.js's WebSocket (or its SSE fallback) to tidings, which sends it to
``POST /tidings/connect`` here; this application answers with the user, or refuses.
"""

from __future__ import annotations

import html
import os
import secrets
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from tidings import create_app
from tidings.settings import load_settings

USERS = {"alice": "wonderland", "bob": "builder"}
ROOMS = {"room:lobby": {"alice", "bob"}, "room:staff": {"alice"}}
COOKIE = "session"


def tidings_settings(base_url: str) -> Any:
    """tidings' settings: every proxy points back at this application."""
    return load_settings(
        demo=False,
        proxy={
            "connect": {"url": f"{base_url}/tidings/connect"},
            "subscribe": {"url": f"{base_url}/tidings/subscribe"},
            "publish": {"url": f"{base_url}/tidings/publish"},
        },
        # rooms: only members subscribe (the subscribe proxy says who is), and what a member
        # publishes is stamped with their name by the publish proxy
        namespaces={"room": {"public": False, "subscribe_proxy": True, "publish_proxy": True}},
    )


def build_app(base_url: str) -> FastAPI:
    """The application, reachable at ``base_url`` (where tidings' proxies call it)."""
    realtime = create_app(tidings_settings(base_url))
    app = FastAPI(lifespan=realtime.lifespan)
    sessions: dict[str, str] = {}  # session id -> user (a real app keeps them in its database)

    def user_of(request: Request) -> str | None:
        return sessions.get(request.cookies.get(COOKIE, ""))

    # the application's own pages ----------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    async def home(request: Request) -> str:
        user = user_of(request)
        return PAGE.replace("{user}", html.escape(user)) if user else LOGIN

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = parse_qs((await request.body()).decode())
        user, password = form.get("user", [""])[0], form.get("password", [""])[0]
        if USERS.get(user) != password:
            return HTMLResponse(LOGIN.replace("<!--error-->", "<p>Wrong user or password.</p>"), 401)
        session = secrets.token_urlsafe(24)
        sessions[session] = user
        answer = RedirectResponse("/", 303)
        answer.set_cookie(COOKIE, session, httponly=True, samesite="lax")
        return answer

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        sessions.pop(request.cookies.get(COOKIE, ""), None)
        answer = RedirectResponse("/", 303)
        answer.delete_cookie(COOKIE)
        return answer

    # what tidings asks ------------------------------------------------------------------------------

    @app.post("/tidings/connect")
    async def connect(request: Request) -> JSONResponse:
        user = user_of(request)  # tidings forwarded the browser's Cookie header
        if user is None:
            return JSONResponse({"error": {"code": "unauthorized", "message": "log in first"}})
        return JSONResponse({"result": {"user": user, "info": {"name": user.title()}}})

    @app.post("/tidings/subscribe")
    async def subscribe(request: Request) -> JSONResponse:
        body = await request.json()
        if body["user"] in ROOMS.get(body["channel"], set()):
            return JSONResponse({"result": {}})
        return JSONResponse({"error": {"code": "forbidden", "message": "you are not a member of this room"}})

    @app.post("/tidings/publish")
    async def publish(request: Request) -> JSONResponse:
        body = await request.json()
        data = body["data"]
        if body["user"] not in ROOMS.get(body["channel"], set()):
            return JSONResponse(
                {"error": {"code": "forbidden", "message": "you are not a member of this room"}}
            )
        if not isinstance(data, dict) or not isinstance(data.get("text"), str) or not data["text"].strip():
            return JSONResponse({"error": {"code": "bad_request", "message": "send {text}"}})
        # the author is who the session says, whatever the client claimed
        return JSONResponse({"result": {"data": {"text": data["text"][:500], "by": body["user"]}}})

    app.mount("/realtime", realtime)
    return app


LOGIN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Log in</title></head>
<body>
  <h1>Log in</h1>
  <!--error-->
  <form method="post" action="/login">
    <label>User <input name="user" id="user" autocomplete="username"></label>
    <label>Password <input name="password" id="password" type="password"
      autocomplete="current-password"></label>
    <button id="login">Log in</button>
  </form>
</body></html>
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Rooms</title></head>
<body>
  <p>Logged in as <b id="me">{user}</b>.
    <form method="post" action="/logout" style="display:inline"><button>Log out</button></form></p>
  <p>Connection: <span id="state">idle</span></p>
  <h2>room:lobby</h2>
  <ul id="lobby"></ul>
  <form id="say"><input id="text" autocomplete="off"><button>Send</button></form>
  <h2>room:staff</h2>
  <p id="staff">…</p>
  <script type="module">
    import { Tidings } from "/realtime/static/tidings.js";
    // No token: the session cookie goes with the connection, and this application decides.
    const client = new Tidings(location.origin + "/realtime");
    client.on("state", ({ state }) => { document.querySelector("#state").textContent = state; });
    const lobby = client.subscribe("room:lobby");
    lobby.on("publication", (p) => {
      const li = document.createElement("li");
      li.textContent = `${p.data.by}: ${p.data.text}`;
      document.querySelector("#lobby").append(li);
    });
    const staff = client.subscribe("room:staff");
    staff.on("subscribed", () => { document.querySelector("#staff").textContent = "a member"; });
    // a refused subscribe comes back as the client's "error" event, with the backend's code
    client.on("error", (e) => {
      if (e.code === "forbidden") document.querySelector("#staff").textContent = `refused: ${e.message}`;
    });
    document.querySelector("#say").addEventListener("submit", async (event) => {
      event.preventDefault();
      const input = document.querySelector("#text");
      await client.publish("room:lobby", { text: input.value, by: "someone else" });
      input.value = "";
    });
  </script>
</body></html>
"""


if __name__ == "__main__":
    import uvicorn

    port = int(os.environ.get("PORT", "8000"))
    uvicorn.run(build_app(f"http://127.0.0.1:{port}"), host="127.0.0.1", port=port)
