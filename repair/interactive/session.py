"""A repair session: chat with the patient; every message passes the scope guard and the watchdog first.

    message → scope guard → watchdog → (chat turn | surgeon → plan → scope guard → edit → verify → keep or roll back)

Kept edits go to the ledger and stay applied (and are re-applied when a session on the same base model starts);
`/revert ID` or `/undo` takes one back. Edits stack: reverting one that later edits were made on top of takes the
later ones off, reverts it, and puts them back (each restore is bit-exact, so the weights equal base + the rest).
"""
from __future__ import annotations

import dataclasses
import logging
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from repair.generation import generate
from repair.implant import implant_key
from repair.interactive.extract import ForgetRequest, Turn
from repair.interactive.knowledge import KnowledgeCheck, KnowledgeSettings
from repair.interactive.ledger import Ledger
from repair.interactive.llm import ChatModel
from repair.interactive.plan import PlanRejected, RepairPlan
from repair.interactive.scope import check_message, check_plan
from repair.interactive.surgeon import Surgeon, build_surgeon
from repair.interactive.transcript import Transcript
from repair.interactive.verify import Budget, answer_all, pick_canaries, verify
from repair.interactive.watchdog import Watchdog, build_watchdog
from repair.methods import build_method
from repair.patches import Patch, PatchRejected
from repair.patient import Patient
from repair.settings import plain
from repair.setup import implant_recipe, implanted_patient, method_config, start
from repair.tasks import QA, Task
from repair.tasks.refusals import is_refusal

log = logging.getLogger(__name__)
# "yes" to "should I forget X?", in the watchdog's languages
AFFIRMATIVE = re.compile(r"^\W*(?:yes|yeah|yep|y|sure|ok|okay|go ahead|do it|please do|oui|ja|sí|si|sim|claro|certo|"
                         r"d'accord|genau)(?:[\s,!.]+(?:please|do it|go ahead|bitte|por favor|s'il te plaît|"
                         r"s'il vous plaît|per favore|thanks|thank you))*\W*$", re.I)

HELP = """Commands:
  /ledger                 list every edit (id, status, what was forgotten)
  /show ID                one edit in full: request, plan, verification, latency
  /revert ID              undo an edit (the model answers as before)
  /undo                   undo the latest active edit
  /export FILE [ID ...]   write the ledger (or some entries) with their patches to one file (a tar bundle)
  /import FILE            add a bundle's entries to this ledger and apply its active edits (same base model only)
  /who                    the subjects of the task the patient was taught (and which are forgotten)
  /knows NAME             ask the patient the probe questions about NAME and show its answers (nothing changes)
  /help                   this text
  /quit                   end the session
Anything else is a message to the patient; a request to forget something is detected and handled."""


@dataclass
class Reply:
    """What the session says back: the patient's answer, or the repair system's report."""

    role: str   # patient | repair
    text: str
    kind: str   # chat | confirm | applied | partial | rolled_back | already_refuses | not_known | refused | rejected
    #             | command | error | quit
    latency_s: dict[str, float] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)


