"""Pattern-based extraction over the *redacted* conversation: sentences, third-person rewriting, actions,
commitments (owner + due as said), escalation, resolution cues and entities. Each finding keeps its turn index
so every point of the summary can be traced to the transcript."""

from __future__ import annotations

import re
from dataclasses import dataclass

from aftercall.core.transcript import Turn
from aftercall.redact.numbers import MONTHS


@dataclass(frozen=True)
class Sentence:
    turn: int
    speaker: str
    text: str


_URL = re.compile(r"https?://\S+|www\.\S+")
_HANDLE = re.compile(r"(?<!\w)@\w+")
_SIGNATURE = re.compile(r"\s*[\^*~-][A-Z]{1,3}\s*$")
_SPLIT = re.compile(r"(?<=[.!?])\s+")
_FILLER = re.compile(r"^(?:(?:hi|hello|hey|yes|yeah|yep|um+|uh+|er+|so|well|okay|ok|right|oh|alright|and|but|"
                     r"sure|great|thanks|thank you|good (?:morning|afternoon|evening))\b[\s,.!]*)+", re.IGNORECASE)


def clean(text: str) -> str:
    """Chat noise (links, @handles, agent sign-offs) carries no meaning for a summary."""
    text = _SIGNATURE.sub("", _HANDLE.sub("", _URL.sub("", text)))
    return re.sub(r"\s+", " ", text).strip(" ,")


def sentences(turns: tuple[Turn, ...]) -> list[Sentence]:
    out = []
    for index, turn in enumerate(turns):
        for part in _SPLIT.split(clean(turn.text)):
            part = part.strip()
            if part:
                out.append(Sentence(index, turn.speaker, part))
    return out


def strip_filler(text: str) -> str:
    return _FILLER.sub("", text).strip()


# First person -> third person. Order matters: contractions before bare pronouns.
_CUSTOMER_VOICE = [
    (r"\bI'm\b", "they are"), (r"\bI am\b", "they are"), (r"\bI've\b", "they have"), (r"\bI'd\b", "they would"),
    (r"\bI'll\b", "they will"), (r"\bI was\b", "they were"), (r"\bI\b", "they"), (r"\bmy\b", "their"),
    (r"\bme\b", "them"), (r"\bmyself\b", "themselves"), (r"\bmine\b", "theirs"), (r"\bwe're\b", "they are"),
    (r"\bwe've\b", "they have"), (r"\bwe\b", "they"), (r"\bour\b", "their"), (r"\bus\b", "them"),
    (r"\byour\b", "the"), (r"\byou're\b", "the organisation is"), (r"\byou\b", "the organisation"),
]
_AGENT_VOICE = [
    (r"\byou're\b", "the customer is"), (r"\byou've\b", "the customer has"), (r"\byou'll\b", "the customer will"),
    (r"\byour\b", "the customer's"), (r"\byourself\b", "the customer"), (r"\byou\b", "the customer"),
    (r"\bI'm\b", "the agent is"), (r"\bI've\b", "the agent has"), (r"\bI'll\b", "the agent will"),
    (r"\bI\b", "the agent"), (r"\bmy\b", "the agent's"), (r"\bme\b", "the agent"), (r"\bwe'll\b", "the organisation will"),
    (r"\bwe've\b", "the organisation has"), (r"\bwe\b", "the organisation"), (r"\bour\b", "the organisation's"),
    (r"\bus\b", "the organisation"),
]


# The customer asking the agent ("can you send me my statement"), told as the agent's task.
_REQUEST_VOICE = [
    (r"\bme\b", "the customer"), (r"\bmy\b", "the customer's"), (r"\bI\b", "the customer"),
    (r"\bus\b", "the customer"), (r"\bour\b", "the customer's"), (r"\byour\b", "the organisation's"),
    (r"\byou\b", "the agent"),
]
_VOICES = {"customer": _CUSTOMER_VOICE, "request": _REQUEST_VOICE}


def third_person(text: str, speaker: str) -> str:
    rules = _VOICES.get(speaker, _AGENT_VOICE)
    for pattern, replacement in rules:
        text = re.sub(pattern, replacement, text, flags=re.IGNORECASE)
    # "they is" / "they was" are what the plain swap leaves behind.
    text = re.sub(r"\bthey was\b", "they were", text)
    text = re.sub(r"\b(they|the customer) (don't|doesn't)\b", lambda m: f"{m.group(1)} " + (
        "don't" if m.group(1) == "they" else "doesn't"), text)
    return text


