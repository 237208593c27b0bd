"""Live filter chips: parsing, AND semantics, Field=value, regex, errors, speed."""

from __future__ import annotations

from typing import Any

import pytest

from netobserv_tui.store.chips import FilterChips, parse_chip, record_text

NODEJS: dict[str, Any] = {
    "SrcAddr": "10.129.0.48",
    "DstAddr": "172.30.0.10",
    "SrcPort": 41000,
    "DstPort": 53,
    "Proto": 17,
    "Bytes": 284,
    "Interface": "ens5",
    "Interfaces": ["ens5", "br-ex"],
    "IfDirections": [0, 1],
    "DnsName": "nodejs.example.com",
    "DnsFlagsResponseCode": "NxDomain",
    "DnsLatencyMs": 12,
    "SrcK8S_Name": "nodejs-basic-7d9f",
    "SrcK8S_Namespace": "connectivity-scenario",
    "PktDropLatestDropCause": None,
}
WEB: dict[str, Any] = {
    "SrcAddr": "10.128.0.63",
    "DstAddr": "10.129.0.48",
    "SrcPort": 57856,
    "DstPort": 3001,
    "Proto": 6,
    "Bytes": 561,
    "Interface": "genev_sys_6081",
    "SrcK8S_Name": "router-default",
    "SrcK8S_Namespace": "openshift-ingress",
}


def chips(*texts: str) -> FilterChips:
    result = FilterChips()
    for text in texts:
        result, error = result.add(text)
        assert error is None, error
    return result


def matching(*texts: str) -> list[str]:
    found = chips(*texts).filter([NODEJS, WEB])
    return [record["SrcK8S_Name"] for record in found]


# -- parsing ---------------------------------------------------------------------------


def test_parse_kinds() -> None:
    keyword, _ = parse_chip("  NodeJS ")
    assert keyword is not None
    assert (keyword.text, keyword.kind, keyword.keyword) == ("NodeJS", "keyword", "nodejs")
    field, _ = parse_chip("DstPort=53")
    assert field is not None and field.kind == "field" and field.predicate is not None
    regex, _ = parse_chip(r"/^10\.129\./")
    assert regex is not None and regex.kind == "regex" and regex.pattern is not None
    assert regex.pattern.pattern == r"^10\.129\."


def test_add_keeps_order_and_texts() -> None:
    filters = chips("nodejs", "Proto=udp", "/example/")
    assert filters.texts == ("nodejs", "Proto=udp", "/example/")
    assert len(filters) == 3
    assert [c.kind for c in filters.chips] == ["keyword", "field", "regex"]


def test_add_returns_new_object_and_leaves_original_unchanged() -> None:
    empty = FilterChips()
    one, error = empty.add("nodejs")
    assert error is None
    assert empty.texts == () and one.texts == ("nodejs",)


def test_remove_last_and_clear() -> None:
    filters = chips("a", "b", "c")
    assert filters.remove_last().texts == ("a", "b")
    assert filters.remove_last().remove_last().remove_last().texts == ()
    assert FilterChips().remove_last() == FilterChips()
    assert filters.clear() == FilterChips()
    assert filters.texts == ("a", "b", "c")


# -- errors: a message, never an exception, chips unchanged ------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty filter: type a keyword, Field=value or /regex/"),
        ("   ", "empty filter: type a keyword, Field=value or /regex/"),
        ("Foo=1", "'Foo=1': unknown field 'Foo'; the Raw view lists them all"),
        ("DstPrt=53", "'DstPrt=53': unknown field 'DstPrt'; did you mean DstPort, DstAddr?"),
        ("=53", "'=53': a field name goes before '=', as in DstPort=53"),
        ("DstPort=", "'DstPort=': a value goes after '=', as in DstPort=..."),
        ("DstPort=dns", "'DstPort=dns': DstPort is a number, as in DstPort=53"),
        ("Proto=http", "'Proto=http': Proto is a number, as in Proto=6 or tcp"),
        ("/", "'/': a regular expression ends with '/', as in /^10\\.129\\./"),
        ("/abc", "'/abc': a regular expression ends with '/', as in /^10\\.129\\./"),
        ("//", "'//': empty regular expression"),
        ("a\nb", "'a\\nb': a chip is one line; press Enter after each keyword"),
        ("/a(/", "'/a(/': invalid regular expression: missing ) at position 2"),
    ],
)
def test_errors_are_messages(text: str, message: str) -> None:
    before = chips("nodejs")
    after, error = before.add(text)
    assert error == message
    assert after is before


