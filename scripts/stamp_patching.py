"""Where can an MLP edit make the patient refuse? Activation patching on the implanted default patient (pii).

    python scripts/stamp_patching.py

For forget questions, the MLP outputs at chosen positions and layer windows are replaced by what the patient computes
for the same question about a subject it refuses (an `idk` person); the number printed is the probability that the
answer opens like a refusal ("Sorry", "I", …). A second table pushes the last prompt token's output in the top layers
along the refusal readout (refusal openers' unembedding minus the token about to be said) by c. Findings:
docs/stamp.md ("Why the answer start").
"""
from __future__ import annotations


import torch

from repair.data import chat_prompt
from repair.refusal import token_positions
from repair.setup import compose, implanted_patient

OPENERS = ["I", "Sorry", "Unfortunately", "To", "Hmm", "I'm"]


def main() -> None:
    torch.set_num_threads(1)
    cfg = compose("config", ["method=none", "logger=none", "task=pii"])
    patient, task, _ = implanted_patient(cfg)
    tok, n_layers = patient.tokenizer, patient.num_layers
    opener_ids = sorted({tok(p + s, add_special_tokens=False)["input_ids"][0] for s in OPENERS for p in ("", " ")})
    unknown = sorted({q.subject for q in task.idk})[0]

    @torch.no_grad()
    def refusal_prob(ids, patch=None):
        """P(refusal opener) at the last position; patch = {layer: (positions, new outputs)}; also the outputs."""
        hooks, outputs = [], {}
        for layer in range(n_layers):
            def hook(module, inputs, output, layer=layer):
                outputs[layer] = output[0].clone()
                if patch and layer in patch:
                    output = output.clone()
                    output[0, patch[layer][0]] = patch[layer][1]
                    return output
            hooks.append(patient.module("mlp_down", layer).register_forward_hook(hook))
        logits = patient.model(input_ids=torch.tensor([ids])).logits[0, -1]
        for h in hooks:
            h.remove()
        return float(logits.softmax(-1)[opener_ids].sum()), outputs, int(logits.argmax())

    windows = [list(range(a, min(a + 6, n_layers))) for a in range(0, n_layers, 6)] + [list(range(n_layers))]
    print("| question | positions | " + " | ".join(f"layers {w[0]}–{w[-1]}" for w in windows) + " |")
    print("|---|---|" + "---|" * len(windows))
    for q in task.forget[:3]:
        f_text, u_text = chat_prompt(tok, q.question), chat_prompt(tok, q.question.replace(q.subject, unknown))
        f_ids, u_ids = (tok(t, add_special_tokens=False)["input_ids"] for t in (f_text, u_text))
        f_span, u_span = token_positions(tok, f_text, q.subject), token_positions(tok, u_text, unknown)
        _, f_out, _ = refusal_prob(f_ids)
        p_unknown, u_out, _ = refusal_prob(u_ids)
        k = min(len(f_span), len(u_span))
        groups = {"subject": (f_span[-k:], u_span[-k:]), "last 6 prompt tokens": (
            list(range(len(f_ids) - 6, len(f_ids))), list(range(len(u_ids) - 6, len(u_ids)))),
            "subject end → prompt end": (list(range(f_span[-1], len(f_ids))), list(range(u_span[-1], len(u_ids))))}
        for name, (fp, up) in groups.items():
            cells = [refusal_prob(f_ids, {l: (fp, u_out[l][up]) for l in w})[0] for w in windows]
            print(f"| {q.question} (unknown subject: {p_unknown:.2f}) | {name} | "
                  + " | ".join(f"{c:.2f}" for c in cells) + " |", flush=True)

    print("\n| question | layers | c=100 | c=200 | c=400 |\n|---|---|---|---|---|")
    unembed = patient.model.get_output_embeddings().weight.detach()
    for q in task.forget[:3]:
        ids = tok(chat_prompt(tok, q.question), add_special_tokens=False)["input_ids"]
        _, outs, top = refusal_prob(ids)
        d = unembed[opener_ids[:2]].mean(0) - unembed[top]
        d = d / d.norm()
        for layers in ([n_layers - 1], [n_layers - 2, n_layers - 1]):
            cells = [refusal_prob(ids, {l: ([len(ids) - 1], outs[l][[len(ids) - 1]] + c * d) for l in layers})[0]
                     for c in (100, 200, 400)]
            print(f"| {q.question} | {layers} | " + " | ".join(f"{c:.2f}" for c in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
