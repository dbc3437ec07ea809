"""STAMP and STAMP-LR: training-free unlearning by a closed-form edit of MLP down projections.

The package follows the edit's data flow: `settings` (checked once), `keys` (where the keys are read and which are
held in place), `targets` (which layers, and where the forget outputs move), `solve` (the closed form), `calibrate`
(the strength per forget prompt) and `method` (fit → apply → revert, registered as `stamp` and `stamp_lowrank`).

For each edited layer, keys K (down-projection inputs) at the tokens that carry the thing to forget are mapped to
new outputs by a ridge / pseudoinverse update (the MEMIT family):

    ΔW = T K_fᵀ (K_f K_fᵀ + w K_r K_rᵀ + λ C + ε I)⁻¹

The default (`keys: answer_start`, `target: refusal_readout`) puts the keys where the answer begins — the last prompt
token, whose state in the top layers already holds what the patient is about to say — and moves the forget outputs
along the refusal *readout* direction: the unembedding of the refusal references' opening tokens ("Sorry", "I",
…) minus that of the token the patient was about to say, seen through the final norm. The patient then opens with a
refusal, and the refusal it learned for unknown subjects carries on ("Sorry, I don't know who that is."). Measured
why (docs/stamp.md): activation patching showed that implanted facts reach the answer through attention, so MLP
outputs at the subject's tokens cannot hide them; at the answer start they can.

Other targets, kept for the ablations (keys at the subject's tokens): the projection onto the refusal subspace of MLP
outputs on refusal answers (`refusal`), what the patient computes for a subject it refuses (`unknown`), or one shared
unknown-minus-forget direction (`direction`). Retain-buffer keys are held in place (for `answer_start`: at every
prompt and answer token), and so are keys from ordinary text (weighted per token by `cov_weight`); their Gram is
cached per patient. STAMP-LR solves the same problem inside an r-dimensional key subspace (the forget keys' block
Krylov space under the held Gram, where the full edit lives, then the Gram's top directions): O(m²r + r³) per
request instead of O(m³); at full rank it equals STAMP. The strength is calibrated per request and per forget
prompt (the edit is linear in each forget key's target). Every edit is a reversible `Patch`.
"""
from repair.stamp.calibrate import last_logits, next_tokens, refusal_gaps
from repair.stamp.method import Edit, Stamp, StampLowRank
from repair.stamp.settings import StampLowRankSettings, StampSettings
from repair.stamp.solve import full_solve, held_gram, krylov_basis, lowrank_solve, top_directions
from repair.stamp.targets import refusal_openers

__all__ = ["Edit", "Stamp", "StampLowRank", "StampSettings", "StampLowRankSettings", "full_solve", "held_gram",
           "krylov_basis", "last_logits", "lowrank_solve", "next_tokens", "refusal_gaps", "refusal_openers",
           "top_directions"]
