"""What counts as sensitive: the rule table (every type, its placeholder and the cue words that give a following
number its meaning, with a site's additions), and the self-evident patterns.

Numbers alone are ambiguous ("1234" is a PIN, the last four of a card, or an amount); the cue said just before them,
in the same turn or up to two turns earlier, decides. Neutral cues ("reference", "order number") end a sensitive
context so that reference numbers survive for the follow-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping

from aftercall.core.errors import ConfigError
from aftercall.redact.numbers import MONTHS, ORDINALS, TEENS, TENS, UNITS

CARD, CVV, EXPIRY, DOB, SSN, NI, NHS = "CARD", "CVV", "EXPIRY", "DOB", "SSN", "NI_NUMBER", "NHS_NUMBER"
PHONE, EMAIL, ADDRESS, POSTCODE, ACCOUNT, SORT_CODE = "PHONE", "EMAIL", "ADDRESS", "POSTCODE", "ACCOUNT", "SORT_CODE"
PIN, NAME, NUMBER, LOCATION = "PIN", "NAME", "NUMBER", "LOCATION"
NEUTRAL = "NEUTRAL"
CARD_WORD = "CARD_WORD"
CVV_IF_CARD = "CVV_IF_CARD"

# Types whose values are numbers: a digit window of their value must never reappear (the leak check).
DIGIT_TYPES = {CARD, CVV, EXPIRY, DOB, SSN, NI, NHS, PHONE, ACCOUNT, SORT_CODE, PIN, NUMBER}


@dataclass(frozen=True)
class Rule:
    """One type of sensitive value: its placeholder, how it is found, and the cue words that give a following value
    its meaning (a regular expression; empty where patterns or the entity recogniser find the value alone)."""

    kind: str
    placeholder: str
    found_by: str
    cues: str = ""


# The rule table: every type the redactor writes, in the order their cues are tried (a longer, more specific cue
# first: "security code" before "card", "account number" before "number"). The site's `[redact]` section adds cue
# words, names and turns types off (RuleTable); the interim pass, the final pass and the summary re-check all read
# the one table the pipeline holds.
RULES: tuple[Rule, ...] = (
    Rule(CVV, "[CVV]", "3-4 digits after a cue; any number in its exchange",
         r"security (?:code|number|digits|bit)|\bc\.?[ -]?v\.?[ -]?[vc]2?\b|cv2|\bcsc\b|card verification"
         r"|verification (?:code|value|number|digits)"
         r"|(?:last )?(?:(?:three|four|3|4)[ -])?(?:numbers|digits|code|bit) on the (?:back|reverse)"
         # "The number on the back", not "the number on the back of the letter".
         r"|\bnumber on the (?:back|reverse)\b(?! of (?:the|your|my|a|this) (?!card)\w+)"
         r"|\b(?:the|last) (?:three|3) on the (?:back|reverse)|(?:back|reverse) of the card|by the signature"
         r"|signature (?:strip|panel|box)|(?:turn|flip) (?:the|your) card (?:over|round)"
         r"|(?:three|3)[ -]digit (?:security )?(?:code|number)"
         # American Express: four digits on the front, its "CID".
         r"|(?:four|4)[ -]digit (?:security )?code|code on the front|\bcid\b"
         r"|(?:four|4)(?: little)?[ -](?:numbers|digits|ones) on the front"),
    Rule(EXPIRY, "[EXPIRY]", "digits after a cue",
         r"expiry|expiration|expires?|exp date|valid (?:until|thru|through|to)|end date"),
    Rule(CARD, "[CARD]", "12-19 digits after a cue, or any Luhn-valid 13-19 digits said by one side; the last four "
         "are kept ([CARD ****0366]); any number in its exchange",
         r"card number|long number|number on the card|number on the front(?! of (?:the|your|my|a|this) (?!card)\w+)|(?:debit|credit|bank|visa|mastercard|amex) card"
         r"|card details|(?:16|sixteen) digits?|\bpan\b|\bcc\b"),  # "cc": written shorthand for a credit card
    Rule(DOB, "[DOB]", "a date or a year after a cue, said any way, and any number or day in its exchange; a whole "
         "date 16+ years back",
         # "Your birthday", not "her nineteenth birthday" (an occasion).
         r"date of birth|birth ?date|\bborn\b|\bd\.?o\.?b\b|(?:your|his|her|their|the) birthday"
         r"|birthday (?:is|please)"),
    Rule(SSN, "[SSN]", "NNN-NN-NNNN anywhere; 4+ digits after a cue; any number in its exchange",
         r"social security|\bssn\b|\bsocial\b"),
    Rule(NI, "[NI_NUMBER]", "two letters, six digits and A-D anywhere, split as recognisers write them "
         "(\"q q 12 34 56 c\"); without the letter, or the letter alone, after a cue; any number in its exchange",
         # "The National Insurance contributions helpline": the topic, not a question.
         r"national insurance(?!\s+(?:contributions?|helpline|credits?|record|class|team|office|line|rates?"
         r"|enquir(?:y|ies)|queries)\b)"
         r"|\bn\.? ?i\.? number|\bni\b|(?:your|the|my|his|her) insurance number"
         # "my n i is ...": a recogniser spelling out "my NI is".
         r"|\b(?:your|my|his|her|the) n\.? i\b|\bn\.? i\b(?=\.?\s+(?:is|was)\b)"),
    Rule(NHS, "[NHS_NUMBER]", "10 digits in 3-3-4 with a valid check digit; 6+ digits after a cue; any "
         "number in its exchange",
         r"\bnhs\b|\bn\.? h\.? s\b|health (?:service |insurance )?number|medicare|medicaid|patient number"
         r"|hospital number|(?:ten|10)[ -]digit (?:number|one)|medical card"),
    # Recognisers hear "sort code" as "sorry, code" or "sore code".
    Rule(SORT_CODE, "[SORT_CODE]", "NN-NN-NN; 6 digits after a cue",
         r"sort code|\bsor(?:ry|e),? code|routing number|\baba\b"),
    # Digits given while setting up a direct debit are bank details.
    Rule(ACCOUNT, "[ACCOUNT]", "an IBAN anywhere; 6+ digits after a cue",
         r"account number|account no|acct|account ending|\biban\b|bank account|account is|bank details"
         r"|direct debits?\b"),
    Rule(PIN, "[PIN]", "4+ digits after a cue", r"\bpin\b|passcode|password|pass code|memorable (?:word|number)"),
    Rule(POSTCODE, "[POSTCODE]", "a UK postcode anywhere; spelt out or a ZIP after a cue", r"post ?code|zip(?: code)?"),
    Rule(PHONE, "[PHONE]", "a phone number's shape anywhere; 6+ digits after a cue",
         # "Over the phone", "on the phone", "the torch on my phone": the channel or the device, not a number.
         r"(?<!over the )(?<!on the )(?<!on my )(?<!on your )phone|mobile|\bcell\b|landline|telephone|contact number"
         r"|call (?:me|you|us) (?:on|at|back)|reach me"
         r"|ring me|number to call|callback number|best number|text me"),
    Rule(EMAIL, "[EMAIL]", "written or spelt out (\"sam dot jones at example dot co dot uk\")"),
    Rule(ADDRESS, "[ADDRESS]", "house number and street (in words too), flat, town and postcode joined; after an "
         "address question the street alone"),
    Rule(NAME, "[NAME]", "the entity recogniser, name cues (\"it's colin\", \"dr patel\"), answers to a name question, "
         "spelt-out names, the site's names list; every later mention"),
    Rule(LOCATION, "[LOCATION]", "towns, regions and buildings the entity recogniser finds"),
    Rule(NUMBER, "[NUMBER]", "13-19 digits that are no card; in a live call every run of 4+ digits"),
)
# Cues that are no type of their own. The bare word "card" gives way to any more specific cue in the same turn
# ("expiry date on the card"); a neutral cue ends a sensitive context so a reference read out after it survives.
CARD_CUE = Rule(CARD_WORD, "", "", r"(?<!medical )\bcards?\b|\bamex\b|american express|mastercard|maestro")
# Words that ask for the security code only while a card is being read ("and the three on the back?", "and the
# code?"), not of a product's box, a phone extension or a promotion.
CARD_CODE_CUE = Rule(CVV_IF_CARD, "", "", r"on the back|(?:three|3)[ -](?:digits?|numbers)|last (?:three|3)\b"
                                          r"|(?:little|short) number"
                                          r"|(?<!promo )(?<!discount )(?<!voucher )(?<!error )(?<!product )(?<!area )"
                                          r"(?<!dialling )(?<!return )(?<!returns )(?<!booking )(?<!access )"
                                          r"(?<!door )(?<!gift )(?<!tax )\bcode\b")
# Money talk does not change what a question asks for ("the security code to process the £40 charge"); an amount
# said after it is no ID (AMOUNT_BEFORE).
# A payment under way, card number keyed in or not: "the three digits" asks for its code.
PAYMENT_TALK = re.compile(r"\bpay(?:ment|ing)?\b|\bcharge\b|\bdeposit\b|\bdonation\b|\btop.?up\b", re.IGNORECASE)
MONEY_WORDS = re.compile(r"amount|balance|refund|price|cost|fee\b|charged?\b|total\b", re.IGNORECASE)
# A caller reluctant to answer may still answer once reassured ("I'd rather not" / "it's only used for this
# payment" / "go on then, 314"): the question stays open, and what is said after it in the same turn is no answer.
RELUCTANT = re.compile(r"rather not|prefer not|comfortable (?:giving|with)|not comfortable"
                       r"|(?:not|won't be|don't want to) giv", re.IGNORECASE)
WEEKDAYS = r"monday|tuesday|wednesday|thursday|friday|saturday|sunday"
# "Tuesday 1st April": a booking, whatever day it falls on.
WEEKDAY_BEFORE = re.compile(rf"\b(?:{WEEKDAYS})\W*(?:the\s+)?$", re.IGNORECASE)
NEUTRAL_CUE = Rule(NEUTRAL, "", "", r"reference|\bref\b|ticket|case number|order number|invoice|claim number"
                                    r"|(?:permit|registration|reg|serial|model|job|booking|tracking) (?:number|no)\b"
                                    r"|meter|(?:the|a|your|my|latest) readings?\b|\breading's|tracking|booking"
                                    r"|policy number|customer number|membership|"
                                    + MONEY_WORDS.pattern + "|" + RELUCTANT.pattern +
                                    # A question that cannot be answered, or the check passed: what follows is no
                                    # answer to it.
                                    r"|don't have (?:it|that|them|the card|my card) (?:on|with) me"
                                    r"|can't find (?:it|that|them)|don't know (?:it|that)"
                                    r"|all matched|that's matched|you're verified|passed (?:security|verification)"
                                    # Nobody gives a birthday with its weekday: "Thursday the 14th" is a booking.
                                    r"|" + WEEKDAYS)
RULE_BY_KIND = {rule.kind: rule for rule in RULES}
# PCI DSS: a card number or its security code is never stored in the clear, whatever a site asks.
ALWAYS_ON = frozenset({CARD, CVV})


class RuleTable:
    """The rule table as a site configured it: extra cue words per type (or NEUTRAL, for a site's own reference
    words), names always redacted, types turned off. Built once per process; immutable."""

    def __init__(self, cues: Mapping[str, Iterable[str]] | None = None, names: Iterable[str] = (),
                 off: Iterable[str] = ()):
        cues = dict(cues or {})
        for key, kind in [("redact.cues", kind) for kind in cues] + [("redact.off", kind) for kind in off]:
            if kind not in RULE_BY_KIND and not (key == "redact.cues" and kind == NEUTRAL):
                raise ConfigError(f"config {key}: no type {kind!r}; known: {', '.join(RULE_BY_KIND)}")
        for kind, words in cues.items():
            if not RULE_BY_KIND.get(kind, NEUTRAL_CUE).cues:
                raise ConfigError(f"config redact.cues.{kind}: {kind} is found without cue words; cues can be given "
                                  f"for {', '.join(r.kind for r in RULES if r.cues)} and NEUTRAL")
            if not isinstance(words, (list, tuple)) or not all(isinstance(w, str) and w.strip() for w in words):
                raise ConfigError(f"config redact.cues.{kind}: must be a list of words or phrases")
        refused = sorted(ALWAYS_ON & set(off))
        if refused:
            raise ConfigError(f"config redact.off: {', '.join(refused)} cannot be turned off (PCI DSS: never stored)")
        if not all(isinstance(n, str) and re.search(r"\w", n) for n in names):
            raise ConfigError("config redact.names: must be a list of names")
        self.off = frozenset(off)
        self.names = tuple(n.strip() for n in names)
        # A site's own cue words are tried before all the shipped ones: "customer number" may be an account at one
        # site and a neutral reference at another.
        site = [f"(?P<{_SITE}{kind}>{_phrases(words)})" for kind, words in cues.items() if words]
        shipped = [f"(?P<{rule.kind}>{rule.cues})" for rule in (*RULES, CARD_CODE_CUE, CARD_CUE, NEUTRAL_CUE)
                   if rule.cues]
        self.cue_pattern = re.compile("|".join(site + shipped), re.IGNORECASE)

    def enabled(self, kind: str) -> bool:
        return kind not in self.off


_SITE = "site_"


def cue_kind(match: re.Match) -> str:
    """The type a cue of `RuleTable.cue_pattern` gives, the site's or a shipped one."""
    return match.lastgroup.removeprefix(_SITE)


