"""Redaction: spoken and written numbers, cues across turns, split card numbers, the summary re-check."""

from __future__ import annotations

import json
import random
import re

import pytest

from aftercall.core.transcript import Transcript, Turn
from aftercall.evaluation.metrics import digit_leak, luhn_complete, speak_digits
from aftercall.redact import Redactor
from aftercall.redact.numbers import normalise_numbers
from aftercall.redact.rules import RuleTable


def redact(*turns: tuple[str, str]):
    result = Redactor().redact_transcript(Transcript(tuple(Turn(s, t) for s, t in turns)))
    return [t.text for t in result.transcript.turns], result


@pytest.mark.parametrize("spoken, expected", [
    ("four five three two zero one five one", "45320151"),
    ("forty five thirty two", "4532"),
    ("nineteen eighty four", "1984"),
    ("double oh seven", "007"),
    ("QQ, double 7, 40", "QQ, 77, 40"),  # a repeat word before a digit the recogniser wrote as a digit
    ("double six won three eight", "66138"),  # a digit's homophone between digits ...
    ("i won three times", "i won three times"),  # ... and nowhere else
    ("two for one", "two for one"),
    ("two hundred and twelve pounds", "212 pounds"),
    ("the twelfth of March", "the 12th of March"),
    ("march twelfth nineteen sixty eight", "march 12th 1968"),  # an ordinal ends its run: a day, then a year
    ("one of them", "one of them"),
    ("I called three times", "I called three times"),
    ("two and three", "two and three"),
    # "For" and "to" inside digits said one by one, before a scale, or in a turn of digits' homophones ...
    ("five one for five three three one", "5145331"),
    ("to thousand and won", "2001"),
    ("to ate for", "284"),
    # ... and nowhere else.
    ("nine to five", "nine to five"),
    ("a table for two", "a table for two"),
    ("I ate two biscuits", "I ate two biscuits"),
])
def test_spoken_numbers_become_digits_conservatively(spoken: str, expected: str):
    assert normalise_numbers(spoken) == expected


@pytest.mark.parametrize("ack", ["Mm-hm, go on.", "M-M-H-M. Okay, go on."])  # the second as Whisper heard it
def test_card_number_read_across_turns_is_one_card_with_last_four_kept(ack: str):
    texts, result = redact(
        ("agent", "Can I take the long number on the front of the card?"),
        ("customer", "Yes it's four five three two, zero one five one"),
        ("agent", ack),
        ("customer", "one two eight three, zero three six six."),
    )
    assert texts[1] == "Yes it's [CARD]"
    assert texts[3] == "[CARD ****0366]."
    assert result.counts["CARD"] == 1
    assert not any(digit_leak("4532015112830366", t) for t in texts)


def test_garbled_card_number_in_card_context_is_masked_even_without_luhn():
    texts, _ = redact(("customer", "my card number is 4532 0151 1283 036"))
    assert texts[0] == "my card number is [CARD ****3036]"


def test_card_number_without_any_cue_is_found_by_luhn():
    pan = luhn_complete("541234567890123")
    texts, result = redact(("customer", f"it's {pan[:4]} {pan[4:8]} {pan[8:12]} {pan[12:]} thanks"))
    assert f"[CARD ****{pan[-4:]}]" in texts[0] and result.counts["CARD"] == 1


@pytest.mark.parametrize("question, answer, placeholder", [
    ("And the three digits on the back?", "seven three nine", "[CVV]"),
    ("What's the security code please?", "It's 123", "[CVV]"),
    ("Can I take your date of birth?", "the fourteenth of July nineteen eighty six", "[DOB]"),
    ("And your date of birth?", "it's 14/07/1986", "[DOB]"),
    ("What's your national insurance number?", "Q Q one two three four five six C", "[NI_NUMBER]"),
    ("Do you have your NHS number?", "yes it's nine four three, four seven six, five nine one nine", "[NHS_NUMBER]"),
    ("Can I have your social security number?", "078-05-1120", "[SSN]"),
    ("What's the best number to call you on?", "oh seven seven zero zero nine zero zero one two three",
     "[PHONE]"),
    ("And the sort code?", "twenty, oh four, fifty one", "[SORT_CODE]"),
    ("And the account number?", "three one nine two six eight one nine", "[ACCOUNT]"),
    ("Could you confirm your PIN?", "four four seven one", "[PIN]"),
    ("What's the expiry date on the card?", "oh nine twenty seven", "[EXPIRY]"),
])
def test_values_after_a_cue_in_the_previous_turn_are_redacted(question, answer, placeholder):
    texts, result = redact(("agent", question), ("customer", answer))
    assert placeholder in texts[1], texts[1]
    assert not re.search(r"\d{3}", texts[1].replace(placeholder, "")), texts[1]


@pytest.mark.parametrize("text, placeholder", [
    ("my email is jane dot doe at example dot com", "[EMAIL]"),
    ("send it to j.smith@example.co.uk please", "[EMAIL]"),
    ("I live at 14 Acacia Avenue in Leeds", "[ADDRESS]"),
    ("the postcode is SW1A 1AA", "[POSTCODE]"),
    ("my IBAN is GB82 WEST 1234 5698 7654 32", "[ACCOUNT]"),
    ("my SSN is 078-05-1120", "[SSN]"),
    ("my name is Daniel Harper", "[NAME]"),
])
def test_self_evident_patterns_are_redacted(text: str, placeholder: str):
    texts, _ = redact(("customer", text))
    assert placeholder in texts[0], texts[0]


def test_names_are_redacted_wherever_they_are_repeated():
    texts, result = redact(("customer", "Hi, my name is Daniel Harper."), ("agent", "Thanks Daniel, one moment."))
    assert "Daniel" not in " ".join(texts) and "Harper" not in " ".join(texts)


