"""The Django version of examples/proxy_fastapi/app.py, in one file: users log in with Django's
session cookie; tidings, mounted at ``/realtime`` beside Django's ASGI application, asks the
views below through its proxies who may connect, subscribe and publish.

    python examples/proxy_django/app.py            # then open http://127.0.0.1:8000/

Users: ``alice`` / ``wonderland`` (``room:lobby`` and ``room:staff``) and ``bob`` / ``builder``
(``room:lobby``). Sessions are Django's signed-cookie sessions, so this example needs no
database; an application with ``django.contrib.auth`` reads ``request.user`` the same way: tidings
forwards the browser's ``Cookie`` header, and Django's middleware does the rest.
"""

from __future__ import annotations

import html
import json
import os
import secrets
from typing import Any

import django
from django.conf import settings as django_settings

USERS = {"alice": "wonderland", "bob": "builder"}
ROOMS = {"room:lobby": {"alice", "bob"}, "room:staff": {"alice"}}

if not django_settings.configured:
    django_settings.configure(
        DEBUG=False,
        SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", secrets.token_urlsafe(32)),
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
        ],
        INSTALLED_APPS=["django.contrib.sessions"],
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        DATABASES={},
    )
    django.setup()

from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.middleware.csrf import get_token  # noqa: E402
from django.shortcuts import redirect  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402
from django.views.decorators.http import require_POST  # noqa: E402

# the application's own pages ---------------------------------------------------------------------


def home(request: HttpRequest) -> HttpResponse:
    user = request.session.get("user")
    if user is None:
        return HttpResponse(LOGIN.replace("{csrf}", get_token(request)))
    return HttpResponse(PAGE.replace("{user}", html.escape(user)).replace("{csrf}", get_token(request)))


@require_POST
def login(request: HttpRequest) -> HttpResponse:
    user, password = request.POST.get("user", ""), request.POST.get("password", "")
    if USERS.get(user) != password:
        page = LOGIN.replace("{csrf}", get_token(request)).replace(
            "<!--error-->", "<p>Wrong user or password.</p>"
        )
        return HttpResponse(page, status=401)
    request.session.cycle_key()
    request.session["user"] = user
    return redirect("/")


@require_POST
def logout(request: HttpRequest) -> HttpResponse:
    request.session.flush()
    return redirect("/")


# what tidings asks (server to server: no CSRF token; tidings sends no browser's form) -----------


@csrf_exempt
@require_POST
def tidings_connect(request: HttpRequest) -> JsonResponse:
    user = request.session.get("user")  # from the Cookie header tidings forwarded
    if user is None:
        return JsonResponse({"error": {"code": "unauthorized", "message": "log in first"}})
    return JsonResponse({"result": {"user": user, "info": {"name": user.title()}}})


@csrf_exempt
@require_POST
def tidings_subscribe(request: HttpRequest) -> JsonResponse:
    body = json.loads(request.body)
    if body["user"] in ROOMS.get(body["channel"], set()):
        return JsonResponse({"result": {}})
    return JsonResponse({"error": {"code": "forbidden", "message": "you are not a member of this room"}})


@csrf_exempt
@require_POST
def tidings_publish(request: HttpRequest) -> JsonResponse:
    body = json.loads(request.body)
    data = body["data"]
    if body["user"] not in ROOMS.get(body["channel"], set()):
        return JsonResponse({"error": {"code": "forbidden", "message": "you are not a member of this room"}})
    if not isinstance(data, dict) or not isinstance(data.get("text"), str) or not data["text"].strip():
        return JsonResponse({"error": {"code": "bad_request", "message": "send {text}"}})
    # the author is who the session says, whatever the client claimed
    return JsonResponse({"result": {"data": {"text": data["text"][:500], "by": body["user"]}}})


urlpatterns = [
    path("", home),
    path("login", login),
    path("logout", logout),
    path("tidings/connect", tidings_connect),
    path("tidings/subscribe", tidings_subscribe),
    path("tidings/publish", tidings_publish),
]


def build_app(base_url: str) -> Any:
    """Django's ASGI application with tidings mounted at ``/realtime`` (its proxies call
    ``base_url``, where this application is reachable)."""
    from django.core.asgi import get_asgi_application
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from tidings import create_app
    from tidings.settings import load_settings

    realtime = create_app(
        load_settings(
            demo=False,
            proxy={
                "connect": {"url": f"{base_url}/tidings/connect"},
                "subscribe": {"url": f"{base_url}/tidings/subscribe"},
                "publish": {"url": f"{base_url}/tidings/publish"},
            },
            namespaces={"room": {"public": False, "subscribe_proxy": True, "publish_proxy": True}},
        )
    )
    return Starlette(
        routes=[Mount("/realtime", app=realtime), Mount("/", app=get_asgi_application())],
        lifespan=realtime.lifespan,
    )


LOGIN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Log in</title></head>
<body>
  <h1>Log in</h1>
  <!--error-->
  <form method="post" action="/login">
    <input type="hidden" name="csrfmiddlewaretoken" value="{csrf}">
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
    <form method="post" action="/logout" style="display:inline">
      <input type="hidden" name="csrfmiddlewaretoken" value="{csrf}"><button>Log out</button></form></p>
  <p>Connection: <span id="state">idle</span></p>
  <h2>room:lobby</h2>
  <ul id="lobby"></ul>
  <form id="say"><input id="text" autocomplete="off"><button>Send</button></form>
  <h2>room:staff</h2>
  <p id="staff">…</p>
  <script type="module">
    import { Tidings } from "/realtime/static/tidings.js";
    // No token: Django's session cookie goes with the connection, and Django decides.
    const client = new Tidings(location.origin + "/realtime");
    client.on("state", ({ state }) => { document.querySelector("#state").textContent = state; });
    client.subscribe("room:lobby").on("publication", (p) => {
      const li = document.createElement("li");
      li.textContent = `${p.data.by}: ${p.data.text}`;
      document.querySelector("#lobby").append(li);
    });
    client.subscribe("room:staff").on("subscribed", () => {
      document.querySelector("#staff").textContent = "a member";
    });
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