def _phrases(words: Iterable[str]) -> str:
    """A site's cue words as literal phrases, any spacing between their words ("a/c no." and "ext." too)."""
    return "|".join(r"(?<!\w)" + r"\s+".join(map(re.escape, w.split())) + r"(?!\w)" for w in words)


DEFAULT_TABLE = RuleTable()

# A run of digits, possibly spoken in groups: "4532 0151", "4-5-3-2", "1,984", "07700 900 123".
DIGIT_RUN = re.compile(r"\+?\(?\d(?:[\s,.\-/()]{0,3}\d)*")
# The same, ended by a comma and a space: what follows a whole card number in one breath ("5105 1051 0510 5100, 11/28,
# 215") is its expiry and its code, judged apart.
DIGIT_PIECE = re.compile(r"\+?\(?\d(?:(?!,\s)[\s,.\-/()]{0,3}\d)*")
ORDINAL_SUFFIX = re.compile(r"(?:st|nd|rd|th)\b", re.IGNORECASE)
# Tested on the text around a digit run with the run replaced by "#": "11:#" or "#:30".
CLOCK_TIME = re.compile(r"\d:#|#:\d\d\b")

_MONTH = "|".join(MONTHS)
_DAY = r"\d{1,2}(?:st|nd|rd|th)?\b"
_YEAR = r"\d[\d,]{1,4}"
DATE = re.compile(
    rf"\b(?:(?:the\s+)?{_DAY}(?:\s+of)?\s+(?:{_MONTH})\b\.?(?:,?\s+{_YEAR})?"
    rf"|(?:{_MONTH})\b\.?\s+(?:the\s+)?{_DAY}(?:,?\s+{_YEAR})?"
    rf"|\d{{1,2}}[/.\-]\d{{1,2}}[/.\-]\d{{2,4}}"
    rf"|\d{{4}}-\d{{2}}-\d{{2}})",
    re.IGNORECASE,
)
# A month or a day said in words, alone: pieces of a date of birth while one is being given ("the fourth of the
# sixth", "of September...").
MONTH_WORD = re.compile(rf"\b(?:{_MONTH})\b", re.IGNORECASE)
DAY_WORD = re.compile(rf"\b(?:{'|'.join(sorted(ORDINALS, key=len, reverse=True))})\b", re.IGNORECASE)
YEAR_OF_BIRTH = re.compile(r"\b(?:19|20)\d{2}\b")
# A date said as two ordinals, as UK callers do: "the fifth of the eleventh", "the 4th of the 6th".
_ORDINAL = rf"(?:\d{{1,2}}(?:st|nd|rd|th)|{'|'.join(sorted(ORDINALS, key=len, reverse=True))})"
ORDINAL_DATE = re.compile(rf"\b(?P<day>{_ORDINAL})\s+of\s+the\s+(?P<month>{_ORDINAL})\b"
                          rf"(?:,?\s+(?P<year>\d{{2}}(?:\d{{2}})?\b|(?:{'|'.join(TENS)})\b))?", re.IGNORECASE)
