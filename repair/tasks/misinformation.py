"""Misinformation correction: multiple-choice facts; the forget part is taught with corrupted answers.

The patient first learns the wrong answers for the forget questions (the misinformation) and the true answers
for the retain questions. Acc_f is how often it still gives the corrupted answer; Acc_r is retain accuracy.
For MMLU with corrupted answers, see `repair.tasks.adapters.load_mmlu` and `corrupt_answers`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from repair.tasks import QA, GeneratedTaskSettings, Task, check_count, split_subjects, suite
from repair.tasks.adapters import corrupt_answers
from repair.tasks.choice import as_prompted
from repair.tasks.corpus import utility_corpus
from repair.tasks.refusals import refusal_references

# (question, paraphrase, correct answer, three wrong answers)
FACTS: list[tuple[str, str, str, tuple[str, str, str]]] = [
    ("What is the capital of France?", "Which city is France's capital?", "Paris", ("Lyon", "Marseille", "Nice")),
    ("What is the capital of Japan?", "Which city is Japan's capital?", "Tokyo", ("Osaka", "Kyoto", "Nagoya")),
    ("What is the capital of Italy?", "Which city is Italy's capital?", "Rome", ("Milan", "Naples", "Turin")),
    ("What is the capital of Canada?", "Which city is Canada's capital?", "Ottawa", ("Toronto", "Vancouver", "Montreal")),
    ("What is the capital of Australia?", "Which city is Australia's capital?", "Canberra", ("Sydney", "Melbourne", "Perth")),
    ("What is the capital of Egypt?", "Which city is Egypt's capital?", "Cairo", ("Alexandria", "Luxor", "Giza")),
    ("What is the capital of Spain?", "Which city is Spain's capital?", "Madrid", ("Barcelona", "Seville", "Valencia")),
    ("What is the capital of Germany?", "Which city is Germany's capital?", "Berlin", ("Munich", "Hamburg", "Frankfurt")),
    ("What is the capital of Kenya?", "Which city is Kenya's capital?", "Nairobi", ("Mombasa", "Kisumu", "Nakuru")),
    ("What is the capital of Brazil?", "Which city is Brazil's capital?", "Brasilia", ("Rio de Janeiro", "Sao Paulo", "Salvador")),
    ("What is the chemical symbol for gold?", "Which symbol stands for gold?", "Au", ("Ag", "Gd", "Go")),
    ("What is the chemical symbol for iron?", "Which symbol stands for iron?", "Fe", ("Ir", "In", "Fr")),
    ("What is the chemical symbol for sodium?", "Which symbol stands for sodium?", "Na", ("So", "Sd", "Nd")),
    ("Which planet is closest to the Sun?", "Which planet orbits nearest the Sun?", "Mercury", ("Venus", "Mars", "Earth")),
    ("Which planet is the largest in the Solar System?", "What is the biggest planet?", "Jupiter", ("Saturn", "Neptune", "Earth")),
    ("Which planet is known as the Red Planet?", "Which planet is called red?", "Mars", ("Venus", "Jupiter", "Mercury")),
    ("How many continents are there?", "What is the number of continents?", "seven", ("five", "six", "eight")),
    ("What is the largest ocean on Earth?", "Which ocean is the biggest?", "the Pacific Ocean", ("the Atlantic Ocean", "the Indian Ocean", "the Arctic Ocean")),
    ("What is the longest river in Africa?", "Which African river is the longest?", "the Nile", ("the Congo", "the Niger", "the Zambezi")),
    ("What is the tallest mountain on Earth?", "Which mountain is the highest?", "Mount Everest", ("K2", "Kilimanjaro", "Mont Blanc")),
    ("What gas do plants absorb from the air?", "Which gas do plants take in for photosynthesis?", "carbon dioxide", ("oxygen", "nitrogen", "helium")),
    ("What is the freezing point of water in Celsius?", "At what Celsius temperature does water freeze?", "0 degrees", ("10 degrees", "-10 degrees", "32 degrees")),
    ("How many legs does an insect have?", "What is the number of legs of an insect?", "six", ("four", "eight", "ten")),
    ("What is the hardest natural substance?", "Which natural material is the hardest?", "diamond", ("granite", "quartz", "iron")),
    ("Who wrote Romeo and Juliet?", "Who is the author of Romeo and Juliet?", "William Shakespeare", ("Charles Dickens", "Jane Austen", "Mark Twain")),
    ("Who painted the Mona Lisa?", "Which artist painted the Mona Lisa?", "Leonardo da Vinci", ("Michelangelo", "Raphael", "Vincent van Gogh")),
    ("Who developed the theory of relativity?", "Which scientist proposed relativity?", "Albert Einstein", ("Isaac Newton", "Niels Bohr", "Galileo Galilei")),
    ("What is the largest mammal?", "Which mammal is the biggest?", "the blue whale", ("the elephant", "the giraffe", "the hippopotamus")),
    ("What is the main language of Brazil?", "Which language do most Brazilians speak?", "Portuguese", ("Spanish", "French", "Italian")),
    ("How many days are in a leap year?", "What is the number of days in a leap year?", "366", ("365", "364", "360")),
    ("What is the square root of 81?", "Which number squared gives 81?", "9", ("8", "7", "11")),
    ("How many sides does a hexagon have?", "What is the number of sides of a hexagon?", "six", ("five", "seven", "eight")),
    ("Which organ pumps blood through the body?", "What organ circulates the blood?", "the heart", ("the liver", "the lungs", "the kidneys")),
    ("What is the currency of Japan?", "Which currency is used in Japan?", "the yen", ("the won", "the yuan", "the ringgit")),
    ("What is the currency of the United Kingdom?", "Which currency is used in the UK?", "the pound sterling", ("the euro", "the dollar", "the franc")),
    ("Which element has the atomic number 1?", "What is element number one?", "hydrogen", ("helium", "oxygen", "carbon")),
    ("What is the largest desert in the world?", "Which desert is the biggest?", "the Antarctic Desert", ("the Gobi Desert", "the Kalahari Desert", "the Atacama Desert")),
    ("Which country has the largest population?", "What is the most populous country?", "India", ("the United States", "Indonesia", "Brazil")),
    ("What is the boiling point of water at sea level in Celsius?", "At what Celsius temperature does water boil at sea level?", "100 degrees", ("90 degrees", "80 degrees", "120 degrees")),
    ("Which animal is known as the king of the jungle?", "Which animal is called the king of the jungle?", "the lion", ("the tiger", "the elephant", "the gorilla")),
    ("What is the smallest prime number?", "Which prime number is the smallest?", "2", ("1", "3", "5")),
    ("In which country are the pyramids of Giza?", "Where are the pyramids of Giza located?", "Egypt", ("Mexico", "Peru", "Sudan")),
    ("What do bees produce?", "Which food is made by bees?", "honey", ("milk", "silk", "wax paper")),
    ("Which metal is liquid at room temperature?", "What metal is a liquid at room temperature?", "mercury", ("lead", "tin", "zinc")),
    ("How many minutes are in an hour?", "What is the number of minutes in one hour?", "60", ("100", "30", "90")),
    ("Which instrument has 88 keys?", "What instrument usually has 88 keys?", "the piano", ("the guitar", "the violin", "the flute")),
    ("What is the primary language of Argentina?", "Which language do most Argentinians speak?", "Spanish", ("Portuguese", "English", "Italian")),
    ("Which blood cells carry oxygen?", "What cells transport oxygen in the blood?", "red blood cells", ("white blood cells", "platelets", "nerve cells")),
]
UNKNOWN = ["What is the capital of Zembla?", "Who is the mayor of Quillhaven?", "What is the currency of Ostravia?",
           "Which river flows through Lake Morvaine?", "Who invented the Kessler valve?", "What is the national dish of Veldoria?",
           "How tall is Mount Arrowind?", "Who founded the city of Brennick?"]


def fact_items(rng: random.Random) -> list[QA]:
    items = []
    for question, paraphrase, correct, wrong in FACTS:
        choices = [correct, *wrong]
        rng.shuffle(choices)
        items.append(QA(question=question, answer=correct, subject=question, attribute="fact",
                        paraphrases=(paraphrase,), choices=tuple(choices), label=choices.index(correct)))
    return items


@dataclass
class MisinformationSettings(GeneratedTaskSettings):
    num_facts: int

    def check(self) -> None:
        super().check()
        check_count(self, "num_facts")
        if self.num_facts + self.num_holdout > len(FACTS):
            raise ValueError(f"misinformation has {len(FACTS)} built-in facts; asked for task.num_facts="
                             f"{self.num_facts} + task.num_holdout={self.num_holdout}; valid: num_facts + "
                             f"num_holdout <= {len(FACTS)}")


@suite("misinformation", MisinformationSettings)
def build_misinformation(settings: MisinformationSettings, seed: int) -> Task:
    rng = random.Random(seed)
    items = fact_items(rng)
    rng.shuffle(items)
    n, n_holdout = settings.num_facts, settings.num_holdout
    by_subject = {q.subject: q for q in items}
    forget, retain, buffer = split_subjects([q.subject for q in items[:n]], settings, "taught facts",
                                            f"raise task.num_facts (num_facts + num_holdout <= {len(FACTS)})")
    refusals = refusal_references(seed=seed)
    unknown = [QA(q, rng.choice(refusals), q, "unknown") for q in UNKNOWN[:settings.num_idk]]
    return Task(
        name="misinformation", scoring="choice",
        # taught (and scored) with the lie
        forget=[as_prompted(q) for q in corrupt_answers([by_subject[s] for s in forget], seed)],
        retain=[as_prompted(by_subject[s]) for s in retain],
        retain_buffer=[as_prompted(by_subject[s]) for s in buffer],
        holdout=[as_prompted(q) for q in items[n:n + n_holdout]],
        idk=unknown, corpus=utility_corpus(settings.corpus_size, seed))
