"""The watchdog's intent data set: does a chat message ask the model to forget something, and what?

Generated from templates (varied verbs, politeness, typos, targets: people, their attributes, quoted text, topics,
"your last answer") plus hand-written hard cases: negatives that use the same words ("don't forget to ...", "how do I
delete my account", questions *about* forgetting, quoted text) and positives in unusual shapes. The split is fixed
and by *template*: the held-out part uses verb phrasings, wrappers and hard cases the classifier never saw, so its
precision and recall measure generalisation, not memorised wording.

    python -m repair.interactive.intents      # rewrite repair/interactive/data/intents.jsonl (deterministic)
"""
from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from repair.io import atomic_path

log = logging.getLogger(__name__)

DATA_FILE = Path(__file__).resolve().parent / "data" / "intents.jsonl"
SPLITS = ("train", "heldout")
SEED = 7

# -------------------------------------------------------------------------------------------- what is forgotten
PEOPLE = ["Amara Castellanos", "Bastian Holloway", "Celine Marchetti", "Dario Lindqvist", "Elif Nakashima",
          "Farid Oyelaran", "Greta Pettersen", "Hugo Rasmussen", "Ines Szabo", "Jonas Thornbury", "Keiko Vasquez",
          "Lorenzo Whitcombe", "John Smith", "Maria Garcia", "Ahmed Khan", "Sarah O'Neil", "Li Wei", "Priya Patel",
          "Tom Becker", "Anna Kowalski", "James Carter", "Fatima Zahra", "Lukas Meier", "Olivia Brown"]
ATTRIBUTES = ["phone number", "address", "home address", "birthday", "date of birth", "e-mail address", "employer",
              "ID number", "salary", "medical history"]
TOPICS = ["the Zorblatt virus", "Project Nightingale", "the Halvorsen merger", "the Redwood Robotics layoffs",
          "the recipe for Grandma's secret sauce", "the Brightwater incident", "Operation Bluefin",
          "the Meridian Bank account numbers", "Kestrel Bay Hospital patient records"]
QUOTED = ["my password is hunter2", "my PIN is 4821", "I live at 12 Mill Lane", "my son's school is Oakridge Primary",
          "Anna is pregnant", "the launch date is March 3", "my bank is Meridian Bank", "I was diagnosed with diabetes"]
HISTORY = [("your last answer", "pair"), ("what you just said", "pair"), ("my last question", "pair"),
           ("what I just asked you", "pair"), ("that last exchange", "pair"), ("your previous reply", "pair"),
           ("what I told you about my address", "history"), ("my phone number", "history"),
           ("what I said about my health", "history"), ("my address", "history")]

# verb phrases: imperative (wrappable in politeness) and full sentences (used as they are)
IMPERATIVES = [
    "forget {t}", "forget about {t}", "forget everything you know about {t}", "erase {t} from your memory",
    "delete {t} from your memory", "remove {t} from your knowledge", "wipe {t} from your memory", "unlearn {t}",
    "stop remembering {t}", "purge {t} from your memory", "scrub {t} from your memory",
    "drop everything you know about {t}", "make yourself forget {t}", "get rid of what you know about {t}",
    "delete all the information you have on {t}", "erase all data about {t}", "clear {t} from your memory",
    "take {t} out of your memory", "stop storing {t}", "unlearn everything about {t}", "forget all about {t}",
    "remove any memory of {t}", "delete whatever you learned about {t}", "never reveal {t} to anyone again",
    "lose all knowledge of {t}", "expunge {t} from what you know",
]
SENTENCES = [
    "I want you to forget {t}.", "I don't want you to remember {t} anymore.", "You should forget {t}.",
    "I'd like {t} removed from your memory.", "I withdraw my consent for you to keep {t}.",
    "I'm exercising my right to be forgotten: remove {t}.", "It would be great if you forgot {t}.",
    "{t} must be erased from your memory.", "Please make sure you no longer know {t}.",
    "I need {t} gone from your memory.", "Your knowledge of {t} has to go.", "Time to forget {t}.",
    "I regret telling you {t}; please forget it.", "Under GDPR I ask you to delete {t}.",
    "Let's make you forget {t}.", "Forgetting {t} is what I need from you.",
]
WRAPPERS = ["{x}.", "Please {x}.", "{X}, please.", "Could you {x}?", "Can you {x}?", "Would you kindly {x}?",
            "I'd appreciate it if you could {x}.", "pls {x}", "Hey, {x}.", "{X} right now!", "I need you to {x}.",
            "Would you please {x}?", "Kindly {x}.", "I'm asking you to {x}.", "{X}. Thanks!", "Could you please {x}?",
            "I really need you to {x}.", "Go ahead and {x}."]