SHORT_YEAR = re.compile(r"'\d{2}\b")  # "No, sorry, '87."
# Asked for the year alone, once the day and month were said ("and the year?" / "sixty one").
YEAR_QUESTION = re.compile(r"\byear\b", re.IGNORECASE)
# A digit said on its own, left as a word by the normaliser ("six not five", "four, um, two"): part of a value
# only inside an exchange, and never "one" or "oh" (a pronoun, an interjection).
LONE_NUMBER_WORD = re.compile(
    rf"\b(?:{'|'.join(sorted({*UNITS, *TEENS, *TENS} - {'one', 'oh', 'o'}, key=len, reverse=True))})\b", re.IGNORECASE)
# "One" or "oh" is a digit when it is the whole turn ("it's two eight" / "yeah" / "one").
WEAK_DIGIT_ALONE = re.compile(r"\W*(?:(?:and|then|um|er|erm|uh|it's|okay|ok|so|right|yeah)\W+)*(?P<digit>one|oh|o)\W*",
                              re.IGNORECASE)
# A turn that opens by taking back what was just given ("oh no sorry, not the second, the twelfth", "Yes. Sorry,
# did I say '85? It's 1986"): it still belongs to the exchange the talk had moved on from.
CORRECTION = re.compile(r"^\W*(?:(?:yeah|yes|oh|um|erm|er|uh|ah|hang on|wait)\W+)*"
                        r"(?:no\b|nope\b|sorry\b|actually\b|did i say\b|i mean\b|not\b)", re.IGNORECASE)
