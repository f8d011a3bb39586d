"""Where a registration's content sits (app/catalog/layout.py): Sinch's body and the check's
members, both directions, and error paths pointed into the body as the caller sent it. Pure
functions, no services."""

from __future__ import annotations

import re
import string
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from app.catalog.check import json_path
from app.catalog.layout import Layout, from_sinch, read, to_sinch

_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\['([^'\\]*)'\]")

keys = st.text(alphabet=string.ascii_letters + string.digits + " -", min_size=1, max_size=8)
leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5))
objects = st.dictionaries(
    keys,
    st.recursive(leaves, lambda inner: st.lists(inner, max_size=3), max_leaves=5),
    max_size=4,
)
members = st.fixed_dictionaries(
    {"senderIds": st.lists(objects, max_size=3)},
    optional={
        "companyDetails": objects,
        "contactPerson": objects,
        "policyId": st.text(max_size=5),
        "tags": st.lists(st.text(max_size=5), max_size=2),
    },
)


def at(document: Any, path: str) -> Any:
    """The value at a JSON path of `json_path`'s form."""
    assert path.startswith("$")
    rest = path[1:]
    while rest:
        step = _STEP.match(rest)
        assert step is not None, rest
        name, index, quoted = step.groups()
        document = document[int(index)] if index is not None else document[name or quoted]
        rest = rest[step.end() :]
    return document


def leaf_paths(value: Any, parts: list[str | int]) -> list[tuple[str, Any]]:
    """Every path into `value` (itself included), with the value there."""
    found = [(json_path(parts), value)]
    if isinstance(value, dict):
        for name, inner in value.items():
            found += leaf_paths(inner, [*parts, name])
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += leaf_paths(inner, [*parts, index])
    return found


@given(members)
def test_sinchs_body_read_back_gives_the_checks_members(checked: dict[str, Any]) -> None:
    laid_out = to_sinch({**checked, "attachments": [{"attachmentId": "a"}]})

    assert "attachments" not in laid_out  # the uploads to come are not sent
    assert from_sinch(laid_out).members == checked
    assert read(laid_out).members == checked


@given(members)
def test_every_check_path_points_at_the_same_value_in_the_body_as_sent(
    checked: dict[str, Any],
) -> None:
    body = to_sinch(checked)
    sent = read(body)
    assert sent.layout is Layout.SINCH and sent.errors == [] and sent.sinch == body

    for path, value in leaf_paths(checked, []):
        if path == "$":
            continue
        where = sent.path_sent(path)
        assert at(body, where) == value, (path, where)


def test_the_paths_of_a_sinch_body_as_the_caller_laid_it_out() -> None:
    body = {
        "policyId": "p",
        "requestDetails": [
            {
                "senderIdDetails": [{"senderId": "A"}, {"senderId": "B"}, {"senderId": "C"}],
                "additionalDetails": [
                    {"notes": "not the check's"},
                    {"contactPerson": {"email": "x"}},
                    {"companyDetails": {"companyName": "Acme"}},
                ],
            }
        ],
    }
    sent = read(body)

    assert sent.layout is Layout.SINCH and sent.errors == []
    assert sent.sinch == body  # as sent
    assert sent.members == {
        "policyId": "p",
        "senderIds": [{"senderId": "A"}, {"senderId": "B"}, {"senderId": "C"}],
        "contactPerson": {"email": "x"},
        "companyDetails": {"companyName": "Acme"},
    }
    assert sent.path_sent("$.companyDetails.companyName") == (
        "$.requestDetails[0].additionalDetails[2].companyDetails.companyName"
    )
    assert sent.path_sent("$.senderIds[2].senderId") == (
        "$.requestDetails[0].senderIdDetails[2].senderId"
    )
    assert sent.path_sent("$.senderIds") == "$.requestDetails[0].senderIdDetails"
    assert sent.path_sent("$.contactPerson['e mail']") == (
        "$.requestDetails[0].additionalDetails[1].contactPerson['e mail']"
    )
    # Top-level fields are where they were; a name that only starts like a member is not one.
    for same in ("$.policyId", "$.attachments[0].mimeType", "$.senderIdsX", "$"):
        assert sent.path_sent(same) == same


def test_a_missing_member_is_pointed_where_it_belongs() -> None:
    # Beside the other one when one is there; else in the first object, where to_sinch puts it.
    beside = read({"requestDetails": [{"additionalDetails": [{}, {"contactPerson": {}}]}]})
    nothing = read({"requestDetails": []})
    no_body = read({"policyId": "p", "tags": []})

    assert beside.path_sent("$.companyDetails") == (
        "$.requestDetails[0].additionalDetails[1].companyDetails"
    )
    for sent in (nothing, no_body):
        assert sent.layout is Layout.SINCH and sent.errors == []
        assert sent.path_sent("$.companyDetails") == (
            "$.requestDetails[0].additionalDetails[0].companyDetails"
        )
        assert sent.path_sent("$.senderIds") == "$.requestDetails[0].senderIdDetails"


def test_the_checks_layout_is_laid_out_as_sinchs() -> None:
    body = {
        "policyId": "p",
        "companyDetails": {"companyName": "Acme"},
        "contactPerson": {"email": "x"},
        "senderIds": [{"senderId": "ACME"}],
        "attachments": [{"attachmentId": "a"}],
        "tags": ["#t"],
    }
    sent = read(body)

    assert sent.layout is Layout.CHECK and sent.errors == []
    assert sent.members == body
    assert sent.sinch == {
        "policyId": "p",
        "tags": ["#t"],
        "requestDetails": [
            {
                "senderIdDetails": [{"senderId": "ACME"}],
                "additionalDetails": [
                    {"companyDetails": {"companyName": "Acme"}, "contactPerson": {"email": "x"}}
                ],
            }
        ],
    }
    assert sent.path_sent("$.senderIds[0].senderId") == "$.senderIds[0].senderId"


def test_a_body_mixing_both_layouts_is_one_entry() -> None:
    sent = read({"requestDetails": [], "senderIds": [], "contactPerson": {}})

    assert sent.mixed
    [entry] = sent.errors
    assert (entry.path, entry.rule) == ("$.requestDetails", "layout")
    assert "`senderIds`" in entry.message and "`contactPerson`" in entry.message


def test_what_is_not_sinchs_shape_is_named_and_read_as_absent() -> None:
    def errors(body: dict[str, Any]) -> list[tuple[str, str]]:
        return [(e.path, e.rule) for e in read(body).errors]

    assert errors({"requestDetails": {"senderIdDetails": []}}) == [("$.requestDetails", "type")]
    assert errors({"requestDetails": ["x"]}) == [("$.requestDetails[0]", "type")]
    assert errors({"requestDetails": [{}, {}]}) == [("$.requestDetails[1]", "maxItems")]
    assert errors({"requestDetails": [{"additionalDetails": {}}]}) == [
        ("$.requestDetails[0].additionalDetails", "type")
    ]
    twice = {"requestDetails": [{"additionalDetails": [{"contactPerson": {}}] * 2}]}
    assert errors(twice) == [("$.requestDetails[0].additionalDetails[1].contactPerson", "layout")]
    assert "senderIds" not in read({"requestDetails": "x"}).members
    # senderIdDetails of the wrong kind are the check's to refuse (type array), at their path.
    assert read({"requestDetails": [{"senderIdDetails": {}}]}).members["senderIds"] == {}