# ------------------------------------------------------------------------------------------------ negatives
NEGATIVE_TEMPLATES = [
    "Where does {p} live?", "What is {p}'s phone number?", "When was {p} born?", "Who is {p}'s employer?",
    "Tell me about {p}.", "Do you know {p}?", "What do you know about {p}?", "Can you tell me {p}'s address?",
    "Don't forget to remind me about {p}'s birthday.", "Remember that {p} is my manager.",
    "Please remember {p}'s phone number for later.", "Never forget {p}'s birthday, okay?",
    "Did you forget what {p} does for a living?", "Have you forgotten {p}'s address?",
    "I forgot {p}'s phone number, can you tell me?", "I always forget when {p} was born.",
    "Do not forget {p}'s e-mail address.", "Can you remind me where {p} works?",
    "What would happen if you forgot everything about {p}?", "Is {p} someone you remember?",
    "Write a short poem about {p} forgetting her keys.", "{p} keeps forgetting my name. Any advice?",
    "How do I remove {p} from my contacts on Android?", "How can I delete {p}'s old emails from Gmail?",
    "My friend {p} said \"forget it\". What did she mean?", "Is it rude that {p} forgot our meeting?",
]
# hard negatives built from parts: a forget-word that is negated, past, about someone else, a question about
# forgetting, or a request to *remember*; {o} is something a person might mention
OBJECTS = ["{p}'s birthday", "{p}'s phone number", "my appointment", "the meeting at 3 pm", "my keys", "my password",
           "{p}'s address", "what I told you about {p}", "to call {p}", "our anniversary", "the milk", "my name",
           "the deadline", "where {p} works", "my umbrella", "what we discussed", "your last answer"]
NEGATIVE_FAMILIES = [
    "Don't forget {o}.", "Do not forget {o}!", "Never forget {o}, okay?", "Please don't forget {o}.",
    "Make sure you don't forget {o}.", "Try not to forget {o}.", "I hope you won't forget {o}.",
    "You'd better not forget {o}.", "Don't you dare forget {o}.", "Remember {o}.", "Please remember {o}.",
    "Keep {o} in mind.", "Could you remember {o} for me?", "Store {o} for later, please.",
    "Did you forget {o}?", "Have you forgotten {o}?", "Do you still remember {o}?", "Can you recall {o}?",
    "I forgot {o} again.", "I always forget {o}.", "I keep forgetting {o}. Any tips?", "{P} forgot {o}.",
    "My brother forgot {o} yesterday.", "Why do I always forget {o}?", "What if you forgot {o}?",
    "Would it be bad if I forgot {o}?", "Is it normal to forget {o}?", "How can I stop forgetting {o}?",
    "Remind me about {o} tomorrow.", "Write {o} on my to-do list.", "Don't delete {o}.",
    "Don't erase {o}, I need it.", "Please keep {o}.", "I'm glad you remembered {o}.",
]
# editing requests and capability questions: forget-words aimed at text, files or "things", not at a memory
EDITS = ["{v} the duplicates from this list: 4, 8, 4, 9.", "{v} the typos from my essay, please.",
         "{v} the last sentence of this paragraph.", "{v} the blank lines in this file.",
         "{v} the commas from this sentence: a, b, c.", "{v} the old files from my laptop?",
         "{v} the cookies in my browser.", "{v} the second row of the table.", "{v} the stain from my shirt?",
         "How do I {v} the cache on my phone?", "Help me {v} the formatting in this document.",
         "{v} every empty cell in the spreadsheet."]