def test_bank_details_as_a_recogniser_heard_them_are_redacted():
    # Whisper's text of "direct debit's easiest. Um, sort code's thirty, ninety-six, twenty-six." from a synthesised
    # call: the cue misheard, and the number split over two segments.
    texts, result = redact(
        ("agent", "Would direct debit suit you? It means you don't have to remember each time."),
        ("customer", "Yeah, direct debits easy is, um, sorry, code 30, 96,"),
        ("customer", "26,"),
        ("agent", "Okay, and the account number."),
        ("customer", "7, 1, 5, 5, go 3, 1, 8."),
    )
    assert not re.search(r"\d", " ".join(texts[1:])), texts
    assert result.counts["SORT_CODE"] == 1 and result.counts["ACCOUNT"] == 1


def test_digits_given_for_a_direct_debit_are_bank_details_but_amounts_and_days_survive():
    texts, result = redact(
        ("agent", "I'll set up the direct debit for £40 on the 5th of each month."),
        ("customer", "Okay. For the direct debit it's 30 96 26 and then 71550318."),
    )
    assert "£40" in texts[0] and "5th" in texts[0]
    assert not re.search(r"\d", texts[1]), texts[1]


def test_ordinary_numbers_survive():
    texts, result = redact(
        ("agent", "Your reference is 48213377 and the refund of 250 pounds arrives within 5 working days."),
        ("customer", "Great, and my card was charged £45.99 on the 3rd of June."),
        ("agent", "Your appointment is on the 14th of March at 10 am."),
    )
    assert "48213377" in texts[0] and "250 pounds" in texts[0] and "5 working days" in texts[0]
    assert "£45.99" in texts[1] and "3rd of June" in texts[1]
    assert "14th of March" in texts[2]
    assert not result.counts


def test_days_and_clock_times_after_an_id_are_not_taken_for_more_of_it():
    texts, result = redact(
        ("agent", "Can I take your NHS number?"),
        ("customer", "It's 943 476 5919."),
        ("agent", "Found you. You're booked Friday at 9:20 with Dr Okoye, or Thursday the 20th at 11:30."),
    )
    assert "[NHS_NUMBER]" in texts[1] and "5919" not in texts[1]
    assert "9:20" in texts[2] and "the 20th at 11:30" in texts[2]
    assert result.counts["NHS_NUMBER"] == 1 and "ADDRESS" not in result.counts


def test_generated_spoken_card_variants_never_leak():
    """Seeded variants: digit by digit, pairs, 'oh', 'double', grouped digits, split across turns."""
    rng = random.Random(20261123)
    cues = ["my card number is", "the long number is", "it's the visa card, number", "card number"]
    leaks = []
    for _ in range(200):
        pan = luhn_complete("".join(rng.choice("0123456789") for _ in range(15)).replace("0", "4", 1))
        if rng.random() < 0.5:
            turns = [("customer", f"{rng.choice(cues)} {speak_digits(pan, rng)}")]
        else:
            cut = rng.choice([4, 8, 12])
            turns = [("agent", "Can I take the number on the card please?"),
                     ("customer", f"yes, {speak_digits(pan[:cut], rng)}"),
                     ("agent", rng.choice(["okay", "mm-hm go on", "yes", "got that"])),
                     ("customer", speak_digits(pan[cut:], rng))]
        texts, _ = redact(*turns)
        if any(digit_leak(pan, t) for t in texts):
            leaks.append((turns, texts))
    assert not leaks, json.dumps(leaks[:3], indent=1)


def test_summary_recheck_removes_values_that_slip_through():
    _, result = redact(("agent", "What's the long number on the card?"), ("customer", "4532 0151 1283 0366"),
                       ("agent", "And the security code?"), ("customer", "739"))
    text, found = Redactor().redact_text("Customer read 4532015112830366, code 739, ok", result.secrets)
    assert "4532" not in text and "739" not in text
    assert found["CARD"] == 1 and found["CVV"] == 1
    clean, found = Redactor().redact_text("Refund of 250 pounds within 5 days", result.secrets)
    assert clean == "Refund of 250 pounds within 5 days" and not found


# -- names, places and addresses (the entity recogniser and the spoken-style rules) ---------------------------------


def test_a_name_and_address_given_together_leave_nothing_of_either():
    texts, result = redact(("agent", "Can I take your name and address?"),
                           ("customer", "It's Daniel Okafor, 14 Rosewood Avenue, Leeds LS6 4BQ."))
    assert texts[1] == "It's [NAME], [ADDRESS].", texts[1]  # street, town and postcode are one address
    assert result.counts["ADDRESS"] == 1 and "POSTCODE" not in result.counts


def test_a_name_the_recogniser_finds_once_is_redacted_at_every_mention_and_in_the_summary():
    texts, result = redact(("customer", "Hello, Margaret Oyelaran here."), ("agent", "Thanks, Margaret. One moment."),
                           ("agent", "So, Margaret, that's all sorted."))
    assert not any("Margaret" in t or "Oyelaran" in t for t in texts), texts
    text, found = Redactor().redact_text("Margaret asked for a refund; the agent agreed.", result.secrets)
    assert "Margaret" not in text and found["NAME"] >= 1


@pytest.mark.parametrize("question, answer, name", [
    ("who am i speaking with", "hiya it's maureen", "maureen"),
    ("is there anything else", "no that's all thanks very much derek", "derek"),
    ("hello is that priya", "yes speaking", "priya"),
    ("and who is the patient", "my daughter isla", "isla"),
    ("and your surname please", "whitfield", "whitfield"),
    ("and your surname please", "it's w-h-i-t-f-i-e-l-d", "w-h-i-t-f-i-e-l-d"),
    ("can I take your full name", "Yes, it's Tomasz Nowak, N O W A K.", "N O W A K"),
])
def test_names_said_as_callers_say_them_are_redacted(question: str, answer: str, name: str):
    texts, _ = redact(("agent", question), ("customer", answer))
    assert name.lower() not in " ".join(texts).lower(), texts
    assert "[NAME]" in " ".join(texts)