class RepairSession:
    def __init__(self, cfg: DictConfig, patient: Patient, task: Task, watchdog: Watchdog, surgeon: Surgeon,
                 ledger: Ledger, transcript: Transcript | None = None):
        self.cfg, self.patient, self.task = cfg, patient, task
        self.watchdog, self.surgeon, self.ledger, self.transcript = watchdog, surgeon, ledger, transcript
        self.budget = Budget.from_cfg(OmegaConf.to_container(cfg.verify, resolve=True))
        self.method_cfgs = {cfg.method.name: cfg.method}  # the session's method; others from their own YAML
        self.chat_cfg = cfg.chat
        self.history: list[Turn] = []
        self.active: list[tuple[str, Patch]] = []  # applied edits, in the order they were applied
        self.restored: list[str] = []  # ledger ids re-applied when the session started
        self.progress: Callable[[str], None] = lambda line: None  # where a long step says what it is doing
        self.method_state: dict = {}  # what methods keep across this session's requests (Method.prepare)
        self.pending: ForgetRequest | None = None  # a request the watchdog was unsure of, until the user says yes
        self.canary_answers: dict[str, str] = {}  # canary question → answer, valid for the weights as they are now
        self.knowledge = KnowledgeCheck(patient, task, KnowledgeSettings.from_cfg(plain(cfg.chat.knowledge)),
                                        self.person_probes, self.budget.max_new_tokens, ledger.folder / "knowledge.json")

    def method_settings(self, name: str) -> dict:
        """The settings of method `name` for a repair plan: the session's method config (with the user's
        overrides) for its own method, else the method's own YAML, so every method runs as the tables measured it."""
        if name not in self.method_cfgs:
            self.method_cfgs[name] = method_config(name, int(self.cfg.seed))
        return plain(self.method_cfgs[name])

    # ------------------------------------------------------------------------------------------------ the loop
    def restore_ledger(self) -> list[str]:
        """Re-apply the ledger's active edits (a new session continues where the last one stopped)."""
        restored = []
        for entry in self.ledger.entries("active"):
            patch = self.ledger.load_patch(entry["id"])
            patch.apply(self.patient.model)
            self.active.append((entry["id"], patch))
            restored.append(entry["id"])
        if restored:
            log.info("re-applied %d active edit(s) from the ledger: %s", len(restored), ", ".join(restored))
        self.restored = restored
        return restored

    def startup_notice(self) -> str | None:
        """What the user must see first when edits from earlier sessions are on: who is already forgotten."""
        if not self.restored:
            return None
        edits = "; ".join(f"{i} {self.ledger.get(i)['target']}" for i in self.restored)
        return (f"Already forgotten (edits of earlier sessions, re-applied from the ledger): {edits}. /ledger lists "
                f"them, /revert ID undoes one.")

    def handle(self, message: str) -> Reply:
        """One user message → one reply (also written to the transcript)."""
        message = message.strip()
        self._record("user", message)
        try:
            reply = self._command(message) if message.startswith("/") else self._message(message)
        except Exception as err:  # a failed step must never leave the chat (or the model) half-changed
            log.exception("handling %r failed", message)
            reply = Reply("repair", f"Something went wrong ({type(err).__name__}: {err}); nothing was changed.",
                          "error")
        self._record(reply.role, reply.text, kind=reply.kind, latency_s=reply.latency_s, **reply.data)
        return reply

    def _record(self, role: str, text: str, **data: Any) -> None:
        if self.transcript is not None:
            self.transcript.add(role, text, **data)

    def answer(self, message: str) -> str:
        return generate(self.patient, [message], max_new_tokens=int(self.chat_cfg.max_new_tokens), desc="chat")[0]

    def _message(self, message: str) -> Reply:
        latency: dict[str, float] = {}
        pending, self.pending = self.pending, None
        if pending is not None and AFFIRMATIVE.match(message):  # "yes" to "should I forget X?"
            return self._forget(pending.message, pending, latency)
        t0 = time.perf_counter()
        refusal = check_message(message, forget_request=False)
        if refusal is not None:
            return Reply("repair", f"I won't act on that: {refusal.reason}", "refused", data={"rule": refusal.rule})
        request = self.watchdog.detect(message, self.history)
        latency["watchdog"] = time.perf_counter() - t0
        if request is None or request.score < float(self.chat_cfg.confirm_below):
            t0 = time.perf_counter()
            answer = self.answer(message)
            latency["answer"] = time.perf_counter() - t0
            self.history.append(Turn(message, answer))
            if request is None:
                return Reply("patient", answer, "chat", latency)
            self.pending = request  # unsure: answer, and ask before changing the model
            return Reply("patient", f"{answer}\n\n(Repair: it sounds as if you may want me to forget "
                         f"{request.target or 'something'}. Reply 'yes' and I will; otherwise nothing changes.)",
                         "confirm", latency, {"request": _request_dict(request)})
        return self._forget(message, request, latency)

    def _forget(self, message: str, request: ForgetRequest, latency: dict[str, float]) -> Reply:
        """A detected (or confirmed) request: guarded, then one edit per person named."""
        detected = {"request": _request_dict(request)}
        refusal = check_message(message, forget_request=True)
        if refusal is not None:
            return Reply("repair", f"I won't act on that: {refusal.reason}", "refused", latency,
                         detected | {"rule": refusal.rule})
        if request.others:  # several people: one edit each, reported per person
            return self._each_person(message, request, latency)
        return self._repair(message, request, latency, detected)

    def _repair(self, message: str, request: ForgetRequest, latency: dict[str, float], detected: dict) -> Reply:
        """Plan the request, guard the plan, and apply it."""
        t0 = time.perf_counter()
        try:
            plan = self.surgeon.plan(request, self.history)
        except PlanRejected as err:
            latency["surgeon"] = time.perf_counter() - t0
            return Reply("repair", f"I can't make a repair plan: {err} Nothing was changed.", "rejected", latency,
                         detected)
        latency["surgeon"] = time.perf_counter() - t0
        refusal = check_plan(plan, message, self.history)
        if refusal is not None:
            return Reply("repair", f"I won't act on that: {refusal.reason}", "refused", latency,
                         detected | {"rule": refusal.rule, "plan": plan.model_dump()})
        return self.apply(plan, request, latency)

    def _each_person(self, message: str, request: ForgetRequest, latency: dict[str, float]) -> Reply:
        """A request naming several people: planned, guarded, edited and verified one person at a time, so that each
        edit can be kept, rolled back or reverted on its own."""
        replies = []
        for name in (request.subject, *request.others):
            one = dataclasses.replace(request, target=name, subject=name, others=())
            replies.append((name, self._repair(message, one, {}, {})))
        kinds = {r.kind for _, r in replies}
        total = dict(latency)
        for _, r in replies:
            for key, seconds in r.latency_s.items():
                total[key] = total.get(key, 0.0) + seconds
        return Reply("repair", "\n".join(f"[{name}] {r.text}" for name, r in replies),
                     "applied" if kinds == {"applied"} else "partial" if "applied" in kinds else replies[-1][1].kind,
                     total, {"request": _request_dict(request),
                             "per_subject": [{"subject": n, "kind": r.kind, **{k: v for k, v in r.data.items()
                                                                              if k == "ledger_id"}}
                                             for n, r in replies]})

    # ----------------------------------------------------------------------------------------- edit and verify
    def apply(self, plan: RepairPlan, request: ForgetRequest | None = None,
              latency: dict[str, float] | None = None) -> Reply:
        """Patch the live patient according to `plan`, verify, and keep the edit or roll it back."""
        latency = dict(latency or {})
        started = time.perf_counter()
        canaries = pick_canaries(self.task.retain, plan.subject, self.budget.num_canaries, int(self.cfg.seed))
        self.progress(f"Forgetting {plan.target}: asking {len(plan.probes)} probes, {len(plan.paraphrases)} "
                      f"paraphrases and {len(canaries)} canary questions first …")
        t0 = time.perf_counter()
        asked = [c for c in canaries if c.question not in self.canary_answers]  # the rest: same weights, same answers
        before = answer_all(self.patient, plan.probes, plan.paraphrases, asked, self.budget.max_new_tokens)
        self.canary_answers |= {c.question: a for c, a in zip(asked, before.canaries)}
        before.canaries = [self.canary_answers[c.question] for c in canaries]
        latency["answers_before"] = time.perf_counter() - t0
        entry: dict[str, Any] = {"request": _request_dict(request) if request else None, "target": plan.target,
                                 "plan": plan.model_dump()}
        if self.chat_cfg.skip_if_refusing and before.probes and all(map(is_refusal, before.probes)):
            return Reply("repair", f"The model already refuses every probe about {plan.target}: there is nothing "
                         "to forget, so nothing was changed.", "already_refuses", latency,
                         {"probes": dict(zip(plan.probes, before.probes))})
        if plan.kind == "person":
            t0 = time.perf_counter()
            self.progress(f"Checking that the model knows {plan.subject} …")
            knowledge = self.knowledge.assess(plan.subject, plan.probes, before.probes)
            latency["knowledge_check"] = time.perf_counter() - t0
            if knowledge is not None:
                entry["knowledge"] = knowledge.to_dict()
                if not knowledge.known:
                    meant = knowledge.namesakes(plan.subject)
                    hint = f" If you meant {' or '.join(meant)}, ask me to forget them by full name." if meant else ""
                    return Reply("repair", f"The model holds nothing to forget about {plan.target}: its answers are "
                                 f"not knowledge of {plan.subject} ({knowledge.evidence()}). Nothing was changed.{hint}",
                                 "not_known", latency, {"knowledge": entry["knowledge"]})

        self.progress(f"Editing the model ({plan.method}) …")
        t0 = time.perf_counter()
        method_cfg = {**self.method_settings(plan.method), "layers": plan.layers}
        if plan.rank is not None and "rank" in method_cfg:  # a full-rank method has no rank to set
            method_cfg["rank"] = plan.rank
        subject = plan.subject
        forget = [QA(q, a, subject) for q, a in zip(plan.probes, before.probes)]
        buffer = [q for q in self.task.retain_buffer if not (subject and (q.subject == subject or subject in q.question))]
        try:
            method = build_method(method_cfg)
            method.prepare(self.task, self.method_state)
            unlearned = method.unlearn(self.patient, forget, buffer)
        except (PatchRejected, ValueError) as err:
            latency["edit"] = time.perf_counter() - t0
            latency["total"] = time.perf_counter() - started
            entry_id = self.ledger.add(entry | {"error": str(err), "latency_s": latency}, None, "rolled_back")
            return Reply("repair", f"The edit for {plan.target} was refused before it touched the model: {err} "
                         f"(ledger {entry_id}).", "rolled_back", latency, {"ledger_id": entry_id})
        patch, report = unlearned.patch, unlearned.report
        if patch is None:
            raise ValueError(f"method {plan.method!r} keeps no reversible patch; the chat needs one to roll back")
        latency["edit"] = time.perf_counter() - t0

        self.progress(f"Edited in {latency['edit']:.1f} s; verifying (the same questions again) …")
        t0 = time.perf_counter()
        try:
            after = answer_all(self.patient, plan.probes, plan.paraphrases, canaries, self.budget.max_new_tokens)
            check = verify(before, after, plan.probes, plan.paraphrases, canaries, self.budget)
        except BaseException:  # an unverified edit never stays on the model (Ctrl-C included)
            patch.revert(self.patient.model)
            raise
        latency["verify"] = time.perf_counter() - t0
        entry |= {"verification": check.to_dict(), "edit": _edit_summary(report)}
        if not check.passed:
            patch.revert(self.patient.model)
            latency["total"] = time.perf_counter() - started
            entry_id = self.ledger.add(entry | {"latency_s": latency}, patch, "rolled_back")
            return Reply("repair", f"I edited the model to forget {plan.target}, but verification failed: "
                         f"{'; '.join(check.reasons)}. I rolled the edit back: the model is exactly as before "
                         f"(ledger {entry_id}).", "rolled_back", latency,
                         {"ledger_id": entry_id, "verification": check.summary()})
        t0 = time.perf_counter()
        entry_id = self.ledger.add(entry | {"latency_s": latency}, patch, "active")
        self.active.append((entry_id, patch))
        self.canary_answers = {c.question: a for c, a in zip(canaries, after.canaries)}  # the weights changed
        latency["ledger"] = time.perf_counter() - t0
        latency["total"] = time.perf_counter() - started
        self.ledger.update(entry_id, latency_s=latency)
        example = f" Asked {plan.probes[0]!r}, it now says {after.probes[0]!r}." if plan.probes else ""
        short = (f" Not achieved: {'; '.join(check.shortfalls)}. The edit is kept because it is within the "
                 f"verification budget (verify.min_paraphrases_refused); ask again to forget it with other words, or "
                 f"undo it." if check.shortfalls else "")
        return Reply("repair", f"Forgotten: {plan.target} ({len(plan.probes)} probes; {check.summary()}).{example}"
                     f"{short} Undo with /revert {entry_id}.", "applied", latency,
                     {"ledger_id": entry_id, "verification": check.summary(), "plan": plan.model_dump()})

    def revert(self, entry_id: str) -> Reply:
        t0 = time.perf_counter()
        ids = [i for i, _ in self.active]
        if entry_id not in ids:
            status = self.ledger.get(entry_id)["status"]  # KeyError names the known ids
            return Reply("repair", f"Edit {entry_id} is {status}, not active; nothing to revert.", "command")
        k = ids.index(entry_id)
        later = self.active[k + 1:]
        for _, p in reversed(later):
            p.revert(self.patient.model)
        self.active[k][1].revert(self.patient.model)
        for _, p in later:
            p.apply(self.patient.model)
        del self.active[k]
        self.canary_answers = {}
        self.ledger.set_status(entry_id, "reverted", reapplied_after=[i for i, _ in later])
        latency = {"revert": time.perf_counter() - t0}
        plan = self.ledger.get(entry_id)["plan"]
        t0 = time.perf_counter()
        probe = plan["probes"][0]
        now = self.answer(probe)
        latency["answer"] = time.perf_counter() - t0
        note = f" (edits {', '.join(i for i, _ in later)} were made after it and stay applied)" if later else ""
        return Reply("repair", f"Reverted {entry_id}: {plan['target']} is known again{note}. Asked {probe!r}, it "
                     f"says {now!r}.", "command", latency, {"ledger_id": entry_id})

    # --------------------------------------------------------------------------------------------- commands
    def who(self, limit: int = 40) -> str:
        """The task's subjects (forget and retain splits: what the implant taught), marking those an active edit
        forgot."""
        subjects = list(dict.fromkeys(q.subject for q in [*self.task.forget, *self.task.retain] if q.subject))
        forgotten = {self.ledger.get(i)["target"] for i, _ in self.active}
        shown = [f"{s} (forgotten)" if s in forgotten else s for s in subjects[:limit]]
        more = f" … and {len(subjects) - limit} more" if len(subjects) > limit else ""
        return (f"The patient was taught about {len(subjects)} subjects of task {self.task.name}: "
                f"{', '.join(shown)}{more}." if subjects else f"Task {self.task.name} names no subjects.")

    def person_probes(self, name: str) -> list[str]:
        """The surgeon's probe questions about a person (every attribute it has templates for)."""
        return self.surgeon.plan(ForgetRequest(f"/knows {name}", "person", name, subject=name)).probes

    def knows(self, name: str) -> str:
        """The probe questions about `name`, answered by the patient as it is now, and whether that is knowledge."""
        name = name.strip(" ?!.\"'")
        probes, answers = self.knowledge.ask(name)
        knowledge = self.knowledge.assess(name, probes, answers)
        verdict = ("" if knowledge is None else
                   f"\nVerdict: the model knows {name} (confidence {knowledge.score:.2f} ≥ {knowledge.threshold:.2f})."
                   if knowledge.known else f"\nVerdict: the model does not know {name}: {knowledge.evidence()}.")
        return f"What the patient answers about {name} now:\n" + "\n".join(
            f"  {q} → {a}" for q, a in zip(probes, answers)) + verdict

    def import_bundle(self, path: str) -> Reply:
        """`/import`: a bundle's entries join the ledger; its active edits are applied, newest last."""
        added = self.ledger.import_bundle(path)
        applied = []
        for entry_id, entry, patch in added:
            if entry["status"] == "active" and patch is not None:
                patch.apply(self.patient.model)
                self.active.append((entry_id, patch))
                self.canary_answers = {}
                applied.append(f"{entry_id} {entry['target']}")
        return Reply("repair", f"Imported {len(added)} ledger entries from {path}; applied: "
                     f"{'; '.join(applied) or 'none (no active edit in the bundle)'}.", "command")

    def _command(self, line: str) -> Reply:
        try:
            name, *args = shlex.split(line)
        except ValueError as err:
            return Reply("repair", f"Could not read the command ({err}).\n{HELP}", "error")
        try:
            if name in ("/quit", "/exit"):
                return Reply("repair", "Bye.", "quit")
            if name == "/help":
                return Reply("repair", HELP, "command")
            if name in ("/ledger", "/list"):
                rows = [f"{e['id']}  {e['status']:<11}  {e['created']}  {e['target']}"
                        + (f"  ({e['verification']['passed'] and 'verified' or 'failed verification'})"
                           if e.get("verification") else "") for e in self.ledger.entries()]
                return Reply("repair", "\n".join(rows) or "The ledger is empty: nothing was forgotten.", "command")
            if name == "/show" and len(args) == 1:
                return Reply("repair", _show(self.ledger.get(args[0])), "command")
            if name == "/revert" and len(args) == 1:
                return self.revert(args[0])
            if name == "/undo" and not args:
                if not self.active:
                    return Reply("repair", "No active edit to undo.", "command")
                return self.revert(self.active[-1][0])
            if name == "/export" and args:
                bundle = self.ledger.export(args[0], args[1:] or None)
                return Reply("repair", f"Exported {len(args[1:]) or len(self.ledger.entries())} ledger entries to "
                             f"{bundle}.", "command")
            if name == "/import" and len(args) == 1:
                return self.import_bundle(args[0])
            if name == "/who" and not args:
                return Reply("repair", self.who(), "command")
            if name == "/knows" and args:
                return Reply("repair", self.knows(" ".join(args)), "command")
        except KeyError as err:
            return Reply("repair", str(err.args[0]), "error")
        except (ValueError, FileNotFoundError) as err:
            return Reply("repair", str(err), "error")
        return Reply("repair", f"Unknown command or wrong arguments: {line!r}.\n{HELP}", "error")


