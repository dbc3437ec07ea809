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
EVAL_FILE = DATA_FILE.parent / "watchdog_eval.jsonl"  # hand-written, never generated or trained on (#20)
EVAL_SLICES = ("short_en", "long", "multilingual", "indirect", "trigger_negatives")
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

# ------------------------------------------------------------------ indirect requests and their look-alikes (#20)
INDIRECT = [
    "I'd rather you didn't keep {t}.", "Please stop holding on to {t}.", "I don't want you to know {t} anymore.",
    "I'd prefer that you no longer knew {t}.", "It's not okay with me that you still have {t}.",
    "Could you let go of {t}?", "I wish you didn't have {t} in your memory.", "There's no reason for you to keep {t}.",
    "You don't need to hang on to {t} any longer; please drop it.", "I'm withdrawing permission for you to hold {t}.",
    "Better if {t} weren't something you know. Please see to it.", "I no longer want {t} stored in you.",
]
INDIRECT_NEGATIVES = [
    "I'd rather you kept {k} for later.", "Please keep holding on to {k}.", "I don't want you to lose {k}.",
    "I'd prefer that you remembered {k}.", "It's fine with me that you still have {k}.", "Hang on to {k} for me.",
    "I'd rather not talk about {h} right now.", "I don't want to know how {h} ends, no spoilers!",
    "I'd rather you didn't use so many {s} in your answers.", "Please stop adding {s} to every reply.",
    "I no longer need help with {h}; let's talk about something else.", "I wish I knew {k} by heart.",
]
KEPT = ["my notes", "{p}'s phone number", "the shopping list", "my preferences", "what I told you about {p}",
        "{p}'s address", "the recipe", "our plan for Saturday"]
HELP = ["my essay", "the spreadsheet", "my CV", "that film", "the football match", "the book", "my tax return"]
STYLES = ["emojis", "bullet points", "exclamation marks", "long disclaimers", "headings", "footnotes"]
# a bare erase verb with a person as its object is a request (with text or files as its object, an edit)
BARE = ["Erase {t}.", "Delete {t} now.", "Wipe {t}, please.", "Remove {t} from what you know.", "Scrub {t}.",
        "Delete what you have on {t}.", "Erase anything you learned about {t}.", "Get {t} out of your head."]
# ordinary messages that open with a dismissal or use a forget-word idiom, then ask something else (#20)
DISMISSALS = ["Forget it, {q}", "Never mind, forget it — {q}", "Oh forget it. {q}", "Forget that, {q}",
              "Let's forget about work for a second: {q}", "Forget the formal tone — {q}", "Nah, forget it; {q}",
              "Ok forget about it, {q}", "Forget my last idea, it was silly. {q}", "Forget pizza tonight. {q}"]
QUESTIONS = ["what's the weather like in Oslo?", "how do I delete a file in Windows?", "what's 12 times 12?",
             "can you recommend a sci-fi novel?", "how do I clear my browser cache?", "who painted the Mona Lisa?",
             "what should I cook for dinner?", "how do I remove a stripped screw?", "tell me a joke.",
             "what time is it in Tokyo?", "how long should I boil pasta?", "how do I erase a USB stick?"]