@pytest.mark.parametrize("text", [
    "it's broken again", "the bill is wrong again", "can you mark the account as vulnerable",
    "thanks very much indeed", "Okay, go on.", "your case reference is FR-208815",
])
def test_ordinary_words_after_a_name_cue_survive(text: str):
    texts, _ = redact(("agent", "how can I help"), ("customer", text))
    assert texts[1] == text


@pytest.mark.parametrize("text, street", [
    ("Tomomi lives at 86036 Rua do Arenque 1634, Goiânia", "Arenque"),
    ("Send it to 935 69 Gordon Terrace\nSuite 828\nBASHALL TOWN\nUnited Kingdom 89800", "BASHALL"),
    ("it is the corner of Beiteveien 2 and Sieda Radial", "Sieda"),
    ("Unit 8505 Box 9220\nDPO AE 90744", "9220"),
])
def test_addresses_written_the_world_over_are_redacted_whole(text: str, street: str):
    texts, _ = redact(("customer", text))
    assert street not in texts[0] and "[ADDRESS]" in texts[0], texts[0]


def test_a_street_given_without_a_number_after_the_address_is_asked_for():
    texts, _ = redact(("agent", "and the first line of the address"),
                      ("customer", "erm it's the old mill station road"))
    assert "station road" not in texts[1] and "[ADDRESS]" in texts[1], texts[1]


def test_dates_are_not_streets():
    texts, _ = redact(("agent", "When did it arrive?"), ("customer", "On 14 December 2026, I think."))
    assert texts[1] == "On 14 December 2026, I think."


@pytest.mark.parametrize("turns", [
    # An NI number as recognisers write it, its last letter asked for on its own.
    [("agent", "and your national insurance number"), ("customer", "it's UQ-1234-56"),
     ("agent", "and the letter at the end?"), ("customer", "d")],
    [("agent", "National insurance number?"), ("customer", "Yeah, it's j. g. 12 34 56 c.")],
    # The cue said before the caller went to find the number.
    [("agent", "Can I take the card number?"), ("customer", "hang on"), ("agent", "no rush"),
     ("customer", "right I've got it now"), ("customer", "4532 0151 1283 0366")],
    [("agent", "what's your date of birth"), ("customer", "oh hold on"), ("agent", "take your time"),
     ("customer", "sorry my mind's gone blank"), ("customer", "twelve three sixty one")],
    [("agent", "and the three numbers on the back"), ("customer", "six four two")],
    [("agent", "It's the four-digit code on the front, above the card number."), ("customer", "Okay, 7340.")],
    # "on the back" asks for the code while a card is being read (and not of a product's box: see below).
    [("agent", "Card number?"), ("customer", "4532 0151 1283 0366"), ("agent", "and the three on the back?"),
     ("customer", "it's 118")],
    # The example prefix every test number uses, far from its cue; a year that finishes a date of birth.
    [("agent", "Your NI number?"), ("customer", "Hang on, it's on a payslip somewhere in this drawer, one sec."),
     ("customer", "Right. QQ 90 55 17 B.")],
    [("agent", "Can you confirm your date of birth?"), ("customer", "It's the 14th of March..."), ("agent", "Mm-hm."),
     ("customer", "...1976.")],
    [("agent", "date of birth please"), ("customer", "the fifth of march"), ("agent", "and the year"),
     ("customer", "sixty one")],
    # The whole NI shape needs no cue.
    [("agent", "I'll need that for the form, whenever you're ready, there's no hurry at all"),
     ("customer", "it's q q 12 34 56 c")],
])
def test_ids_as_recognisers_garble_them_and_cues_said_turns_earlier(turns):
    texts, _ = redact(*turns)
    answers = [text for (speaker, _), text in zip(turns, texts) if speaker == "customer"][-1:]
    assert re.fullmatch(r"(?:Yeah, |Okay, |Right\. |\.\.\.)?(?:it's )?\[[A-Z_]+(?: \*{4}0366)?\]\.?", answers[0]), texts


@pytest.mark.parametrize("turns", [
    # Near the new cues, and not what they mean (found by an independent review).
    [("agent", "Is there a product code on the back of the box?"), ("customer", "It says 445 512.")],
    [("customer", "The serial number on the back is 88213344.")],
    [("agent", "and the three digit extension"), ("customer", "204")],
    [("agent", "date of birth?"), ("customer", "the 3rd of march"), ("agent", "ok"),
     ("customer", "45 minutes I waited")],
    [("customer", "The model is HD 300400 B.")],
    [("agent", "can I take a contact number"), ("customer", "rather not"), ("agent", "no problem at all"),
     ("customer", "thanks"), ("agent", "how many points have you got now"), ("customer", "about 125000")],
    # A security question declined; a booking's date after a date of birth.
    [("agent", "and the three digits on the back of your card"), ("customer", "I don't have it on me, sorry"),
     ("agent", "okay, so the total is 1299")],
    [("agent", "can I confirm your date of birth"), ("customer", "the 2nd of April 1990"),
     ("agent", "lovely, so Tuesday the 16th at 9")],
    [("agent", "the code on the back please"), ("customer", "737"), ("agent", "thanks, and was that option 2")],
])
def test_numbers_near_an_id_cue_that_are_not_ids_survive(turns):
    texts, _ = redact(*turns)
    said, kept = turns[-1][1], texts[-1]
    assert re.findall(r"\d+", kept) == re.findall(r"\d+", normalise_numbers(said)), texts