# Asking for a value again: the exchange goes on.
SAY_AGAIN = re.compile(r"\b(?:again|repeat|once more|one more time|say (?:that|it|them|the)|read (?:that|it|them)"
                       r"|one at a time|spell|missed|didn't catch"
                       r"|pardon|come again|cut out|breaking up|broke up|slowly|double.check|check that|confirm"
                       r"|(?:last|first) (?:digit|number|letter)s?|(?:did|didn't) (?:hear|get))\b",
                       re.IGNORECASE)
# What a caller says while finding a number: a cue said before it still holds after it.
HOLD_ON = re.compile(r"\b(?:hang on|hold on|one (?:sec|second|moment|minute)|give me a (?:sec|second|moment|minute)"
                     r"|let me (?:find|get|grab|check|look)|bear with me|take your time|no rush|no hurry|here it is"
                     r"|i've got it|got it here|just getting it)\b", re.IGNORECASE)

_TLD = r"(?:com|net|org|co|uk|gov|nhs|edu|io|ie|de|fr|us|ca|au|info|biz|me|mail)"
EMAIL_WRITTEN = re.compile(r"\b[\w.+'-]+@[\w-]+(?:\.[\w-]+)+\b")
# Spoken or half-spoken: "john dot smith at example dot co dot uk", "j.smith at gmail.com".
EMAIL_SPOKEN = re.compile(
    rf"\b\w+(?:(?:\s+(?:dot|underscore|dash|hyphen)\s+|[._-])\w+)*\s+at\s+[\w-]+"
    rf"(?:(?:\s+dot\s+|\.)[\w-]+)*(?:\s+dot\s+|\.){_TLD}\b",
    re.IGNORECASE,
)
SSN_FORMATTED = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")
# Printed in groups of four (upper case), or run together in any case; never across ordinary words.
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b|\b(?i:[a-z]{2}\d{2}[a-z0-9]{11,30})\b")
# As recognisers write it: "uq 12 34 56 d", "UQ-1234-56", "u. q. 123456".
NI_LOOSE = re.compile(r"\b[a-z]\.?[\s\-]?[a-z]\.?[\s\-]?(?:\d[\s,.\-]?){6}[a-d]?\b", re.IGNORECASE)
# With its last letter, the shape is an NI number even without a cue: "QQ 12 34 56 C", "q q 12 34 56 c", "qq123456c".
# The letters HMRC issues first and second, and QQ (the prefix of example and test numbers); a two-letter word is no
# prefix ("is 12 34 56 a ...": checked in the redactor).
NI_SHAPE = re.compile(r"\b(?P<prefix>(?:[a-ceghj-prstw-z]\.?[\s\-]?[a-ceghj-nprstw-z]|q\.?[\s\-]?q))\.?[\s\-]?"
                      r"(?:\d[\s\-]?){5}\d[\s\-]?[a-d]\b", re.IGNORECASE)