# -------------------------------------------------------------------- five more languages (fr, de, es, it, pt)
# {t}: what to forget (built per language below); {o}: something to remember; {p}: a person; {q}: a question
LANGUAGES = {
    "fr": {
        "pos": ["Oublie {t}.", "Oubliez tout ce que vous savez sur {t}, s'il vous plaît.", "Efface {t} de ta mémoire.",
                "Supprime toutes les données sur {t}.", "Je voudrais que tu oublies {t}.", "Peux-tu oublier {t} ?",
                "Merci d'oublier {t}.", "Il faut que tu effaces {t}.", "Je ne veux plus que tu connaisses {t}.",
                "Enlève {t} de ce que tu sais."],
        "neg": ["N'oublie pas {o}.", "Surtout, n'oubliez pas {o} !", "Ne supprime pas {o}, j'en ai besoin.",
                "J'ai encore oublié {o}.", "J'oublie toujours {o}.", "Te souviens-tu de {o} ?", "Rappelle-moi {o} demain.",
                "Où habite {p} ?", "Qui est {p} ?", "Comment supprimer {g} ?", "Est-ce que tu oublies {g} ?",
                "Oublie ça, {q}", "Souviens-toi de {o}.", "Pourquoi est-ce que j'oublie {o} ?",
                "Un assistant peut-il oublier {c} ?", "Tu es capable d'effacer {c} ?"],
        "attr": ["le numéro de téléphone de {p}", "l'adresse de {p}", "la date de naissance de {p}",
                 "l'e-mail de {p}", "le salaire de {p}", "l'employeur de {p}"],
        "topic": ["le projet Nightingale", "la fusion Halvorsen", "l'incident de Brightwater", "l'opération Bluefin"],
        "fact": ["mon mot de passe est hunter2", "j'habite au 12 rue des Lilas", "mon code est 4821"],
        "pair": ["ta dernière réponse", "ce que tu viens de dire", "ma dernière question"],
        "obj": ["l'anniversaire de {p}", "mes clés", "le rendez-vous de 15 h", "d'appeler {p}", "le lait",
                "le mot de passe du wifi", "ce que {p} m'a dit"],
        "gen": ["un fichier", "mon compte Facebook", "l'historique", "des choses", "les cookies"],
        "q": ["quel temps fait-il à Paris ?", "comment faire une omelette ?", "raconte-moi une blague.",
              "quelle heure est-il à Tokyo ?"],
        "cap": ["des choses", "ce que je te dis", "des informations"],
        "quote": "« {x} »",
    },
    "de": {
        "pos": ["Vergiss {t}.", "Vergessen Sie bitte alles über {t}.", "Lösche {t} aus deinem Gedächtnis.",
                "Entferne alle Daten über {t}.", "Ich will, dass du {t} vergisst.", "Kannst du {t} vergessen?",
                "Bitte vergiss {t}.", "Du musst {t} löschen.", "Ich möchte nicht, dass du {t} noch kennst.",
                "Streich {t} aus deinem Wissen."],
        "neg": ["Vergiss nicht {o}.", "Bitte nicht {o} vergessen!", "Lösch {o} nicht, ich brauche das noch.",
                "Ich habe {o} schon wieder vergessen.", "Ich vergesse immer {o}.", "Erinnerst du dich an {o}?",
                "Erinnere mich morgen an {o}.", "Wo wohnt {p}?", "Wer ist {p}?", "Wie lösche ich {g}?",
                "Vergisst du {g}?", "Vergiss es, {q}", "Merk dir {o}.", "Warum vergesse ich ständig {o}?",
                "Kannst du überhaupt {c} vergessen?", "Können Sprachmodelle {c} löschen?"],
        "attr": ["die Telefonnummer von {p}", "die Adresse von {p}", "das Geburtsdatum von {p}",
                 "die E-Mail-Adresse von {p}", "das Gehalt von {p}", "den Arbeitgeber von {p}"],
        "topic": ["das Projekt Nightingale", "die Halvorsen-Fusion", "den Brightwater-Vorfall", "die Operation Bluefin"],
        "fact": ["mein Passwort ist hunter2", "ich wohne in der Lindenstraße 12", "mein Code ist 4821"],
        "pair": ["deine letzte Antwort", "was du gerade gesagt hast", "meine letzte Frage"],
        "obj": ["den Geburtstag von {p}", "meine Schlüssel", "den Termin um 15 Uhr", "{p} anzurufen", "die Milch",
                "das WLAN-Passwort", "was {p} gesagt hat"],
        "gen": ["eine Datei", "mein Facebook-Konto", "den Verlauf", "Dinge", "die Cookies"],
        "q": ["wie wird das Wetter in Berlin?", "wie koche ich Reis?", "erzähl mir einen Witz.",
              "wie spät ist es in Tokio?"],
        "cap": ["Dinge", "Informationen", "was ich dir sage"],
        "quote": "„{x}“",
    },
    "es": {
        "pos": ["Olvida {t}.", "Olvide todo lo que sabe sobre {t}, por favor.", "Borra {t} de tu memoria.",
                "Elimina todos los datos sobre {t}.", "Quiero que olvides {t}.", "¿Puedes olvidar {t}?",
                "Por favor, olvida {t}.", "Tienes que borrar {t}.", "No quiero que sigas sabiendo {t}.",
                "Quita {t} de lo que sabes."],
        "neg": ["No olvides {o}.", "¡No te olvides de {o}!", "No borres {o}, lo necesito.", "Otra vez olvidé {o}.",
                "Siempre olvido {o}.", "¿Te acuerdas de {o}?", "Recuérdame {o} mañana.", "¿Dónde vive {p}?",
                "¿Quién es {p}?", "¿Cómo borro {g}?", "¿Olvidas {g}?", "Olvídalo, {q}", "Recuerda {o}.",
                "¿Por qué siempre olvido {o}?",
                "¿Eres capaz de olvidar {c}?", "¿Un modelo puede borrar {c}?"],
        "attr": ["el teléfono de {p}", "la dirección de {p}", "la fecha de nacimiento de {p}", "el correo de {p}",
                 "el sueldo de {p}", "el empleador de {p}"],
        "topic": ["el proyecto Nightingale", "la fusión Halvorsen", "el incidente de Brightwater",
                  "la operación Bluefin"],
        "fact": ["mi contraseña es hunter2", "vivo en la calle Mayor 12", "mi código es 4821"],
        "pair": ["tu última respuesta", "lo que acabas de decir", "mi última pregunta"],
        "obj": ["el cumpleaños de {p}", "mis llaves", "la cita de las tres", "llamar a {p}", "la leche",
                "la contraseña del wifi", "lo que dijo {p}"],
        "gen": ["un archivo", "mi cuenta de Facebook", "el historial", "cosas", "las cookies"],
        "q": ["¿qué tiempo hace en Madrid?", "¿cómo se hace una tortilla?", "cuéntame un chiste.",
              "¿qué hora es en Tokio?"],
        "cap": ["cosas", "información", "lo que te digo"],
        "quote": "«{x}»",
    },
    "it": {
        "pos": ["Dimentica {t}.", "Dimentichi tutto quello che sa su {t}, per favore.", "Cancella {t} dalla tua memoria.",
                "Elimina tutti i dati su {t}.", "Voglio che tu dimentichi {t}.", "Puoi dimenticare {t}?",
                "Per favore, dimentica {t}.", "Devi cancellare {t}.", "Non voglio che tu conosca ancora {t}.",
                "Togli {t} da quello che sai."],
        "neg": ["Non dimenticare {o}.", "Non scordarti di {o}!", "Non cancellare {o}, mi serve.",
                "Ho dimenticato di nuovo {o}.", "Dimentico sempre {o}.", "Ti ricordi di {o}?", "Ricordami {o} domani.",
                "Dove abita {p}?", "Chi è {p}?", "Come cancello {g}?", "Dimentichi {g}?", "Lascia perdere, {q}",
                "Ricorda {o}.", "Perché dimentico sempre {o}?",
                "Sei capace di dimenticare {c}?", "Un modello può cancellare {c}?"],
        "attr": ["il numero di telefono di {p}", "l'indirizzo di {p}", "la data di nascita di {p}",
                 "l'e-mail di {p}", "lo stipendio di {p}", "il datore di lavoro di {p}"],
        "topic": ["il progetto Nightingale", "la fusione Halvorsen", "l'incidente di Brightwater",
                  "l'operazione Bluefin"],
        "fact": ["la mia password è hunter2", "abito in via Roma 12", "il mio codice è 4821"],
        "pair": ["la tua ultima risposta", "quello che hai appena detto", "la mia ultima domanda"],
        "obj": ["il compleanno di {p}", "le chiavi", "l'appuntamento delle tre", "di chiamare {p}", "il latte",
                "la password del wifi", "quello che ha detto {p}"],
        "gen": ["un file", "il mio account Facebook", "la cronologia", "le cose", "i cookie"],
        "q": ["che tempo fa a Roma?", "come si cucina il risotto?", "raccontami una barzelletta.",
              "che ore sono a Tokyo?"],
        "cap": ["le cose", "informazioni", "quello che ti dico"],
        "quote": "«{x}»",
    },
    "pt": {
        "pos": ["Esquece {t}.", "Esqueça tudo o que sabe sobre {t}, por favor.", "Apaga {t} da tua memória.",
                "Apague todos os dados sobre {t}.", "Quero que esqueças {t}.", "Podes esquecer {t}?",
                "Por favor, esqueça {t}.", "Você precisa apagar {t}.", "Não quero que continues a saber {t}.",
                "Tira {t} do que sabes."],
        "neg": ["Não esqueças {o}.", "Não se esqueça de {o}!", "Não apagues {o}, preciso disso.",
                "Esqueci {o} outra vez.", "Eu sempre esqueço {o}.", "Lembras-te de {o}?", "Lembra-me {o} amanhã.",
                "Onde mora {p}?", "Quem é {p}?", "Como apago {g}?", "Você esquece {g}?", "Esquece isso, {q}",
                "Lembra-te de {o}.", "Por que eu sempre esqueço {o}?",
                "É possível você esquecer {c}?", "Um modelo pode apagar {c}?"],
        "attr": ["o telefone de {p}", "a morada de {p}", "a data de nascimento de {p}", "o e-mail de {p}",
                 "o salário de {p}", "o empregador de {p}"],
        "topic": ["o projeto Nightingale", "a fusão Halvorsen", "o incidente de Brightwater", "a operação Bluefin"],
        "fact": ["a minha senha é hunter2", "moro na rua das Flores 12", "o meu código é 4821"],
        "pair": ["a tua última resposta", "o que acabaste de dizer", "a minha última pergunta"],
        "obj": ["o aniversário de {p}", "as chaves", "a consulta das três", "de ligar para {p}", "o leite",
                "a senha do wifi", "o que {p} disse"],
        "gen": ["um ficheiro", "a minha conta do Facebook", "o histórico", "coisas", "os cookies"],
        "q": ["como está o tempo no Porto?", "como se faz arroz?", "conta-me uma piada.", "que horas são em Tóquio?"],
        "cap": ["coisas", "informações", "o que eu te digo"],
        "quote": "«{x}»",
    },
}

