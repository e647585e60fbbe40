"""A Python client generated from the served OpenAPI (as SDK users do) works against the running app."""

import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from tests.conftest import (
    SUPERUSER_EMAIL,
    SUPERUSER_PASSWORD,
    LiveServer,
    Served,
    create_app,
    make_settings,
    seed_account,
)
from tests.test_totp import code, fresh_step

pytestmark = pytest.mark.system  # every test here starts a process


@pytest.fixture
def sdk(served: Served, tmp_path: Path) -> ModuleType:
    document = tmp_path / "openapi.json"
    document.write_bytes(httpx.get(f"{served.api}/openapi.json").content)
    config = tmp_path / "config.yml"
    config.write_text("post_hooks: []\n")
    package = f"generated_client_{served.database.url.split(':')[0].replace('+', '_')}"
    generator = Path(sys.executable).parent / "openapi-python-client"
    subprocess.run(
        [
            str(generator),
            "generate",
            "--path",
            str(document),
            "--meta",
            "none",
            "--config",
            str(config),
            "--output-path",
            str(tmp_path / package),
        ],
        check=True,
        capture_output=True,
    )
    sys.path.insert(0, str(tmp_path))
    try:
        return importlib.import_module(package)
    finally:
        sys.path.remove(str(tmp_path))


def test_generated_client_logs_in_and_manages_items(sdk: ModuleType, served: Served) -> None:
    name = sdk.__name__
    client_module = importlib.import_module(f"{name}.client")
    models = importlib.import_module(f"{name}.models")
    login = importlib.import_module(f"{name}.api.login.login_login_access_token")
    read_me = importlib.import_module(f"{name}.api.users.users_read_user_me")
    create = importlib.import_module(f"{name}.api.items.items_create_item")
    read_items = importlib.import_module(f"{name}.api.items.items_read_items")
    update = importlib.import_module(f"{name}.api.items.items_update_item")
    delete = importlib.import_module(f"{name}.api.items.items_delete_item")

    anonymous = client_module.Client(base_url=served.url)
    token = login.sync(
        client=anonymous, body=models.BodyLoginLoginAccessToken(username=SUPERUSER_EMAIL, password=SUPERUSER_PASSWORD)
    )
    assert isinstance(token, models.Token)
    authed = client_module.AuthenticatedClient(base_url=served.url, token=token.access_token)

    me = read_me.sync(client=authed)
    assert isinstance(me, models.UserPublic)
    assert me.email == SUPERUSER_EMAIL

    item = create.sync(client=authed, body=models.ItemCreate(title="From the SDK", description="generated"))
    assert isinstance(item, models.ItemPublic)
    assert item.owner_id == me.id

    listed = read_items.sync(client=authed, skip=0, limit=100)
    assert isinstance(listed, models.ItemsPublic)
    assert item.id in {row.id for row in listed.data}
    assert listed.count >= 1

    updated = update.sync(id=item.id, client=authed, body=models.ItemUpdate(title="Renamed"))
    assert isinstance(updated, models.ItemPublic)
    assert (updated.title, updated.description) == ("Renamed", "generated")

    deleted = delete.sync(id=item.id, client=authed)
    assert isinstance(deleted, models.Message)
    assert deleted.message == "Item deleted successfully"

    invalid = create.sync_detailed(client=authed, body=models.ItemCreate(title=""))
    assert invalid.status_code == 422
    assert isinstance(invalid.parsed, models.HTTPValidationError)


def test_generated_client_makes_a_personal_access_token_and_uses_it(sdk: ModuleType, served: Served) -> None:
    """As a CI job would: a token made once with a login's token (by a person), then the job's own client holds only
    the personal access token (from its environment or secret store)."""
    name = sdk.__name__
    client_module = importlib.import_module(f"{name}.client")
    models = importlib.import_module(f"{name}.models")
    login = importlib.import_module(f"{name}.api.login.login_login_access_token")
    read_me = importlib.import_module(f"{name}.api.users.users_read_user_me")
    create_token = importlib.import_module(f"{name}.api.users.users_create_personal_access_token")
    read_tokens = importlib.import_module(f"{name}.api.users.users_read_personal_access_tokens")
    revoke_token = importlib.import_module(f"{name}.api.users.users_revoke_personal_access_token")

    anonymous = client_module.Client(base_url=served.url)
    token = login.sync(
        client=anonymous, body=models.BodyLoginLoginAccessToken(username=SUPERUSER_EMAIL, password=SUPERUSER_PASSWORD)
    )
    person = client_module.AuthenticatedClient(base_url=served.url, token=token.access_token)
    created = create_token.sync(client=person, body=models.PersonalAccessTokenCreate(name="CI job", expires_in_days=7))
    assert isinstance(created, models.PersonalAccessTokenCreated)
    assert created.token.startswith("lsp_")
    assert str(created.scope.value) == "read"

    job = client_module.AuthenticatedClient(base_url=served.url, token=created.token)
    me = read_me.sync(client=job)
    assert isinstance(me, models.UserPublic)
    assert me.email == SUPERUSER_EMAIL
    refused = create_token.sync_detailed(client=job, body=models.PersonalAccessTokenCreate(name="x", expires_in_days=1))
    assert refused.status_code == 403

    listed = read_tokens.sync(client=person)
    assert isinstance(listed, models.PersonalAccessTokensPublic)
    assert created.id in {row.id for row in listed.data}
    revoked = revoke_token.sync(token_id=created.id, client=person)
    assert isinstance(revoked, models.Message)
    assert revoked.message == "Token revoked"
    assert read_me.sync_detailed(client=job).status_code == 403


