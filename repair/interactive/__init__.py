"""Interactive RePAIR: a chat with the patient where a watchdog spots requests to forget, a surgeon turns them into a
validated RepairPlan, and the session applies a reversible STAMP patch, verifies it and keeps or rolls it back.

    watchdog.detect(message, history) → ForgetRequest | None
    surgeon.plan(request)             → RepairPlan (declarative, validated; never code)
    session.apply(plan)               → patch → verify → keep (ledger) or roll back
"""