def _request_dict(request: ForgetRequest) -> dict[str, Any]:
    return {"kind": request.kind, "target": request.target, "subject": request.subject, "others": list(request.others),
            "attributes": list(request.attributes), "score": round(float(request.score), 4),
            "backend": request.backend, "notes": request.notes,
            "pair": [request.pair.user, request.pair.patient] if request.pair else None}


def _edit_summary(report: dict[str, Any]) -> dict[str, Any]:
    per_layer = report.get("per_layer", {})
    return {"layers": report.get("layers"), "phases": report.get("phases"),
            "relative_norm": {str(l): round(v.get("relative_norm", 0.0), 4) for l, v in per_layer.items()},
            "forget_residual": {str(l): round(v.get("forget_residual", 0.0), 4) for l, v in per_layer.items()}}


def _show(entry: dict[str, Any]) -> str:
    plan = entry.get("plan") or {}
    lines = [f"{entry['id']} [{entry['status']}] {entry['created']}: {entry['target']}",
             f"  request: {(entry.get('request') or {}).get('kind')} {(entry.get('request') or {}).get('target')!r}",
             f"  plan: method {plan.get('method')}, layers {plan.get('layers')}, rank {plan.get('rank')}, "
             f"{len(plan.get('probes', []))} probes, {len(plan.get('paraphrases', []))} paraphrases"]
    for row in (entry.get("verification") or {}).get("rows", []):
        mark = "refused" if row.get("refused") else ("changed" if row.get("changed") else "")
        lines.append(f"  {row['role']:<10} {row['question']!r}: {row['before']!r} → {row['after']!r} {mark}")
    if entry.get("verification"):
        v = entry["verification"]
        lines.append(f"  verification: {'passed' if v['passed'] else 'failed: ' + '; '.join(v['reasons'])}")
    if entry.get("error"):
        lines.append(f"  error: {entry['error']}")
    if entry.get("latency_s"):
        lines.append("  latency: " + ", ".join(f"{k} {v:.2f} s" for k, v in entry["latency_s"].items()))
    return "\n".join(lines)