def test_generated_client_rotates_a_refresh_token(sdk: ModuleType, served: Served) -> None:
    """With refresh tokens on, as an SDK user holds them: the login's answer is typed as the template's `Token`, so
    its refresh token is among the extra properties; each refresh answers a typed `TokenPair`, and a refresh token
    presented a second time ends the session of both."""
    name = sdk.__name__
    client_module = importlib.import_module(f"{name}.client")
    models = importlib.import_module(f"{name}.models")
    login = importlib.import_module(f"{name}.api.login.login_login_access_token")
    refresh = importlib.import_module(f"{name}.api.login.login_refresh_access_token")
    read_me = importlib.import_module(f"{name}.api.users.users_read_user_me")

    settings = make_settings(served.database.url, ACCESS_TOKEN_EXPIRE_MINUTES="5", REFRESH_TOKEN_EXPIRE_MINUTES="60")
    with LiveServer(create_app(settings)) as server:
        anonymous = client_module.Client(base_url=server.url)
        token = login.sync(
            client=anonymous,
            body=models.BodyLoginLoginAccessToken(username=SUPERUSER_EMAIL, password=SUPERUSER_PASSWORD),
        )
        assert isinstance(token, models.Token)
        assert token.additional_properties["expires_in"] == 300
        first = token.additional_properties["refresh_token"]

        rotated = refresh.sync(
            client=anonymous, body=models.RefreshForm(grant_type="refresh_token", refresh_token=first)
        )
        assert isinstance(rotated, models.TokenPair)
        assert rotated.refresh_token != first
        assert rotated.expires_in == 300
        holder = client_module.AuthenticatedClient(base_url=server.url, token=rotated.access_token)
        me = read_me.sync(client=holder)
        assert isinstance(me, models.UserPublic)
        assert me.email == SUPERUSER_EMAIL

        reused = refresh.sync_detailed(
            client=anonymous, body=models.RefreshForm(grant_type="refresh_token", refresh_token=first)
        )
        assert reused.status_code == 400
        assert isinstance(reused.parsed, models.HTTPError)
        assert reused.parsed.detail == "Invalid refresh token"
        # The reuse ended the session: its newest tokens stop working too.
        assert read_me.sync_detailed(client=holder).status_code == 403
        again = refresh.sync_detailed(
            client=anonymous,
            body=models.RefreshForm(grant_type="refresh_token", refresh_token=rotated.refresh_token),
        )
        assert again.status_code == 400


def test_generated_client_logs_in_with_a_one_time_code(sdk: ModuleType, served: Served) -> None:
    """A user with a second factor, all through the SDK: enrol, confirm with the authenticator's code (computed here
    from the secret), then log in with `otp`; without it the login's 401 is typed as documented."""
    name = sdk.__name__
    client_module = importlib.import_module(f"{name}.client")
    models = importlib.import_module(f"{name}.models")
    login = importlib.import_module(f"{name}.api.login.login_login_access_token")
    enrol = importlib.import_module(f"{name}.api.users.users_enrol_totp")
    confirm = importlib.import_module(f"{name}.api.users.users_confirm_totp")

    account = seed_account(served)
    settings = make_settings(served.database.url, TOTP_ENCRYPTION_KEY="an-sdk-test-totp-encryption-key-0123456789")
    with LiveServer(create_app(settings)) as server:
        person = client_module.AuthenticatedClient(
            base_url=server.url, token=account.headers["Authorization"].split()[1]
        )
        enrolment = enrol.sync(client=person)
        assert isinstance(enrolment, models.TotpEnrolment)
        assert enrolment.otpauth_uri.startswith("otpauth://totp/")
        step = fresh_step()
        confirmed = confirm.sync(client=person, body=models.TotpConfirm(code=code(enrolment.secret, step)))
        assert isinstance(confirmed, models.TotpRecoveryCodes)
        assert len(confirmed.recovery_codes) == 10

        anonymous = client_module.Client(base_url=server.url)
        form = models.BodyLoginLoginAccessToken(username=account.email, password=account.password)
        missing = login.sync_detailed(client=anonymous, body=form)
        assert missing.status_code == 401
        assert isinstance(missing.parsed, models.HTTPError)
        assert missing.parsed.detail == "A one-time code is required"
        form = models.BodyLoginLoginAccessToken(
            username=account.email, password=account.password, otp=code(enrolment.secret, step + 1)
        )
        token = login.sync(client=anonymous, body=form)
        assert isinstance(token, models.Token)
