"""Installing, finding, replacing and removing tools; blob garbage collection."""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

import attrs
import pytest

from kamid.protocol import IntegrityError, InvalidParams, NotFound
from kamid.store import InstallOutcome, Store, ToolRecord
from tests.store._helpers import blob_files, record_for

if TYPE_CHECKING:
    from kamid.protocol import Paths

WASM_A = b"\0asm component A" * 1000
WASM_B = b"\0asm component B" * 1000


def test_install_then_get_returns_the_same_record(store: Store) -> None:
    record = record_for(store, WASM_A, grants={"net": [{"host": "api.example.com"}]})

    assert store.install(record) == InstallOutcome(changed=True, replaced=None)

    assert store.get(record.id) == record
    assert store.count() == 1
    assert store.get("dev.kami.other") is None


def test_list_is_ordered_by_id(store: Store) -> None:
    for tool_id in ["dev.kami.b", "dev.kami.c", "dev.kami.a"]:
        store.install(record_for(store, tool_id.encode(), tool_id=tool_id))

    assert [r.id for r in store.list()] == ["dev.kami.a", "dev.kami.b", "dev.kami.c"]
    assert store.count() == 3


def test_reinstalling_the_same_version_and_blob_rewrites_nothing(store: Store) -> None:
    first = record_for(store, WASM_A)
    store.install(first)

    again = attrs.evolve(first, installed_at=2000.0, grants={"approved": True}, source="/x")
    assert store.install(again) == InstallOutcome(changed=False, replaced=None)

    assert store.get(first.id) == first
    assert len(store.history(first.id)) == 1


def test_a_new_version_replaces_the_old_and_keeps_history(store: Store, paths: Paths) -> None:
    v1 = record_for(store, WASM_A, version="1.0.0", installed_at=1000.0)
    store.install(v1)
    v2 = record_for(store, WASM_B, version="1.1.0", installed_at=2000.0)

    assert store.install(v2) == InstallOutcome(changed=True, replaced="1.0.0")

    assert store.get(v1.id) == v2
    assert store.count() == 1
    history = store.history(v1.id)
    assert [(h.version, h.sha256) for h in history] == [("1.0.0", v1.sha256), ("1.1.0", v2.sha256)]
    assert history[0].removed_at is not None
    assert history[1].removed_at is None
    # Nothing uses the old component any more.
    assert blob_files(paths.blobs) == {v2.sha256}


def test_the_same_version_with_another_blob_replaces_it(store: Store) -> None:
    store.install(record_for(store, WASM_A, version="1.0.0"))
    rebuilt = record_for(store, WASM_B, version="1.0.0")

    assert store.install(rebuilt) == InstallOutcome(changed=True, replaced="1.0.0")
    got = store.get(rebuilt.id)
    assert got is not None
    assert got.sha256 == rebuilt.sha256


def test_resolve_finds_by_id_then_by_unique_name(store: Store) -> None:
    echo = record_for(store, WASM_A, tool_id="dev.kami.echo")
    store.install(echo)
    # A tool whose *name* is another tool's id must not shadow that id.
    store.install(record_for(store, WASM_B, tool_id="dev.kami.trick", name="dev.kami.echo"))

    assert store.resolve("dev.kami.echo") == echo
    assert store.resolve("echo") == echo
    assert store.resolve("dev.kami.trick").id == "dev.kami.trick"


def test_resolve_unknown_suggests_close_matches(store: Store) -> None:
    store.install(record_for(store, WASM_A, tool_id="dev.kami.echo"))

    with pytest.raises(NotFound) as info:
        store.resolve("ecko")

    assert info.value.message.startswith(
        'no tool "ecko" is installed; `kamictl list` shows what is'
    )
    assert '"echo"' in info.value.message
    assert info.value.data["suggestions"] == ["echo"]


def test_resolve_unknown_without_any_close_match(store: Store) -> None:
    with pytest.raises(NotFound) as info:
        store.resolve("zzz")
    assert info.value.message == 'no tool "zzz" is installed; `kamictl list` shows what is'


def test_resolve_an_ambiguous_name_lists_the_ids(store: Store) -> None:
    store.install(record_for(store, WASM_A, tool_id="dev.one.echo"))
    store.install(record_for(store, WASM_B, tool_id="dev.two.echo"))

    with pytest.raises(NotFound) as info:
        store.resolve("echo")

    assert "ambiguous" in info.value.message
    assert "dev.one.echo, dev.two.echo" in info.value.message
    assert info.value.data["candidates"] == ["dev.one.echo", "dev.two.echo"]