# -- matching --------------------------------------------------------------------------


def test_no_chip_matches_everything() -> None:
    assert FilterChips().matches({})
    assert matching() == ["nodejs-basic-7d9f", "router-default"]


def test_keyword_is_case_insensitive_substring_of_any_field() -> None:
    assert matching("NODEJS") == ["nodejs-basic-7d9f"]
    assert matching("10.129.0.48") == ["nodejs-basic-7d9f", "router-default"]
    assert matching("ingress") == ["router-default"]
    assert matching("br-ex") == ["nodejs-basic-7d9f"]  # list fields too
    assert matching("nothing-like-this") == []


def test_keyword_matches_protocol_name_but_not_null_or_across_fields() -> None:
    assert matching("udp") == ["nodejs-basic-7d9f"]
    assert matching("tcp") == ["router-default"]
    assert matching("none") == []  # PktDropLatestDropCause is NULL: no text
    assert matching("0.48172") == []


def test_all_chips_must_match() -> None:
    assert matching("10.129.0.48", "udp") == ["nodejs-basic-7d9f"]
    assert matching("10.129.0.48", "DstPort=3001") == ["router-default"]
    assert matching("nodejs", "DstPort=3001") == []
    assert matching("nodejs", "/nxdomain/", "Proto=17", "ens5") == ["nodejs-basic-7d9f"]


def test_field_numbers_compare_as_numbers() -> None:
    assert matching("DstPort=53") == ["nodejs-basic-7d9f"]
    assert matching("DstPort=053") == ["nodejs-basic-7d9f"]
    assert matching("DstPort=0x35") == ["nodejs-basic-7d9f"]
    assert matching("dstport= 3001") == ["router-default"]
    assert matching("DstPort=5") == []  # exact, not a substring
    assert matching("Bytes=284") == ["nodejs-basic-7d9f"]
    assert matching("Proto=TCP") == ["router-default"]
    assert matching("Proto=17") == ["nodejs-basic-7d9f"]
    assert matching("DnsLatencyMs=12") == ["nodejs-basic-7d9f"]
    assert matching("DnsLatencyMs=0") == []  # absent is not 0


def test_field_strings_compare_exactly_ignoring_case() -> None:
    assert matching("DnsFlagsResponseCode=nxdomain") == ["nodejs-basic-7d9f"]
    assert matching("SrcK8S_Namespace=OpenShift-Ingress") == ["router-default"]
    assert matching("SrcK8S_Namespace=openshift") == []  # exact, not a substring
    assert matching("SrcAddr=10.129.0.48") == ["nodejs-basic-7d9f"]
    assert matching("DstAddr=10.129.0.48") == ["router-default"]


def test_field_lists_match_any_element() -> None:
    assert matching("Interfaces=BR-EX") == ["nodejs-basic-7d9f"]
    assert matching("IfDirections=1") == ["nodejs-basic-7d9f"]
    assert matching("Interfaces=br") == []


def test_regex_searches_each_field_ignoring_case() -> None:
    assert matching(r"/^10\.128\./") == ["router-default"]  # anchors at a field start
    assert matching(r"/^10\.129\.0\.48$/") == ["nodejs-basic-7d9f", "router-default"]
    assert matching("/NODEJS-[a-z]+-[0-9a-f]{4}/") == ["nodejs-basic-7d9f"]
    assert matching("/^genev_sys_\\d+$/") == ["router-default"]
    assert matching("/^udp$/") == ["nodejs-basic-7d9f"]
    assert matching("/^basic/") == []


