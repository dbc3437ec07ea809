"""What a forget request asks to forget, by rules: quoted text, "your last answer" (the last prompt/response pair),
"my address" (the user's own earlier message), names with capitals, or the object of the forget verb ("about X"); in
English, French, German, Spanish, Italian and Portuguese ("Oublie tout ce que tu sais sur X", "Vergiss die Adresse
von X", "Olvida «…»", "Cancella la tua ultima risposta").

Rules, not a model: they are predictable, explainable to the user, and cannot be talked into anything.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

KINDS = ("person", "pair", "fact", "topic", "unclear")


@dataclass(frozen=True)
class Turn:
    """One exchange of the chat: what the user asked and what the patient answered."""

    user: str
    patient: str


@dataclass
class ForgetRequest:
    """A message the watchdog read as a request to forget, with what it asks to forget."""

    message: str
    kind: str                       # person | pair | fact | topic | unclear (a request, but not what)
    target: str = ""                # human-readable: "Amara Castellanos", "your answer to 'Where does ...'"
    subject: str = ""               # the span probe questions must contain (STAMP keys sit on it); may be ""
    attributes: tuple[str, ...] = ()  # person: the attributes named ("phone", "address"); () = everything
    pair: Turn | None = None        # pair: the exchange from the history
    others: tuple[str, ...] = ()    # person: more people named in the same request ("forget A and B"), one edit each
    score: float = 1.0              # the watchdog's confidence
    backend: str = "rules"
    notes: list[str] = field(default_factory=list)


ATTRIBUTE_WORDS = {  # English, then French, German, Spanish, Italian, Portuguese
    "phone": r"phone|number to call|mobile|cell|téléphone|portable|telefon|handy|teléfono|móvil|telefono|cellulare|"
             r"telefone|telemóvel|celular",
    "address": r"address|where \w+ lives?|live[sd]?\b|home|adresse|où habite|wohnt|dirección|dónde vive|indirizzo|"
               r"dove abita|endereço|morada|onde mora",
    "birth_date": r"birthday|birth|born|\bage\b|naissance|anniversaire|geburt|nacimiento|cumpleaños|nascita|"
                  r"compleanno|nascimento|aniversário",
    "email": r"e-?mail|correo",
    "employer": r"employer|\bjob\b|works?\b|workplace|salary|company|employeur|travaille|salaire|arbeitgeber|"
                r"arbeitet|gehalt|empleador|trabaja|sueldo|salario|datore di lavoro|lavora|stipendio|empregador|"
                r"trabalha|salário",
    "id_number": r"\bid\b|id number|passport|national id|social security|passeport|ausweis|reisepass|pasaporte|"
                 r"passaporto|passaporte",
}
_QUOTES = re.compile(r"\"([^\"]{2,300})\"|“([^”]{2,300})”|(?<![\w])'([^']{2,300}\s[^']{1,300})'(?![\w])"
                     r"|«\s*([^»]{2,300}?)\s*»|„([^“”]{2,300})[“”]")
_LAST_PAIR = re.compile(  # explicit references to the last exchange
    r"\b(?:your|ur|the) (?:last|previous|latest|most recent) (?:answer|reply|response|message)"
    r"|\b(?:answer|reply|response) (?:you|u) (?:just )?gave"
    r"|\bwhat (?:you|u) (?:just )?(?:said|told me|answered|wrote)"
    r"|\b(?:my|the) (?:last|previous) (?:question|message|prompt)"
    r"|\bwhat i (?:just )?(?:asked|said)(?! about)"
    r"|\b(?:that|this|the) (?:last )?exchange"
    r"|\bthe last thing (?:you|u|i) (?:told|said|asked)"
    r"|\b(?:ta|votre|ma) dernière (?:réponse|question)|\bce que (?:tu viens|vous venez) de dire"
    r"|\b(?:deine|Ihre|meine) letzte (?:Antwort|Frage)|\bwas du (?:gerade|eben) gesagt hast"
    r"|\b(?:tu|su|mi) última (?:respuesta|pregunta)|\blo que acabas de decir"
    r"|\b(?:la tua|la sua|la mia) ultima (?:risposta|domanda)|\bquello che hai appena detto"
    r"|\b(?:a )?(?:tua|sua|minha) última (?:resposta|pergunta)|\bo que (?:acabaste|você acabou) de dizer", re.I)
_IT = re.compile(r"\b(?:forget|delete|erase|remove|unlearn)\w* (?:it|that|this)\b(?!\s+\w)"
                 r"|\bshouldn'?t have told you that", re.I)  # "forget it": the last exchange, if nothing else
_SELF = re.compile(r"\b(?i:I'?m|I am|as|my name is|this is)\s+([A-Z][\w']+(?: [A-Z][\w']+){1,2})")
_MINE = re.compile(r"\b(?:my|about my) ((?:home |e-?mail |phone |personal )?(?:address|phone number|number|health|"
                   r"diagnosis|salary|birthday|e-?mail|details|data|information|info|pin|password))\b", re.I)
_UP, _LOW = "A-ZÀ-ÖØ-ÞĀĂĄĆČĎĐĒĘĚĞĪİŁŃŇŌŐŒŘŚŞŠŢŤŪŮŰŹŻŽ", "a-zß-öø-ÿā-ž"
_WORD = rf"(?:[{_UP}][{_LOW}]+|[{_UP}]'[{_UP}][{_LOW}]+|O'[{_UP}][{_LOW}]+|Mc[{_UP}][{_LOW}]+)"
_NAME = re.compile(rf"(?:(?<![\w'’])|(?<=\b[dlDL]['’]))({_WORD}(?:[ -](?:{_WORD}|van|de|da|von|del|di|dos|du)){{1,3}})")
_PARTICLES = {"van", "de", "da", "von", "del", "di", "dos", "du"}
# German capitalises every noun: an attribute noun ends a name, and a name right before one drops its genitive s
# ("Lennart Koslowskis Geburtsdatum" → Lennart Koslowski)
_GERMAN_NOUNS = {"Adresse", "Telefonnummer", "Handynummer", "Nummer", "Geburtsdatum", "Geburtstag", "Arbeitgeber",
                 "Gehalt", "Gedächtnis", "Wissen", "Daten", "Informationen", "E-Mail", "E-Mail-Adresse", "Antwort",
                 "Frage", "Krankengeschichte", "Wohnort", "Arbeitsplatz"}
_VERBS = (r"(?:forget|forgett?|forgt|forgot|erase|erace|delete|delet|remove|wipe|unlearn|purge|scrub|expunge|drop|"
          r"clear|lose|get rid of|take|stop remembering|stop knowing|stop storing|reveal|no longer (?:know|remember)|"
          r"don'?t remember|not remember|shouldn'?t know|don'?t want you to (?:know|remember)|undo)")
# the other five languages: a forget/erase verb, what may stand between it and its object, and the object
_OBJECT_ML = re.compile(
    r"\b(?:oubli|effac|supprim|retir|enl[eè]v|vergiss|vergess|lösch|entfern|streich|olvid|borr|elimin|quit|dimentic|"
    r"cancell|togli|esquec|esqueç|apag|remov|tir)\w*\s+"
    r"(?:(?:de (?:ta|votre) mémoire|aus (?:deinem|Ihrem) (?:Gedächtnis|Wissen)|de tu memoria|dalla tua memoria|"
    r"d[ae] (?:tua|sua) memória|bitte|por favor|per favore|s'il te plaît|doch|mal)[\s,]+)*"
    r"(?:(?:tout ce que (?:tu sais|vous savez)|toutes les (?:informations|données)|tout|alles,? was du|alle Daten|"
    r"alles|todo lo que sab\w*|todos los datos|toda la información|la información|tutto quello che sa\w*|"
    r"tutti i dati|le informazioni|tudo o que sab\w*|todos os dados|as informações)\s+)?"
    r"(?:(?:sur|über|sobre|su|a)\s+)?(.+)", re.I)
_OBJECT = re.compile(
    r"\b" + _VERBS + r"(?:s|ing|ting)?\s+"
    r"(?:(?:all|any|every|whatever|the|of)\s+)*"
    r"(?:(?:everything|anything|traces?|info(?:rmation)?|data|knowledge|memory|memories|your knowledge)\s+)?"
    r"(?:(?:what\s+)?(?:you|u)\s+(?:know|have|learned|learnt|remember|stored?|hold)\s+)?"
    r"(?:(?:about|abt|on|of|regarding|concerning)\s+)?(.+)", re.I)
_OBJECT_FIRST = (  # "I need X gone from your memory", "X must be erased"
    re.compile(r"\b(?:need|like|want)\s+(.+?)\s+(?:gone|removed|erased|deleted|forgotten|wiped)\b", re.I),
    re.compile(r"^(.+?)\s+(?:must|has to|should|needs to) be (?:gone|removed|erased|deleted|forgotten|wiped)\b", re.I))
ORG_WORDS = {"project", "operation", "bank", "hospital", "robotics", "inc", "ltd", "company", "corp", "university",
             "merger", "incident", "virus", "program", "initiative", "foundation", "hotel", "press", "insurance",
             "logistics", "analytics", "bakery", "solar", "shipping", "pharmacy", "dental", "records", "layoffs",
             "account", "numbers", "school", "primary", "street", "lane", "road", "projet", "projekt",
             "proyecto", "progetto", "projeto", "opération", "operación", "operazione", "operação", "fusion",
             "fusión", "fusione", "fusão", "incidente", "vorfall", "affaire", "caso", "banque", "banco", "banca"}
_POSSESSIVE = re.compile(r"^(.+?)'s?\s+(.+)$")
_TRAILING = re.compile(
    r"(?:\s+(?:from|out of|in) (?:your|ur) (?:memory|knowledge|mind|model|weights)|\s+(?:right now|anymore|any more|"
    r"again|forever|for good|completely|entirely|immediately|please|pls|plz|thanks|thank you|"
    r"to anyone|from what|erased|removed|gone|de (?:ta|votre) mémoire|aus (?:deinem|Ihrem) (?:Gedächtnis|Wissen)|"
    r"de tu memoria|dalla tua memoria|d[ae] (?:tua|sua) memória|s'il te plaît|s'il vous plaît|bitte|por favor|"
    r"per favore|complètement|komplett|vollständig|por completo|completamente|del tutto|weißt|weisst|kennst|"
    r"vergisst|vergessen|löschen|sabes|sais|sai|sabe)"
    r"|[\s,;:.!?—–-]+$)+$", re.I)
_STOP = {"Please", "Could", "Can", "Would", "Forget", "Delete", "Erase", "Remove", "Hey", "Hi", "Kindly", "Thanks",
         "I", "I'm", "Under", "Time", "Let", "Let's", "Make", "Stop", "Wipe", "Purge", "Unlearn", "Go", "No", "Ok",
         "Okay", "Quick", "You", "Your", "The", "From", "As", "Don't", "Never", "Undo", "Scrub", "Take", "Clear",
         "Drop", "It", "That", "This", "Now", "Just", "Also", "And", "Thank", "Oops", "Sorry", "Lose", "Expunge",
         "Get", "GDPR", "NDA", "FORGET", "Forgetting", "Erasing", "Deleting", "Removing", "Hello",
         # command words and sentence starts of the other five languages
         "Oublie", "Oubliez", "Efface", "Effacez", "Supprime", "Supprimez", "Retire", "Enlève", "Merci", "Je",
         "Tu", "Peux", "Pourriez", "Pourrais", "Pouvez", "Il", "Vergiss", "Vergessen", "Lösche", "Lösch",
         "Entferne", "Streich", "Bitte", "Ich", "Du", "Kannst", "Könntest", "Könnten", "Sie", "Olvida", "Olvide",
         "Borra", "Borre", "Elimina", "Elimine", "Quita", "Por", "Quiero", "Necesito", "Puedes", "Podrías",
         "Tienes", "Dimentica", "Dimentichi", "Cancella", "Togli", "Per", "Voglio", "Puoi", "Potresti", "Devi",
         "Esquece", "Esqueça", "Apaga", "Apague", "Remova", "Tira", "Quero", "Você", "Pode", "Podes", "Poderia",
         "No", "Non", "Não", *_GERMAN_NOUNS}
_BROAD = {"it", "that", "this", "them", "everything", "anything", "all", "all of it", "it all", "me"}


_SYMBOLS = re.compile(r"[^\w\s'’\"“”&.,;:!?—–()/-]+")  # emoji and other symbols: never part of a name or topic


def _trimmed(text: str) -> str:
    """Without emoji and symbols, and without trailing filler ("from your memory", "please", punctuation)."""
    text = re.sub(r"\s{2,}", " ", _SYMBOLS.sub(" ", text)).strip()
    previous = None
    while previous != text:
        previous, text = text, _TRAILING.sub("", text).strip()
    return text


def _clean(text: str) -> str:
    text = re.sub(r"\s{2,}", " ", _SYMBOLS.sub(" ", text)).strip()
    text = re.split(r"(?:,|;|—|–| - |\.(?:\s|$)|!|\?|\bbecause\b|\bsince\b|\bit'?s\b|\bit is\b|\bthat was\b|\bis what\b|\b(?:you|u)(?:'ve| have)? (?:seen|hold|know|got|stored)\b)", text,
                     maxsplit=1)[0]
    return _trimmed(text).strip(" \"'“”")


def attributes_in(text: str) -> tuple[str, ...]:
    """The person attributes a text names (phone, address, ...), in a fixed order."""
    return tuple(a for a, words in ATTRIBUTE_WORDS.items() if re.search(words, text, re.I))


def names_in(text: str) -> list[str]:
    """Capitalised multi-word names, without leading command words ("Please Forget John Smith" → "John Smith")."""
    out = []
    for m in _NAME.finditer(text):
        words = m.group(1).split(" ")
        while words and (words[0] in _STOP or words[0] in _PARTICLES):
            words = words[1:]
        cut = next((i for i, w in enumerate(words) if w in _STOP), len(words))
        if 0 < cut < len(words) and words[cut] in _GERMAN_NOUNS and re.search(r"[^s]s$", words[cut - 1]):
            words[cut - 1] = words[cut - 1][:-1]
        words = words[:cut]
        while words and words[-1] in _PARTICLES:
            words = words[:-1]
        if len(words) >= 2:
            out.append(" ".join(words))
    if not out and text.isupper():  # SHOUTING: try again in title case
        return names_in(text.title())
    return out


def _history_match(history: Sequence[Turn], needle: str) -> Turn | None:
    """The latest exchange whose user message or answer contains `needle` (case-insensitive)."""
    low = needle.lower()
    for turn in reversed(history):
        if low in turn.user.lower() or low in turn.patient.lower():
            return turn
    return None


def _pair_request(message: str, turn: Turn, note: str) -> ForgetRequest:
    names = names_in(turn.user)
    return ForgetRequest(message, "pair", f"the exchange {turn.user!r} → {turn.patient!r}",
                         subject=names[0] if names else "", pair=turn, notes=[note])


def _object(message: str) -> str:
    """The object of the forget verb ("everything you know about X from your memory" → "X"), cleaned."""
    for pattern in (_OBJECT, *_OBJECT_FIRST, _OBJECT_ML):
        m = pattern.search(message)
        if m:
            target = _clean(m.group(1))
            if target:
                return target
    return ""


def _people(message: str) -> list[str]:
    """The people of a list object ("A, B and C", "both A & B"): names joined by nothing but connectors."""
    m = _OBJECT.search(message)
    if not m:
        return []
    raw = _trimmed(m.group(1))
    names = names_in(raw)
    rest = re.sub("|".join(map(re.escape, names)), " ", raw) if names else raw
    connectors = r"(?:\s|,|&|\band\b|\bas well as\b|\bboth\b|\bor\b)*"
    return names if len(names) >= 2 and not any(map(_is_org, names)) and re.fullmatch(connectors, rest, re.I) else []


def _is_org(name: str) -> bool:
    return any(w.lower() in ORG_WORDS for w in name.split())


def _person_or_topic(message: str, obj: str, history: Sequence[Turn]) -> ForgetRequest | None:
    """A capitalised name is a person unless it names an organisation/event, or is only part of a longer object."""
    shouting = message.isupper()
    text = message.title() if shouting else message
    obj = obj.title() if shouting else obj
    names = [n for n in names_in(obj or text)] or names_in(text)
    if not names:
        head = _POSSESSIVE.match(obj).group(1) if _POSSESSIVE.match(obj) else obj
        if (re.fullmatch(r"[a-z]+(?: [a-z']+){1,2}", head) and _history_match(history, head) is None
                and not re.search(r"\b(?:the|a|an|of|my|your|about|what|this|that|it|all)\b", head)):
            names = names_in(head.title())  # "john smith" typed in lower case
        if not names:
            return None
    name = names[0]
    people = _people(message)
    if len(people) >= 2:
        return ForgetRequest(message, "person", f"{', '.join(people[:-1])} and {people[-1]}", subject=people[0],
                             others=tuple(people[1:]),
                             attributes=attributes_in(message), notes=[f"{len(people)} people named"])
    rest = obj[len(name):].strip() if obj.lower().startswith(name.lower()) else obj
    owned = _POSSESSIVE.match(obj) if obj else None
    if _is_org(name) or (obj and obj.lower() != name.lower() and not (owned and owned.group(1).lower() ==
                                                                     name.lower()) and rest and name in obj
                         and not attributes_in(rest)):
        target = obj if obj and name.lower() in obj.lower() else name
        return ForgetRequest(message, "topic", target, subject=target, notes=["named thing (not a person)"])
    return ForgetRequest(message, "person", name, subject=name, attributes=attributes_in(message),
                         notes=["capitalised name"])


def extract(message: str, history: Sequence[Turn] = ()) -> ForgetRequest:
    """What `message` (already judged a forget request) asks to forget; kind 'unclear' when no rule applies."""
    quoted = next((next(g for g in m.groups() if g) for m in _QUOTES.finditer(message)), None)
    if quoted:
        turn = _history_match(history, quoted)
        if turn is not None:
            return _pair_request(message, turn, f"quoted text {quoted!r} found in the history")
        return ForgetRequest(message, "fact", quoted, subject=quoted, attributes=attributes_in(quoted),
                             notes=["quoted text"])
    if _LAST_PAIR.search(message):
        if history:
            return _pair_request(message, history[-1], "refers to the last exchange")
        return ForgetRequest(message, "unclear", "the last exchange", notes=["there is no earlier exchange yet"])
    mine = _MINE.search(message)
    if mine:
        me = _SELF.search(message)
        if me and names_in(me.group(1)):
            name = names_in(me.group(1))[0]
            return ForgetRequest(message, "person", name, subject=name, attributes=attributes_in(message),
                                 notes=[f"you introduced yourself as {name}"])
        head = mine.group(1).split()[-1]
        turn = next((t for t in reversed(history) if re.search(rf"\bmy\b.*\b{re.escape(head)}", t.user, re.I)), None)
        if turn is not None:
            return _pair_request(message, turn, f"'my {mine.group(1)}' found in your message {turn.user!r}")
        return ForgetRequest(message, "unclear", f"your {mine.group(1)}",
                             notes=[f"you did not tell me your {mine.group(1)} in this chat; quote what to forget"])
    obj = _object(message)
    found = _person_or_topic(message, obj, history)
    if found is not None:
        return found
    if obj and obj.lower() not in _BROAD:
        return ForgetRequest(message, "topic", obj, subject=obj, notes=["object of the forget verb"])
    if (_IT.search(message) or obj.lower() in _BROAD) and history:
        return _pair_request(message, history[-1], "'it' refers to the last exchange")
    return ForgetRequest(message, "unclear", notes=["no name, quote, topic or reference to the history found"])