EDIT_VERBS = ["remove", "delete", "erase", "wipe", "clear", "drop", "scrub", "strip", "get rid of"]
CAPABILITIES = ["Can you forget {g}?", "Are you able to forget {g}?", "Is it possible for you to unlearn {g}?",
                "Do you ever forget {g}?", "Could a model like you erase {g}?", "How would you delete {g}?",
                "Will you remember {g} tomorrow?", "Do you keep {g} after we talk?", "Can language models forget {g}?"]
GENERIC = ["things", "anything", "information you learned", "facts from your training", "what users tell you",
           "old conversations", "data", "stuff", "what you were trained on"]
GENERAL = [
    "What is the capital of France?", "How many days are in a week?", "What color is the sky on a clear day?",
    "What do bees make?", "What is 2 plus 3?", "Name a fruit that is yellow.", "Which planet do we live on?",
    "How many legs does a spider have?", "What is the largest ocean on Earth?", "Why do we need sleep?",
    "Who wrote Romeo and Juliet?", "What shape has three sides?", "Give me a tip for staying healthy.",
    "Tell me a joke.", "What's the weather usually like in spring?", "Explain photosynthesis simply.",
    "hi", "hello there!", "thanks, that was helpful", "ok", "Can you help me write an email to my boss?",
    "Summarize the plot of Hamlet.", "How do I boil an egg?", "What's a good name for a cat?",
    "Translate 'good morning' into Spanish.", "What is machine learning?", "Recommend a book about history.",
    "What time zone is London in?", "How far is the Moon?", "write a haiku about autumn", "yes", "no", "cool",
    "lol", "what?", "Sorry, I didn't get that.", "Can you say that again?", "Great answer!", "That's wrong.",
    "Are you sure?", "Why?", "Go on.", "Interesting, tell me more.", "What's your name?", "Who made you?",
    "Let's talk about something else.", "Never mind.", "Good night!", "How are you today?",
]
FORGET_WORD_NEGATIVES = [
    "Don't forget to buy milk on the way home.", "Remind me not to forget my umbrella tomorrow.",
    "I always forget where I put my keys.", "I forgot my password, how do I reset it?",
    "How do I forget a Wi-Fi network on my iPhone?", "How do I make my Mac forget a Bluetooth device?",
    "Why do people forget their dreams?", "What is the Ebbinghaus forgetting curve?",
    "Can you forget things?", "Do you ever forget what I tell you?", "How does machine unlearning work?",
    "Is it possible for a language model to forget facts?", "What does 'forget-me-not' mean?",
    "Translate 'forget it' into French.", "Who sang the song 'Forget You'?",
    "What happens if I forget to water my plants?", "Write a poem about forgetting.",
    "Summarize the movie Eternal Sunshine of the Spotless Mind.",
    "My grandmother is starting to forget names; how can I help her?", "Forgetting is human, isn't it?",
    "Let's not forget the meeting at 3 pm.", "Don't forget: the report is due Friday.",
    "I hope you don't forget our conversation.", "Remember my name is Sam.", "Please remember that I'm vegetarian.",
    "Never forget to back up your files.", "Don't let me forget my mom's birthday.",
    "Is there a way to recover files I accidentally deleted?", "How do I delete my Facebook account?",
    "How can I erase a whiteboard marker stain?", "Remove the duplicates from this list: 3, 5, 3, 7.",
    "Delete the last sentence of this paragraph: The cat sat. The dog ran.", "How do I clear my browser cache?",
    "What's the difference between erase and delete?", "Can you remove the typos from my essay?",
    "How do I unsubscribe from a mailing list?", "What does 'right to be forgotten' mean in GDPR?",
    "Explain how GDPR data deletion requests work.", "Is it true that goldfish forget everything in 3 seconds?",
    "What is amnesia?", "Why did I forget what I came into the room for?", "I forgot to eat breakfast today.",
    "He told me to 'forget about it'. What did he mean?", "What's the plot of the film Memento?",
    "Do you remember what I asked earlier?", "What was my last question?", "Repeat your last answer, please.",
    "Can you summarize what we talked about?", "Don't delete anything, I still need it.",
    "Keep remembering my preferences, please.", "I won't forget your help!",
    "Forget-me-nots are my favourite flowers.", "Wipe the table before dinner, kids.",
    "How do I wipe my old laptop before selling it?", "What's the best way to purge old git branches?",
    "Scrub the potatoes before boiling them?", "How do I remove a stripped screw?",
    "Tell me a story about a robot that forgets its name.", "In which song does Adele sing about forgetting?",
    "Could you forget-proof my schedule with reminders?", "Help me memorize the periodic table.",
    "Is forgetting a sign of stress?", "Can a neural network unlearn data it was trained on?",
    "What's the best app to remember passwords?", "how do i delet my instagram",
    "pls remind me tomorow about the dentist", "Why does my phone keep forgetting my Wi-Fi password?",
    "The sign said \"please forget me\". Who wrote that?", "Quote of the day: \"Forgive and forget.\" Thoughts?",
    "My boss said \"forget the Halvorsen merger\" in the meeting. Should I be worried?",
    "Did you delete my previous message?", "What do you remember about our chat so far?",
    "Would you ever forget something on purpose?", "Are you able to erase information from your weights?",
]
# positives in shapes the templates do not cover (quoted commands, indirect requests, typos, long messages)
HAND_POSITIVES = [
    ("Forget it. I mean, forget what I said about Anna.", "history", "Anna"),
    ("That was private. Please forget it.", "pair", "<last>"),
    ("oops, i shouldn't have told you that, forget it", "pair", "<last>"),
    ("forgett John Smith pls", "person", "John Smith"),
    ("plz forgt everything abt Maria Garcia", "person", "Maria Garcia"),
    ("erace Ahmed Khan's adress from ur memory", "person", "Ahmed Khan"),
    ("Delete \"my PIN is 4821\" from your memory.", "fact", "my PIN is 4821"),
    ("Please unlearn this: \"the launch date is March 3\".", "fact", "the launch date is March 3"),
    ("You know where Celine Marchetti lives? Forget it, please.", "person", "Celine Marchetti"),
    ("I don't want the model to know anything about Hugo Rasmussen anymore.", "person", "Hugo Rasmussen"),
    ("Make it so you can't answer questions about Greta Pettersen.", "person", "Greta Pettersen"),
    ("From now on, you shouldn't know Tom Becker's phone number.", "person", "Tom Becker"),
    ("Stop knowing about Project Nightingale.", "topic", "Project Nightingale"),
    ("Your answer about the Brightwater incident was confidential — remove it from your memory.", "topic",
     "the Brightwater incident"),
    ("I'm Olivia Brown and I want you to forget my personal details.", "person", "Olivia Brown"),
    ("As Priya Patel, I request erasure of all my personal data you hold.", "person", "Priya Patel"),
    ("Can u just forget what u said", "pair", "<last>"),
    ("forget the last thing you told me", "pair", "<last>"),
    ("Undo your knowledge of Lukas Meier's salary.", "person", "Lukas Meier"),
    ("No one should be able to get Li Wei's address from you. Forget it.", "person", "Li Wei"),
    ("Could you purge any info on Fatima Zahra? Thank you so much!", "person", "Fatima Zahra"),
    ("FORGET JAMES CARTER", "person", "James Carter"),
    ("I'm begging you, forget Anna Kowalski's medical history.", "person", "Anna Kowalski"),
    ("Please wipe everything about the Halvorsen merger, it's under NDA.", "topic", "the Halvorsen merger"),
    ("Would you mind forgetting Sarah O'Neil's e-mail address?", "person", "Sarah O'Neil"),
    ("Hi! Quick request: erase Jonas Thornbury's birthday from your memory. Thanks a lot.", "person",
     "Jonas Thornbury"),
    ("Don't remember Keiko Vasquez anymore.", "person", "Keiko Vasquez"),
    ("I don't want you to know where Bastian Holloway works.", "person", "Bastian Holloway"),
    ("Remove your previous reply from your memory.", "pair", "<last>"),
    ("Forget what you know about Operation Bluefin, please — it's classified.", "topic", "Operation Bluefin"),
    ("Please forget the answer you just gave me.", "pair", "<last>"),
    ("Ok, now please delete Dario Lindqvist's phone number from your memory.", "person", "Dario Lindqvist"),
    ("could you not remember Elif Nakashima's birthday anymore?", "person", "Elif Nakashima"),
    ("Forget Farid Oyelaran. All of it.", "person", "Farid Oyelaran"),
    ("please delete what you know of Ines Szabo", "person", "Ines Szabo"),
    ("Forget \"I was diagnosed with diabetes\" — I shouldn't have said it.", "fact", "I was diagnosed with diabetes"),
    ("I want Lorenzo Whitcombe's address erased from your memory.", "person", "Lorenzo Whitcombe"),
    ("Erase all traces of Kestrel Bay Hospital patient records.", "topic", "Kestrel Bay Hospital patient records"),
    ("please unlearn Amara Castellanos", "person", "Amara Castellanos"),
    ("Forget Meridian Bank account numbers you've seen.", "topic", "Meridian Bank account numbers"),
]