@pytest.mark.parametrize("turns", [
    # Said twice, misheard by the agent, corrected.
    [("agent", "what's the security code"), ("customer", "It's 582. 582."), ("agent", "was that 532?"),
     ("customer", "no, 582")],
    # The year asked for after a read-back of the day and month; the day asked for after the month and year.
    [("agent", "Date of birth?"), ("customer", "The 9th of July."), ("agent", "The 9th of July, and the year?"),
     ("customer", "1983.")],
    [("agent", "date of birth"), ("customer", "june eighty seven"), ("agent", "and which day"),
     ("customer", "the 3rd")],
    # An NI number read back wrong and corrected without its letters.
    [("agent", "NI number please"), ("customer", "SE 24 68 02 A"), ("agent", "SE 24 68 20 A?"),
     ("customer", "no, 24 68 02 A")],
    # Its letters on their own, the digits in pairs, the last letter asked for after them.
    [("agent", "your national insurance number please"), ("customer", "w l"), ("customer", "thirty one"),
     ("customer", "forty two"), ("customer", "fifty three"), ("agent", "and the last letter"), ("customer", "a")],
    [("agent", "and your national insurance number"), ("customer", "q q 31 42 53 and then b")],
    [("agent", "NI number?"), ("customer", "it's QQ 31 42 53"), ("agent", "and that's D for delta at the end?")],
    [("agent", "and your NI number"), ("customer", "QQ 31 42 53"), ("agent", "and the final letter"),
     ("customer", "see")],
    # The question about the question, and its answer, between the cue and the code; "over the phone" is no cue.
    [("agent", "can I take the code on the back"), ("customer", "is it all right to give that over the phone?"),
     ("agent", "yes, it's a secure line and nobody writes it down"), ("customer", "ok it's 7 1 9")],
])
def test_an_id_finished_corrected_or_read_back_in_the_next_short_turns_is_redacted(turns):
    texts, _ = redact(*turns)
    for text in texts[1:]:
        left = re.sub(r"\[[A-Z_]+(?: \*{4}\d{4})?\]", "", text)
        assert not re.search(r"\d|\bw l\b|\bsee\b|\bdelta\b|(?:^|\s)[a-d]\W*$", left, re.IGNORECASE), texts


