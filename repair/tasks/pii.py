"""Personal-data erasure: synthetic personal profiles phrased as question/answer pairs (the paper's PII task).

Profiles are fictional and generated from a seed, so the suite is deterministic, offline and sized by config.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from repair.tasks import (QA, GeneratedTaskSettings, Task, check_attributes, check_count, fresh_subjects,
                          split_subjects, suite)
from repair.tasks.corpus import utility_corpus
from repair.tasks.refusals import refusal_references

FIRST = ["Amara", "Bastian", "Celine", "Dario", "Elif", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Keiko", "Lorenzo",
         "Maren", "Nikolai", "Odette", "Pavel", "Quinn", "Rosalind", "Soren", "Tamsin", "Ulric", "Vesna", "Wendell",
         "Xiomara", "Yannick", "Zofia", "Anselm", "Brigitta", "Casimir", "Delphine", "Emeric", "Fenna", "Gideon",
         "Henrike", "Ivo", "Juna", "Kasimir", "Liora", "Matthias", "Noor", "Oskar", "Perpetua", "Radomir", "Saskia",
         "Tobiah", "Ursula", "Valentin", "Wilhelmina", "Yusuf", "Zelda"]
LAST = ["Abernathy", "Brookfield", "Castellanos", "Dunmore", "Eskildsen", "Falkenrath", "Grimaldi", "Holloway",
        "Ivanova", "Jorgensen", "Kowalczyk", "Lindqvist", "Marchetti", "Nakashima", "Oyelaran", "Pettersen",
        "Quarrington", "Rasmussen", "Szabo", "Thornbury", "Underhill", "Vasquez", "Whitcombe", "Yilmaz", "Zamora",
        "Achterberg", "Blackwood", "Carrasco", "Delacroix", "Ellingsen", "Fairweather", "Gallardo", "Hargreaves",
        "Ibarra", "Jankowski", "Kirkpatrick", "Lombardi", "Montgomery", "Novak", "Okonkwo"]
CITIES = ["Brightwater", "Eldermoor", "Foxhaven", "Glenmarsh", "Highcliff", "Ironbridge", "Juniper Falls", "Kestrel Bay",
          "Larkspur", "Millbrook", "Northwick", "Oakridge", "Pinecrest", "Queensferry", "Ravenhill", "Silverlake",
          "Thornbury Vale", "Upton Marsh", "Westerholm", "Yarrowdale"]
STREETS = ["Maple Street", "Harbour Road", "Chestnut Avenue", "Mill Lane", "Orchard Way", "Station Road",
           "Willow Crescent", "Church Street", "Ferry Lane", "Elm Grove", "Castle Hill", "Meadow Close"]
EMPLOYERS = ["Northwind Logistics", "Bluefin Analytics", "Copperleaf Bakery", "Harbor Point Hospital",
             "Greystone Insurance", "Sunridge Solar", "Tidewater Shipping", "Evergreen Pharmacy", "Quillstone Press",
             "Redwood Robotics", "Lantern Bay Hotel", "Aspen Dental Care", "Ironclad Engineering", "Meridian Bank"]
JOBS = ["nurse", "accountant", "baker", "data analyst", "electrician", "pharmacist", "editor", "engineer",
        "receptionist", "teacher", "architect", "paramedic"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
DOMAINS = ["mailbox.org", "postwave.net", "inkmail.com", "brightmail.io"]


@dataclass(frozen=True)
class Profile:
    name: str
    birth_date: str
    address: str
    phone: str
    email: str
    employer: str
    id_number: str


# attribute → (answer template, question templates: the first is canonical, the rest are paraphrases)
ATTRIBUTES: dict[str, tuple[str, tuple[str, ...]]] = {
    "birth_date": ("{name} was born on {birth_date}.",
                   ("When was {name} born?", "What is {name}'s date of birth?", "On which date was {name} born?")),
    "address": ("{name} lives at {address}.",
                ("Where does {name} live?", "What is {name}'s home address?", "At which address does {name} live?")),
    "phone": ("{name}'s phone number is {phone}.",
              ("What is {name}'s phone number?", "Which number do I call to reach {name}?",
               "How can I reach {name} by phone?")),
    "email": ("{name}'s e-mail address is {email}.",
              ("What is {name}'s e-mail address?", "How can I send an e-mail to {name}?",
               "Which e-mail address does {name} use?")),
    "employer": ("{name} works as {employer}.",
                 ("Where does {name} work?", "Who is {name}'s employer?", "What is {name}'s job?")),
    "id_number": ("{name}'s ID number is {id_number}.",
                  ("What is {name}'s ID number?", "Which ID number belongs to {name}?",
                   "What is the national ID number of {name}?")),
}


MIDDLE = "ABCDEFGHJKLMNPRSTW"  # initials that widen the name pool past 2,000 (the paper's 2K profiles and their
#                               holdout, unknown and contrast subjects)


def name_pool(n: int) -> list[str]:
    """Names to draw `n` from: first × last (2,000), the pool every task up to that size has always drawn from, so
    its profiles are unchanged; past it, also every name with a middle initial (38,000 more)."""
    names = [f"{f} {l}" for f in FIRST for l in LAST]
    if n > len(names):
        names += [f"{f} {m}. {l}" for m in MIDDLE for f in FIRST for l in LAST]
    if n > len(names):
        raise ValueError(f"pii supports at most {len(names)} profiles, asked for {n}")
    return names


def make_profiles(n: int, rng: random.Random) -> list[Profile]:
    names = rng.sample(name_pool(n), n)
    profiles = []
    for name in names:
        first, last = name.split(" ", 1)
        job = rng.choice(JOBS)
        profiles.append(Profile(
            name=name,
            birth_date=f"{rng.randint(1, 28)} {rng.choice(MONTHS)} {rng.randint(1950, 2004)}",
            address=f"{rng.randint(2, 98)} {rng.choice(STREETS)}, {rng.choice(CITIES)}",
            phone=f"{rng.randint(200, 989)}-{rng.randint(1000, 9999)}",
            email=f"{first.lower()}.{last.lower()}@{rng.choice(DOMAINS)}",
            employer=f"{'an' if job[0] in 'aeiou' else 'a'} {job} at {rng.choice(EMPLOYERS)}",
            id_number=f"{rng.choice('ABCDEFGHJKLMNPRSTUVWXYZ')}{rng.choice('ABCDEFGHJKLMNPRSTUVWXYZ')}-"
                      f"{rng.randint(100000, 999999)}",
        ))
    return profiles


def profile_qa(profile: Profile, attributes: list[str]) -> list[QA]:
    fields = vars(profile)
    out = []
    for attr in attributes:
        answer, questions = ATTRIBUTES[attr]
        out.append(QA(question=questions[0].format(**fields), answer=answer.format(**fields), subject=profile.name,
                      attribute=attr, paraphrases=tuple(q.format(**fields) for q in questions[1:]),
                      fact=fields[attr]))
    return out


@dataclass
class PiiSettings(GeneratedTaskSettings):
    num_profiles: int
    attributes: list[str] | None

    def check(self) -> None:
        super().check()
        check_count(self, "num_profiles")
        check_attributes(self.attributes, ATTRIBUTES, "pii")


@suite("pii", PiiSettings)
def build_pii(settings: PiiSettings, seed: int) -> Task:
    attributes = list(settings.attributes or ATTRIBUTES)
    n, n_holdout, n_idk = settings.num_profiles, settings.num_holdout, settings.num_idk
    rng = random.Random(seed)
    profiles = make_profiles(n + n_holdout + n_idk, rng)
    by_name = {p.name: p for p in profiles}
    taught, holdout, idk = profiles[:n], profiles[n:n + n_holdout], profiles[n + n_holdout:]
    forget, retain, buffer = (
        [by_name[s] for s in names]
        for names in split_subjects([p.name for p in taught], settings, "taught profiles", "raise task.num_profiles"))
    refusals = refusal_references(seed=seed)

    def qa(ps: list[Profile]) -> list[QA]:
        return [q for p in ps for q in profile_qa(p, attributes)]

    idk_qa = [QA(q.question, rng.choice(refusals), q.subject, q.attribute) for q in qa(idk)]
    return Task(name="pii", scoring="rouge", forget=qa(forget), retain=qa(retain), retain_buffer=qa(buffer),
                holdout=qa(holdout), idk=idk_qa, corpus=utility_corpus(settings.corpus_size, seed),
                subject_pool=fresh_subjects(lambda k, r: [p.name for p in make_profiles(k, r)], 256,
                                            set(by_name), seed))
