"""Personalisation templates (issue #17): the syntax, the safety limits, check() and missing()."""

from __future__ import annotations

import contextlib
import html
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import templates as t
from pipeline.templates import RenderError, TemplateError, check, data_size_problem, parse
from pipeline.unsubscribe import link_slots, unsubscribe_url


def html_of(source: str, data: dict[str, Any]) -> str:
    return parse(source, html=True).render(data)


def text_of(source: str, data: dict[str, Any]) -> str:
    return parse(source, html=False).render(data)


def problem(source: str) -> TemplateError:
    with pytest.raises(TemplateError) as caught:
        check(source)
    return caught.value


# --- the syntax ------------------------------------------------------------------------------


def test_a_name_is_escaped_in_html_and_not_in_the_subject_or_text() -> None:
    data = {"name": 'Ada & <Bob> "O\'Neil"'}
    assert html_of("Hi {{name}}", data) == "Hi Ada &amp; &lt;Bob&gt; &quot;O&#x27;Neil&quot;"
    assert text_of("Hi {{name}}", data) == 'Hi Ada & <Bob> "O\'Neil"'


def test_triple_braces_and_ampersand_are_raw() -> None:
    data = {"banner": "<b>Sale</b>"}
    assert html_of("{{{banner}}}|{{& banner }}", data) == "<b>Sale</b>|<b>Sale</b>"


def test_a_section_repeats_per_item_and_still_sees_outer_names() -> None:
    source = "{{#items}}{{name}} for {{first_name}}; {{/items}}"
    data = {"first_name": "Ada", "items": [{"name": "tea"}, {"name": "cake"}]}
    assert html_of(source, data) == "tea for Ada; cake for Ada; "


def test_an_item_name_hides_the_same_outer_name() -> None:
    data = {"name": "outer", "items": [{"name": "inner"}, {}]}
    assert html_of("{{#items}}[{{name}}]{{/items}}", data) == "[inner][outer]"


def test_a_section_over_an_object_enters_it_and_over_true_shows_once() -> None:
    data = {"user": {"first": "Ada"}, "vip": True}
    assert html_of("{{#user}}Hi {{first}}{{/user}}{{#vip}}, VIP{{/vip}}", data) == "Hi Ada, VIP"


@pytest.mark.parametrize("value", [False, None, 0, 0.0, "", [], {}])
def test_false_values_hide_a_section_and_show_its_inverse(value: object) -> None:
    assert html_of("{{#x}}yes{{/x}}{{^x}}no{{/x}}", {"x": value}) == "no"


@pytest.mark.parametrize("value", [True, 1, "a", [0], {"a": 1}, 0.5])
def test_true_values_show_a_section_and_hide_its_inverse(value: object) -> None:
    assert html_of("{{#x}}yes{{/x}}{{^x}}no{{/x}}", {"x": value}) == "yes"


def test_a_missing_name_is_false_and_renders_empty() -> None:
    assert html_of("[{{nope}}][{{#nope}}x{{/nope}}][{{^nope}}y{{/nope}}]", {}) == "[][][y]"


def test_dotted_names_walk_nested_objects() -> None:
    data = {"user": {"address": {"city": "Paris"}}}
    assert html_of("{{user.address.city}}|{{user.address.zip}}|{{user.nope.city}}", data) == "Paris||"


def test_only_the_first_part_of_a_dotted_name_falls_back_to_outer_objects() -> None:
    # The spec's "Context Precedence": `b` is found in `a`, which has no `c`; the outer b.c is not used.
    assert html_of("{{#a}}{{b.c}}{{/a}}", {"a": {"b": {}}, "b": {"c": "ERROR"}}) == ""


def test_dot_is_the_current_item() -> None:
    assert html_of("{{#tags}}<{{.}}>{{/tags}}", {"tags": ["a", "b&c"]}) == "<a><b&amp;c>"


def test_numbers_and_booleans_print_as_json_and_handlebars_write_them() -> None:
    data = {"n": 3, "price": 19.5, "whole": 19.0, "big": 1e20, "yes": True, "no": False, "nil": None}
    assert (
        html_of("{{n}} {{price}} {{whole}} {{big}} {{yes}} {{no}} [{{nil}}]", data) == "3 19.5 19 1e+20 true false []"
    )