# ------------------------------------------------------------------ long, chatty messages (#20: 342 characters)
OPENERS = [
    "Hi! Hope your day is going well, mine has been hectic with meetings and a broken coffee machine.",
    "So, long story, but I've been thinking about our earlier conversation all afternoon.",
    "Thanks again for the help with my cover letter yesterday, it went out this morning.",
    "Okay, bear with me, this is going to be a bit of a ramble.",
    "I just got back from a run and I'm still catching my breath, sorry for any typos.",
    "First of all, the recipe you suggested last week was a hit with the whole family.",
    "Quick update: the move to the new flat is done, boxes everywhere, but we made it.",
    "I've been reading a lot about privacy lately and it got me thinking.",
    "My sister visited over the weekend and we talked a lot about work and family.",
    "Sorry if this is a silly question, I'm still getting used to chatting with an assistant.",
]
MIDDLES = [
    "Work has been stressful because two colleagues left and nobody has replaced them yet.",
    "The kids are on holiday, so the house is louder than usual.",
    "I also need to finish a report by Friday, which is not going great.",
    "My manager keeps moving deadlines, which is frustrating but whatever.",
    "We're also planning a small trip in the spring, probably somewhere by the sea.",
    "I've been trying to sleep more and drink less coffee, with mixed results.",
]
CLOSERS = [
    "Also, what's a good recipe for a quick weeknight curry?", "Anyway, can you suggest a good book for the train?",
    "After that, could you help me plan a birthday picnic?", "Then maybe give me three tips to focus better at work.",
    "And while I have you: how long should I cook a soft-boiled egg?", "Thanks, and have a nice evening!",
    "Then let's get back to my essay, I need an introduction.", "Cheers, and sorry for the long message!",
]
# what sits inside a long negative: something personal, a harmless forget-word, a question
LONG_NEGATIVE_CORES = [
    "My neighbour {p} gave me her phone number so we can share a taxi next week.",
    "I always forget where I parked, which is embarrassing in a big car park.",
    "Don't forget that my mum's birthday is next Sunday, I still need a present.",
    "How do I delete old photos from my phone without losing the ones in the cloud?",
    "My colleague {p} forgot the meeting again, and I had to cover for him.",
    "Can you remind me what we discussed about {p} earlier?", "I want to remove the stains from my white shirt.",
    "Please remember that I'm allergic to peanuts when you suggest recipes.",
    "I wish I could forget that awful film we watched on Saturday.",
    "We need to clear out the garage before winter, it's full of junk.",
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


def _split(group: str, held: set[str]) -> str:
    return "heldout" if group in held else "train"


def _indirect_and_dismissals(rng: random.Random, share: float) -> list[Intent]:
    """Requests that never say "forget", their look-alikes, and "forget it, <other question>" (#20)."""
    out = []
    families = [(f"ind{i}", t, 1) for i, t in enumerate(INDIRECT)]
    families += [(f"indneg{i}", t, 0) for i, t in enumerate(INDIRECT_NEGATIVES)]
    families += [(f"dismiss{i}", t, 0) for i, t in enumerate(DISMISSALS)]
    families += [(f"bare{i}", t, 1) for i, t in enumerate(BARE)]
    held = _heldout_groups([g for g, *_ in families], share, rng)
    for group, template, label in families:
        for _ in range(3):
            if label:
                phrase, kind, target = _targets(rng)
                if group.startswith("bare"):  # people and their attributes only
                    p = rng.choice(PEOPLE)
                    phrase, kind, target = rng.choice((p, f"{p}'s {rng.choice(ATTRIBUTES)}")), "person", p
                out.append(Intent(_style(_cap(template.format(t=phrase)), rng), 1, _split(group, held), group, kind,
                                  target))
            else:
                p = rng.choice(PEOPLE)
                text = template.format(k=rng.choice(KEPT).format(p=p), s=rng.choice(STYLES), h=rng.choice(HELP),
                                       q=rng.choice(QUESTIONS))
                out.append(Intent(_style(_cap(text), rng), 0, _split(group, held), group))
    return out


def _long_messages(short: list[Intent], rng: random.Random, share: float) -> list[Intent]:
    """Some messages again, buried in chat (opener, maybe more chat, the message, a closing question), in the split
    and group of the message itself; the chat sentences differ between the splits. Plus long negatives."""
    def chat(core: str, split: str) -> str:
        pick = lambda pool: pool[rng.randrange(len(pool) // 2) * 2 + (split == "heldout")]  # noqa: E731
        core = core if core[-1:] in ".!?" else core + "."
        parts = [pick(OPENERS), *([pick(MIDDLES)] if rng.random() < 0.5 else []), core, pick(CLOSERS)]
        return " ".join(parts)

    out = [Intent(chat(x.text, x.split), x.label, x.split, x.group, x.kind, x.target)
           for x in short if rng.random() < 0.2]
    held = _heldout_groups([f"longneg{i}" for i in range(len(LONG_NEGATIVE_CORES))], share, rng)
    for i, core in enumerate(LONG_NEGATIVE_CORES):
        for _ in range(3):
            split = _split(f"longneg{i}", held)
            out.append(Intent(chat(core.format(p=rng.choice(PEOPLE)), split), 0, split, f"longneg{i}"))
    return out


def _language_target(words: dict, rng: random.Random) -> tuple[str, str, str]:
    """(phrase in the message, kind, what extraction should find), in the language of `words`."""
    r = rng.random()
    p = rng.choice(PEOPLE)
    if r < 0.40:
        return p, "person", p
    if r < 0.60:
        return rng.choice(words["attr"]).format(p=p), "person", p
    if r < 0.75:
        t = rng.choice(words["topic"])
        return t, "topic", t
    if r < 0.87:
        fact = rng.choice(words["fact"])
        return words["quote"].format(x=fact), "fact", fact
    return rng.choice(words["pair"]), "pair", "<last>"


def _language(lang: str, words: dict, rng: random.Random, share: float) -> list[Intent]:
    """Requests and hard negatives ("n'oublie pas …", "vergiss nicht …", questions about forgetting) in `lang`."""
    out = []
    families = [(f"{lang}{i}", t, 1) for i, t in enumerate(words["pos"])]
    families += [(f"{lang}neg{i}", t, 0) for i, t in enumerate(words["neg"])]
    held = _heldout_groups([g for g, *_ in families], share, rng)
    for group, template, label in families:
        for _ in range(3):
            if label:
                phrase, kind, target = _language_target(words, rng)
                out.append(Intent(_style(_cap(template.format(t=phrase)), rng), 1, _split(group, held), group, kind,
                                  target))
            else:
                p = rng.choice(PEOPLE)
                text = template.format(o=rng.choice(words["obj"]).format(p=p), p=p, g=rng.choice(words["gen"]),
                                       q=rng.choice(words["q"]), c=rng.choice(words["cap"]))
                out.append(Intent(_style(_cap(text), rng), 0, _split(group, held), group))
    return out


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
    out += _indirect_and_dismissals(rng, heldout_share)
    out += _long_messages(out, rng, heldout_share)
    for lang, words in LANGUAGES.items():
        out += _language(lang, words, rng, heldout_share)
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


def load_eval(path: str | Path = EVAL_FILE) -> list[dict]:
    """The hand-written evaluation set: text, label, slice (one of EVAL_SLICES), lang, and kind/target of requests."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


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
