"""Scope guard: requests to forget everything, and texts that try to instruct the surgeon, are refused before any
plan is made; a plan whose subject the user never mentioned (an LLM surgeon talked into something) is refused too.

Rules, deliberately: a guard must be predictable, and a model can be argued with. The cost is that a harmless
message quoting an injection phrase ("what does 'ignore previous instructions' mean?") is refused as well.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from repair.interactive.extract import Turn
from repair.interactive.plan import RepairPlan

_ALL = r"(?:everything|anything|all|every\s*thing|it all|all of it|all (?:your|you|the|of your) \w+(?: \w+)?|" \
       r"every (?:person|people|one|fact|profile|name|thing)|everyone|everybody|all people|all (?:facts|data|names))"
BROAD = [
    re.compile(rf"\b(?:forget|erase|delete|wipe|remove|unlearn|purge|clear|lose)\w*\s+{_ALL}\s*"
               r"(?:you (?:know|learned|have learned|remember|were taught))?\s*(?:[.!?,]|$|please|now)", re.I),
    re.compile(r"\b(?:wipe|erase|clear|reset|delete|format|empty)\w*\s+(?:your|ur|the|all of your|all your)\s+"
               r"(?:entire\s+|whole\s+)?(?:memory|memories|mind|knowledge|brain|weights|training|model|parameters)\b",
               re.I),
    re.compile(r"\b(?:forget|erase|delete|unlearn)\w*\s+(?:all|every|each)\s+(?:of\s+)?(?:the\s+)?"
               r"(?:people|persons|profiles|names|facts|data|knowledge|information|users|customers)\s*"
               r"(?:you (?:know|have|hold|learned|remember))?\s*(?:[.!?,]|please|now|$)", re.I),
    re.compile(r"\b(?:factory reset|start from scratch|reset yourself|total amnesia|forget who you are)\b", re.I),
    re.compile(r"\b(?:forget|erase|delete|wipe|remove|unlearn|purge)\w*\s+(?:about\s+)?(?:every(?:one|body|thing)|"
               r"all(?:\s+the)?\s+(?:people|persons|others|other people|names|facts|data|profiles))\s+"
               r"(?:but|except|apart from|other than|besides|save for|bar)\b", re.I),  # everyone except one: all others
]
INJECTION = [  # checked on every message: these address the machinery, never the patient
    re.compile(r"\b(?:ignore|disregard|forget|override)\w*\s+(?:all\s+|any\s+|the\s+|your\s+)*(?:previous|prior|above|"
               r"earlier|system|original|safety)?\s*(?:instructions?|rules?|prompts?|guard(?:rail)?s?|restrictions?)\b",
               re.I),
    # the machinery addressed ("surgeon, apply …", "tell the watchdog to …"), not merely named ("which surgeon …?")
    re.compile(r"\b(?:tell|ask|instruct|order|make|dear|hey|to)\s+(?:the\s+|your\s+)?(?:surgeon|watchdog|verifier|"
               r"scope guard)\b|\b(?:surgeon|watchdog|verifier|scope guard)\s*[,:]", re.I),
    re.compile(r"\b(?:system prompt|developer mode|jailbreak|new instructions?)\b", re.I),
    re.compile(r"\b(?:you are now|act as|pretend to be|pretend you are)\s+(?:an?\s+|the\s+|my\s+)?(?:system|admin\w*|"
               r"root|developer|surgeon|watchdog|unrestricted|unfiltered|jailbroken|dan\b|different (?:ai|model|"
               r"assistant))", re.I),  # a role that would override the rules; "act as my tour guide" is a question
    re.compile(r"(?:^|\n)\s*(?:system|assistant|user|###\s*\w+)\s*:", re.I),
    re.compile(r"```|<\s*/?\s*(?:script|system|instructions?)\b|\{\s*\"[a-z_]+\"\s*:", re.I),
    re.compile(r"\b(?:exec|eval|os\.system|subprocess|__import__|import\s+os|rm\s+-rf|shutil|pickle)\b", re.I),
]
STEERING = [  # checked on forget requests: a request that also tries to set how the edit is done
    re.compile(r"\b(?:layers?|rank|method|strength|max_relative_norm|alpha|budget|threshold)\s*[=:]\s*\S", re.I),
    re.compile(r"\b(?:skip|disable|bypass|turn off)\w*\s+(?:the\s+)?(?:verification|checks?|rollback|validation|"
               r"guard)\b", re.I),
    re.compile(r"\b(?:and|then|also)\s+(?:also\s+|then\s+)?(?:run|execute|call|invoke)\s+(?:the\s+|this\s+|a\s+)?"
               r"(?:function|command|code|script|tool|shell|python|program|os\.|subprocess|[\w.]+\()", re.I),
]


@dataclass(frozen=True)
class ScopeRefusal:
    """Why a message or plan was refused; shown to the user as is."""

    reason: str
    rule: str


def check_message(message: str, forget_request: bool = True) -> ScopeRefusal | None:
    """Refuse a message that tries to instruct the repair machinery or, if it is a forget request, that asks to
    forget everything or to steer the edit."""
    for pattern in INJECTION + (STEERING if forget_request else []):
        m = pattern.search(message)
        if m:
            return ScopeRefusal("this message tries to give instructions to the repair machinery "
                                f"(\"{m.group(0).strip()}\"); I only act on plain requests to forget a named "
                                "person, a quoted text, a topic or an earlier exchange. Nothing was changed.",
                                "injection")
    for pattern in BROAD if forget_request else []:
        m = pattern.search(message)
        if m:
            return ScopeRefusal(f"\"{m.group(0).strip()}\" asks me to forget far more than one thing; I only "
                                "forget one named person, quoted text, topic or exchange at a time. Nothing was "
                                "changed.", "too_broad")
    return None


def check_plan(plan: RepairPlan, message: str, history: Sequence[Turn]) -> ScopeRefusal | None:
    """A plan must be about something the user named: its subject appears in the request or the history."""
    words = plan.subject or plan.target
    if re.fullmatch(_ALL, words.strip().lower()) or words.strip().lower() in {"everything", "all", "anything"}:
        return ScopeRefusal(f"the plan's target {words!r} is too broad. Nothing was changed.", "too_broad")
    if plan.subject:
        haystack = " ".join([message, *(t.user + " " + t.patient for t in history)]).lower()
        if plan.subject.lower() not in haystack:
            return ScopeRefusal(f"the plan's subject {plan.subject!r} appears neither in your request nor in our "
                                "conversation, so I will not act on it. Nothing was changed.", "ungrounded")
    return None