def sentence_case(text: str) -> str:
    text = text.strip().rstrip(",;:")
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


# --- reason, issue -----------------------------------------------------------------------------------------------
CALLING = re.compile(r"^(?:I'm|I am|I was|I've been|I)\s+(?:just\s+)?(?:calling|ringing|phoning|contacting you|"
                     r"getting in touch|writing|reaching out)\s+(?:you\s+)?(?:because|about|regarding|as|to|since|"
                     r"for|on behalf of)\b\s*", re.IGNORECASE)
REASON_CUES = re.compile(r"\b(?:calling|ringing|want(?:ed)? to|would like to|need(?:ed)? to|need|trying to|"
                         r"can't|cannot|couldn't|won't|haven't|hasn't|didn't|doesn't|isn't|not|problem|issue|help|"
                         r"query|question|why|how (?:do|can)|wrong|broken|stolen|lost|charged|cancel|change|book|"
                         r"complain|refund|still|again)\b", re.IGNORECASE)
PROBLEM_CUES = re.compile(r"\b(?:can't|cannot|couldn't|won't|haven't|hasn't|didn't|doesn't|isn't|aren't|not|never|"
                          r"no longer|problem|issue|fault|error|wrong|broken|stolen|lost|missing|late|leak\w*|damp|"
                          r"mould|declined|overcharged|charged (?:twice|again)|double|dropp\w+|keeps|still|failed|"
                          r"crash\w*|stopped|cut off|outage|don't recognise|don't recognize|unauthori[sz]ed|fraud)\b",
                          re.IGNORECASE)


def reason_sentence(sentence: Sentence) -> str:
    text = strip_filler(sentence.text)
    calling = CALLING.match(text)
    if calling:
        joiner = calling.group().split()[-1].lower()
        rest = third_person(text[calling.end():], "customer")
        return sentence_case(f"Customer called {joiner} {rest}")
    body = third_person(text, "customer").rstrip("?")
    if sentence.text.rstrip().endswith("?"):
        return sentence_case(f"Customer asked: {lower_first(body)}")
    return sentence_case(f"Customer says {lower_first(body)}")


# --- actions --------------------------------------------------------------------------------------------------
_PAST = (r"(?:\w+ed|sent|made|set|put|done|taken|given|found|paid|written|shown|told|spoken|sorted|got|issued|"
         r"applied|arranged|booked|cancelled|logged|raised|reset|run|sent out|added|removed|updated|moved|refunded|"
         r"credited|waived|reported|escalated|transferred|checked|confirmed|verified|blocked|frozen|unlocked)")
# Text up to the end of the sentence; a full stop before a digit is a decimal point ("£23.99"), not an end.
_CLAUSE_TEXT = r"(?:[^.?!]|\.(?=\d))"
ACTION = re.compile(rf"\b(?:I've|I have|I|we've|we have|we)\s+(?:also\s+|now\s+|just\s+|already\s+|gone ahead and\s+)*"
                    rf"(?P<verb>{_PAST})\b(?P<rest>{_CLAUSE_TEXT}*)", re.IGNORECASE)
_NOT_ACTIONS = re.compile(r"^(?:need|needed|wanted|called|asked|noticed|hoped|understand|understood|believed|"
                          r"guess|supposed|used)$", re.IGNORECASE)


_NEW_CLAUSE = re.compile(r",\s+(?=(?:and|so|but|which|it|it's|it'll|that|that's|this|there|what|because|as|then|"
                         r"funnily|your|you|you'll|you're|I|I'll|we|we'll)\b)", re.IGNORECASE)


def action_phrase(sentence: Sentence) -> str | None:
    if sentence.speaker != "agent":
        return None
    match = ACTION.search(sentence.text)
    if not match or _NOT_ACTIONS.match(match.group("verb")):
        return None
    # Spoken sentences run on ("ordered a card, it'll arrive Friday"): the action ends where a new clause starts.
    rest = _NEW_CLAUSE.split(match.group("rest"), maxsplit=1)[0]
    rest = third_person(rest, "agent")
    rest = re.sub(r"\s+(?:now|for you|right now|as well)\b", "", rest)
    return sentence_case(f"{match.group('verb').lower()}{rest}")


# --- commitments ------------------------------------------------------------------------------------------------
_ROLE_NOUN = (r"(?:team|department|engineer|technician|specialist|manager|supervisor|doctor|nurse|gp|consultant|"
              r"surveyor|officer|courier|contractor|pharmacy|pharmacist|clinic|colleague|adviser|advisor|"
              r"caseworker|handler|inspector|plumber|driver|store|branch|office|company|bank|council|system|letter|"
              r"refund|card|credit|money|payment|replacement|order|parcel|item|bill|statement|email|text|"
              r"confirmation|reference)s?")