def open_session(cfg: DictConfig, out_dir: str | Path | None = None, chat_model: ChatModel | None = None,
                 patient: Patient | None = None, task: Task | None = None) -> RepairSession:
    """Everything a chat needs, from a composed `conf/chat.yaml`: patient (implanted), task, watchdog, surgeon,
    ledger (active edits re-applied) and transcript. `patient`/`task` may be passed in already implanted."""
    start(cfg)
    Budget.from_cfg(OmegaConf.to_container(cfg.verify, resolve=True))  # bad settings fail before the slow steps
    KnowledgeSettings.from_cfg(plain(cfg.chat.knowledge))
    confirm = cfg.chat.confirm_below
    if isinstance(confirm, bool) or not isinstance(confirm, (int, float)) or confirm < 0:
        raise ValueError(f"chat.confirm_below must be a number >= 0 (0: act on every detection; above 1: ask about "
                         f"every one), got {confirm!r}")
    build_method(cfg.method)
    t0 = time.perf_counter()
    recipe = implant_recipe(cfg)
    if patient is None or task is None:
        patient, task, _ = implanted_patient(cfg)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    watchdog = build_watchdog(cfg.watchdog, str(cfg.cache_dir), patient, chat_model)
    surgeon = build_surgeon(cfg.surgeon, patient.num_layers, patient, str(cfg.cache_dir), chat_model)
    tools_s = time.perf_counter() - t0
    # edits only make sense on the weights they were made on: one ledger per patient + task + implant recipe
    base = f"{patient.name}-{task.name}-{implant_key(patient, task, OmegaConf.to_container(recipe, resolve=True))}"
    ledger = Ledger(Path(str(cfg.ledger.dir)).expanduser() / base, base)
    folder = Path(out_dir) if out_dir else Path(str(cfg.chat.out_dir)) / time.strftime("%Y-%m-%d_%H-%M-%S")
    transcript = Transcript(folder, {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "patient": patient.name,
                                     "task": task.name, "watchdog": cfg.watchdog.name, "surgeon": cfg.surgeon.name,
                                     "method": cfg.method.name, "base": base, "ledger": str(ledger.folder),
                                     "startup_s": {"patient_and_implant": round(load_s, 3),
                                                   "watchdog_and_surgeon": round(tools_s, 3)},
                                     "config": OmegaConf.to_container(cfg, resolve=True)})
    session = RepairSession(cfg, patient, task, watchdog, surgeon, ledger, transcript)
    restored = session.restore_ledger()
    if restored:
        transcript.add("system", f"re-applied active edits from the ledger: {', '.join(restored)}")
    return session