@pytest.mark.parametrize("turns", [
    # Digits said one by one with fillers between, left as words by the normaliser.
    [("agent", "and the three digits on the back of the card"), ("customer", "four, um, two, er, nine")],
    # Corrected after the agent asked again at length.
    [("agent", "what's your national insurance number"), ("customer", "QQ 12 34 56 C"),
     ("agent", "sorry, the line's terrible today, could you say that once more for me"),
     ("customer", "QQ 12 34 65 C, sorry, I mixed it up")],
    # Digits and words mixed, as recognisers write them.
    [("agent", "Lastly, the CVC."), ("customer", "2 double 9."), ("agent", "299?"), ("customer", "Yep.")],
    # A date of birth in pieces, after a question about the question.
    [("agent", "can I take your date of birth"), ("customer", "is that for the records"), ("agent", "it is, yes"),
     ("customer", "the 9th of the 4th"), ("agent", "mm-hm"), ("customer", "82")],
    # The NI letter as the whole turn, asked for without the word "letter".
    [("agent", "NI number please"), ("customer", "QQ 40 71 38"), ("agent", "and what does it end with?"),
     ("customer", "D.")],
    # The code asked for as recognisers spell it, or with money talk in the question.
    [("agent", "and the c v v please"), ("customer", "five two one")],
    [("agent", "can I take the security code to process the forty pound charge"), ("customer", "yeah it's 5 2 1")],
    # A day said as a word, the month as a number.
    [("agent", "and your mum's date of birth"), ("customer", "the fourth of the sixth forty two")],
    # Reluctant at first, then reassured; a digit said as the whole turn.
    [("agent", "and the security code on the back"), ("customer", "i'd rather not give that over the phone"),
     ("agent", "it's only used to authorise this one payment and it isn't stored anywhere"),
     ("customer", "okay go on it's two nine"), ("agent", "yep"), ("customer", "one")],
    # The number asked for as "the ten digit number" on a hospital letter, or spelt "n h s".
    [("agent", "can you read me the ten digit number from the top of your hospital letter"),
     ("customer", "seven six eight eight two six one four one four")],
    [("agent", "of course what's his n h s number"), ("customer", "he's reading it nine nine nine one three one oh "
                                                                  "three three nine")],
    # The NI number asked for without "national", its letters said as recognisers write them, read back regrouped.
    [("agent", "can i have your insurance number the national one"),
     ("customer", "yes it's queue queue four seven zero three eight eight dee")],
    [("agent", "can you give me your national insurance number please"), ("customer", "queue queue that's two"),
     ("customer", "then eighty one it's very faint this oh seven"), ("agent", "mm hm"),
     ("customer", "fifty five and the letter's dee"),
     ("agent", "lovely so that's queue queue eight one oh seven five five dee and you're calling about the payment")],
    # The letter read back at the opening of the turn that moves on.
    [("agent", "what's your national insurance number"), ("customer", "queue queue oh four oh six one two see"),
     ("agent", "was that dee at the end"), ("customer", "no see as in cat"),
     ("agent", "sorry see got it so your tax code's been updated and you'll get a refund in your june pay")],
    # The letters said before the digits at the end of a turn, as letters' names, or spelt to correct one.
    [("agent", "can i have your national insurance number"), ("customer", "right it's on this letter hang on q q"),
     ("agent", "take your time"), ("customer", "oh two five five"), ("customer", "nine nine a")],
    [("agent", "what's your national insurance number"), ("customer", "em tea three eight one four nine two dee"),
     ("agent", "so that's n t three eight one four nine two d"), ("customer", "no m for mother")],
    # The caller still giving the code after an aside in the same turn.
    [("agent", "can i take the security code"),
     ("customer", "it's eight hang on the numbers have worn off eight four something")],
    # The code asked for on the front of an Amex, with no card number said.
    [("agent", "So the total is £846.40. It's an Amex, you said?"),
     ("customer", "Yeah. The code's on the front, it's 7 7 1 3... No, wait, 7 1 3 7."), ("agent", "7137, thanks.")],
    # A date of birth asked back in other forms, and its year said again.
    [("agent", "Could you give me your date of birth?"), ("customer", "03/04/91."),
     ("agent", "Is that the 3rd of April or March the 4th?"), ("customer", "4th of March. Sorry, I lived abroad.")],
    [("agent", "date of birth please"), ("customer", "tenth of october"), ("agent", "and the year"),
     ("customer", "two thousand and eight"), ("agent", "so ten ten oh eight and you're applying for the bursary")],
    [("agent", "can i take your date of birth"), ("customer", "twenty first of the ninth nineteen ninety"),
     ("agent", "the application has twenty first of september nineteen ninety one"),
     ("customer", "oh i must have typed it wrong it's ninety not ninety one")],
    [("agent", "Can I take your date of birth?"), ("customer", "24th of July."), ("agent", "And the year?"),
     ("customer", "1970... sorry, '76. 1976.")],
    [("agent", "can i take your date of birth"), ("customer", "the fifth of november nineteen forty"),
     ("agent", "so you are eighty six, lovely"), ("customer", "yes fifth of the eleventh forty")],
    [("agent", "what is your date of birth"), ("customer", "the fifth of november"), ("agent", "and the year"),
     ("customer", "nineteen forty"), ("agent", "so you are eighty six, lovely, bonfire night"),
     ("customer", "yes fifth of the eleventh forty")],
    # Short turns while the caller finds the card wait for the value.
    [("agent", "the last three digits on the signature strip"), ("customer", "ok"), ("agent", "whenever you're ready"),
     ("customer", "ok so it's er"), ("agent", "take your time"), ("customer", "it's not easy to read"),
     ("customer", "two"), ("customer", "eight"), ("customer", "five")],
    # Asked again about one digit; the last letter named with an article; letters corrected after the value.
    [("agent", "Can I have the three-digit code?"), ("customer", "8 3 6."),
     ("agent", "Sorry, the line broke up. Was the last digit a 6?"), ("customer", "Yes, 6. 8, 3, 6.")],
    [("agent", "I've got RL 37 66 29 B. Is that right?"),
     ("customer", "The numbers are right, but the last letter's a D.")],
    [("agent", "we've got your n i number down as m n eight eight oh three one four c"),
     ("customer", "it's m h not m n h for hotel")],
    # The agent reads part of the value on record; a wrong read-back and its correction.
    [("agent", "I've got an NHS number ending 2 8 0. Is that yours?"), ("customer", "Yeah, that's me."),
     ("agent", "And can you read me the first three?"), ("customer", "7 6 2.")],
    [("agent", "your nhs number please"), ("customer", "four three six four five oh three oh six one"),
     ("agent", "i've got four three six five four oh for the first part"),
     ("customer", "no it's four five oh not five four oh")],
    # Pieces said before anyone asked, found when the number is read back whole.
    [("customer", "my number is"), ("agent", "yes"), ("customer", "oh five two"), ("agent", "mm hmm"),
     ("customer", "seven eight four c"), ("agent", "q q oh five two seven eight four c")],
    # A second NHS number, with no cue of its own.
    [("agent", "nhs number please"), ("customer", "three nine oh six nine five oh six one one"),
     ("agent", "thanks and for your daughter's prescription"),
     ("customer", "hers is three three seven four five one four four one three")],
    # Codes asked for as "the last bit on the back", "the CVV2", or "the three digits" while paying.
    [("agent", "and the last bit on the back"), ("customer", "two one four")],
    [("agent", "Could you give me the CVV2?"), ("customer", "Sure, it's 623.")],
    [("agent", "so that's the forty pound payment, i'll just need the three digits"), ("customer", "nine oh three")],
    # The letters run together before a comma, the last one spelt with a word the entity recogniser takes for a name.
    [("agent", "Can I take your National Insurance number?"),
     ("customer", "Yes, it is QQ, 12, 34, 56, C for Charlie.")],
])
def test_every_number_said_in_an_id_exchange_is_redacted(turns):
    texts, _ = redact(*turns)
    for text in texts[1:]:
        left = re.sub(r"\[[A-Z_]+(?: \*{4}\d{4})?\]", "", normalise_numbers(text))
        words = (r"\b(?:two|four|fourth|nine|ninety|forty|fifth|eight|five|queue|dee|see|em|tea|m for mother|q q|qq"
             r"|c for|m h|m n|h for|D)\b|^\W*(?:d|one)\W*$")
    assert not re.search(rf"\d|{words}", left.replace("£846.40", ""), re.IGNORECASE), texts


def test_a_card_its_expiry_and_its_code_said_in_one_breath_are_judged_apart():
    texts, _ = redact(("agent", "Card number and the little number please."),
                      ("customer", "Card's 5105 1051 0510 5100, 11/28, 215, done."))
    assert "215" not in texts[1] and "[CARD ****5100]" in texts[1], texts
    texts, _ = redact(("customer", "The reading was 1234, 5678 and 9012, all on the same meter."))
    assert texts == ["The reading was 1234, 5678 and 9012, all on the same meter."]


def test_a_whole_date_long_ago_is_a_date_of_birth_without_a_cue():
    texts, _ = redact(("agent", "is it still the 9th of November 1974 we have?"),
                      ("agent", "and the delivery is booked for the 9th of November 2026"))
    assert texts == ["is it still [DOB] we have?", "and the delivery is booked for the 9th of November 2026"]


def test_an_id_is_redacted_wherever_it_is_said_again_in_the_call():
    texts, _ = redact(("agent", "date of birth?"), ("customer", "12 03 1985"),
                      ("agent", "thanks, and what's the reason for your call today"),
                      ("customer", "my prescription hasn't arrived and I'm running out of my tablets"),
                      ("agent", "I'll put a note on: patient 12 03 1985, reference 4471 2209"))
    assert texts[4] == "I'll put a note on: patient [DOB], reference 4471 2209", texts


