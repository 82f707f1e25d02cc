"""PROVISIONAL model `provisional-rules-0`: a transparent rule scorer standing in for the trained one.

It exists so the pipeline can run end to end before the detection model is trained; it is not
the product's model and says so in its version (every alert names it). Each rule is a condition
on features (all listed features at or above a minimum, optionally *unless* another fires), a
tactic and a weight. The weights of fired rules add up to a logit per class; benign has a fixed
logit, and a softmax turns logits into probabilities, so the `Model` protocol holds exactly and
the contribution of every rule is its weight (attributed to the rule's first feature).

Rules on a process's own command line (`self_*`) and own counters (`own_*`) are repeated at 80 %
weight for what its descendants did (`desc_*`, and `sub_*` unless the process did it itself), so
the ancestor that launched the behaviour scores as malicious too and becomes the subtree's root.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pipeline.features import FEATURE_NAMES, FEATURE_VERSION, feature_index
from pipeline.scoring import BENIGN, CLASSES, TACTICS, Matrix

IA, EX, PE, PR, DE, CA, DI, LM, CO, C2, EF, IM = TACTICS


@dataclass(frozen=True, slots=True)
class Rule:
    """All `when` features >= their minimum (and `unless` below its minimum) adds `weight` to `tactic`."""

    when: tuple[tuple[str, float], ...]
    tactic: str
    weight: float
    unless: tuple[str, float] | None = None


def _r(tactic: str, weight: float, *names: str, at_least: float = 1.0) -> Rule:
    return Rule(tuple((n, at_least) for n in names), tactic, weight)


BASE_RULES: tuple[Rule, ...] = (
    _r(IA, 5.5, "pair_office_tool"),
    _r(IA, 6.0, "pair_webserver_shell"),
    _r(IA, 3.0, "pair_browser_tool"),
    _r(IA, 5.0, "img_office", "own_child_shell"),
    _r(IA, 5.0, "img_office", "own_child_lolbin"),
    _r(EX, 4.0, "self_encoded_command"),
    _r(EX, 3.0, "self_invoke_expression"),
    _r(EX, 3.0, "self_obfuscation"),
    _r(EX, 5.5, "self_pipe_to_shell"),
    _r(EX, 4.0, "self_wmi_execution"),
    _r(EX, 3.5, "pair_wmi_shell"),
    _r(EX, 1.0, "self_inline_interpreter"),
    _r(EX, 2.0, "self_hidden_execution"),
    _r(PE, 6.0, "self_registry_run_key"),
    _r(PE, 3.5, "self_scheduled_task"),
    _r(PE, 3.5, "self_service_install"),
    _r(PE, 5.0, "self_account_create"),
    _r(PE, 5.0, "own_reg_run"),
    _r(PE, 5.0, "own_fw_startup"),
    _r(PE, 5.0, "own_fw_cron"),
    _r(PE, 3.5, "own_fw_service_unit"),
    _r(PE, 5.5, "own_reg_winlogon"),
    _r(PE, 3.0, "own_fw_shell_profile"),
    _r(PE, 2.5, "own_reg_com_hijack"),
    _r(PE, 3.0, "own_fw_ssh"),
    _r(PE, 2.5, "self_ssh_keys"),
    _r(PE, 2.0, "own_reg_services"),
    _r(PR, 4.0, "self_privilege_escalation"),
    _r(PR, 5.5, "own_reg_ifeo"),
    _r(PR, 3.0, "own_remote_thread_system"),
    _r(DE, 6.5, "self_log_clear"),
    _r(DE, 6.0, "self_defense_tamper"),
    _r(DE, 4.5, "self_proxy_execution"),
    _r(DE, 3.0, "self_hide_artifacts"),
    _r(DE, 5.0, "own_reg_defense"),
    _r(DE, 3.0, "img_masquerade"),
    _r(DE, 5.0, "img_double_ext"),
    _r(DE, 3.5, "self_dll_sideload_path"),
    _r(DE, 2.5, "self_base64_decode"),
    _r(DE, 3.0, "own_remote_thread"),
    _r(CA, 6.5, "self_credential_tool"),
    _r(CA, 5.0, "own_lsass_read"),
    _r(CA, 3.0, "own_lsass_write"),
    _r(CA, 4.0, "self_memory_dump"),
    _r(CA, 1.5, "own_load_credential"),
    _r(DI, 1.5, "self_identity_discovery"),
    _r(DI, 3.0, "self_domain_discovery"),
    _r(DI, 1.2, "self_system_discovery"),
    _r(DI, 2.0, "self_network_discovery"),
    _r(DI, 3.0, "self_security_discovery"),
    _r(DI, 2.0, "own_child_admin_tool", at_least=4),
    _r(LM, 4.5, "self_remote_execution"),
    _r(LM, 2.5, "own_net_lateral_port", at_least=3),
    _r(CO, 4.5, "self_data_collection"),
    _r(CO, 1.5, "self_archive_data"),
    _r(CO, 1.0, "own_fw_archive"),
    _r(C2, 6.5, "self_reverse_shell"),
    _r(C2, 5.0, "self_tunnel_proxy"),
    _r(C2, 4.0, "self_download_cradle"),
    _r(C2, 2.5, "self_remote_access_tool"),
    _r(C2, 1.5, "own_net_nonstd_port", "own_net_external"),
    _r(C2, 1.0, "self_url_literal"),
    _r(C2, 1.0, "self_ip_literal"),
    _r(EF, 5.0, "self_exfil_transfer"),
    _r(EF, 2.0, "sub_fw_archive", "own_net_external"),
    _r(IM, 7.0, "self_shadow_copy_delete"),
    _r(IM, 3.5, "self_file_wipe"),
    _r(IM, 4.0, "self_ransom_encrypt"),
    _r(IM, 6.0, "own_rename_uncommon_ext", at_least=10),
    _r(IM, 3.0, "own_file_delete_backup"),
    _r(IM, 1.5, "self_kill_processes"),
)
INHERITED_SHARE = 0.8
BENIGN_LOGIT = 4.0
THRESHOLDS: Mapping[str, float] = {"malicious": 0.7}


def _inherited(rule: Rule) -> Rule | None:
    """The same rule about descendants, or None when it is not about the process's own behaviour."""
    first = rule.when[0][0]
    if len(rule.when) == 1 and first.startswith("self_"):
        return Rule((("desc_" + first[5:], rule.when[0][1]),), rule.tactic, rule.weight * INHERITED_SHARE)
    if len(rule.when) == 1 and first.startswith("own_"):
        return Rule(
            (("sub_" + first[4:], rule.when[0][1]),),
            rule.tactic,
            rule.weight * INHERITED_SHARE,
            unless=rule.when[0],
        )
    return None


