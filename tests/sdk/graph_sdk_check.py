"""Drives the hqsync Graph simulator with Microsoft's official Python SDK
(msgraph-sdk + kiota), the way any Graph client would talk to Graph.

Usage: graph_sdk_check.py http://127.0.0.1:PORT

Run by tests/sim_graph.rs; set up the interpreter with .ci/python-sdk-env.sh.
Exits 0 and prints "SDK CHECK OK" when every step behaved like Graph.
"""

import asyncio
import datetime as dt
import http.server
import json
import sys
import threading
import time
import urllib.parse
import urllib.request

from azure.core.credentials import AccessToken
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.contact import Contact
from msgraph.generated.models.contact_folder import ContactFolder
from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone
from msgraph.generated.models.email_address import EmailAddress
from msgraph.generated.models.event import Event
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.subscription import Subscription
from msgraph.generated.models.task_status import TaskStatus
from msgraph.generated.models.todo_task import TodoTask

GRAPH_SCOPE = "https://graph.microsoft.com/.default"


class SimClientSecretCredential:
    """A TokenCredential doing the client-credentials POST against the
    simulator's token endpoint (azure-identity insists on an HTTPS authority;
    GRAPH.md "Transport notes")."""

    def __init__(self, base, tenant, client_id, secret):
        self._url = f"{base}/{tenant}/oauth2/v2.0/token"
        self._form = {
            "client_id": client_id,
            "client_secret": secret,
            "scope": GRAPH_SCOPE,
            "grant_type": "client_credentials",
        }
        self._token = None

    def get_token(self, *scopes, **kwargs):
        if self._token and self._token.expires_on - 300 > time.time():
            return self._token
        data = urllib.parse.urlencode(self._form).encode()
        with urllib.request.urlopen(urllib.request.Request(self._url, data=data), timeout=10) as resp:
            body = json.load(resp)
        check(body["token_type"] == "Bearer", "token_type Bearer")
        self._token = AccessToken(body["access_token"], int(time.time()) + int(body["expires_in"]))
        return self._token


class Hook(http.server.BaseHTTPRequestHandler):
    """notificationUrl: answers Graph's validation handshake, records notifications."""

    received = []

    def do_POST(self):
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if "validationToken" in query:
            token = query["validationToken"][0].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(token)))
            self.end_headers()
            self.wfile.write(token)
            return
        Hook.received.extend(json.loads(body)["value"])
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok - {what}")


async def expect_status(coro, status, what):
    try:
        await coro
    except ODataError as e:
        check(e.response_status_code == status, f"{what} -> {status} (got {e.response_status_code})")
        return e
    raise AssertionError(f"{what}: expected HTTP {status}, got success")


def page_size(n):
    config = RequestConfiguration()
    config.headers.add("Prefer", f"odata.maxpagesize={n}")
    return config