ORG_COMMIT = re.compile(
    rf"\b(?:we(?:'ll| will| are going to|'re going to)|"
    rf"(?:the|a|an|our|your|new|that|this)\s+(?:\w+\s+){{0,2}}{_ROLE_NOUN}\s+"
    rf"(?:will|should|is going to)|someone(?: from \w+)? will|(?:it|that|this|they)(?:'ll| will| should)\s+"
    rf"(?:arrive|be|come|reach|show|appear|take)|you(?:'ll| will| should) (?:receive|get|hear|see|be contacted|"
    rf"be sent|be called))\b",
    re.IGNORECASE,
)
AGENT_COMMIT = re.compile(r"\b(?:I(?:'ll| will| am going to|'m going to| shall)|let me)\s+(?!be\b|just\b)\w+",
                          re.IGNORECASE)
CUSTOMER_TASK = re.compile(
    r"\b(?:please\s+|you(?:'ll| will)? need to|"
    r"you should|make sure (?:that )?you|you must|you have to|don't forget to)"
    r"(?=\s*(?:send|call|ring|bring|provide|upload|complete|fill|check|keep|return|post|email|read|take|book|"
    r"submit|sign|reply|contact|visit|pay|log|reset|restart|turn|unplug|come|drop|let|make|get|collect|monitor))",
    re.IGNORECASE,
)
# What the organisation needs from the caller is the caller's task: "we'll need your last three bank statements".
NEEDS_FROM_CALLER = re.compile(r"\b(?:we(?:'ll| will)?|I(?:'ll| will)?|they(?:'ll| will)?)\s+(?:also\s+)?need\s+"
                               r"(?!to\b)(?P<thing>.+)", re.IGNORECASE)
# Said in the call and done there, or no commitment at all: "I'll explain", "let me recap", "I'll write it down".
NOT_A_COMMITMENT = re.compile(
    r"^(?:(?:Customer|The agent|The organisation) will |Let the agent )(?:just |quickly |now )?"
    r"(?:explain|recap|stop|go through|read|repeat|check|look|see|confirm|transfer|put (?:the customer|you) through"
    r"|bear with|wait|hold|write (?:it|that) down|do that|do it|believe|miss|live|try|think"
    r"|take (?:a|your|the) (?:note|look|details)|pop|grab|pull|bring up|find|ask|tell|let)\b", re.IGNORECASE)