RULES: tuple[Rule, ...] = BASE_RULES + tuple(r for r in map(_inherited, BASE_RULES) if r is not None)


class ProvisionalRules:
    """`Model` implementation over `RULES`; labelled provisional in its version."""

    VERSION = "provisional-rules-0"

    def __init__(self, rules: tuple[Rule, ...] = RULES) -> None:
        self.rules = rules
        # Every condition of every rule as one column test; a rule fires when all of its own hold.
        conditions = [
            [(feature_index(n), m, False) for n, m in r.when]
            + ([] if r.unless is None else [(feature_index(r.unless[0]), r.unless[1], True)])
            for r in rules
        ]
        flat = [c for conds in conditions for c in conds]
        self._cond_columns = np.array([c for c, _, _ in flat], dtype=np.int64)
        self._cond_minimums = np.array([m for _, m, _ in flat], dtype=np.float32)
        self._cond_negated = np.array([neg for _, _, neg in flat], dtype=bool)
        self._rule_offsets = np.cumsum([0] + [len(c) for c in conditions[:-1]])
        self._anchor = np.array([feature_index(r.when[0][0]) for r in rules], dtype=np.int64)
        self._class = np.array([CLASSES.index(r.tactic) for r in rules])
        self._weight = np.array([r.weight for r in rules], dtype=np.float32)
        self._weights = np.zeros((len(rules), len(CLASSES)), dtype=np.float32)
        self._weights[np.arange(len(rules)), self._class] = self._weight
        self._bias = np.zeros(len(CLASSES), dtype=np.float32)
        self._bias[CLASSES.index(BENIGN)] = BENIGN_LOGIT

    @property
    def version(self) -> str:
        """Always contains 'provisional'."""
        return self.VERSION

    @property
    def feature_version(self) -> str:
        """The live FEATURE_VERSION: the rules are written against feature names."""
        return FEATURE_VERSION

    @property
    def classes(self) -> tuple[str, ...]:
        """Benign then the 12 tactics."""
        return CLASSES

    @property
    def thresholds(self) -> Mapping[str, float]:
        """Only a malicious cut-off; any dominant tactic is named."""
        return THRESHOLDS

    def fired(self, matrix: Matrix) -> NDArray[np.bool_]:
        """(rows, rules) boolean: which rules fire on which rows (one vectorised pass)."""
        held = (matrix[:, self._cond_columns] >= self._cond_minimums) != self._cond_negated
        return np.logical_and.reduceat(held, self._rule_offsets, axis=1)

    def _logits(self, fired: NDArray[np.bool_]) -> Matrix:
        return np.asarray(fired.astype(np.float32) @ self._weights + self._bias, dtype=np.float32)

    def predict_proba(self, matrix: Matrix) -> Matrix:
        """Softmax of the summed rule weights per class."""
        logits = self._logits(self.fired(matrix))
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return np.asarray(exp / exp.sum(axis=1, keepdims=True), dtype=np.float32)

    def contributions(self, matrix: Matrix) -> Matrix:
        """Each fired rule's weight, on its first feature, for its class; the bias in the last column."""
        rows, rules = np.nonzero(self.fired(matrix))
        out = np.zeros((len(matrix), len(CLASSES), len(FEATURE_NAMES) + 1), dtype=np.float32)
        np.add.at(out, (rows, self._class[rules], self._anchor[rules]), self._weight[rules])
        out[:, :, -1] = self._bias
        return out
