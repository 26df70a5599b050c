from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from dicom_node import audit
from dicom_node.config import load_config, parse_destinations
from dicom_node.db import migrate
from dicom_node.db.models import AuditEvent
from dicom_node.db.session import make_engine, make_sessionmaker, transaction


def test_defaults_need_no_server(tmp_path: Path):
    config = load_config(env={"LUMBAR_NODE_DATA_DIR": str(tmp_path)})
    assert config.db_url == f"sqlite:///{(tmp_path / 'lumbar-node.sqlite').resolve()}"
    assert config.broker == "filesystem://"
    assert (config.ae_title, config.dimse_port, config.http_port) == ("LUMBARNODE", 11112, 8080)
    assert config.allowed_callers == ()


def test_env_and_toml(tmp_path: Path):
    toml = tmp_path / "node.toml"
    toml.write_text('[lumbar_node]\nae_title = "SITEAI"\nsettle_seconds = 3\n'
                    'destinations = ["PACS@10.0.0.5:104", "https://pacs.example/dicomweb"]\n')
    config = load_config(env={"LUMBAR_NODE_CONFIG": str(toml),
                              "LUMBAR_NODE_ALLOWED_CALLERS": "PACS@10.0.0.5, MODALITY",
                              "LUMBAR_NODE_SETTLE_SECONDS": "4.5"})
    assert config.ae_title == "SITEAI"
    assert config.settle_seconds == 4.5
    assert [d.label for d in config.destinations] == ["PACS@10.0.0.5:104",
                                                     "https://pacs.example/dicomweb"]
    assert config.allowed_callers[0].matches("PACS", "10.0.0.5")
    assert not config.allowed_callers[0].matches("PACS", "10.0.0.6")
    assert config.allowed_callers[1].matches("MODALITY", "1.2.3.4")


@pytest.mark.parametrize("env, needle", [
    ({"LUMBAR_NODE_DIMSE_PORT": "eleven"}, "DIMSE_PORT"),
    ({"LUMBAR_NODE_SETTLE_SECONDS": "-1"}, "SETTLE_SECONDS"),
    ({"LUMBAR_NODE_AE_TITLE": "A" * 17}, "AE_TITLE"),
])
def test_bad_settings_name_the_value(env, needle):
    with pytest.raises(ValueError, match=needle):
        load_config(env=env)


def test_unknown_toml_key_is_an_error(tmp_path: Path):
    toml = tmp_path / "node.toml"
    toml.write_text("[lumbar_node]\nae_tilte = 'X'\n")
    with pytest.raises(ValueError, match="ae_tilte"):
        load_config(env={}, toml_path=toml)


def test_misspelt_env_setting_is_logged_not_silent(tmp_path: Path, caplog):
    env = {"LUMBAR_NODE_DATA_DIR": str(tmp_path), "LUMBAR_NODE_ALOWED_CALLERS": "PACS",
           "LUMBAR_NODE_WEIGHTS_DIR": str(tmp_path)}
    with caplog.at_level("WARNING", logger="dicom_node.config"):
        config = load_config(env=env)
    assert config.allowed_callers == ()
    messages = [r.getMessage() for r in caplog.records]
    assert any("LUMBAR_NODE_ALOWED_CALLERS" in m for m in messages)
    assert not any("WEIGHTS_DIR" in m for m in messages)


def test_secrets_stay_out_of_the_printed_configuration(tmp_path: Path):
    config = load_config(env={}, data_dir=tmp_path, api_token="tok-SECRET1",
                         destination_token="tok-SECRET2",
                         database_url="postgresql+psycopg://u:pw-SECRET3@db/x",
                         broker_url="redis://:pw-SECRET4@redis:6379/0",
                         result_backend="redis://:pw-SECRET5@redis:6379/1")
    shown = repr(config)
    assert "SECRET" not in shown and "ae_title='LUMBARNODE'" in shown
    assert config.api_token == "tok-SECRET1"  # still there for the code that needs it


def test_bad_destination():
    with pytest.raises(ValueError, match="PACS@host"):
        parse_destinations("PACS@host")


def _check_schema(url: str) -> None:
    engine = make_engine(url)
    try:
        assert migrate.current_revision(engine) == migrate.head_revision(url)
        assert migrate.drift(engine) == []
        sessions = make_sessionmaker(engine)
        with transaction(sessions) as session:
            event = audit.record(session, "test.append", study_uid="1.2.3", note="x")
        with pytest.raises(PermissionError):
            with transaction(sessions) as session:
                loaded = session.get(AuditEvent, event.id)
                loaded.event_type = "tampered"
        with pytest.raises(DBAPIError, match="append-only"):
            with engine.begin() as conn:
                conn.execute(text("UPDATE audit_events SET event_type = 'x'"))
        with pytest.raises(DBAPIError, match="append-only"):
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM audit_events"))
    finally:
        engine.dispose()


def test_migrations_sqlite_no_drift_and_append_only(node_config):
    _check_schema(node_config.db_url)


def test_migrations_postgres_no_drift_and_append_only(pg_url):
    _check_schema(pg_url)


def test_db_cli_check(node_config, capsys):
    from workers.cli import main

    assert main(["db", "check", "--database-url", node_config.db_url]) == 0
    assert "schema matches models" in capsys.readouterr().out