def test_objects_and_lists_print_nothing() -> None:
    assert html_of("[{{user}}][{{tags}}]", {"user": {"a": 1}, "tags": ["a"]}) == "[][]"


def test_comments_render_nothing() -> None:
    assert html_of("a{{! a note, even with {{ in it }}b", {}) == "ab"
    assert html_of("a{{!-- a long one may hold {{name}} --}}b", {}) == "ab"
    assert problem("a{{!-- never closed }}").problem == 'unclosed comment: this "{{!--" has no matching "--}}"'


def test_block_tags_on_lines_of_their_own_leave_no_blank_lines() -> None:
    source = "<ul>\n  {{#items}}\n  <li>{{.}}</li>\n  {{/items}}\n  {{! done }}\n</ul>\n"
    assert html_of(source, {"items": ["a", "b"]}) == "<ul>\n  <li>a</li>\n  <li>b</li>\n</ul>\n"


def test_standalone_lines_with_crlf_go_too() -> None:
    assert html_of("|\r\n{{#x}}\r\n{{/x}}\r\n|", {"x": True}) == "|\r\n|"


def test_a_value_is_never_rendered_again_as_a_template() -> None:
    assert html_of("{{a}}", {"a": "{{b}}", "b": "ERROR"}) == "{{b}}"


def test_text_without_tags_comes_back_unchanged() -> None:
    source = "<p>100% { of } the } } text\n\n  </p>"
    assert html_of(source, {}) == source


# The Mustache spec (github.com/mustache/spec, specs/*.json), a sample of its core cases. The
# whole of interpolation, sections, inverted and comments (110 cases) passes; partials and
# delimiter changes are refused on purpose.
SPEC_CASES = [
    (
        "Parent contexts",
        '"{{#sec}}{{a}}, {{b}}, {{c.d}}{{/sec}}"',
        {"a": "foo", "b": "wrong", "sec": {"b": "bar"}, "c": {"d": "baz"}},
        '"foo, bar, baz"',
    ),
    ("Variable test", '"{{#foo}}{{.}} is {{foo}}{{/foo}}"', {"foo": "bar"}, '"bar is bar"'),
    (
        "Implicit Iterator - Array",
        '"{{#list}}({{#.}}{{.}}{{/.}}){{/list}}"',
        {"list": [[1, 2, 3], ["a", "b", "c"]]},
        '"(123)(abc)"',
    ),
    ("Dotted Names are never single keys", "{{a.b}}", {"a.b": "c"}, ""),
    ("Dotted Names - No Masking", "{{a.b}}", {"a.b": "c", "a": {"b": "d"}}, "d"),
    (
        "Indented Inline Sections",
        " {{#boolean}}YES{{/boolean}}\n {{#boolean}}GOOD{{/boolean}}\n",
        {"boolean": True},
        " YES\n GOOD\n",
    ),
    ("Standalone Without Newline", "#{{#boolean}}\n/\n  {{/boolean}}", {"boolean": True}, "#\n/\n"),
    ("Standalone Without Previous Line", "  {{#boolean}}\n#{{/boolean}}\n/", {"boolean": True}, "#\n/"),
    (
        "Internal Whitespace",
        " | {{#boolean}} {{! Important Whitespace }}\n {{/boolean}} | \n",
        {"boolean": True},
        " |  \n  | \n",
    ),
    ("Interpolation - Standalone", "  {{string}}\n", {"string": "---"}, "  ---\n"),
    ("Basic Decimal Interpolation", '"{{power}} jiggawatts!"', {"power": 1.21}, '"1.21 jiggawatts!"'),
    ("Multiline Standalone comment", "Begin.\n{{!\nSomething's going on here...\n}}\nEnd.\n", {}, "Begin.\nEnd.\n"),
]


@pytest.mark.parametrize(("name", "source", "data", "expected"), SPEC_CASES, ids=[case[0] for case in SPEC_CASES])
def test_mustache_spec(name: str, source: str, data: dict[str, Any], expected: str) -> None:
    assert html_of(source, data) == expected