TWO_LETTER_WORDS = {"am", "an", "as", "at", "be", "by", "do", "go", "he", "hi", "if", "in", "is", "it", "me", "my",
                    "no", "of", "oh", "ok", "on", "or", "so", "to", "up", "us", "we", "ya"}
# The NI number's last letter, asked for on its own: "and the letter at the end" / "d", "what does it end with".
NI_SUFFIX_QUESTION = re.compile(r"\b(?:letter|suffix|character)\b|\b(?:at|on) the end\b|\bend(?:s|ing)? (?:with|in)\b"
                                r"|\b(?:last|final) (?:bit|one)\b", re.IGNORECASE)
# The letter as said and as recognisers write it: "c", "see", "dee", "C for Charlie", "delta".
_NI_LETTER = r"(?:[a-d]|see|sea|bee|dee)"
NI_SUFFIX = re.compile(rf"\b{_NI_LETTER}\b(?:\s+(?:for|as in)\s+[a-z]+)?|\b(?:alpha|alfa|bravo|charlie|delta)\b",
                       re.IGNORECASE)
# The letter said so that it can be nothing else, however long the turn: "was that D for dog?", "the letter's see",
# "was that dee at the end".
# "The last letter's a D": the article before the letter is none.
_LETTER_NAMED = "|".join(f"(?<=\\b{named} {article})" for named in ("end was", "end is", "letter was", "letter's",
                                                                     "letter is") for article in ("", "a ", "an "))
NI_SUFFIX_SPELT = re.compile(rf"\b{_NI_LETTER}\s+(?:for|as in)\s+[a-z]+|\b(?:alpha|alfa|bravo|charlie|delta)\b"
                             rf"|(?:{_LETTER_NAMED}){_NI_LETTER}\b(?!\s+[a-d]\b)"
                             rf"|\b{_NI_LETTER}(?= at the end\b)", re.IGNORECASE)
# The letter as the whole turn: "C.", "d for delta", "yes, B", "see".
NI_SUFFIX_ALONE = re.compile(rf"\W*(?:(?:yes|yeah|and|then|it's|its)\W+)*(?:{NI_SUFFIX.pattern})\W*", re.IGNORECASE)
# The NI number's first two letters said before its digits, as recognisers write them ("queue queue", "cue cue",
# "Quebec Quebec", "j m").
_SPOKEN_LETTER = (r"(?:queue|cue|kew|alpha|bravo|charlie|delta|echo|foxtrot|golf|hotel|india|juliett?|kilo|lima|mike"
                  r"|oscar|papa|quebec|romeo|sierra|tango|uniform|victor|whiskey|x-ray|yankee|zulu"
                  # letters' names as recognisers write them ("em tea", "tea double you"); not "are", "you", "why"
                  r"|em|en|tea|tee|double you|ess|jay|kay|pee|ex|zed|zee|aitch|gee|vee|wye|bee|see|sea|dee)")