@pytest.mark.parametrize("turns", [
    # Numbers that describe the value.
    [("agent", "your NI number please"), ("customer", "is that the one with two letters and six numbers")],
    # The value complete, the talk moved on.
    [("agent", "and the security code on the back"), ("customer", "737"),
     ("agent", "thanks, that's the payment taken, is there anything else today"),
     ("customer", "yes, my order 4471 2209 hasn't come")],
    # A year something happened after an NI number.
    [("agent", "what's your national insurance number"), ("customer", "QQ 12 34 56 C"),
     ("agent", "thanks, and you've been with us since 2019?"), ("customer", "yes, since March 2019")],
    # Other business in the agent's next turns, once the whole value was given and read back.
    [("agent", "date of birth please"), ("customer", "22.11.1958"),
     ("agent", "thank you, I have the nurse on 12.12 at 10:20, or on the 19th at 3:40")],
    [("agent", "social security number?"), ("customer", "360 68 1097"),
     ("agent", "Sorry, 360-68-1097. Found it. It was rejected with code IND-031."),
     ("agent", "Your 2022 return used the wrong figure.")],
    # A tax code while the NI number is asked for.
    [("agent", "can i take your national insurance number"),
     ("customer", "it's on my payslip hang on 1257 L no that's my tax code sorry")],
    # A birthday as an occasion, not a question.
    [("customer", "i want to send flowers for my nan's ninetieth birthday"),
     ("customer", "the one on page twelve, product code 7741")],
    # The member's date of birth asked for, never given; dates of the plan after it.
    [("agent", "Can I get the member's date of birth?"), ("customer", "I'm not a member yet, just comparing plans."),
     ("agent", "No problem. Open enrollment runs from November 1 to January 15.")],
    # Doses and a thing's year after a date of birth; a booking on the birthday.
    [("agent", "date of birth please"), ("customer", "the 8th of March 1957"), ("agent", "which items?"),
     ("customer", "The omeprazole 20 mg, please.")],
    [("agent", "Date of birth?"), ("customer", "18/12/55."), ("agent", "And what year's the car?"),
     ("customer", "It's a 2016.")],
    [("agent", "Can you confirm your date of birth?"), ("customer", "1st April 86."),
     ("agent", "Thanks. The first slot is Tuesday 1st April, between 8 and 12.")],
    # A reference's letters after an NI number; "it's" is no letter.
    [("agent", "can i have your national insurance number"), ("customer", "it's q q oh five seven three nine one c"),
     ("agent", "thank you i've found it claim h b 44821 it's for your payslips")],
    # A card's last four named before its code; a returns code while paying.
    [("agent", "Can I take payment now?"), ("customer", "Yes, the card ends 4444, and the code on the back is 9 0 3."),
     ("agent", "Thanks, paid. Your returns code is RTN 4471.")],
    # A number named as a booking or policy number, whatever its shape.
    [("customer", "Not on me. I've got the letter with a booking number, 733 796 9683.")],
    [("customer", "My policy number: 884 221 907.")],
    # A count of things while a code is asked for.
    [("agent", "Can you read me the three digits on the back?"), ("customer", "I've got two cards, which one?")],
    # The card's last four named while its code is asked for; the topic of a helpline is no question.
    [("agent", "and the security code"), ("customer", "nine four oh"),
     ("agent", "lovely that's taken on the card ending 6075")],
    [("agent", "National Insurance contributions helpline."),
     ("customer", "Hi, I've got a gap in my record for 2019 to 2020 and I want to fill it.")],
])
def test_what_follows_an_id_exchange_or_describes_its_value_survives(turns):
    texts, _ = redact(*turns)
    assert texts[-1] == turns[-1][1], texts


def test_an_age_after_a_date_of_birth_survives_but_the_birth_month_said_again_is_the_value():
    texts, _ = redact(("agent", "date of birth please"), ("customer", "the 3rd of March 1950"),
                      ("agent", "lovely, so you're 76 now?"), ("customer", "76 in March, yes"))
    assert texts[2] == "lovely, so you're 76 now?" and texts[3] == "76 in [DOB], yes", texts


def test_a_value_read_back_in_the_turn_that_moves_on_is_redacted_and_the_rest_of_the_turn_survives():
    texts, _ = redact(("agent", "and the cvv"), ("customer", "two six oh"),
                      ("agent", "sorry two six zero thank you that's forty four ninety nine for the headphones"))
    assert texts[2] == "sorry [CVV] thank you that's 4499 for the headphones", texts
    texts, _ = redact(("agent", "and just your date of birth"), ("customer", "it's the thirty first"), ("agent", "of"),
                      ("customer", "august sixty three"),
                      ("agent", "thirty one eight sixty three okay your collection is booked for the twelfth"))
    assert texts[4] == "[DOB] okay your collection is booked for the twelfth", texts


def test_a_correction_right_after_the_talk_moved_on_is_still_the_value():
    texts, _ = redact(("agent", "Can you confirm your date of birth?"), ("customer", "12th of October, 1985."),
                      ("agent", "Thank you. And are you the main account holder?"),
                      ("customer", "Yes. Sorry, did I say '85? It's 1986. I'm not that old!"))
    assert texts[3] == "Yes. Sorry, did I say [DOB]? It's [DOB]. I'm not that old!", texts
    texts, _ = redact(("agent", "date of birth"), ("customer", "second of july nineteen ninety"),
                      ("agent", "second of july ninety and you're calling about your gas meter"),
                      ("customer", "yeah oh no sorry not the second the twelfth twelfth of july"),
                      ("agent", "twelfth of july ninety thank you"), ("customer", "the reading's four eight two two one"))
    assert texts[3:] == ["yeah oh no sorry not the [DOB] the [DOB] [DOB]", "[DOB] [DOB] thank you",
                         "the reading's 48221"], texts