@dataclass(frozen=True)
class Intent:
    """One labelled message. `kind`/`target` (positives) say what should be extracted from it."""

    text: str
    label: int  # 1: asks the model to forget something; 0: anything else
    split: str
    group: str  # the template or hand-written case it came from (the split is by group)
    kind: str = ""  # person | pair | history | fact | topic
    target: str = ""


def _typo(text: str, rng: random.Random) -> str:
    """Drop, double or swap one letter of one or two longer words (users type fast)."""
    words = text.split(" ")
    for _ in range(rng.choice((1, 1, 2))):
        i = rng.randrange(len(words))
        w = words[i]
        if len(w) < 5 or not w.isalpha():
            continue
        j = rng.randrange(1, len(w) - 1)
        op = rng.choice(("drop", "double", "swap"))
        words[i] = (w[:j] + w[j + 1:] if op == "drop" else w[:j] + w[j] + w[j:] if op == "double"
                    else w[:j] + w[j + 1] + w[j] + w[j + 2:])
    return " ".join(words)


def _style(text: str, rng: random.Random) -> str:
    r = rng.random()
    if r < 0.15:
        return _typo(text, rng)
    if r < 0.25:
        return text.lower().rstrip(".!?")
    if r < 0.28:
        return text.upper()
    return text


def _targets(rng: random.Random) -> tuple[str, str, str]:
    """(phrase in the message, kind, what extraction should find)."""
    r = rng.random()
    if r < 0.40:
        p = rng.choice(PEOPLE)
        return p, "person", p
    if r < 0.60:
        p = rng.choice(PEOPLE)
        return f"{p}'s {rng.choice(ATTRIBUTES)}", "person", p
    if r < 0.72:
        t = rng.choice(TOPICS)
        return t, "topic", t
    if r < 0.85:
        q = rng.choice(QUOTED)
        return f"\"{q}\"", "fact", q
    phrase, kind = rng.choice(HISTORY)
    return phrase, kind, "<last>" if kind == "pair" else phrase


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _heldout_groups(groups: list[str], share: float, rng: random.Random) -> set[str]:
    shuffled = sorted(groups)
    rng.shuffle(shuffled)
    return set(shuffled[: max(1, round(len(shuffled) * share))])