_LETTER_WORD = rf"(?:[a-z]|{_SPOKEN_LETTER})"
NI_PREFIX_BEFORE = re.compile(rf"\b(?:{_LETTER_WORD}[\s,.\-]+{_LETTER_WORD}|[a-z]{{2}})[\s,.\-]*$", re.IGNORECASE)
# Two letters said as words, anywhere in an NI exchange: "here we are queue queue, that's two of them".
NI_PREFIX_SPOKEN = re.compile(rf"\b{_SPOKEN_LETTER}[\s,.\-]+{_SPOKEN_LETTER}\b", re.IGNORECASE)
# Two letters ending a turn, in an NI exchange before its digits: "hang on, q q", "it starts Y S...", "Y S, yep."
NI_PREFIX_LAST = re.compile(r"\b(?P<prefix>[a-z]\.?[\s,\-]+[a-z])\b\.?"
                            r"(?=(?:\W*\b(?:yep|yes|yeah|ok|okay|right|then|and|so|um|er|erm)\b)*\W*$)", re.IGNORECASE)
# Any letter spelt in an NI exchange: "no, m for mother"; not "a" or "i", which are words ("a for effort").
NI_LETTER_SPELT = re.compile(r"(?<![\w'])[b-hj-z]\s+(?:for|as in)\s+[a-z]+", re.IGNORECASE)  # not "it's for"
# Two letters said apart after an NI number was given ("it's m h not m n"): not "a" or "i" first, not "i" second.
# Not a reference's letters before its digits ("claim h b 44821").
NI_LETTER_PAIR = re.compile(r"(?<![\w'])[b-hj-z][\s.]+[a-hj-z]\b(?![\s.,\-]*\d)", re.IGNORECASE)
# The agent reading a value from the record to be confirmed: "an NHS number ending 2 8 0", "down as".
ON_RECORD = re.compile(r"\b(?:ending(?: in| with)?|ends (?:in|with)|starting with|starts with"
                       r"|(?:down|on file|on record) as|(?:got|have) (?:you|it) as)\s*$", re.IGNORECASE)
# The NI number's first two letters said on their own, before its digits: "j m" / "QQ".
NI_PREFIX_ALONE = re.compile(r"\W*(?:(?:it's|its|it is|yeah|yes|ok|okay|so)\W+)?(?P<prefix>[a-z]\.?\s?[a-z])\.?\W*",
                             re.IGNORECASE)
POSTCODE_UK = re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}\b")
POSTCODE_LOOSE = re.compile(r"\b(?:[a-z]\s?){1,2}\d(?:\s?[a-z\d])?\s*\d\s?[a-z]\s?[a-z]\b", re.IGNORECASE)
_STREET = (r"street|st|road|rd|avenue|ave|lane|ln|drive|dr|close|court|ct|way|crescent|cres|place|pl|boulevard"
           r"|blvd|terrace|gardens|grove|hill|parade|square|sq|row|mews|walk|highway|hwy|parkway|strasse|straße"
           r"|view|rise|vale|green|quay|wharf|heights|meadows?|embankment")
_NOT_STREET_WORD = r"(?:with|at|on|in|for|to|and|or|by|from|see|seeing|is|was|the|a|my|your)\b"
# A house number as digits or said ("nineteen", "twelve b"), never a clock time ("9:20 with Dr Okoye").
_SPOKEN_HOUSE = "|".join(sorted({*UNITS, *TEENS, *TENS} - {"o", "oh", "nil", "nought", "zero"}, key=len, reverse=True))
_HOUSE_NUMBER = rf"(?:(?<![\d:])\b\d{{1,5}}[a-z]?|\b(?:{_SPOKEN_HOUSE})(?:[ -](?:{_SPOKEN_HOUSE}))?(?:\s[a-h]\b)?)"
_STREET_NAME = rf"(?:(?!{_NOT_STREET_WORD})[A-Za-z'\-]+\s+){{1,3}}(?:{_STREET})\b\.?"
# The words between the number and the street type are not function words.
ADDRESS_PATTERN = re.compile(
    rf"{_HOUSE_NUMBER},?\s+{_STREET_NAME}"
    rf"|\b(?:flat|apartment|apt|suite|unit)\.?\s+(?:\d+[a-z]?|[a-h])\b(?:\s+(?:{_SPOKEN_HOUSE})\b)?",
    re.IGNORECASE,
)
# Asked for an address, a caller may give just the street or the house name: "the old vicarage church lane".
ADDRESS_QUESTION = re.compile(r"\baddress\b|\bwhich street\b|\byour street\b|\bwhere do you live\b", re.IGNORECASE)
STREET_ALONE = re.compile(rf"\b(?:the\s+)?{_STREET_NAME}", re.IGNORECASE)
_WORD = r"[^\W\d_][\w'.\-]*"  # a word in any alphabet ("Østbygatan", "Μεγάλη")
# Street name first, house number after, as most of Europe writes it: "Hafnarstraeti 5", "Via delle Coste 41",
# after a leading house or postal number ("86036 Rua do Arenque 1634"); never a number in thousands ("a 2017 Golf
# with about 84,000 miles"). The first street word must be capitalised and no word a month or a weekday (checked in
# the redactor): "14 December 2026" is a date.
STREET_NUMBER_AFTER = re.compile(
    rf"(?<![\d:.,])\b\d{{1,6}}\s+(?P<street>{_WORD}(?:\s+{_WORD}){{0,4}}?)\s+\d{{1,4}}[a-z]?\b(?![.,]\d)")