# --- the links ---------------------------------------------------------------------------------


def test_the_unsubscribe_link_renders_as_the_link_slots_fill_it() -> None:
    # pipeline/unsubscribe.py fills `{{unsubscribe_url}}` HTML-escaped; a template message gets the
    # same bytes when the URL is rendered as data, and the raw URL in the text part.
    url = unsubscribe_url("https://mail.example.com/x?a=1&b=2", b"k" * 32, 42, "news")
    source = '<a href="{{unsubscribe_url}}">unsubscribe</a> {{ unsubscribe_url }}'
    assert html_of(source, {"unsubscribe_url": url}) == link_slots(source, escape=True).fill(url)
    assert "&amp;b=2" in html_of(source, {"unsubscribe_url": url})
    assert text_of("{{unsubscribe_url}}", {"unsubscribe_url": url}) == url


# --- safety ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{name.upper}}",
        "{{name.__class__}}",
        "{{name.__doc__}}",
        "{{n.real}}",
        "{{name.0}}",
        "{{tags.0}}",
        "{{tags.__len__}}",
        "{{#name.upper}}x{{/name.upper}}",
        "{{#name}}{{upper}}{{/name}}",
    ],
)
def test_names_reach_dict_keys_only_never_attributes(source: str) -> None:
    assert html_of(source, {"name": "ab", "n": 5, "tags": ["a"]}) == ""


def test_nothing_in_the_data_is_ever_called_or_converted() -> None:
    called: list[str] = []

    class Trap:
        def __call__(self) -> str:
            called.append("call")
            return "CALLED"

        def __str__(self) -> str:
            called.append("str")
            return "STR"

        def __bool__(self) -> bool:
            called.append("bool")
            return True

    def function() -> str:
        called.append("function")
        return "CALLED"

    data = {"f": Trap(), "g": function}
    assert html_of("[{{f}}][{{{g}}}][{{#f}}x{{/f}}][{{^g}}y{{/g}}][{{#g}}z{{/g}}]", data) == "[][][][y][]"
    assert called == []


@pytest.mark.parametrize("source", ["{{> /etc/passwd}}", "{{>header}}", "a\n  {{> footer }}"])
def test_partials_are_refused_when_parsed(source: str) -> None:
    error = problem(source)
    assert "partials are not supported" in error.problem
    assert (error.line, error.column) == ((2, 3) if "\n" in source else (1, 1))


@pytest.mark.parametrize("source", ["{{=<% %>=}}<% name %>", "{{<parent}}{{/parent}}", "{{$block}}x{{/block}}"])
def test_delimiter_changes_and_inheritance_are_refused(source: str) -> None:
    assert "not supported" in problem(source).problem


def test_sections_nested_over_a_long_list_stop_at_the_step_limit() -> None:
    # 1,000**10 iterations if nothing stopped it; with no text inside, the size limit alone would not.
    for inner in ("{{.}}", ""):
        template = parse("{{#l}}" * 10 + inner + "{{/l}}" * 10, html=True)
        with pytest.raises(RenderError, match="takes over 50,000 steps"):
            template.render({"l": list(range(1_000))})


def test_output_stops_at_the_size_limit() -> None:
    data = {"l": list(range(1_000)), "big": "x" * 10_000}
    with pytest.raises(RenderError, match="over the limit of 1,000,000 characters"):
        parse("{{#l}}{{{big}}}{{/l}}", html=True).render(data)
    with pytest.raises(RenderError, match="over the limit of 1,000,000 characters"):
        parse("{{{big}}}" * 101, html=True).render(data)


@pytest.mark.parametrize("source", ["{{a}}{{a}}", "{{#s}}{{a}}{{/s}}{{a}}"])
def test_the_size_limit_is_a_parameter_and_exact(source: str) -> None:
    template = parse(source, html=True)
    data = {"a": "x" * 5, "s": True}
    assert template.render(data, max_chars=10) == "x" * 10
    with pytest.raises(RenderError):
        template.render(data, max_chars=9)