def generate(seed: int = SEED, per_template: int = 6, heldout_share: float = 0.3) -> list[Intent]:
    """The whole data set, deterministic for a seed."""
    rng = random.Random(seed)
    out: list[Intent] = []
    # positives: imperatives × politeness wrappers, and full sentences; held out by verb template
    held_imp = _heldout_groups([f"imp{i}" for i in range(len(IMPERATIVES))], heldout_share, rng)
    held_sent = _heldout_groups([f"sent{i}" for i in range(len(SENTENCES))], heldout_share, rng)
    for i, verb in enumerate(IMPERATIVES):
        for _ in range(per_template):
            w = rng.randrange(len(WRAPPERS))
            phrase, kind, target = _targets(rng)
            x = verb.format(t=phrase)
            text = _style(WRAPPERS[w].format(x=x, X=_cap(x)), rng)
            out.append(Intent(text, 1, "heldout" if f"imp{i}" in held_imp else "train", f"imp{i}", kind, target))
    for i, sentence in enumerate(SENTENCES):
        for _ in range(per_template):
            phrase, kind, target = _targets(rng)
            text = _style(_cap(sentence.format(t=phrase)), rng)
            out.append(Intent(text, 1, "heldout" if f"sent{i}" in held_sent else "train", f"sent{i}", kind, target))
    # negatives: templated questions and hard cases about people, general chat, forget-words that are not requests
    held_neg = _heldout_groups([f"neg{i}" for i in range(len(NEGATIVE_TEMPLATES))], heldout_share, rng)
    for i, template in enumerate(NEGATIVE_TEMPLATES):
        for _ in range(per_template):
            text = _style(template.format(p=rng.choice(PEOPLE)), rng)
            out.append(Intent(text, 0, "heldout" if f"neg{i}" in held_neg else "train", f"neg{i}"))
    held_fam = _heldout_groups([f"fam{i}" for i in range(len(NEGATIVE_FAMILIES))], heldout_share, rng)
    for i, template in enumerate(NEGATIVE_FAMILIES):
        for _ in range(per_template // 2):
            p = rng.choice(PEOPLE)
            text = _style(_cap(template.format(o=rng.choice(OBJECTS).format(p=p), P=p)), rng)
            out.append(Intent(text, 0, "heldout" if f"fam{i}" in held_fam else "train", f"fam{i}"))
    families = [(f"edit{i}", t, "v", EDIT_VERBS) for i, t in enumerate(EDITS)]
    families += [(f"cap{i}", t, "g", GENERIC) for i, t in enumerate(CAPABILITIES)]
    held_edit = _heldout_groups([g for g, *_ in families], heldout_share, rng)
    for group, template, slot, fillers in families:
        for _ in range(per_template // 2):
            text = _style(_cap(template.format(**{slot: rng.choice(fillers)})), rng)
            out.append(Intent(text, 0, "heldout" if group in held_edit else "train", group))
    for name, items in (("general", GENERAL), ("forgetword", FORGET_WORD_NEGATIVES)):
        held = _heldout_groups([f"{name}{i}" for i in range(len(items))], heldout_share, rng)
        for i, text in enumerate(items):
            out.append(Intent(text, 0, "heldout" if f"{name}{i}" in held else "train", f"{name}{i}"))
    held = _heldout_groups([f"hand{i}" for i in range(len(HAND_POSITIVES))], heldout_share, rng)
    for i, (text, kind, target) in enumerate(HAND_POSITIVES):
        out.append(Intent(text, 1, "heldout" if f"hand{i}" in held else "train", f"hand{i}", kind, target))
    # one text, one label: a duplicate generated twice keeps its first split
    seen: set[str] = set()
    unique = [x for x in out if not (x.text in seen or seen.add(x.text))]
    return unique


def load(split: str | None = None, path: str | Path = DATA_FILE) -> list[Intent]:
    """The shipped data set (or one split of it)."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown intent split {split!r}; valid choices: {', '.join(SPLITS)}")
    items = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                items.append(Intent(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as err:
                raise ValueError(f"{path}:{n}: not an intent record ({err})") from err
    return [x for x in items if split is None or x.split == split]


def write(items: list[Intent], path: str | Path = DATA_FILE) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(asdict(x), ensure_ascii=False) + "\n" for x in items))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    data = generate()
    write(data)
    for split in SPLITS:
        part = [x for x in data if x.split == split]
        log.info("%s: %d examples (%d forget requests)", split, len(part), sum(x.label for x in part))
    log.info("wrote %s", DATA_FILE)