async def main(base):
    with urllib.request.urlopen(f"{base}/_sim/seed", timeout=10) as resp:
        seed = json.load(resp)
    upn = seed["mailboxes"][0]["userPrincipalName"]
    cred = SimClientSecretCredential(base, seed["tenantId"], seed["clientId"], seed["clientSecret"])
    auth = AzureIdentityAuthenticationProvider(cred, scopes=[GRAPH_SCOPE], allowed_hosts=["127.0.0.1"])
    adapter = GraphRequestAdapter(auth)
    adapter.base_url = f"{base}/v1.0"
    client = GraphServiceClient(request_adapter=adapter)
    user = client.users.by_user_id(upn)

    me = await user.get()
    check(me.user_principal_name == upn, "GET /users/{upn}")

    # Subscription whose notificationUrl this script serves.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook_url = f"http://127.0.0.1:{server.server_address[1]}/hook"

    folder = await user.contact_folders.post(ContactFolder(display_name="SDK Check"))
    check(bool(folder.id), "POST contactFolders")
    await expect_status(
        user.contact_folders.post(ContactFolder(display_name="SDK Check")), 409, "duplicate contact folder"
    )
    folder_api = user.contact_folders.by_contact_folder_id(folder.id)

    sub = await client.subscriptions.post(
        Subscription(
            change_type="created,updated,deleted",
            notification_url=hook_url,
            resource=f"/users/{upn}/contactFolders/{folder.id}/contacts",
            expiration_date_time=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1),
            client_state="sdk-client-state",
        )
    )
    check(sub.id and sub.resource == f"users/{upn}/contactFolders/{folder.id}/contacts", "POST subscriptions")

    # Contact CRUD in the folder.
    created = await folder_api.contacts.post(
        Contact(
            given_name="Greta",
            surname="Sdk",
            email_addresses=[EmailAddress(name="Greta Sdk", address="greta@example.org")],
            business_phones=["+49 30 555"],
        )
    )
    check(created.display_name == "Greta Sdk" and created.parent_folder_id == folder.id, "POST contact")
    contact_api = folder_api.contacts.by_contact_id(created.id)
    got = await contact_api.get()
    check(got.email_addresses[0].address == "greta@example.org", "GET contact")
    updated = await contact_api.patch(Contact(job_title="Einkauf"))
    check(updated.job_title == "Einkauf" and updated.change_key != created.change_key, "PATCH contact, new changeKey")
    second = await folder_api.contacts.post(Contact(given_name="Zweite"))
    third = await folder_api.contacts.post(Contact(given_name="Dritte"))

    # A delta round, page by page, to its deltaLink.
    page = await folder_api.contacts.delta.get(request_configuration=page_size(2))
    seen, pages = list(page.value), 1
    while page.odata_next_link:
        page = await folder_api.contacts.delta.with_url(page.odata_next_link).get()
        seen.extend(page.value)
        pages += 1
    check(page.odata_delta_link and len(seen) == 3 and pages == 2, "contact delta round to its deltaLink")
    await folder_api.contacts.by_contact_id(third.id).delete()
    page = await folder_api.contacts.delta.with_url(page.odata_delta_link).get()
    check(len(page.value) == 1 and page.value[0].id == third.id, "delta after a deletion")

    await contact_api.delete()
    await expect_status(contact_api.get(), 404, "GET deleted contact")
    await folder_api.contacts.by_contact_id(second.id).delete()

    deadline = time.time() + 15
    while time.time() < deadline and len(Hook.received) < 7:
        await asyncio.sleep(0.1)
    kinds = sorted(n["changeType"] for n in Hook.received)
    check(
        kinds.count("created") == 3 and kinds.count("deleted") == 3 and "updated" in kinds,
        f"notifications received ({kinds})",
    )
    check(all(n["clientState"] == "sdk-client-state" for n in Hook.received), "clientState echoed")
    await client.subscriptions.by_subscription_id(sub.id).delete()

    # Event CRUD with Windows time zones.
    event = await user.events.post(
        Event(
            subject="SDK Termin",
            start=DateTimeTimeZone(date_time="2026-05-04T10:00:00", time_zone="W. Europe Standard Time"),
            end=DateTimeTimeZone(date_time="2026-05-04T11:00:00", time_zone="W. Europe Standard Time"),
        )
    )
    check(event.start.date_time == "2026-05-04T08:00:00.0000000" and event.start.time_zone == "UTC", "POST event")
    event_api = user.events.by_event_id(event.id)
    moved = await event_api.patch(Event(subject="SDK Termin (neu)"))
    check(moved.subject == "SDK Termin (neu)", "PATCH event")
    await event_api.delete()
    await expect_status(event_api.get(), 404, "GET deleted event")

    # To Do task CRUD.
    lists = await user.todo.lists.get()
    default = next(l for l in lists.value if l.wellknown_list_name and l.wellknown_list_name.value == "defaultList")
    tasks_api = user.todo.lists.by_todo_task_list_id(default.id).tasks
    task = await tasks_api.post(TodoTask(title="SDK Aufgabe"))
    check(task.status == TaskStatus.NotStarted, "POST todoTask")
    done = await tasks_api.by_todo_task_id(task.id).patch(TodoTask(status=TaskStatus.Completed))
    check(done.status == TaskStatus.Completed and done.completed_date_time is not None, "PATCH todoTask")
    await tasks_api.by_todo_task_id(task.id).delete()
    await expect_status(tasks_api.by_todo_task_id(task.id).get(), 404, "GET deleted todoTask")

    server.shutdown()
    print("SDK CHECK OK")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1].rstrip("/")))