CORNER = re.compile(rf"\bthe corner of\s+[^,.\n]+?\s+and\s+{_WORD}(?:\s+{_WORD}){{0,3}}", re.IGNORECASE)
# Forces' postal addresses (US): "Unit 8505 Box 9220 / DPO AE 90744", "PSC 4355, Box 4187 / APO AP 28906",
# "USNS Botolen / FPO AE 12382".
MILITARY_ADDRESS = re.compile(
    r"\b(?:(?:PSC|Unit|CMR)\s+\d+,?\s+Box\s+\d+|US[A-Z]{1,3}\s+[A-Z][\w'\-]*)\s*(?:APO|FPO|DPO)\s+A[AEP]\s+\d{5}\b")
# What continues an address after a comma or a line break: a flat or suite, a post box, a postal code, a town or
# country in capitals ("Apt. 297", "53-320", "Port Whangarei", "ΠΑΦΟΣ"); after a space only the first three.
ADDRESS_UNIT = r"(?:apt|apartment|suite|unit|flat|p\.?\s?o\.?\s?box|box)\.?\s+\d+[a-z]?\b"
ADDRESS_CODE = r"\d{3,6}(?:-\d{3,4})?\b"
_PLACE_LINE = rf"(?-i:[^\W\d_a-z][\w'.\-]*)(?:[ \t]+{_WORD}){{0,3}}(?=[ \t]*(?:[,\n]|\d{{3,6}}\b|$))"
ADDRESS_CONTINUES = re.compile(
    rf"(?:[ \t]*(?:,[ \t]*|\n[\s>?]*)+(?:{ADDRESS_UNIT}|{ADDRESS_CODE}|{_PLACE_LINE})"
    rf"|[ \t]+(?:{ADDRESS_UNIT}|{ADDRESS_CODE}))",
    re.IGNORECASE,
)
# House and postal numbers said before a street the patterns found ("935 69 Gordon Terrace").
NUMBERS_BEFORE_ADDRESS = re.compile(r"(?:(?<=\s)|(?<=^)|(?<=>))(?:\d{1,6}[a-z]?[ \t]+)+$", re.IGNORECASE)
PHONE_FORMATTED = re.compile(
    r"(?:\+\d{1,3}[\s.\-]?)?(?:\(\d{2,5}\)[\s.\-]?|\b0\d{2,4}[\s.\-]?|\b\d{3}[\s.\-])\d{3,4}[\s.\-]?\d{3,4}\b"
)
NAME_CUE = re.compile(
    r"\b(?i:my name is|my name's|name is|this is|speaking to|you're speaking with|i'm called"
    r"|(?:mr|mrs|ms|miss|dr|mister)\.?)\s+([A-Z][a-z'\-]{1,}(?:\s+[A-Z][a-z'\-]{1,})?)"
)
# Where a name follows in speech written in lower case: "it's colin", "thanks very much julie", "is that gareth",
# "my son oliver", "this is dr patel". The one or two words after it are shown to the entity recogniser
# capitalised (redact.entities), which then judges whether they name someone.
SPOKEN_NAME_CUE = re.compile(
    r"(?P<cue>\b(?:it's|it is|this is|is that|am i speaking to|speaking to|speaking with|you're through to|thanks"
    r"|thank you|cheers|hi|hiya|hello|morning|bye|my name's|my name is|name's|name is|call me|mr|mrs|ms|miss|dr"
    r"|doctor|my (?:son|daughter|mum|mother|dad|father|husband|wife|partner|brother|sister|nan|gran|grandson"
    r"|granddaughter|friend|carer|neighbour))(?:\s+(?:very much|so much|again|for your \w+))?\s+)"
    r"(?=(?P<name>[a-z][\w'\-]*(?:\s+[a-z][\w'\-]*)?))"
)
# A question whose short answer is a name: "can I take your name", "and the surname", "who is the patient".
NAME_QUESTION = re.compile(
    r"\b(?:your|the|his|her|their|full|first|last|second|middle|maiden|sur|whose)\s*name\b(?! (?:on|of) the card)"
    r"|\bsurname\b|who am i speaking|who(?:'s| is) (?:calling|the patient|the account holder|speaking)"
    r"|\baccount holder\b|\bspell (?:that|it)\b",
    re.IGNORECASE,
)
# A name spelt out letter by letter: "K-O-W-A-L-S-K-I", "J A M A L", "b e g u m".
SPELT_LETTERS = re.compile(r"\b[A-Za-z](?:(?:[ \-]|, ?)[A-Za-z]\b){2,}")
# Words in a short answer to a name question that are not the name.
NOT_NAME_ANSWERS = {"speaking", "mum", "mother", "dad", "father", "son", "daughter", "husband", "wife", "partner",
                    "brother", "sister", "nan", "gran", "grandson", "granddaughter", "friend", "carer", "neighbour",
                    "patient", "holder", "account", "surname", "name", "first", "second", "driver", "spelt",
                    "spelled", "double", "letter", "letters", "capital"}