def test_uninstall_returns_the_record_and_deletes_its_blob(store: Store, paths: Paths) -> None:
    record = record_for(store, WASM_A)
    store.install(record)

    assert store.uninstall(record.id) == record

    assert store.get(record.id) is None
    assert store.count() == 0
    assert blob_files(paths.blobs) == set()
    assert store.history(record.id)[-1].removed_at is not None


def test_uninstall_unknown_raises_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match=re.escape('no tool "dev.kami.nope" is installed')):
        store.uninstall("dev.kami.nope")


def test_a_shared_blob_stays_until_its_last_user_goes(store: Store, paths: Paths) -> None:
    a = record_for(store, WASM_A, tool_id="dev.kami.a")
    b = record_for(store, WASM_A, tool_id="dev.kami.b")
    store.install(a)
    store.install(b)
    assert a.sha256 == b.sha256

    store.uninstall(a.id)
    store.verify_blob(b.sha256)
    assert blob_files(paths.blobs) == {b.sha256}

    store.uninstall(b.id)
    assert blob_files(paths.blobs) == set()


def test_replacing_keeps_a_blob_another_tool_uses(store: Store, paths: Paths) -> None:
    store.install(record_for(store, WASM_A, tool_id="dev.kami.a"))
    store.install(record_for(store, WASM_A, tool_id="dev.kami.b"))

    store.install(record_for(store, WASM_B, tool_id="dev.kami.a", version="2.0.0"))

    sha_a = hashlib.sha256(WASM_A).hexdigest()
    store.verify_blob(sha_a)
    assert blob_files(paths.blobs) == {sha_a, hashlib.sha256(WASM_B).hexdigest()}


def test_install_refuses_a_record_whose_blob_was_never_written(store: Store) -> None:
    record = attrs.evolve(
        record_for(store, WASM_A), sha256=hashlib.sha256(b"never stored").hexdigest()
    )

    with pytest.raises(IntegrityError, match="missing"):
        store.install(record)
    assert store.count() == 0


def test_install_refuses_a_size_that_does_not_match_the_blob(store: Store) -> None:
    record = record_for(store, WASM_A)

    with pytest.raises(IntegrityError, match="bytes but the record says"):
        store.install(attrs.evolve(record, size=record.size + 1))
    assert store.count() == 0


def test_install_refuses_a_manifest_that_is_not_json(store: Store) -> None:
    record = attrs.evolve(record_for(store, WASM_A), manifest={"when": object()})

    with pytest.raises(InvalidParams, match="manifest is not JSON-serializable"):
        store.install(record)
    assert store.count() == 0


def test_discard_blob_deletes_only_what_nothing_uses(store: Store, paths: Paths) -> None:
    installed = record_for(store, WASM_A)
    store.install(installed)
    abandoned = store.put_blob(WASM_B)

    store.discard_blob(abandoned.sha256)
    store.discard_blob(installed.sha256)

    assert blob_files(paths.blobs) == {installed.sha256}


def test_a_blob_put_for_a_pending_install_survives_an_uninstall(store: Store, paths: Paths) -> None:
    # Uninstalling the last user of a blob must not delete it while a new install of the
    # same component is between put_blob and install.
    old = record_for(store, WASM_A, tool_id="dev.kami.old")
    store.install(old)
    pending = record_for(store, WASM_A, tool_id="dev.kami.new")

    store.uninstall(old.id)

    assert store.install(pending).changed
    store.verify_blob(pending.sha256)


def test_records_survive_reopening(store: Store, paths: Paths) -> None:
    record = record_for(store, WASM_A)
    store.install(record)
    store.aot_put("k", record.sha256)
    store.close()

    with Store(paths) as reopened:
        assert reopened.list() == [record]
        assert reopened.aot_get("k") == record.sha256
        reopened.verify_blob(record.sha256)


def test_tool_record_fields_are_the_contract() -> None:
    # The daemon constructs these by keyword; renaming a field breaks it.
    assert [f.name for f in attrs.fields(ToolRecord)] == [
        "id",
        "name",
        "version",
        "description",
        "sha256",
        "size",
        "manifest",
        "grants",
        "imports",
        "source",
        "installed_at",
    ]


def test_generation_moves_with_tools_and_grants_but_not_audit(store: Store) -> None:
    from kamid.store import AuditRow

    start = store.generation
    store.install(record_for(store, b"\0asm one"))
    after_install = store.generation
    assert after_install > start
    store.security.update_grants("dev.kami.echo", lambda g: {**g, "kv": True})
    after_grant = store.generation
    assert after_grant > after_install
    store.security.append_audit([AuditRow(at=1.0, action="exec", tool_id="dev.kami.echo")])
    assert store.generation == after_grant, "audit rows must not invalidate caches"
    store.uninstall("dev.kami.echo")
    assert store.generation > after_grant
