from lmforge.data.clean import clean_text, dedup_key, normalize_newlines, normalize_whitespace, strip_control


def test_newlines_and_bom():
    assert normalize_newlines("\ufeffa\r\nb\rc\n") == "a\nb\nc\n"
    assert normalize_newlines("x\ufeffy") == "x\ufeffy"  # only a leading BOM is a BOM


def test_control_characters_keep_newline_and_tab():
    assert strip_control("a\x00b\tc\nd\x1b[0m\x7f\x85e") == "ab\tc\nd[0me"


def test_whitespace_keeps_indentation_collapses_inner_runs():
    text = "\n\n  def f():   \n      return  1\t\t+ 2\n\n\n\nend   \n\n"
    assert normalize_whitespace(text) == "  def f():\n      return 1 + 2\n\nend"


def test_nfc_normalisation():
    decomposed = "cafe\u0301"
    assert clean_text(decomposed) == "caf\u00e9"
    assert clean_text(decomposed, nfc=False) == decomposed


def test_clean_text_switches():
    raw = "\ufeffa\x00b  c\r\n"
    assert clean_text(raw) == "ab c"
    assert clean_text(raw, control=False, whitespace=False) == "a\x00b  c\n"


def test_dedup_key_ignores_layout_only():
    assert dedup_key("a  b\n c") == dedup_key("a b c")
    assert dedup_key("A b c") != dedup_key("a b c")
