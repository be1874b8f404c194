"""XML bodies as the seed pages write them, read into the same dicts JSON gives."""

from __future__ import annotations

import pytest

from connector.emulator.xmlbody import XmlBodyError, parse_xml, render_xml
from tests.seed_examples import SEED_BATCH_CUSTOM_XML

# The seed page's import batch (tests.seed_examples.SEED_IMPORT_BATCH_XML) cut to one <data>, which
# then stays an object rather than becoming a list.
ONE_ITEM_IMPORT_BATCH = b"""<xml>
<token>abcdefghijklmnqrstuvwxyz</token>
<db_id>1</db_id>
<matching>custom</matching>
<field_name>Custom_ID</field_name>
<skip_triggers>true</skip_triggers>
<data>
<_fname>Lala</_fname>
<Custom_ID>77</Custom_ID>
<email>example@example.com</email>
<subscriptions array='true'>
<channel>email</channel>
<email_data>
<email>example@example.com</email>
</email_data>
<resource_id>28</resource_id>
<cats>category_1</cats>
<cats>category_2</cats>
</subscriptions>
</data>
</xml>"""


def test_seed_custom_matching_example() -> None:
    body = parse_xml(SEED_BATCH_CUSTOM_XML)
    assert body == {
        "token": "abcdefghijklmnqrstuvwxyz",
        "workflow_id": 12,
        "matching": "custom",
        "field_name": "New_field_7",
        "data": [
            {
                "_fname": "Polina",
                "_lname": "Lambert",
                "email": "example@example.com",
                "phones": "+79006574082",
                "New_field_7": "00067",
            },
            {
                "_fname": "Dariya",
                "_lname": "Lambert",
                "email": "example@example.com",
                "phones": "+79000005423",
                "New_field_7": "00077",
            },
        ],
    }


def test_array_attribute_numbers_booleans_and_repeats() -> None:
    body = parse_xml(ONE_ITEM_IMPORT_BATCH)
    assert body["db_id"] == 1
    assert body["skip_triggers"] is True
    item = body["data"]  # a single <data> without array='true' stays an object
    assert item["Custom_ID"] == 77
    assert item["subscriptions"] == [
        {
            "channel": "email",
            "email_data": {"email": "example@example.com"},
            "resource_id": 28,
            "cats": ["category_1", "category_2"],
        }
    ]


@pytest.mark.parametrize(
    ("text", "value"),
    [("12", 12), ("-3", -3), ("1.5", 1.5), ("0", 0), ("007", "007"), ("+79000000000", "+79000000000"),
     ("false", False), ("abc", "abc"), ("", "")],
)  # fmt: skip
def test_leaf_conversion(text: str, value: object) -> None:
    assert parse_xml(f"<xml><v>{text}</v></xml>".encode())["v"] == value


def test_string_attribute_keeps_text_verbatim() -> None:
    assert parse_xml(b'<xml><v string="true">12</v></xml>')["v"] == "12"


@pytest.mark.parametrize("body", [b"<xml><a></xml>", b"not xml", b"<root><a>1</a></root>", b""])
def test_malformed_or_foreign_documents_are_refused(body: bytes) -> None:
    with pytest.raises(XmlBodyError):
        parse_xml(body)


def test_render_as_the_seed_response() -> None:
    payload = {"error": 0, "error_text": "Successful operation", "result": [{"profile_id": "a"}, {"profile_id": "b"}]}
    assert render_xml(payload) == (
        b"<xml><error>0</error><error_text>Successful operation</error_text>"
        b"<result><profile_id>a</profile_id></result><result><profile_id>b</profile_id></result></xml>"
    )


def test_render_escapes_text() -> None:
    assert render_xml({"error_text": "a<b & c"}) == b"<xml><error_text>a&lt;b &amp; c</error_text></xml>"