def test_a_template_renders_again_after_a_recipient_failed() -> None:
    template = parse("{{#l}}{{{v}}}{{/l}}", html=True)
    with pytest.raises(RenderError):
        template.render({"l": [1, 2], "v": "x" * 10}, max_chars=15)
    assert template.render({"l": [1, 2], "v": "ab"}) == "abab"


def test_templates_nested_too_deep_or_too_large_are_refused() -> None:
    assert "nest more than 16" in problem("{{#a}}" * 17 + "{{/a}}" * 17).problem
    check("{{#a}}" * 16 + "{{/a}}" * 16)
    assert "over the limit of 1,000,000 characters" in problem("x" * 1_000_001).problem
    assert "over 20,000 tags" in problem("{{a}}" * 20_001).problem


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from("abcx"), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(data=st.dictionaries(st.sampled_from("abcx"), json_values, max_size=4))
def test_any_json_data_renders_or_fails_with_a_render_error(data: dict[str, Any]) -> None:
    template = parse("{{a}}{{#b}}[{{x}}{{a.b}}{{#c}}{{.}}{{/c}}]{{/b}}{{^c}}-{{/c}}{{{x.a}}}", html=True)
    with contextlib.suppress(RenderError):
        assert isinstance(template.render(data, max_chars=10_000), str)


@given(value=st.text())
def test_an_escaped_value_unescapes_to_itself_and_cannot_open_a_tag(value: str) -> None:
    rendered = html_of('<a title="{{v}}">', {"v": value})
    assert html.unescape(rendered) == f'<a title="{value}">'
    assert not set(rendered[10:-2]) & set("<>\"'")


# --- check(): the position and the problem -------------------------------------------------------


def test_an_unclosed_tag_names_its_line_and_column() -> None:
    error = problem("<p>Hello</p>\n<p>Dear {{first_name</p>\n")
    assert (error.line, error.column) == (2, 9)
    assert str(error) == 'line 2, column 9: unclosed tag: this "{{" has no matching "}}"'


def test_a_tag_left_open_before_the_next_one_is_unclosed() -> None:
    error = problem("Dear {{first_name, your {{plan}} plan")
    assert (error.line, error.column, error.problem) == (1, 6, 'unclosed tag: this "{{" has no matching "}}"')


def test_a_section_never_closed_names_where_it_opened() -> None:
    error = problem("a\n\n  {{#items}}\n<li>{{name}}</li>\n")
    assert (error.line, error.column) == (3, 3)
    assert error.problem == 'section "items" is never closed (add {{/items}})'


def test_a_close_that_does_not_match_names_both_sections() -> None:
    error = problem("{{#a}}\n{{#b}}x{{/a}}")
    assert (error.line, error.column) == (2, 8)
    assert error.problem == '"{{/a}}" closes "a", but the open section is "b" (line 2, column 1)'


def test_a_close_with_nothing_open_is_refused() -> None:
    error = problem("x {{/items}}")
    assert (error.line, error.column, error.problem) == (1, 3, '"{{/items}}" closes a section that is not open')


def test_triple_braces_must_close_with_three() -> None:
    assert problem("{{{banner}} rest").problem == 'a tag opened with "{{{" must close with "}}}"'


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("{{#if vip}}x{{/if}}", "helpers such as #if and #each are not supported"),
        ("{{#each items}}x{{/each}}", "helpers such as #if and #each are not supported"),
        ("{{#vip}}a{{else}}b{{/vip}}", "else is not supported; close the section and add {{^name}}...{{/name}}"),
        ("{{#l}}{{this}}{{/l}}", "write {{.}} for the current item"),
        ("{{#l}}{{../name}}{{/l}}", "Handlebars paths are not supported"),
        ("{{#l}}{{@index}}{{/l}}", "Handlebars paths are not supported"),
        ("{{first name}}", '"first name" is not a name'),
        ("{{~name~}}", '"~name~" is not a name'),
        ("{{ }}", "the tag names nothing"),
        ("{{#}}{{/}}", "the tag names nothing"),
    ],
)
def test_handlebars_only_syntax_is_refused_with_the_mustache_way(source: str, says: str) -> None:
    assert says in problem(source).problem