def test_record_text() -> None:
    text = record_text({"A": "x", "B": None, "C": [1, "y"], "Proto": 6, "D": 7})
    assert text == "x\n1,y\n6\n7\nTCP"
    assert record_text({"Proto": 99}) == "99"


def test_record_text_has_the_endpoints_the_table_shows() -> None:
    text = record_text({"SrcAddr": "198.18.0.12", "SrcPort": 53, "DstAddr": "fd00::1",
                        "DstPort": 40000, "Proto": 17})
    assert text == ("198.18.0.12\n53\nfd00::1\n40000\n17\nUDP\n198.18.0.12:53\n"
                    "[fd00::1]:40000")
    assert record_text({"SrcAddr": "10.0.0.1", "SrcPort": 0}) == "10.0.0.1\n0"
    assert matching("10.129.0.48:41000") == ["nodejs-basic-7d9f"]
    assert matching("10.129.0.48:") == ["nodejs-basic-7d9f", "router-default"]
    assert matching("0.48:3001") == ["router-default"]
    assert matching("/^172\\.30\\.0\\.10:53$/") == ["nodejs-basic-7d9f"]
    assert matching("41000:") == []  # never across two texts


def test_filter_keeps_order() -> None:
    records = [{"n": i, "Proto": 6 if i % 2 else 17} for i in range(10)]
    found = chips("Proto=tcp").filter(records)
    assert [r["n"] for r in found] == [1, 3, 5, 7, 9]


# -- speed -----------------------------------------------------------------------------


def test_100k_records_give_exactly_the_matching_ones() -> None:
    """Correctness at scale; the speed is measured by tests/bench/bench_filter.py."""
    base = {
        "AgentIP": "10.0.1.76", "Bytes": 561, "DnsErrno": 0, "Dscp": 20, "DstMac": "0A:58:0A",
        "Etype": 2048, "Flags": 16, "FlowDirection": 0, "IfDirection": 0, "Interface": "ens5",
        "K8S_FlowLayer": "infra", "Packets": 1, "SrcAddr": "10.129.0.48", "SrcPort": 46934,
        "SrcMac": "0A:58:0A:80:00:01", "TimeFlowEndMs": 1709741962111,
        "TimeFlowStartMs": 1709741962111, "TimeReceived": 1709741964, "TimeFlowRttNs": 121000,
        "SrcK8S_Name": "nodejs-basic-7d9f", "SrcK8S_Namespace": "connectivity-scenario",
        "SrcK8S_HostName": "ip-10-0-1-202.ec2.internal", "Interfaces": ["ens5", "br-ex"],
    }
    records: list[dict[str, Any]] = [
        {**base, "DstAddr": f"10.128.{i % 250}.{i % 7}", "DstPort": 53 if i % 2 else 9999,
         "Proto": 17 if i % 3 == 0 else 6}
        for i in range(100_000)
    ]
    filters = chips("nodejs", "DstPort=53", "/^10\\.128\\.1\\d\\./", "udp")
    found = filters.filter(records)
    expected = [
        r for r in records
        if r["DstPort"] == 53 and r["Proto"] == 17 and 10 <= int(r["DstAddr"].split(".")[2]) <= 19
    ]
    assert found == expected and len(found) > 0


def test_equalities_are_the_integer_field_chips_only() -> None:
    chips = FilterChips()
    for text in ("Proto=udp", "tcp", "DnsFlagsResponseCode=nxdomain", "DstPort=0x35", "/x/"):
        chips, error = chips.add(text)
        assert error is None
    assert chips.equalities() == (("Proto", 17), ("DstPort", 53))
    assert FilterChips().equalities() == ()
