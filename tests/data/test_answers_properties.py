"""Property-based tests of answer equivalence (hypothesis): every surface form of a number parses
back to it, in every answer format, including its Unicode forms (minus signs, space-like group
separators, full-width characters); a number written with a malformed group is no answer; different
numbers never match; float artefacts do."""

from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from latentlit.data.answers import GROUP_SPACES, MINUS_SIGNS, answers_match, extract_answer, normalize_answer

# Numbers with at most 15 significant digits: the range in which the rule promises that distinct
# numbers never match (module docstring of latentlit.data.answers).
decimals = st.builds(
    lambda units, places, negative: Decimal(units).scaleb(-places) * (-1 if negative else 1),
    st.integers(min_value=0, max_value=10**15 - 1), st.integers(min_value=0, max_value=9), st.booleans(),
).filter(lambda d: len(d.normalize().as_tuple().digits) <= 15)


def _grouped(n: int, sep: str) -> str:
    return f"{n:,}".replace(",", sep)


def _full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def surface_forms(d: Decimal, minus: str = "-", space: str = "\u202f") -> list[str]:
    """Ways a person, a dataset or a model writes the number ``d`` (with ``minus`` as the minus sign
    in some of them, and ``space`` as the group separator of one)."""
    sign, mag = ("-" if d < 0 else ""), abs(d)
    plain = format(mag, "f")
    whole, _, frac = plain.partition(".")
    tail = f".{frac}" if frac else ""
    forms = [
        sign + plain,
        sign + _grouped(int(whole), ",") + tail,
        sign + _grouped(int(whole), "{,}") + tail,
        sign + "$" + _grouped(int(whole), ",") + tail,
        "$" + sign + plain,
        sign + "\\$" + plain,
        sign + plain + ".",
        sign + format(mag, "E"),
    ]
    if not frac:
        forms += [sign + plain + ".0", sign + plain + ".00"]
    exact = Fraction(mag)
    forms += [f"{sign}{3 * exact.numerator}/{3 * exact.denominator}",
              f"{sign}\\frac{{{exact.numerator}}}{{{exact.denominator}}}"]
    if exact.denominator > 1 and exact > 1:
        rest = exact - int(exact)
        forms.append(f"{sign}{int(exact)} {rest.numerator}/{rest.denominator}")
    # Unicode forms: another minus sign, space-like groups (French / SI), full-width characters
    other = minus if sign else ""
    forms += [other + plain, other + "$" + _grouped(int(whole), space) + tail,
              other + _grouped(int(whole), space) + tail, _full_width(sign + _grouped(int(whole), ",") + tail),
              (sign + format(mag, "E")).replace("-", minus)]
    return forms


TEMPLATES = {"coconut": "<< 1 + 2 = 3 >> ### {}", "gsm8k": "so the total is\n#### {}", "colar": "Answer: {}",
             "last_number": "3 boxes, so the answer is {}", "auto": "### {}"}


@settings(max_examples=150, deadline=None)
@given(decimals, st.sampled_from(sorted(MINUS_SIGNS)), st.sampled_from(sorted(GROUP_SPACES)))
def test_every_surface_form_parses_back_equal(d, minus, space):
    canonical = normalize_answer(str(d))
    assert canonical is not None and Fraction(Decimal(str(d))) == Fraction(d)
    for form in surface_forms(d, minus, space):
        assert normalize_answer(form) == canonical, form
        assert answers_match(form, str(d)), form
        for fmt, template in TEMPLATES.items():
            assert extract_answer(template.format(form), fmt) == canonical, (fmt, form)


@settings(max_examples=150, deadline=None)
@given(st.integers(1000, 10**15), st.sampled_from(sorted(GROUP_SPACES | {",", "{,}"})),
       st.sampled_from(sorted(MINUS_SIGNS)), st.booleans())
def test_a_malformed_group_is_no_answer_in_every_format(n, space, minus, negative):
    """A grouped number with one digit too few or too many in its last group is read whole or not at
    all: never its first groups, never the digits after the separator."""
    grouped = _grouped(n, space)
    for bad in (grouped[:-1], grouped + "7"):
        form = (minus if negative else "") + bad
        assert normalize_answer(form) is None, form
        for fmt, template in TEMPLATES.items():
            assert extract_answer(template.format(form), fmt) is None, (fmt, form)


@settings(max_examples=300, deadline=None)
@given(decimals, decimals)
def test_different_numbers_never_match(a, b):
    if a == b:
        return
    for x, y in ((str(a), str(b)), (surface_forms(a)[1], surface_forms(b)[-2]), (format(a, "f"), format(b, "E"))):
        assert not answers_match(x, y), (x, y)


@settings(max_examples=200, deadline=None)
@given(st.integers(-(2**53) + 1, 2**53 - 1), st.integers(-(2**53) + 1, 2**53 - 1))
def test_different_integers_below_2_53_never_match(a, b):
    assert answers_match(str(a), str(b)) is (a == b)


positive = decimals.filter(lambda d: d > 0)


@settings(max_examples=300, deadline=None)
@given(positive, positive)
def test_float_artefacts_of_one_operation_match(a, b):
    """A gold computed with one float addition or multiplication (error <= 1.5 ulp) matches the
    exact value."""
    assert answers_match(repr(float(a) + float(b)), str(a + b))
    product = Fraction(a) * Fraction(b)
    assert answers_match(repr(float(a) * float(b)), f"{product.numerator}/{product.denominator}")