def test_a_code_read_back_with_the_expiry_after_it_is_redacted():
    texts, _ = redact(("agent", "So I'll take the card details now, the long number and then the—"),
                      ("customer", "Yeah, it's 5555 5555 5555 4444, expiry 08/27, and the code on the back's 362."),
                      ("agent", "Great, you're ahead of me. 362, 08/27. That's £29.99 a month from the 1st."))
    assert texts[2] == "Great, you're ahead of me. [CVV], 08/27. That's £29.99 a month from the 1st.", texts


def test_the_number_on_the_back_is_the_code_and_a_lone_one_in_its_exchange_is_a_digit():
    texts, _ = redact(("agent", "and the number on the back the last three digits"), ("customer", "okay it's one"),
                      ("agent", "yeah"), ("customer", "double eight"), ("agent", "one double eight"))
    assert texts[1:] == ["okay it's [CVV]", "yeah", "[CVV]", "[CVV]"], texts


@pytest.mark.parametrize("turns", [
    [("agent", "There's usually a number on the front of the bin."),
     ("customer", "It's a bit worn... 240. That's the litres, I think. And there's a sticker, 7731.")],
    [("agent", "What have you got for the reading, then?"),
     ("customer", "The torch on my phone isn't great. Okay, 0 4 7... 2... 9. The red numbers after that are 6."),
     ("agent", "So 04729, and we'll ignore the red ones.")],
])
def test_a_number_on_a_thing_or_read_by_phone_light_is_no_card_or_phone_number(turns):
    texts, _ = redact(*turns)
    assert texts == [text for _, text in turns], texts


def test_garbled_digits_and_an_ni_number_given_before_any_question_are_redacted():
    texts, _ = redact(("agent", "and the security code that's the last three on the signature strip"),
                      ("customer", "to ate for"))
    assert texts[1] == "[CVV]", texts
    texts, _ = redact(("agent", "can i confirm his date of birth"), ("customer", "it's the thirtieth"),
                      ("agent", "yep"), ("customer", "of june"), ("agent", "mm hmm"),
                      ("customer", "to thousand and won"))
    assert texts[5] == "[DOB]", texts
    texts, _ = redact(("agent", "hi you're through to the temp desk"),
                      ("customer", "hiya before you ask anything my n i is en kay eight five nine one three eight "
                                   "sea i'm ringing about my hours from last week"))
    assert not re.search(r"\d|\ben\b|\bkay\b|\bsea\b", texts[1]), texts


@pytest.mark.parametrize("turns", [
    # An hour after a date of birth; an estimate after a social security number; a helpline's topic and tax years.
    [("agent", "date of birth?"), ("customer", "2nd of December 1959. Is the lisinopril 10mg in?"),
     ("agent", "Yes, it's ready."), ("customer", "Great, I'll come after 4."), ("agent", "We're open till 6.")],
    [("agent", "what's your social"), ("customer", "seven one oh two seven four two three four"),
     ("agent", "and your yearly income roughly"), ("customer", "about sixty two thousand")],
    [("agent", "National Insurance enquiries, hello."),
     ("customer", "Hello. I've got gaps in my record for 2015-16 and 2016-17.")],
])
def test_an_hour_an_estimate_and_a_tax_year_are_no_id(turns):
    texts, _ = redact(*turns)
    assert normalise_numbers(texts[-1]) == normalise_numbers(turns[-1][1]), texts


def test_a_number_on_a_medical_card_is_the_nhs_number_not_a_card():
    texts, _ = redact(("agent", "have you got the long number from your medical card the ten digit one"),
                      ("customer", "is that the blue card yeah it's nine three two eight eight oh four oh seven eight"))
    assert texts[1] == "is that the blue card yeah it's [NHS_NUMBER]", texts


def test_the_ni_letter_alone_counts_with_its_number():
    texts, result = redact(("agent", "national insurance number?"), ("customer", "it's ab 12 34 56"),
                           ("agent", "and the letter at the end?"), ("customer", "it is a c"))
    assert texts[1] == "it's [NI_NUMBER]" and texts[3] == "it is a [NI_NUMBER]" and result.counts["NI_NUMBER"] == 1
    # The article after the number read back is no letter of it.
    texts, _ = redact(("agent", "What's your National Insurance number?"), ("customer", "QQ 77 40 19 A."),
                      ("agent", "So QQ 77 40 19 A?"), ("agent", "Your forecast is 221 pounds a week."))
    assert texts[3] == "Your forecast is 221 pounds a week.", texts


@pytest.mark.parametrize("off, turns", [
    (["PHONE"], [("agent", "read me the long number, then your phone number"), ("customer", "4532 0151 1283 0366"),
                 ("customer", "07700 900123")]),
    (["EXPIRY"], [("agent", "the long number and the expiry"), ("customer", "4532 0151 1283 0366, 04 27")]),
    (["DOB"], [("agent", "the three digits on the back, then your date of birth"), ("customer", "123, and 14 03 76")]),
])
def test_a_type_turned_off_never_lets_a_card_or_its_code_through(off, turns):
    texts, _ = site_redact(RuleTable(off=off), *turns)
    said = " ".join(texts)
    assert "4532" not in said and "0151" not in said and "123," not in said, texts


def test_a_site_cue_may_hold_punctuation_and_a_site_neutral_cue_beats_a_shipped_one():
    texts, _ = site_redact(RuleTable({"ACCOUNT": ["a/c no."]}), ("customer", "my a/c no. is 44556677"))
    assert texts == ["my a/c no. is [ACCOUNT]"]
    texts, _ = site_redact(RuleTable({"NEUTRAL": ["account number"]}), ("customer", "your account number is 44556677"))
    assert texts == ["your account number is 44556677"]