def test_names_may_hold_unicode_letters_digits_dash_and_underscore() -> None:
    assert (
        html_of("{{prénom}} {{plan-2}} {{a_b.c1}}", {"prénom": "Zoé", "plan-2": "pro", "a_b": {"c1": 1}}) == "Zoé pro 1"
    )


@given(source=st.text(alphabet="{}#^/!&>=. ab\n", max_size=40))
def test_check_parses_or_names_a_position_inside_the_template(source: str) -> None:
    try:
        check(source)
    except TemplateError as error:
        lines = source.split("\n")
        assert 1 <= error.line <= len(lines)
        assert 1 <= error.column <= len(lines[error.line - 1]) + 1


# --- missing(): strict mode ----------------------------------------------------------------------


def test_missing_lists_top_level_names_the_data_lacks_once_each_in_order() -> None:
    template = parse("{{plan}} {{first_name}} {{user.city}} {{plan}} {{{bio}}}", html=True)
    assert template.missing({"first_name": "Ada", "user": {}}) == ["plan", "user.city", "bio"]
    assert template.missing({"plan": "pro", "first_name": "Ada", "user": {"city": "Paris"}, "bio": ""}) == []


def test_null_is_a_value_not_a_missing_name() -> None:
    assert parse("{{plan}}", html=False).missing({"plan": None}) == []


def test_names_inside_sections_and_section_names_are_never_required() -> None:
    template = parse("{{#items}}{{name}}{{/items}}{{^vip}}{{offer}}{{/vip}}", html=True)
    assert template.required == ()
    assert template.missing({}) == []


def test_built_in_names_are_supplied_at_send_time_unless_told_otherwise() -> None:
    template = parse("{{email}} {{unsubscribe_url}} {{topic_id}} {{first_name}}", html=True)
    assert template.missing({}) == ["first_name"]
    assert template.missing({}, supplied=()) == ["email", "unsubscribe_url", "topic_id", "first_name"]


# --- the data limit -------------------------------------------------------------------------------


def test_typical_data_is_accepted() -> None:
    assert data_size_problem({"first_name": "Ada", "plan": "pro", "items": [{"name": "tea", "n": 2}]}) is None


def test_data_over_16_kb_of_json_is_refused_with_its_size() -> None:
    assert data_size_problem({"bio": "x" * (16 * 1024 - 10)}) is None  # {"bio":"..."} adds 10 bytes
    assert data_size_problem({"bio": "x" * (16 * 1024 - 9)}) == "data is 16,385 bytes of JSON, over the limit of 16,384"
    assert data_size_problem({"bio": "é" * 9_000}) is not None  # bytes of UTF-8, not characters


def test_data_deeper_than_five_levels_is_refused() -> None:
    five = {"a": {"b": [{"c": {"d": 1}}]}}
    assert data_size_problem(five) is None
    assert data_size_problem({"a": {"b": [{"c": {"d": [1]}}]}}) == "data nests deeper than 5 levels"


@pytest.mark.parametrize("data", [["a"], "a", None, {"when": object()}])
def test_data_must_be_a_json_object(data: object) -> None:
    assert data_size_problem(data) is not None


@settings(max_examples=50, deadline=None)
@given(chars=st.sampled_from(["'", "x", '"', "&", "é"]))
def test_size_bound_holds_for_the_worst_data_within_the_limit(chars: str) -> None:
    template = parse("<p>{{a}}</p>{{b}}", html=True)
    # Fill 16 KB of JSON with the character that grows most when escaped.
    value = chars * (t.MAX_DATA_BYTES // len(json.dumps(chars, ensure_ascii=False).encode()))
    data = {"a": value, "b": value}
    while data_size_problem(data) is not None:
        value = value[: len(value) * 9 // 10]
        data = {"a": value, "b": ""}
    bound = template.size_bound()
    assert bound is not None
    assert len(template.render(data)) <= bound
    assert parse("{{#s}}x{{/s}}", html=True).size_bound() is None
