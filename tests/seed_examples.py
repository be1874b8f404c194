"""The request examples of the Altcraft API pages (../shared/altcraft-api/seeds), verbatim, for the
emulator's tests."""

from __future__ import annotations

from typing import Any

SEED_BATCH_EMAIL_JSON: dict[str, Any] = {
    "token": "abcdefghijklmnqrstuvwxyz",
    "workflow_id": 12,
    "matching": "email",
    "data": [
        {"data": {"_fname": "Alisa", "_lname": "Lambert", "email": "example@example.com", "phones": "+79000000000"}},
        {"data": {"_fname": "Alex", "_lname": "Lambert", "email": "example@example.com", "phones": "+79000000000"}},
    ],
}
SEED_BATCH_EMAIL_XML = b"""<xml>
<token>abcdefghijklmnqrstuvwxyz</token>
<workflow_id>10</workflow_id>
<matching>email</matching>
<data>
<_fname>John</_fname>
<_lname>Lambert</_lname>
<email>example@example.com</email>
</data>
<data>
<_fname>Bert</_fname>
<_lname>Lambert</_lname>
<email>example@example.com</email>
</data>
</xml>"""
SEED_BATCH_CUSTOM_JSON: dict[str, Any] = {
    "token": "abcdefghijklmnqrstuvwxyz",
    "workflow_id": 12,
    "matching": "custom",
    "field_name": "CRM_ID",
    "data": [
        {
            "data": {
                "_fname": "Alina",
                "_lname": "Lambert",
                "email": "example@example.com",
                "phones": "+79006574081",
                "CRM_ID": "00066",
            }
        },
        {
            "data": {
                "_fname": "Victor",
                "_lname": "Lambert",
                "email": "example@example.com",
                "phones": "+79000005422",
                "CRM_ID": "00076",
            }
        },
    ],
}
SEED_BATCH_CUSTOM_XML = b"""<xml>
<token>abcdefghijklmnqrstuvwxyz</token>
<workflow_id>12</workflow_id>
<matching>custom</matching>
<field_name>New_field_7</field_name>
<data>
<_fname>Polina</_fname>
<_lname>Lambert</_lname>
<email>example@example.com</email>
<phones>+79006574082</phones>
<New_field_7 string = "true" >00067</New_field_7>
</data>
<data>
<_fname>Dariya</_fname>
<_lname>Lambert</_lname>
<email>example@example.com</email>
<phones>+79000005423</phones>
<New_field_7 string = "true">00077</New_field_7>
</data>
</xml>"""
SEED_IMPORT_BATCH_JSON: dict[str, Any] = {
    "token": "abcdefghijklmnqrstuvwxyz",
    "db_id": 1,
    "matching": "custom",
    "field_name": "Custom_ID",
    "skip_triggers": True,
    "data": [
        {
            "_fname": "Lala",
            "_lname": "Doe",
            "Custom_ID": 77,
            "email": "example@example.com",
            "subscriptions": [
                {
                    "channel": "email",
                    "email_data": {"email": "example@example.com"},
                    "resource_id": 28,
                    "custom_fields": {"custom_field": "test value"},
                    "cats": ["category_1", "category_2"],
                }
            ],
        },
        {"_fname": "Victor", "Custom_ID": 88, "email": "example@example.com"},
    ],
}
SEED_IMPORT_BATCH_XML = b"""<xml>
<token>abcdefghijklmnqrstuvwxyz</token>
<db_id>1</db_id>
<matching>custom</matching>
<field_name>Custom_ID</field_name>
<skip_triggers>true</skip_triggers>
<data>
<_fname>Lala</_fname>
<_lname>Doe</_lname>
<Custom_ID>77</Custom_ID>
<email>example@example.com</email>
<subscriptions array='true'>
<channel>email</channel>
<email_data>
<email>example@example.com</email>
</email_data>
<resource_id>28</resource_id>
<custom_fields>
<custom_field>test value</custom_field>
</custom_fields>
<cats>category_1</cats>
<cats>category_2</cats>
</subscriptions>
</data>
<data>
<_fname>Alex</_fname>
<Custom_ID>345</Custom_ID>
<email>example@example.com</email>
</data>
</xml>"""
SEED_SINGLE_JSON: dict[str, Any] = {
    "token": "abcdefghkijlmnopqrstuv0123456789",
    "data": {"subscriptions": [{"email": "example001@example.com", "resource_id": 7}]},
    "matching": "email",
    "email": "example001@example.com",
    "content": {"one": "My email = example001@example.com", "two": "Timestamp: 1595512477", "three": "Three"},
    "workflow_id": 12,
}
SEED_SINGLE_XML = b"""<xml>
<token>abcdefghijklmnqrstuvwxyz</token>
<data>
<subscriptions array='true'>
<email>example001@example.com</email>
<resource_id>7</resource_id>
</subscriptions>
</data>
<matching>email</matching>
<email>example001@example.com</email>
<content>
<one>My email = example001@example.com</one>
<two>Timestamp: 1595512477</two>
<three>Three</three>
</content>
<workflow_id>12</workflow_id>
</xml>"""