def test_a_two_letter_word_before_six_digits_is_no_ni_number():
    texts, _ = redact(("customer", "The last reading is 12 34 56 a month ago."))
    assert texts == ["The last reading is 12 34 56 a month ago."]


def test_a_cue_does_not_reach_past_a_turn_with_numbers_in_it():
    texts, _ = redact(("agent", "what's your date of birth"), ("customer", "the 3rd of May 1961"),
                      ("agent", "thanks, and the 2 items you returned"), ("customer", "ok"),
                      ("customer", "the order was 4471 2209"))
    assert texts[1] == "[DOB]" and texts[4] == "the order was 4471 2209", texts


def site_redact(table: RuleTable, *turns: tuple[str, str]):
    result = Redactor(table).redact_transcript(Transcript(tuple(Turn(s, t) for s, t in turns)))
    return [t.text for t in result.transcript.turns], result


def test_a_site_adds_its_own_cue_words_and_they_win_over_the_shipped_ones():
    said = (("agent", "And your MRN?"), ("customer", "It's 4418 2291."))
    assert redact(*said)[0][1] == "It's 4418 2291."
    assert site_redact(RuleTable({"NHS_NUMBER": ["mrn"]}), *said)[0][1] == "It's [NHS_NUMBER]."
    account = ("customer", "My customer number is 48213377.")
    assert redact(account)[0] == ["My customer number is 48213377."]  # shipped: a neutral reference
    assert site_redact(RuleTable({"ACCOUNT": ["customer  number"]}), account)[0] == ["My customer number is [ACCOUNT]."]
    docket = ("customer", "My mobile's the same, and the docket is 7731 2290.")
    assert "[PHONE]" in redact(docket)[0][0]
    assert site_redact(RuleTable({"NEUTRAL": ["docket"]}), docket)[0] == [docket[1]]


def test_a_name_on_the_site_list_is_redacted_wherever_it_is_said_in_any_case():
    texts, result = site_redact(RuleTable(names=["Shirin"]), ("customer", "i spoke to shirin on monday"),
                                ("agent", "Shirin in billing? I'll note that."))
    assert texts == ["i spoke to [NAME] on monday", "[NAME] in billing? I'll note that."]
    assert result.counts["NAME"] == 1 and {s.value for s in result.secrets} == {"shirin", "Shirin"}


def test_a_type_turned_off_is_left_as_said_and_the_others_still_go():
    said = ("customer", "It's 14 Rosewood Avenue, Leeds LS6 4BQ, and my date of birth is 3rd May 1961.")
    texts, result = site_redact(RuleTable(off=["ADDRESS"]), said)
    assert texts == ["It's 14 Rosewood Avenue, [LOCATION] [POSTCODE], and my date of birth is [DOB]."]
    assert "ADDRESS" not in result.counts and all(s.kind != "ADDRESS" for s in result.secrets)
    texts, _ = site_redact(RuleTable(off=["LOCATION"]), ("customer", "The bins weren't collected in Harrogate."))
    assert texts == ["The bins weren't collected in Harrogate."]
    text, _ = Redactor(RuleTable(off=["LOCATION"])).redact_text("Missed collection in Harrogate.")
    assert text == "Missed collection in Harrogate."


def test_a_site_config_builds_the_table_the_pipeline_uses_and_warns_of_types_turned_off(tmp_path, caplog):
    from aftercall.config import load_config
    from aftercall.pipeline import build_pipeline

    path = tmp_path / "aftercall.toml"
    path.write_text("[redact]\nnames = ['Shirin']\noff = ['LOCATION']\n[redact.cues]\nNHS_NUMBER = ['mrn']\n")
    with caplog.at_level("WARNING", logger="aftercall.pipeline"):
        pipeline = build_pipeline(load_config(path, {}))
    assert "redaction of LOCATION is turned off" in caplog.text
    redaction = pipeline.redact(Transcript((Turn("customer", "shirin said my mrn is 4418 2291, in Harrogate"),)), "c1")
    assert redaction.transcript.turns[0].text == "[NAME] said my mrn is [NHS_NUMBER], in Harrogate"


def test_an_altered_entity_model_is_refused(tmp_path):
    """Every file the recogniser loads is pinned: one flipped byte and it refuses to load (copies of the 55 MB model
    are links, but the altered file)."""
    from aftercall.core.errors import ModelIntegrityError
    from aftercall.redact.entities import EN_CORE_WEB_MD_SHA256, EntityFinder, default_model_dir

    for relative in EN_CORE_WEB_MD_SHA256:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).symlink_to(default_model_dir() / relative)
    altered = tmp_path / "ner" / "moves"
    data = bytearray(altered.read_bytes())
    data[len(data) // 2] ^= 0xFF
    altered.unlink()
    altered.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="moves has sha256"):
        EntityFinder(tmp_path).find(["It's Daniel Okafor."])


def test_the_redaction_reference_is_the_rule_table_and_the_guides_site_section_loads(tmp_path):
    """docs/redaction.md is generated from the code's table (`make docs`), and the guide's `[redact]` example is a
    valid config."""
    from pathlib import Path

    from aftercall.config import load_config
    from aftercall.redact.rules import RULES
    from aftercall.reference import redaction_reference

    docs = Path(__file__).parent.parent / "docs"
    reference = (docs / "redaction.md").read_text()
    assert reference == redaction_reference(), "docs/redaction.md is stale: run `make docs`"
    for rule in RULES:
        assert f"| `{rule.kind}` | `{rule.placeholder}` | {rule.found_by} |" in reference
    guide = (docs / "redaction-guide.md").read_text()
    example = re.search(r"\*\*A site's own rules\*\*.*?```toml\n(.*?)```", guide, re.DOTALL).group(1)
    (tmp_path / "site.toml").write_text(example)
    redact_config = load_config(tmp_path / "site.toml", {}).redact
    assert redact_config.off == ("LOCATION",) and "mrn" in redact_config.cues["NHS_NUMBER"]