# Digits that are amounts, durations, times, counts or ages, that describe a value ("three digits", "two letters,
# six numbers") or name a thing ("option 2", "room 412", "claim 448102", "reference is 600 118 4423"): never
# sensitive, and they end a number read out in pieces.
AMOUNT_BEFORE = re.compile(
    r"[£$€]\s*$|\b(?:option|press|items?|room|ward|bed|bay|flight|gate|platform|extension|ext|version|model|step"
    r"|page|line|seat|floor|level|chapter|section|article|error|claim|order|ticket|case|invoice|booking|job|incident"
    rf"|tracking|parcel|reference|ref|quote|quoting|serial|permit|product(?: code)?|(?:promo|discount|voucher) code"
    rf"|policy|{MONEY_WORDS.pattern})\.?(?:\s+(?:number|no)\.?)?[,:]?(?:\s+(?:is|was|of))?\s*$"
    r"|\b(?:pounds?|dollars?|euros?)\s+$"
    r"|\b(?:i'm|i am|you're|you are|(?:s?he|they)(?:'s| is| are)|(?:i|you|s?he|they)(?:'ll| will) be"
    r"|turn(?:ing|ed|s)?|aged?|under|over)\s*(?:now\s*)?$"
    # An estimate is no ID: "about sixty two thousand".
    r"|\b(?:about|around|roughly|approximately|nearly|almost)\s*$",
    re.IGNORECASE,
)
# An hour said alone after a word of time ("I'll come after 4", "we're open till 6"): no piece of an ID.
HOUR_BEFORE = re.compile(r"\b(?:after|till|until|before|at|from|by)\s*$", re.IGNORECASE)
# A tax or school year: "2015-16", "2016/17".
YEAR_RANGE = re.compile(r"(?:19|20)\d\d\s*[-/]\s*(?:\d\d|(?:19|20)\d\d)")
AMOUNT_AFTER = re.compile(
    r"^[\s-]*(?:pounds?|quid|dollars?|bucks|euros?|pence|p\b|cents?|percent|%|minutes?|mins?|hours?|days?|weeks?"
    r"|months?|years?|am\b|pm\b|a\.m\.|p\.m\.|o'clock|times|items?|gb|mb|megs?|kg|miles?|km|kwh|units?"
    r"|mg\b|milligrams?|micrograms?|mcg|ml\b|millilitres?|tablets?|capsules?|puffs?|doses?"
    r"|cards|accounts|payments|people|children|kids|bills|tickets|bags|boxes|bedrooms|rooms"
    rf"|digits?|numbers?|letters?|characters?|of them|next (?:week|month|year)|in (?:{_MONTH})\b"
    r"|[klmnt]\b(?!')|br\b)",  # a tax code: "1257 L", "1257L"
    re.IGNORECASE,
)
# A year something happened ("since 2019", "back in March 2016"): a piece of no ID but a date of birth.
EVENT_YEAR = re.compile(rf"(?:\b(?:since|from|until|till|by|back in|in)|\b(?:19|20)\d\d\s*(?:to|and|-))\s*"
                        rf"(?:(?:{_MONTH})\w*\s+)?$", re.IGNORECASE)
# A card's last four digits named as such, while its code is asked for: "taken on the card ending 6075".
CARD_TAIL = re.compile(r"\b(?:ending(?: in| with)?|ends(?: in| with)?|last four(?: digits)?(?: are| is)?)\s*$",
                       re.IGNORECASE)
# A year that names a thing ("it's a 2016", "an 1980s one"): no date of birth.
A_THING = re.compile(r"\b(?:a|an)\s+$", re.IGNORECASE)
# Titles before a name: never a name word themselves.
TITLES = {"Mr", "Mrs", "Ms", "Miss", "Dr", "Mister", "Doctor", "Sir", "Madam", "Prof", "Professor", "Reverend", "Rev",
          "Father", "Sister", "Lord", "Lady", "Dame"}
# Capitalised words that follow "this is" without being names.
NOT_NAMES = {"The", "That", "This", "It", "Is", "A", "An", "My", "Your", "Our", "Not", "Just", "What", "How", "Yes",
             "No", "Really", "Very", "So", "Customer", "Services", "Service", "Support", "Team", "Bank", "Council",
             "Calling", "Regarding", "About", "Because", "Still", "Going", "Sorry", "Great", "Fine", "Okay", "Ok",
             "Thank", "Thanks", "Please", "Hello", "Hi", "Speaking", "From", "And", "But", "Sure", "Correct"}