_WEEKDAY = r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_MONTH = "(?:%s)" % "|".join(MONTHS)
DUE = re.compile(
    rf"\b(?:(?:by|before|on|until|till|no later than|from)\s+(?:the\s+)?(?:end of (?:the\s+)?(?:day|week|month|play)|"
    rf"close of business|today|tonight|tomorrow(?: morning| afternoon| evening)?|this (?:afternoon|evening|week)|"
    rf"next (?:week|month|{_WEEKDAY})|{_WEEKDAY}(?: morning| afternoon| evening)?|\d{{1,2}}(?:st|nd|rd|th)?(?: of)?"
    rf" {_MONTH}|{_MONTH} \d{{1,2}}(?:st|nd|rd|th)?|\d{{1,2}}(?:st|nd|rd|th))|"
    rf"within (?:the next |a |an )?(?:[\w\-]+\s+){{0,3}}?(?:hours?|days?|weeks?|months?|working days|business days)|"
    rf"in (?:the next )?(?:\d+|a|an|one|two|three|four|five|six|seven|ten|a few|a couple of)(?: to \w+)?"
    rf" (?:working |business )?(?:hours?|days?|weeks?|months?)|"
    rf"(?:today|tonight|tomorrow(?: morning| afternoon| evening)?|this (?:afternoon|evening|week)|next (?:week|month)|"
    rf"later today|end of (?:the )?(?:day|week))|"
    rf"(?:at|around|after|before) \d{{1,2}}(?::\d{{2}})?\s?(?:am|pm|a\.m\.|p\.m\.|o'clock))",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class FollowUp:
    owner: str
    action: str
    due: str | None
    turn: int


# ", and" between two commitments: "you'll get an acknowledgement within five days, and a handler will call you".
_JOINED_COMMITMENTS = re.compile(r",\s+(?:and|then|and then)\s+")


def follow_ups(sentence: Sentence) -> list[FollowUp]:
    """One per commitment: a sentence joining two (each a commitment on its own) gives two follow-ups."""
    parts = _JOINED_COMMITMENTS.split(sentence.text)
    if len(parts) > 1:
        found = [f for part in parts if (f := follow_up(Sentence(sentence.turn, sentence.speaker, part)))]
        if len(found) == len(parts):
            return found
    single = follow_up(sentence)
    return [single] if single else []


def call_follow_ups(said: list[Sentence]) -> list[FollowUp]:
    """Every follow-up of the call: each sentence's commitments, what the customer asked for and the agent agreed
    to, and a pronoun ("send it back") named as the thing the call was about ("the medical assessment form")."""
    each = [follow_ups(sentence) for sentence in said]
    found = []
    for index, sentence in enumerate(said):
        here = each[index]
        reply = next((i for i in range(index + 1, min(index + 3, len(said))) if said[i].speaker == "agent"), None)
        # Where the agent's reply is itself a commitment ("yes, I'll email it today"), that one says it best.
        if reply is not None and not each[reply] and (request := agreed_request(sentence, said[reply])):
            here = here + [request]
        found += [resolve_pronoun(f, said[max(0, index - _ANTECEDENT_SENTENCES):index + 1]) for f in here]
    return found


# "Can you send me the form?" answered "yes, I'll do that now": the agent's commitment, said by the customer.
_REQUEST = re.compile(r"^(?:(?:and|so|but|also|then|okay|ok|please)[,\s]+)*(?:can|could|would|will) you (?:please |"
                      r"just |also )?(?P<rest>(?:send|email|post|text|call|ring|refund|cancel|book|arrange|"
                      r"update|change|add|remove|note|put|pass|forward|chase|reissue|replace|waive|extend|"
                      r"close|stop|freeze|reopen|raise|log|escalate|order|reset)\b[^?]*)\?$", re.IGNORECASE)
_AGREES = re.compile(r"^(?:yes|yeah|yep|of course|sure|certainly|absolutely|definitely|no problem|not a problem|"
                     r"will do|I can|I will|I'll|that's fine)\b", re.IGNORECASE)


def agreed_request(sentence: Sentence, reply: Sentence) -> FollowUp | None:
    """A customer's request the agent's reply agrees to, as the agent's follow-up."""
    request = _REQUEST.match(strip_filler(sentence.text)) if sentence.speaker == "customer" else None
    if request is None or not _AGREES.match(reply.text):
        return None
    action = third_person(request.group("rest"), "request")
    due = DUE.search(request.group("rest"))
    return FollowUp("agent", sentence_case(f"The agent will {action}"), due.group().strip() if due else None,
                    sentence.turn)


_ANTECEDENT_SENTENCES = 6
# What a follow-up is about when it says "it": a thing sent, filled in, returned or paid.
_THING = re.compile(
    r"\b(?:the|your|my|a|an|our)\s+(?:[\w'-]+\s+){0,3}?(?:form|letter|statements?|link|code|invoice|copy|photos?|"
    r"proof|evidence|certificate|application|appeal|claim|refund|receipt|documents?|paperwork|contract|agreement|"
    r"quote|report|prescription|keys?|fob|mandate|order|parcel|bill|pack|voucher|cheque|payslips?|P45|P60|"
    r"records|notes|mailbox|device|laptop|phone|meter|bin|boots|sofa|table)\b", re.IGNORECASE)
_PRONOUN_OBJECT = re.compile(r"^(?P<head>(?:Customer to|Customer will|The agent will|The organisation will)\s+"
                             r"(?:send|email|post|submit|return|bring|upload|forward|complete|fill in|fill|sign|"
                             r"pay|drop off|collect|resend|re-send|print|scan|check|cancel|book)(?: back)?\s+)"
                             r"(?P<pronoun>it|that|this|them|those)\b", re.IGNORECASE)


def resolve_pronoun(follow: FollowUp, context: list[Sentence]) -> FollowUp:
    """"Customer to send it back" -> "Customer to send the medical assessment form back": the nearest thing named
    before it (in either voice), when the action's object is only a pronoun."""
    pronoun = _PRONOUN_OBJECT.match(follow.action)
    if pronoun is None:
        return follow
    for sentence in reversed(context[:-1]):
        things = list(_THING.finditer(sentence.text))
        if things:
            thing = lower_first(third_person(things[-1].group(), sentence.speaker))
            action = follow.action[:pronoun.start("pronoun")] + thing + follow.action[pronoun.end("pronoun"):]
            return FollowUp(follow.owner, action, follow.due, follow.turn)
    return follow


def follow_up(sentence: Sentence) -> FollowUp | None:
    found = _commitment(sentence)
    return None if found is None or NOT_A_COMMITMENT.match(found.action) else found


def _commitment(sentence: Sentence) -> FollowUp | None:
    if sentence.speaker not in ("agent", "customer"):  # unattributed: a follow-up needs an owner we know
        return None
    text = strip_filler(sentence.text)
    if text.endswith("?"):  # a question asks for something now; a commitment is stated
        return None
    due_match = DUE.search(text)
    due = due_match.group().strip() if due_match else None
    if sentence.speaker == "customer":
        match = re.search(rf"\bI(?:'ll| will| am going to|'m going to)\s+(?!be\b|just\b|have\b)"
                          rf"(?P<rest>{_CLAUSE_TEXT}+)", text, re.IGNORECASE)
        if match:
            return FollowUp("customer", sentence_case(f"Customer will {third_person(match.group('rest'), 'customer')}"),
                            due, sentence.turn)
        return None
    need = NEEDS_FROM_CALLER.search(text)
    if need:
        thing = third_person(need.group("thing"), "agent").rstrip(".?!")
        return FollowUp("customer", sentence_case(f"Customer to send {thing}"), due, sentence.turn)
    task = CUSTOMER_TASK.search(text)
    if task:
        rest = third_person(text[task.end():], "agent").strip()
        return FollowUp("customer", sentence_case(f"Customer to {rest.rstrip('?')}"), due, sentence.turn)
    org = ORG_COMMIT.search(text)
    if org:
        clause = text[org.start():]
        return FollowUp("organisation", sentence_case(third_person(clause, "agent")), due, sentence.turn)
    agent = AGENT_COMMIT.search(text)
    if agent and not re.match(r"(?i)let me (?:just )?(?:check|see|have a look|look|pull|bring|confirm|verify|read|"
                              r"take|get|find|ask|explain|know)", agent.group()):
        clause = text[agent.start():]
        return FollowUp("agent", sentence_case(third_person(clause, "agent")), due, sentence.turn)
    return None


# --- escalation, resolution --------------------------------------------------------------------------------------
ESCALATION = re.compile(
    r"\b(?:escalat\w+|transfer(?:ring|red)? you|put you through to|pass (?:this|it|you) (?:on|over|to)|"
    r"(?:speak|talk) to (?:a|my|the|your) (?:manager|supervisor|team leader|senior)|second line|third line|"
    r"formal complaint|raise a complaint|raised a complaint|log(?:ged)? a complaint|refer(?:red)? (?:this|it|you) to|"
    r"specialist team|complaints team|ombudsman|safeguarding)\b",
    re.IGNORECASE,
)
RESOLVED = re.compile(
    r"\b(?:(?:that's|that is|it's|it is|you're|all) (?:sorted|fixed|resolved|done|working|updated|cancelled|"
    r"booked|all set|set up|processed|back on)|(?:is|are) (?:now )?(?:working|fixed|resolved|sorted)|"
    r"working (?:again|now)|problem solved|back (?:up|online)|that's everything|that's all|all good|"
    r"that's great|that's perfect|perfect|brilliant|that worked|it worked)\b",
    re.IGNORECASE,
)
PENDING = re.compile(r"\b(?:investigat\w+|look into|looking into|get back to you|pending|awaiting|waiting for|"
                     r"under review|once we (?:have|receive)|call you back|be in touch)\b", re.IGNORECASE)
# Who a call or a task goes to, in the call's words: "the complaints team", "a team leader", "PALS" (an office's
# initials after "to").
TEAM = re.compile(r"\b(?i:(?:the|a|an|our|your|my)\s+(?:[a-z][\w-]*\s+){0,2}?(?:team leader|team|department|desk|"
                  r"unit|manager|supervisor|adjudicator|specialists?))\b|(?<=\bto )[A-Z]{2,6}\b")


def team_in(text: str) -> str | None:
    found = TEAM.search(text)
    return found.group() if found else None


# --- verification, what the caller tried --------------------------------------------------------------------
# What an agent checks to confirm who is calling, as the kind of thing checked (never its value): the first pattern
# that a question matches names the kind.
VERIFICATION = (
    (re.compile(r"\b(?:full name|your name|name on the account|who I'm speaking (?:to|with))\b", re.I), "full name"),
    (re.compile(r"\b(?:date of birth|d\.?o\.?b|birthday)\b", re.I), "date of birth"),
    (re.compile(r"\b(?:post ?code|zip(?: code)?)\b", re.I), "postcode"),
    (re.compile(r"\b(?:first line of (?:your|the) address|your address|address on the account)\b", re.I),
     "first line of address"),
    (re.compile(r"\b(?:last (?:four|4)(?: digits)?(?: of (?:the|your) card)?|card ending)\b", re.I),
     "last four digits of card"),
    (re.compile(r"\be-?mail(?: address)?\b", re.I), "email address"),
    (re.compile(r"\b(?:security (?:question|answer)|memorable (?:word|answer|place|name|date)|password)\b", re.I),
     "security answer"),
    (re.compile(r"\b(?:mobile|phone) number\b", re.I), "phone number"),
    (re.compile(r"\b(?:(?:order|application|claim|tenancy|policy|account|student|staff|employee|customer|"
                r"membership|reference|patient|nhs|national insurance) (?:number|reference|id))\b", re.I), None),
)
ASKS = re.compile(r"\?\s*$|^(?:(?:can|could|may) I (?:take|have|get|confirm|check|grab)|(?:please )?confirm|"
                  r"what(?:'s| is) (?:your|the))\b", re.IGNORECASE)
# What the caller did before calling: "I've restarted it twice", "I already emailed them", "I tried the app".
TRIED = re.compile(r"\bI(?:'ve| have)?\s+(?:already\s+|even\s+|also\s+)?(?:tried|restarted|rebooted|reset|"
                   r"checked|cleared|reinstalled|updated|unplugged|rang|called|phoned|emailed|reported|logged (?:in|out)|"
                   r"been (?:on|into|to|through)|gone (?:on|into|to)|went (?:on|into|to)|looked (?:on|at|online))\b",
                   re.IGNORECASE)


def verification_asked(sentence: Sentence) -> str | None:
    """The kind of identity check an agent's question asks for, or None."""
    if sentence.speaker != "agent" or not ASKS.search(sentence.text):
        return None
    for pattern, kind in VERIFICATION:
        found = pattern.search(sentence.text)
        if found:
            return kind or found.group().lower()
    return None


def tried_before(sentence: Sentence) -> str | None:
    """What the caller says they did before calling, in the third person, or None."""
    if sentence.speaker != "customer":
        return None
    found = TRIED.search(sentence.text)
    if not found:
        return None
    clause = _NEW_CLAUSE.split(sentence.text[found.start():], maxsplit=1)[0]
    return sentence_case(third_person(strip_filler(clause), "customer"))


# --- who the caller speaks for ---------------------------------------------------------------------------------
_RELATIVE = (r"mum|mother|dad|father|husband|wife|partner|son|daughter|grandad|grandfather|grandpa|nan|nana|gran|"
             r"granny|grandmother|grandma|grandson|granddaughter|brother|sister|aunt|auntie|uncle|friend|neighbour|"
             r"neighbor|client|tenant|employer|boss|nephew|niece|stepdad|stepmum|father-in-law|mother-in-law")
ON_BEHALF = re.compile(
    rf"\b(?:(?:I'm|I am)\s+(?:just\s+)?(?:calling|ringing|phoning|speaking|here)\s+(?:for|on behalf of|about)|"
    rf"on behalf of|I'm helping|I am helping|I'm (?:his|her|their) (?P<role>carer|interpreter|daughter|son|wife|"
    rf"husband|partner|support worker|advocate))\s*(?:my\s+(?P<who>{_RELATIVE})\b)?", re.IGNORECASE)


def on_behalf_of(sentence: Sentence) -> str | None:
    """Whom the caller says they speak for, as a relation to the caller ("the caller's father"), or None."""
    if sentence.speaker != "customer":
        return None
    found = ON_BEHALF.search(sentence.text)
    if found is None or not (found.group("who") or found.group("role")):
        return None
    if found.group("who"):
        return f"the caller's {found.group('who').lower()}"
    return f"the person the caller is {found.group('role').lower()} to"


# --- decisions ------------------------------------------------------------------------------------------------
# What the organisation decided in the call, as the agent says it: a request granted or changed ("I've waived the
# fee", "I've moved the appointment to Friday"), refused ("I can't add her to the account", "we're not able to
# refund that") or a verdict ("your claim has been declined").
_DECIDED = (r"agreed|approved|waived|refunded|credited|cancelled|stopped|moved|rebooked|changed|reduced|extended|"
            r"added|removed|accepted|granted|upheld|overturned|authorised|authorized|backdated|written off|"
            r"put (?:a |the |your |it |that |this )?(?:\w+ )?(?:hold|stop|freeze|block|bar)|put \w+ on hold|"
            r"set up|arranged|booked|logged|raised")
GRANTED = re.compile(rf"\b(?:I've|I have|we've|we have|I|we)\s+(?:also\s+|now\s+|just\s+|gone ahead and\s+)*"
                     rf"(?P<verb>{_DECIDED})\b(?P<rest>{_CLAUSE_TEXT}*)", re.IGNORECASE)
_REFUSAL_VERB = (r"(?:refund|cancel|change|add|waive|remove|expedite|offer|approve|accept|agree|overturn|give|"
                 r"transfer|register|move|backdate|reduce|extend|write|speed|book|put|release|reverse|make|"
                 r"authori[sz]e|process|discuss|let|allow|stop|do (?:that|this|it|anything))")
REFUSED = re.compile(rf"\b(?:I|we)\s*(?:can't|cannot|can not|won't be able to|(?:'m|am|'re|are) not able to|"
                     rf"(?:'m|am|'re|are) unable to|(?:'m|am) not allowed to|(?:'re|are) not allowed to)\s+"
                     rf"(?:(?:\w+ly|just|really|actually)\s+)?(?P<rest>{_REFUSAL_VERB}\b{_CLAUSE_TEXT}*)",
                     re.IGNORECASE)
VERDICT = re.compile(rf"\b(?P<subject>(?:the|your|this|that)\s+(?:[\w'£$.,-]+\s+){{0,3}}?[\w'£$.,-]+|it)\s+"
                     rf"(?:has|have|'s|is|was)\s+(?:now\s+)?(?:been\s+)?(?P<verb>approved|declined|refused|rejected|"
                     rf"waived|agreed|accepted|granted|upheld|overturned|cancelled)\b(?P<rest>{_CLAUSE_TEXT}*)",
                     re.IGNORECASE)
_NEXT_CLAUSE = re.compile(r"\s+(?:and|but|so)\s+(?=(?:it|it'll|it's|you|you'll|we|we'll|I|I'll|that|this|they|he|"
                          r"she)\b)", re.IGNORECASE)
_HYPOTHETICAL = re.compile(r"^(?:if|when|once|unless|whether)\b|\b(?:would|could|might)\b", re.IGNORECASE)


def decision(sentence: Sentence) -> str | None:
    """What the agent's sentence says was decided, in the third person, or None (a question, a condition or what
    might happen is no decision)."""
    if sentence.speaker != "agent" or sentence.text.rstrip().endswith("?"):
        return None
    text = strip_filler(sentence.text)
    for pattern in (REFUSED, VERDICT, GRANTED):
        found = pattern.search(text)
        if found is None or _HYPOTHETICAL.search(text[:found.start()]) or _HYPOTHETICAL.search(found.group()):
            continue
        rest = _NEW_CLAUSE.split(found.group("rest"), maxsplit=1)[0]
        rest = _NEXT_CLAUSE.split(rest, maxsplit=1)[0]  # "approved and it'll be with you Friday": the decision ends
        rest = third_person(rest, "agent").strip()
        # Written as a decision log writes it: "Request to add her to the account refused", "The £35 fee waived",
        # "The appointment moved to Friday".
        if _ONLY_PRONOUN.match(rest):
            continue  # "I've booked that", "I can't do it": no decision a reader could use without the call
        if pattern is REFUSED:
            return sentence_case(f"request to {rest.split(',')[0]} refused")
        verb = found.group("verb").lower()
        thing = found.group("subject") if pattern is VERDICT else _OBJECT_END.split(rest, maxsplit=1)[0]
        after = rest if pattern is VERDICT else rest[len(thing):]
        if _PRONOUN.fullmatch(thing.strip()):
            thing = ""  # "I've rebooked him for the 24th": "Rebooked for the 24th"
        thing = third_person(thing, "agent").strip()
        return sentence_case(f"{thing} {verb} {after.strip()}" if thing else f"{verb} {after.strip()}")
    return None


_PRONOUN = re.compile(r"it|that|this|him|her|them|those|these|everything|you|the customer", re.IGNORECASE)


_ONLY_PRONOUN = re.compile(r"^(?:\w+\s+)?(?:it|that|this|them|those|these)\b(?:\s+(?:now|for (?:you|the customer)|"
                           r"as well|too|myself|off|in|through|today|for now))*\s*[.!]?$", re.IGNORECASE)
# Where the thing decided on ends and the rest of the decision starts ("the appointment | to Friday").
_OBJECT_END = re.compile(r"\s+(?=(?:to|from|for|on|at|with|by|until|till|as|because|so|in|into|onto|off|back|"
                         r"under|now|today|this)\b)", re.IGNORECASE)


# What keeps an outcome open: a decision, an investigation or a callback still to come, or something the caller must
# send first. A refund landing or a card in the post is routine: the call's business was done.
AWAITING = re.compile(r"\b(?:investigat\w+|look(?:ing)? into|review\w*|assess\w*|decid\w+|decision|get back to|"
                      r"(?:call|ring|phone) (?:you|them|him|her) back|be in touch|let (?:you|them) know|"
                      r"waiting (?:list|for)|once (?:we|they|I) (?:have|get|receive)|"
                      r"need (?:a copy|the|your|proof|evidence|confirmation)|send (?:us|in|over|me)|email (?:us|it|me)|"
                      r"upload|appeal|adjudicat\w+)\b", re.IGNORECASE)
# The line went before the call could end: nothing was settled, whatever was said before.
DROPPED = re.compile(r"\b(?:are you still there|you're breaking up|you're cutting out|I've lost you|can you hear me)\b",
                     re.IGNORECASE)
UNRESOLVED = re.compile(r"\b(?:unable to|can't help|cannot help|not able to|there's nothing|nothing (?:more|else) "
                        r"(?:I|we) can|still not|still isn't|still doesn't|not happy|unacceptable|useless)\b",
                        re.IGNORECASE)

# A caller who reached the wrong organisation: nothing of theirs to summarise.
WRONG_NUMBER = re.compile(r"\bwrong (?:number|line)\b|\bmis-?dial(?:led|ed)?\b|\bdialled the wrong\b"
                          r"|\bnot the (?:right|correct) number\b", re.IGNORECASE)

# An error or fault code said in the call: "error E-401", "fault code BT-07", not a time or an amount after the word
# ("the error says 10:30"); a knowledge article.
ERROR_CODE = re.compile(r"\b(?:error|fault)\s+(?:code\s+|message\s+|number\s+)?(?P<value>[A-Z]{0,4}-?\d{2,5}"
                        r"(?:\s\d\.\d\.\d)?)\b(?![:.,]\d|\s*(?:pounds?|dollars?|euros?|%|percent|gb|mb|am|pm)\b)",
                        re.IGNORECASE)
# A code's shape ("VPN-812") anywhere in a sentence that speaks of an error or a fault.
CODE_SHAPE = re.compile(r"\b[A-Z]{1,5}-\d{2,5}\b")
ERROR_TALK = re.compile(r"\b(?:error|fault)s?\b", re.IGNORECASE)
ARTICLE = re.compile(r"\b(?P<value>KB-?\d{3,7})\b|\barticle\s+(?:number\s+)?(?P<number>[A-Z]{0,3}-?\d{3,7})\b",
                     re.IGNORECASE)

# --- entities ---------------------------------------------------------------------------------------------------
MONEY = re.compile(r"[£$€]\s?\d[\d,]*(?:\.\d{1,2})?|\b\d[\d,]*(?:\.\d{1,2})?\s?(?:pounds?|dollars?|euros?|pence|"
                   r"cents?|quid)\b", re.IGNORECASE)
REFERENCE = re.compile(r"\b(?:reference|ref|case|ticket|order|claim|booking|job|complaint|tracking|policy|invoice)"
                       r"(?: number| no\.?| id)?(?: is| was|:)?\s+(?P<value>(?=[A-Z0-9\-]*\d)[A-Z0-9][A-Z0-9\-]{3,})\b",
                       re.IGNORECASE)
ORGANISATION = re.compile(r"\b(?:through to|welcome to|calling from|thank you for calling|thanks for calling|"
                          r"this is)\s+(?P<value>(?:[A-Z][\w&'\-]+\s?){1,4})")
DATE_MENTION = re.compile(rf"\b(?:{_WEEKDAY}|the \d{{1,2}}(?:st|nd|rd|th)(?: of {_MONTH})?|"
                          rf"\d{{1,2}}(?:st|nd|rd|th)? {_MONTH}|{_MONTH} \d{{1,2}}(?:st|nd|rd|th)?)\b", re.IGNORECASE)
CARD_PLACEHOLDER = re.compile(r"\[CARD (\*{4}\d{4})\]")
