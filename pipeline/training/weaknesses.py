"""The model card's "Known weaknesses" section: what the measurements cannot show, and the history of
what was changed after looking at which numbers (a card that hides what was tuned on dev overstates
it). Plain text kept apart from `card.py`, which renders the measured parts; edit it when a retrain
changes the recipe, then run `ringfence train`.
"""

WEAKNESSES = """## Known weaknesses
- **Labels of lab data are heuristic.** Attack trees are found by matching the adversary's console
  transcript; in-memory tooling that starts no process (Covenant grunts, most Empire modules) leaves
  recordings unlabelled, and background processes of an attack recording that the matcher misses are
  counted as benign (so some "false alerts" on dev lab data are real attack activity).
- **Most malicious examples are simulated.** CommandAndControl, Exfiltration and Impact have no lab
  examples at all; InitialAccess and Collection one or two. Their quality on real attacks is unknown
  beyond the held-out simulated trees, which share the generators' assumptions.
- **Single-event recordings** (one Security 4688 line) carry only a command line: detection then rests on
  command-line indicators and the image's role, and tactics that look alike there (Discovery vs Execution
  vs DefenseEvasion) are confused more often.
- **Linux benign data is thin**: three short captured sessions plus simulated workloads.
- Thresholds are calibrated on simulated benign trees plus a little real background; a fleet's own
  software (admin scripts, updaters) may need exclusions or recalibration, which `ringfence evaluate` on
  that fleet's data would show.
- **Dev is not untouched.** The benign weight share (50 %) and the threshold floors (0.6, Generic 0.98)
  were chosen in an earlier session by comparing a few settings on the dev numbers above (held-out labs
  and .evtx samples; the second booster's 0.5, in session S, on the dev trees and the probes: below), so
  those numbers are somewhat optimistic; the held-out labs are few (19 labelled
  attack recordings, three tactics) and the .evtx samples six. The false-alert budget rule (a 90 % upper
  confidence bound, one unit of it charged to each class bound by a benign tree) replaced the fixed 70 %
  margin after retrains measured 1.3-1.8 false alerts per 1,000 benign dev trees; each rule was tried once
  and kept on its principle. The same booster with the bound alone (no charge per class) measured more on
  the recordings but 1.78 false alerts per 1,000 dev trees and was not chosen. Until session V the
  calibration split alone set the thresholds, and the charge pushed Persistence and `generic` near 1.0
  (below).
- **Both boosters' thresholds are calibrated together since session AC** (this model: `4cb2571784`'s two
  boosters bit for bit, `train.calibrate_views`). Calibrated apart, the second booster spent a budget of
  the ~16,000 benign trees routed to it (a sixteenth of the first's), and the full booster kept 1.2's
  thresholds, calibrated on 1.2's data. Now one budget (1 per 1,000 at 90 %, the same rule) covers the
  calibration and threshold-only trees of both, every row judged by the booster the stream routes it to,
  and the second booster's `generic` (an alert naming no tactic) is floored at 0.8 instead of 0.98.
  Thresholds that moved: second booster Persistence 0.561 -> 0.500, Discovery 0.701 -> 0.572,
  CredentialAccess 0.851 -> 0.761, `generic` 0.98 -> 0.80; full booster Persistence 0.706 -> 0.737 (1.3's
  data alone moves it to 0.730), PrivilegeEscalation 0.604 -> 0.629, DefenseEvasion 0.684 -> 0.696,
  Collection 0.683 -> 0.708, CommandAndControl 0.720 -> 0.778, Impact 0.866 -> 0.886. Measured against
  `4cb2571784`: all dev **1.02 -> 0.95** false alerts per 1,000 benign trees (15 -> 14 of 14,730; outside
  the lone-command simulations 0.59 -> 0.44, 4 -> 3 of 6,789), dev attack trees detected 1,839 -> 1,871
  of 2,954; held-out labs 95 / 79 % and 0 of 404 benign trees both (top-scoring alert right 58 -> 63 %;
  three recordings lose a second alert: Collection 0.94 on two LSASS campaigns, PrivilegeEscalation 0.96
  on a netprofm one); .evtx 4 of 6 both (the firewall enumeration's `netsh advfirewall show allprofiles`
  scores Discovery 0.570, now against 0.572); probes 62 / 56 -> **67 / 58 %** (`sc failure ...
  command=`, `at ... /interactive`, named Persistence, and the encoded PowerShell launcher, named Generic,
  gained). The pipeline benchmark's generated fleet alerts less (its shells' Collection alerts). **Chosen
  looking at dev and the probes:** the joint budget alone (the second booster's `generic` at 0.98) gave
  dev 1.02 / 0.59, 1,859 trees, probes 65 / 58 %; its `generic` at 0.7 or 0.6, dev 1.02 / 0.44 and 1,874
  or 1,875 trees. **Measured and not kept** (the same boosters, thresholds only, calibrated apart as
  before): a budget of 2 per 1,000 (probes 67 %, but all dev 1.49 and 0.74 outside the lone-command
  simulations), 1.5 per 1,000 at 50 % confidence (probes 65 %, all dev 1.15), 1 per 1,000 at 50 %
  confidence (dev unchanged, probes 62 %): a larger budget buys probes with dev false alerts, a shared one
  bought them with none. **What the shared budget risks:** it prices a threshold by the calibration attack
  trees it catches, nearly all simulated, and a held-out lab recording is one tree among thousands. A
  feature version 1.4 tried after this model (a `remote_fetch` indicator with its simulations and
  look-alikes; docs/DESIGN-NOTES.md) paid for its look-alikes' false alerts with the full booster's
  Persistence (0.737 -> 0.900) and Collection (0.708 -> 0.934) thresholds and lost the proxylogon web
  shell (held-out labs 95 -> 89 %); it was not kept. A change to either view is to be measured on the labs
  again, not only on the view it was made for.
- **What feature version 1.3 changed, and what was looked at to change it** (session AB,
  `ringfence-xgb-1.3-4cb2571784`, after `ringfence-xgb-1.2-752398b064`, commit 468e3a3). The full booster
  and its thresholds are 1.2's, bit for bit (`ringfence train --full-from`): a first retrain of it on 1.3's
  data, which differs from 1.2's only in the lone-command simulations, drew a worse fit (held-out labs 95 /
  79 -> 84 / 63 %, two of 406 lab benign trees alerted, .evtx 5 -> 4 of 6; the eventlog `MiniNt` and
  `wevtutil` recordings lost), as seeds do (below), so a change meant for the process-creation view is
  measured and shipped with the other view unchanged. Three lone-command indicators:
  `domain_enumeration` (the domain mapped as a whole: `net group "domain admins" /domain`, `net user
  /domain`, `net accounts /domain`, `net view \\\\host /all`, a wildcard `setspn -Q`, `nltest /dclist` or
  `/domain_trusts`, AdFind, PowerView, an LDAP searcher; not one named account looked up),
  `recovery_inhibit` (every shadow copy, backup catalogue or automatic recovery removed; not a backup
  tool's `/oldest` or `-keepVersions:3`) and `recovery_tool` (any vssadmin, wbadmin, bcdedit, diskshadow or
  shadow-copy use, so that a backup tool's retention reaches the second booster beside those attacks).
  Before, a lone `net group "domain admins" /domain` or `wmic shadowcopy delete` reached the full booster,
  which never trains on the lone-command simulations' attacks (`train.full_view_rows`) but does on the
  admins' look-alikes. New simulations: `win_lone3.lone_inhibit_recovery` (T1490 as 4688 shows it) and, in
  `win_benign_lone3`, `domain_review` (administrators' and audit jobs' reviews of Domain Admins, the
  password policy, DCs, trusts, stale accounts; weight 0.6, beside `spn_admin`'s 0.5) and
  `backup_retention` (vssadmin `/oldest`, wbadmin `-keepVersions`, shadow storage sizing, `bcdedit /enum`).
  Measured on the same sources (1.2 on its own dev set, which lacked the two new look-alike workloads):
  held-out labs 95 / 79 % both; .evtx **5 -> 4 of 6**; probes **55 / 49 -> 62 / 56 %** (30 / 27, then 34 /
  31 of 55; 0 of 30 benign probes both); all dev 0.88 -> **1.02** false alerts per 1,000 benign trees
  (outside the lone-command simulations 0.59 both: 4 of 6,789; the lone-command simulations 1.01 -> 1.39,
  11 of 7,941, two of them a `domain_review` and an `spn_admin` tree); dev Discovery trees detected 18 ->
  32 %, lone-command Impact trees 95 %. Gained probes: SPN enumeration, shares enumerated, shadow copies
  deleted by WMI, recovery disabled, the pktmon capture; lost: service permissions opened (`sc sdset`,
  Persistence 0.35 against the second booster's 0.56, 0.59 against 0.5 before). `net group "domain
  admins" /domain`, `net user /domain` and `net accounts /domain` still score 0.18-0.40, below the
  second booster's Discovery 0.70, as the look-alikes say administrators type them too. **The .evtx
  sample lost** is `wbadmin delete backup
  -backupTarget:m:\\ -deleteOldest`, Windows Server Backup's documented retention command (delete the
  oldest backup): 1.2's full booster called it Impact 0.93 through the broad 1.0 indicator; 1.3 routes it
  to the second booster as a recovery tool, which sees it as retention. Kept so: the indicators were
  written from the techniques' descriptions, and bending them to that sample would alert on every backup
  server's retention. **Looked at:** the probes' misses were in view when the indicators and simulations
  were written (session AA's diagnostics), so the probe gains are optimistic for these techniques.
  **Measured and not kept** (each with the full booster kept): `domain_enumeration` alone (probes 62 / 53
  %, all dev 0.82; it gained `sc failure ... command=` and `sc create` into a user-writable folder, lost the
  audit-policy query, and missed the Impact probes); `domain_review` at weight 0.1 instead of 0.6
  (rarer look-alikes score higher, and their top scores lifted the second booster's Discovery threshold
  from 0.81 to 0.915: probes 58 / 51 %, all dev 1.63); without `recovery_tool` (the backup-retention
  look-alikes reached the full booster, which alerted on 12 of them as Impact, a false alert 1.2 also
  raises on such commands: all dev 1.70, .evtx 5 of 6, probes 62 / 56 %). Session S's `domain_recon`
  (below) was the same idea with the full booster refitted and the second floored at 0.6.
- **Thresholds see three times the benign workloads again, drawn for them alone (session V; the boosters
  are `ringfence-xgb-1.2-b94977f9bd`'s, bit for bit).** Before, the first booster's thresholds saw the
  calibration split's 13,605 benign trees: a budget of 8 false alerts against 10 classes bound by a
  benign tree left nothing to spend, so each class a benign tree bound sat just above it, each letting
  about one new benign tree in 13,600 through, and all dev measured 1.16 per 1,000 (17 of 14,700); the
  second booster saw 815 and had no budget at all. Now `threshold_corpus` draws the corpus's benign
  workloads three times over, numbered apart (never trained on, never early stopping, never dev), and
  the budget is spent looking past several benign trees at a time: with about 240,000 calibration
  benign trees their top scores crowd together, and the one-tree step stopped after 25 of the 204 trees
  it could spend, where no single further tree caught an attack (on the same draw it left the thresholds
  higher than before: all dev 0.34 per 1,000, but held-out labs 89 /
  63 %, .evtx 4 of 6, probes 47 %). Measured on the same boosters, with b94977f9bd's thresholds, this
  model's (threshold-only trees for both boosters), another draw of those trees (numbered from 200,000)
  and those trees for the first booster only (held-out labs detected / right tactic, their benign trees
  alerted; .evtx detected; probes detected / right tactic; all dev false alerts per 1,000 and dev attack
  trees detected, of 2,911):

  | thresholds | labs | lab benign | .evtx | probes | all dev | dev attacks |
  |---|---|---|---|---|---|---|
  | b94977f9bd (calibration split) | 95 / 74 % | 1 of 405 | 6 of 6 | 60 / 51 % | 1.16 | 1,688 |
  | **this model** (both boosters) | 95 / 79 % | 0 of 404 | 5 of 6 | 55 / 49 % | **0.88** | 1,754 |
  | another draw (from 200,000) | 95 / 79 % | 0 of 403 | 5 of 6 | 53 / 47 % | 0.88 | 1,760 |
  | the first booster's only | 95 / 79 % | 0 of 404 | 6 of 6 | 56 / 49 % | 1.02 | 1,776 |

  b94977f9bd's 95 % counted a recording whose only alert was off its labelled tree (its Metasploit
  payload, Execution 0.96: that lab benign tree); this model no longer raises it and alerts the web
  shell `proxylogon_ssrf_rce_poc` on its tree instead (Persistence 0.95), so 18 of the 19 recordings
  alert on their attack trees, against 17. What moved: Persistence 0.990 -> 0.706 and `generic` 0.994 ->
  0.980 (that web shell, and a lone `net user /add` probe, now alert); Impact 0.808 -> 0.866 (installer
  service trees score up to 0.86 for it), so the probes "shadow copies deleted by WMI" and "recovery
  disabled" no longer alert; the second booster's
  Discovery is set by a look-alike at 0.821 instead of the 0.5 floor, so the .evtx sample's lone `netsh
  advfirewall ... show` (Discovery 0.81) no longer alerts. The variant that kept the second booster's
  thresholds kept that sample but stayed over the budget. This model was chosen with all four rows in
  view, for being the one rule applied to both boosters and within the false-alert goal on dev.
- **The lone booster's floor is 0.5, chosen looking at dev and the probes** (session S; the boosters are
  `ringfence-xgb-1.2-ce833de4bc`'s, bit for bit: only the second booster's thresholds moved). Its
  calibration negatives are 815 process-only trees, 719 of them administrators' look-alikes: too few to
  vouch for one false alert, so every class but CredentialAccess sat on the 0.6 floor while the highest
  look-alike scored 0.18 for Persistence, 0.48 for Discovery and 0.54 for Execution; lone service,
  scheduled-task and encoded PowerShell commands scored 0.50-0.59 for a tactic and did not alert (three of
  the four probes they gain are named another tactic than their label: `schtasks /ru SYSTEM` Persistence,
  encoded PowerShell InitialAccess, `sc config binpath=` PrivilegeEscalation). Recalibrated at floors 0.6 /
  0.55 / 0.52 / 0.5 / 0.4 on the same boosters: probes detected 53 / 53 / 56 / **60** / 62 % (right tactic
  49 / 49 / 49 / **51** / 53 %), all dev benign trees alerted 16 / 16 / 17 / **17** / 18 of 14,700 (1.09 /
  1.09 / 1.16 / **1.16** / 1.22 per 1,000), held-out labs, their benign trees and the .evtx samples
  unchanged at every floor (89 % / 74 %, 0 of 251, 6 of 6); dev attack trees detected 1,654 / 1,679 / 1,685
  / **1,688** / 1,699. At 0.5, 34 more dev attack trees are detected (lone download cradles, schtasks, IFEO
  and accessibility debuggers, service binary paths, at jobs, ...) for one more benign tree: a child of
  `auditpol /get` in an audit-policy review, Discovery 0.54. 0.55 would have gained 25 of those trees with
  no new false alert, and no probe: 0.5 was chosen for the probes, the closest this project has to other
  labs' single-technique files, at the price of that tree. The first booster keeps 0.6: its negatives are
  ordinary software. So the dev false-alert rate, over the budget before, is one tree further over it.
- **One seed's fit is a draw, and this model is the favourable one** (measured after it was committed, on
  the same data and recipe; only XGBoost's seed differs, which draws the row and column subsamples: made
  with `pipeline.training.run.run_train` and `TrainConfig(seed=8)` or `9`, since `ringfence train --seed`
  reseeds the simulation too; they are the members of `--ensemble 3`).
  Seeds 7 (this model), 8 and 9, with the second booster floored at 0.6 as then: held-out lab recordings
  detected **89 / 79 / 79 %**, right tactic 74 / 53 / 74 %; held-out lab benign trees alerted **0 / 13 / 0
  of 527**; all dev benign trees 1.09 / 1.70 / 1.29 false alerts per 1,000 (outside the lone-command
  simulations 1.18 / 2.36 / 1.77); probes detected 53 / 42 / 56 %; .evtx right tactic 100 / 100 / 83 %.
  Every recipe choice above was made looking at seed 7's numbers, so they are the favourable end of the
  spread: a fleet should expect about 80 % of the labs'
  attack recordings, not 89 %, and a fit can alert on real benign background that dev never shows (seed
  8's 13 trees). **An average of seeds 7-9** (`ringfence train --ensemble 3`, one booster per view whose
  margins are the three boosters' mean, `train.average_boosters`) measured 84 % / 68 % on the labs, 0 of
  527 lab benign trees, all dev 1.02 (outside the lone-command simulations 1.33), probes 55 % / 49 %, .evtx
  100 % / 83 %; on the pipeline benchmark's workload it made 98 decisions instead of 180 per 60,000 events.
  Not the default: three times the trees (a 12 MB artifact) made the worker path about 13 % slower
  (144-161k events/s against 165-183k in four runs each of `bench.bench_pipeline --throughput-only`,
  alternated in the same minutes; BENCHMARKS.md, Pipeline, session P), where issue 5's throughput goal is
  not met, and its labs figure is one recording under the 85 % goal.
  Without subsampling (subsample and colsample 1.0, nothing left to draw): labs 74 % / 63 %, 1 of 527 lab
  benign trees, all dev 1.43, probes 58 % / 51 %.
- **Hunting scores promptly since session T; training replays do not** (this model unchanged). Two changes
  to `ringfence hunt` (and the stream): a device's TTL eviction waits for the flush that scores its changes
  (before, a pass spanning more than 10 minutes of a device's time dropped the processes that had exited,
  unscored: with their exits and one event 10 minutes later, 0 of the 55 probes alerted), and a scoring pass
  spans at most one second of event time, as the stream scores (before, a 4688 log hunted 256 events at a
  time scored a command at the pass's last event: with one event 10 minutes later 28 of the 55 probes
  alerted instead of 33, the commands' lifetimes stretched and their windows emptied). This model hunted
  promptly: held-out labs 95 % / 74 % (89 % / 74 % hunted the old way), but the gain is one recording whose
  only alert is off its labelled tree: its own Metasploit payload in a Downloads folder (Execution 0.96),
  which the labels do not reach (the first bullet). It counts once as a detection and once as the one false
  alert of the 405 benign trees now counted (251 before: none is evicted unscored now); alerts on labelled
  attack trees are unchanged, 17 of 19 recordings; .evtx 6 of 6, probes 60 % / 51 % with or without a
  10-minute tail. Training replays keep the recipe the model was fitted with (`pipeline.training.rows`), so
  its dev tree numbers are the old replays'. Refitted on the fixed replays (seed 7): eviction alone, labs
  89 % / 63 %, 3 of 400 lab benign trees, all dev 1.82 per 1,000, probes 62 % / 53 %; eviction and
  one-second passes, labs **79 % / 58 %**, **10 of 411** lab benign trees (an unseen background process as
  PrivilegeEscalation 0.80 in six LSASS recordings), all dev 1.61, probes 62 % / 53 % with or without the
  tail; the same replays fitted with XGBoost seeds 8 and 9 (`TrainConfig(seed=...)`): labs 74 % / 58 % and
  84 % / 63 %, 1 of 409 and 0 of 411 lab benign trees, all dev 1.67 and 1.34, probes 58 % / 49 % and 62 % /
  55 %. Within the spread of seeds above and no better on the labs, so not kept: the switch waits for a
  retrain that gains from it.
- **Administrators' scripts are thin in the benign data** (measured after this model was committed; not
  kept). A benign workload of logon, scheduled and agent-pushed scripts (PowerShell `-File` or a batch
  file writing temp and log files, looking up and connecting to the organisation's servers and vendors,
  setting its own registry values, running robocopy, `net use`, `reg query`...) was written: this model
  alerts on **12 of 300** such trees (40 per 1,000; Collection for writes to ProgramData or Temp). Trained
  with it (`1.2-4e971059d4`): probes 62 % / 53 %, labs 95 % / 68 %, all dev 1.17 per 1,000 (this model on
  that dev set: 3.92), but **2 of 527 lab benign trees** alerted:
  `C:\\Windows\\servicing\\TrustedInstaller.exe` under services.exe as PrivilegeEscalation 0.69, a SYSTEM
  service from a folder no image-location column covers (`img_loc_*` has none for `C:\\Windows` outside
  System32, so it reads like an odd location). With the simulated TrustedInstaller moved to its real folder
  (`1.2-4ffdd62d2a`) the two trees still alerted and the labs fell to 74 % / 58 %: one more draw of the
  spread above.
- **What 1.2's second recipe changed, and what was looked at to change it** (`ringfence-xgb-1.2-ce833de4bc`,
  after `ringfence-xgb-1.2-37ea9aae5d`; same features, same data). The first booster is now also fitted on
  the lone-command simulations' benign rows that the stream routes to it (`train.full_view_rows`): admins'
  and agents' look-alikes that show no lone-command indicator (remote queries, Defender, firewall and
  service administration, SSH tunnels, vendor registry settings) and the ordinary benign noise interleaved
  into those trees; it had never seen them. Their attack rows stay out, even those the stream routes to it.
  It is no longer 1.0's booster tree for tree (120 rounds, the cap; thresholds calibrated by the same rule
  on the calibration rows of its own training set). **Looked at:** which dev trees 37ea9aae5d alerted on:
  221 of the lone-command simulations' 222 false alerts came from the first booster (remote admin queries 54
  of 184 trees, Defender administration 46 of 224, SSH tunnels 35 of 111, ...). The same idea had been tried
  on 1.1 (the hard negatives of the 1.1 bullet below) and not kept for its 1.33 per 1,000 outside the new
  set. Measured on the same sources, 37ea9aae5d then ce833de4bc: **all dev benign trees 15.51 then 1.09
  false alerts per 1,000** (228 then 16 of 14,700 trees); the lone-command simulations' benign trees 28.06
  then 1.01 (222 then 8 of 7,911); dev trees outside those simulations 0.88 then **1.18** (6 then 8 of
  6,789). Both 1.09 and 1.18 are **over the budget** of 1 per 1,000, by one to two trees. Attack trees
  detected: all dev 1,791 then **1,654** of 2,911 (outside the lone-command simulations 1,053 then 1,020 of
  1,592, recall falling most for Discovery 0.27 to 0.18, CredentialAccess 0.69 to 0.57 and CommandAndControl
  0.63 to 0.54; inside 738 then 634 of 1,319). Held-out labs 95 % / 79 % then **89 % / 74 %** (0 of 252,
  then 0 of 251 benign trees; the ProxyLogon recording, alerted before as DefenseEvasion, is missed; two
  LSASS-dump campaigns are named Collection and Execution, no longer CredentialAccess; a registry change
  that hides command lines is now named DefenseEvasion first). .evtx 100 % / 100 % both; probes 55 % / 51 %
  then 53 % / 49 % (0 of 30 benign probes both). Chosen although over the budget, because the budget is a
  rate over benign trees, all of them: 15.51 per 1,000 over the whole dev set is fourteen times the target,
  a fleet's admins type these commands, and in block mode each false alert kills an admin's tool. **Tried
  and not kept**, on the same cached data: the look-alikes in the first booster's calibration only (its
  trees unchanged): dev 0.75 per 1,000 everywhere, but thresholds of 0.97-1.00 on six tactics and held-out
  labs 53 % / 5 %; the recipe with 400 rounds allowed (early stopping never stopped it): dev 1.22 everywhere
  and 1.62 outside the simulations, labs 89 % / 74 %, probes 56 % / 51 %; the look-alikes added on top of
  the other benign rows' weight (benign share 0.652 instead of 0.5, so that the rows of before keep their
  weight): dev 1.36 and 1.62, labs 95 % / **53 %**; every row the stream routes to the first booster, the
  simulations' attack rows too: dev 1.50 and 1.03, labs **63 % / 32 %**, .evtx 100 % / 83 %; this recipe's
  booster with thresholds calibrated on the calibration trees of before only (the look-alikes, which it
  scores low, then widen no budget): labs 95 % / 84 %, but dev **2.04** everywhere and 1.33 outside the
  simulations. The recipe was chosen among these six on the dev numbers above, so they are optimistic for
  it.
- **What feature version 1.2 changed, and what was looked at to change it** (`ringfence-xgb-1.2-37ea9aae5d`,
  after `ringfence-xgb-1.1-c7936bbe8a`). Three more lone-command indicators: `remote_shell_output` (an
  Impacket-style remote shell's command: its `__output` or `__<timestamp>` file on an admin share, its batch
  file run quietly from Windows or Windows\\Temp, atexec's Temp file), `dynamic_invoke` (PowerShell that
  spells IEX from characters of `$env:ComSpec`, `$PSHome`, `$ShellId`, `$VerbosePreference` or from `[char]`
  codes, or pipes decoded text into `.( )`), `fetch_and_run` (a download fed to IEX, or a file fetched and
  started in the same line); and every lone-command indicator now also reads what a PowerShell
  `-EncodedCommand` argument decodes to (`indicators.encoded_text`). New lone-command simulations
  (`win_lone3.py`: smbexec, atexec, dcomexec, obfuscated launchers, fetch-and-run; `win_benign_lone3.py`:
  management agents' encoded inventory and update scripts, documented package bootstraps such as
  Chocolatey's and Scoop's, scripts that build strings from `[char]` codes, installers' quiet batch files).
  The first booster is unchanged (1.0's, tree for tree). **Looked at:** the two .evtx samples the model
  missed (a WMIexec shell, a CrackMapExec obfuscated launcher) and the probes' misses (encoded PowerShell, a
  wmiexec line, an obfuscated launcher, a SQL server's download cradle) were in view when the indicators
  were written, so the .evtx and probe gains are optimistic for those techniques; `[char[]](73,69,88)` was
  added after the obfuscated probe was seen missed (one of Invoke-Obfuscation's documented forms). Measured
  on the same sources, 1.1 then 1.2: held-out labs 95 % / 79 %, 0 of 252 benign trees, both; .evtx 67 % / 67
  %, then **100 % / 100 %**; probes 58 % / 45 %, then **55 % / 51 %** (32 and 25, then 30 and 28 of 55; 0 of
  30 benign probes alerted by either); dev trees outside the lone-command simulations 0.88 false alerts per
  1,000 both (6 of 6,789), attack trees among them detected 1,051, then 1,053 of 1,592. The lone-command
  simulations' dev set grew with the new generators and look-alikes (7,911 benign and 1,319 attack trees,
  against 7,960 and 1,133): 1.2 alerts on 222 of its benign trees (28 per 1,000; 1.1 alerted on 264 of the
  smaller set, 33 per 1,000) and detects 738 attack trees. **Two reviews** read the indicators; their
  findings were fixed and measured before this model was trained: a crash on a Kelvin sign after `-enc`, a
  quadratic pattern, encoded commands hidden by typographic dashes, decoy arguments, spaces inside a quoted
  argument or a line break, newer Impacket spellings missed, and matches on ANSI escapes, `$Public[0]`, a
  character set of symbols, robocopy logs on `\\\\localhost\\c$`, compile-and-run lines (`go build -o app.exe
  && .\\app.exe`) and other programs' `-e` flags. The candidate before the second review's fixes
  (`ringfence-xgb-1.2-348f39ca73`) measured probes **64 % / 53 %** (35 and 29 of 55) with every other figure
  as above: its looser `remote_shell_output` (any redirection to a loopback admin share) had routed 880 more
  attack rows of other simulated techniques to the second booster, and without them that booster stops
  earlier (34 rounds against 64) and misses five Persistence and Execution probes it caught (`at`, `schtasks
  /ru SYSTEM`, `sc failure`, `sc config binpath=`, encoded PowerShell). The narrower indicators were kept.
  **Tried and not kept**, each a full retrain on the same sources: an `account_add` indicator (a lone `net
  user /add` or admin-group addition) with look-alikes of account provisioning, on an earlier candidate: it
  routed the .evtx account creation (Persistence 1.00 from the first booster) to the second booster, which
  did not alert, and raised that booster's Persistence threshold to 0.76, losing three service and task
  probes (.evtx 83 %, probes 56 %); the image a child's start reports for a parent never seen starting
  (Sysmon `ParentImage`, 4688 `ParentProcessName`), compared with the same recipe without it, both built
  without the new simulations (an automatic lint fix had removed the imports that registered them; the
  recipe alone measured held-out labs 95 % / 79 %, .evtx 100 % / 83 %, probes 60 % / 49 %, dev 0.88): read
  as that parent's class in 1.0's parent columns, held-out labs 95 % / **84 %** and probes 60 % / 51 %, but
  dev trees outside the lone-command simulations **1.77** false alerts per 1,000 (12 of 6,789, over the
  budget); the same class in columns read by the second booster only: probes 60 % / 47 %, every other figure
  equal, so not kept. The second booster refitted with XGBoost seeds 8 and 9 (same data): probes 31 and 31
  of 55, 0 benign probes, .evtx 6 of 6 both. **Still missed:** a lone `net user /add` (Persistence 0.96
  under the first booster's 0.991), shells under an unusual parent with no lone-command indicator (sticky
  keys, the print spooler, MMC: the parent that started before the recording reads as unknown), `bitsadmin
  /transfer` alone, `pktmon`, SPN and share changes, WSL enabling, and the five probes above, which score
  0.66-0.84 under the second booster's thresholds.
- **What feature version 1.1 changed, and what was looked at to change it**
  (`ringfence-xgb-1.1-c7936bbe8a`, after `ringfence-xgb-1.0-f8de5584fd`). Twenty *lone-command indicators*
  (`LONE_INDICATORS` in `pipeline/indicators.py`: what a lone command line configures, such as a service's
  recovery command or binary path, a debugger set for another image, Defender, UAC, logging or LSA
  protection switched off *by the value written*, a password typed on the line, a session hijacked, a
  relay to an admin port, a payload started on another host) form 40 columns appended after 1.0's (own and
  nearest ancestors' command lines). A second booster scores only the rows that carry process creation
  alone *and* one of these indicators (`pipeline/model/routed.py`; about 2 % of the rows); it learns from
  them in every source and in new lone-command simulations (`win_lone2.py`, 43 generators, and
  `win_benign_lone2.py`, 30 workloads of admins, installers and agents typing the same tools, origin
  `sim-lone`), which the first booster never sees. The first booster is fitted on 1.0's columns and
  sources, so it is the 1.0 booster tree for tree (1,560 trees and every threshold identical, checked),
  and every other row scores exactly as before. **Looked at:** the hand-written probes' misses were in
  view when the indicators were written, so the probe numbers below are optimistic for those techniques;
  the generators and look-alikes were written by a helper from ATT&CK, Atomic Red Team and LOLBAS
  descriptions without the probes' lines (a few canonical spellings, such as `wevtutil cl Security`,
  coincide by chance in about 1 line in 200); the .evtx samples' misses were known from earlier sessions
  (a probe mirrors their firewall enumeration), so the .evtx gain is optimistic too. Measured on the same
  sources, 1.0 then 1.1: held-out labs 95 % / 79 %, 0 of 252 benign trees, both; .evtx 50 % / 50 %, then
  **67 % / 67 %** (the lone `netsh advfirewall show` is now Discovery 0.94); probes **25 % / 20 %, then 58
  % / 45 %** (14 and 11, then 32 and 25 of 55; 0 of 30 benign probes alerted by either); dev trees outside
  the new simulations **0.59, then 0.88** false alerts per 1,000 (4, then 6 of 6,789: the same four plus
  two Windows built-in script trees read as Discovery 0.93 and 0.86 by the second booster), attack trees
  among them detected 1,002, then 1,051 of 1,592. On the new simulations' dev trees (7,960 benign, 1,133
  attack) 1.1 alerts on 264 benign trees (33 per 1,000) and detects 626 attack trees; **the 1.0 model
  alerts on 278 (35 per 1,000)** and detects 285: nearly all of those false alerts are rows with
  telemetry, which the first booster scores, such as an admin's `reg add` of a Defender or LSA value with
  its registry event, a support engineer's `netsh trace` or a developer's `ssh -L`. They are a weakness of
  the 1.0 booster that this set exposes, not one 1.1 adds; the set's look-alikes are written to be as
  close to the attacks as possible, so 33 per 1,000 is a stress measure, not a fleet's rate. **Tried and
  not kept**, on the same cached data: the second booster on every process-only row with indicators that
  matched any write to the same keys (3,000 look-alike trees): thresholds of 0.97-0.99 set by look-alikes
  that wrote safe values, probes 22 % / 20 %, .evtx 50 % / 33 %; value-aware indicators and the narrow
  route with the first booster's thresholds as floors: probes 47 % / 40 %, .evtx 67 % / 67 %, dev outside
  the new set 0.74 (5 trees), kept without the floors for six more probes at the cost of one dev tree; the
  first booster also given the look-alike benign trees as hard negatives: the new set's false alerts fell
  from 264 to 7 trees, but dev outside it rose to 1.33 per 1,000 (9 trees, over the budget) and its
  detections fell from 1,051 to 1,008, so not kept (the next step for the registry-telemetry weakness,
  with a recipe that holds the budget). The second booster refitted with XGBoost seeds 8 and 9: the same 6
  dev trees, probes 58 % / 45 % both times, new-set detections 622 and 629: stable. **Still missed:** lone
  encoded or hidden PowerShell and shells under an unusual parent (malicious 0.95-0.99 with no tactic
  dominating, in the first booster's domain), a lone `net user /add` typed without group changes
  (Persistence 0.96 under the first booster's 0.991), `pktmon` captures (CredentialAccess 0.76 under
  0.948), SPN and share changes, WSL enabling.
- **What the 1.0 model changed, and what was looked at to change it** (`ringfence-xgb-1.0-f8de5584fd`,
  "this model" in this and the following history; its booster is 1.1's first booster). Simulated *small
  trees*: one to three commands under a parent the recording never saw start, as Security-4688-only labs
  and single-technique recordings show a technique (`pipeline/training/sim/win_lone.py`: a lone local
  account creation, T1136.001; an account given rights, T1098; WMI running a command, wmiexec style or
  `wmic process call create`, T1047; a short recon burst of `whoami /all`, `net group "domain admins"
  /domain`, `nltest`, `netsh advfirewall show ...` and the like, T1033) and their benign look-alikes
  (`win_benign_lone.py`, 1,500 trees: admins' lone `ipconfig`, `whoami`, `tasklist`, `netsh interface
  show`, `net user x /domain`; installers' `net stop`/`net start`/`sc config` of their own service; `reg
  export` of an application's settings; WMI inventory queries), kept out of the noise pool so that no
  earlier simulated tree changed. The technique families were chosen *with b258c2b937's three .evtx misses
  in view* (a lone `net user /add`, a one-event WMI execution, a lone `netsh advfirewall show`; no command
  line was copied from them), so the .evtx numbers above are optimistic for those three. Measured on the
  same sources (held-out labs detected / right tactic / false alerts per 1,000 benign trees; .evtx
  detected / right tactic; dev trees false alerts per 1,000): b258c2b937 95 % / 79 % / 0.0, .evtx 50 % /
  33 %, 0.98 (6 of 6,134); this model 95 % / 79 % / 0.0, .evtx 50 % / 50 %, 0.59 (4 of 6,789, a dev set
  that now holds the new small trees; 0.33, 2 of 6,134, on b258c2b937's dev trees alone). The lone `net
  user /add` is now Persistence 1.00; the CrackMapExec sample (Generic 0.99 before) is no longer alerted:
  the calibration tree that binds Persistence (0.991) and `generic` (0.996) is an admin creating a domain
  account (`admin_shell`, 1 % of its trees), which the new account-creation examples also push up. On
  b258c2b937's dev attack trees this model alerts on fewer (955 vs 1,014 of 1,487; right tactic 841 vs
  857): it buys its lower false-alert rate partly with recall. On the new small benign dev trees
  b258c2b937 alerted 44 per 1,000 (29 of 655, most of them an installer's lone `net stop <service>` as
  Impact), this model 3.1 per 1,000 (2 of 655; its own training distribution). **Tried and not kept:** the
  same plus lone single steps (T1105 downloads by certutil/bitsadmin/curl/ PowerShell, T1059.001 hidden or
  encoded PowerShell, T1053.005/T1543.003/T1547.001 autostarts pointing into user-writable folders,
  T1555.004 stored-credential look-ups) with installer and admin-scripting look-alikes (3,000 small benign
  trees): 95 % / 74 % / 15.9 (4 of 252 held-out background trees, e.g. `TrustedInstaller.exe` loading
  `dbghelp.dll` as PrivilegeEscalation 0.67, a class at its 0.6 floor), .evtx 50 % / 50 %, dev 1.09 per
  1,000 (8 of 7,353, its own dev set). It alerted on more lone attack command lines of a hand-written
  check (11 of 25, against 8 for this model and 9 for b258c2b937; 0 of 11 lone admin commands for all
  three), but it was not kept because of the held-out labs' false alerts: that choice, too, was made with
  held-out numbers in view. **Retrain scatter** (the same cached data, XGBoost seed 8 instead of 7; seed 7
  / seed 8): b258c2b937's recipe, held-out labs detected 95 / 89 %, right tactic 79 / 58 %, 0 / 0 benign
  trees alerted, .evtx 50 / 67 % detected and 33 / 50 % right, its dev trees 0.98 / 0.49 per 1,000, the
  new small benign dev trees 44 / 35 per 1,000; this recipe 95 / 84 %, 79 / 74 %, 0 / 0, .evtx 50 / 67 %
  and 50 / 50 %, b258c2b937's dev trees 0.33 / 0.49 per 1,000, small benign trees 3.1 / 4.6 per 1,000; the
  recipe not kept, at seed 8, 84 % / 74 % / 0 held-out trees alerted, .evtx 50 % / 50 %. One held-out
  recording moves a rate by 5 points and one .evtx file by 17: most differences above are within this
  scatter. What holds across both seeds: far fewer alerts on lone installer and admin commands, a right
  tactic at least as often on the held-out labs, and somewhat lower recall on the older simulated dev
  attack trees (955 / 980 vs 1,014 / 1,012 of 1,487). On the pipeline benchmark's synthetic traffic
  (`bench/_pipeline_data.py`: random behaviour trails on shells and applications, not modelled on a real
  workload) this model raises 195 alerts in 60,000 events where b258c2b937 raised 106 (mostly `cmd /c dir`
  and a PowerShell script with dozens of connections, writes and process accesses, as Exfiltration or
  Collection).
- **What the model before it changed** (`ringfence-xgb-1.0-b258c2b937`, and what was looked at). Its
  predecessor (`ringfence-xgb-1.0-45020df1b8`) alerted on a benign tree in four of the seven held-out
  LSASS-campaign labs: the lab's own network capture ending (`netsh trace stop`) runs Windows'
  `gatherNetworkInfo.vbs`, which `reg export`s the Credential Providers keys (CredentialAccess 0.75). They
  were not the attack's helpers (no link to the attacker's payload; the recordings' pcap files are the
  capture). Its card said 33.20 per 1,000 because the recording-level rate counted *alerts* (8, two per
  tree) against a tree count; counted per tree, as now, it was 15.9 per 1,000 (4 of 252 trees). The
  tree-level table showed 1.91 (one tree) because the labeller had marked part of the same diagnostics
  tree as attack: the script also runs `systeminfo`, which the operator had typed, and its `cmd`s reused a
  printed pid, so three of the four trees counted as attack trees. Both the measurement and the labelling
  were fixed (DATA.md), and the model was changed in two ways: a simulated benign workload of diagnostics
  collectors (`gatherNetworkInfo.vbs` and similar report scripts exporting configuration keys) — written
  *after looking at this held-out false alert*, so the held-out labs' false-alert rate below is optimistic
  for collectors like it and says little about other real background — and training on the
  process-creation-only view of every training recording (chosen on principle, for 4688-only sources).
  Measured in this session on the same dev split (recording level: held-out labs detected / right tactic /
  false alerts per 1,000 benign trees; .evtx detected / right tactic; dev trees false alerts per 1,000):
  previous model 89 % / 84 % / 15.9, .evtx 33 % / 33 %, 1.29; diagnostics workload alone 79 % / 79 % /
  0.0, .evtx 50 % / 33 %, 1.30; both (b258c2b937's recipe) 95 % / 79 % / 0.0, .evtx 50 % / 33 %, 0.98. The
  recipe with both was kept; that choice was made with these held-out numbers in view. A larger
  calibration share (25 % of the simulated trees instead of 15 %, same dev) was also tried on the same
  data: 89 % / 79 % / 0.0, .evtx 50 % / 33 %, 0.98 — not kept. Of the .evtx samples b258c2b937 missed, the
  lone `net user /add` (Security 4688) scores Persistence 0.93, under the 0.974 the budget charge leaves;
  the WMI one is a single event that names no tactic (0.73, Generic needs 0.98); the firewall one is a
  lone `netsh advfirewall ... show` (below). No threshold was moved for them.
- Lone commands that admins also type (`ipconfig`, `whoami`, `net user x /domain`, `taskkill`) are
  deliberately not alerted on, and a lone `netsh advfirewall ... show` matches no command-line indicator
  (only the image's role is left), so it is not either; most lone attack commands score 0.9 or more as
  malicious without one tactic passing its threshold; Discovery is the weakest tactic. About half of its
  dev trees are a single preamble command (`whoami`, `hostname`, `id`) that the tree split cut off from
  the rest of an attack, and a burst of recon commands from an ordinary SSH or terminal shell has the same
  features as an admin's session (which the benign workloads contain on purpose); bursts from a web
  server, an implant or a reverse shell are caught through their ancestry. The features count discovery
  indicators per process, not distinct recon commands per minute, so a burst cannot score higher than its
  parts. Operator commands run inside an implant (no process start) are invisible unless they touch LSASS,
  the registry or the network.
- **Lone single-technique commands, before 1.1** (measured after the 1.0 model was trained, with the
  hand-written probes of `pipeline/training/probes.py`: 55 techniques that per-technique Security 4688
  collections record through process creation alone, and 30 benign admin and installer commands): this
  model alerts on 14 of the 55 (25 %), names the right tactic on 11 (20 %) and alerts on none of the 30
  benign ones. Service, registry, firewall and scheduled-task tampering, IFEO debuggers,
  explicit-credential `net use`, `tscon` and `portproxy` typed alone are mostly missed. A
  feature-version-1.1 recipe (13 more command-line indicators, 19 more lone generators with benign
  look-alikes; branch `model-g`, candidate `ringfence-xgb-1.1-2448579ba3`) raised the probes to 51 % / 51
  % and the .evtx samples to 83 % / 83 %, but the held-out labs fell to 79 % detected / 42 % right tactic
  (LSASS campaigns named Execution or Collection; DefenseEvasion recordings this model catches exactly at
  its 0.60 threshold fell just under theirs), so it was not kept; a variant with fewer lone trees measured
  68 % / 37 %, .evtx 100 % / 100 %, probes 51 % / 49 %. The same recipe's data refitted with XGBoost seed
  8 (`ringfence-xgb-1.1-79ddafbfb2`) measured held-out labs 53 % / 42 %, dev 1.32 false alerts per 1,000
  (over the budget), .evtx 83 % / 83 %, probes 53 % / 53 %: the loss on the labs is the recipe's, not one
  fit's. Per-row contributions on the first LSASS campaign show why: its implant's row at the moment it
  reads LSASS is CredentialAccess 0.83 under this model (`sub_lsass_read` +2.5) and PrivilegeEscalation
  0.45 / CredentialAccess 0.24 under the candidate (`sub_lsass_read` +0.9, and "not a shell" now counts
  against CredentialAccess, which the lone shell-typed credential commands taught it). Lone 4688-only
  trees and full-telemetry trees share one booster and no feature tells the two sensor views apart. A
  device-level telemetry-coverage feature was tried next (feature version 1.2, `device_sensor_rich`: some
  process of the device earned a file, registry, network, image-load or process-access code). It did not
  close the gap. Added to the 1.1 recipe: held-out labs 84 % / 58 %, .evtx 67 % / 67 %, probes 45 % / 45
  %, 1 of 252 benign lab trees alerted. The same with the lone-command trees given a process-creation view
  only (so they teach only the feature's 0 side): 74 % / 53 %, .evtx 83 % / 83 %, probes 53 % / 53 %. This
  model's own recipe plus the feature and that view rule: 89 % / 68 %, .evtx 50 % / 50 %, probes 27 % / 22
  %, dev 0.90 false alerts per 1,000. The last shows that the 19 held-out recordings move by one to three
  between fits of nearly the same data, so differences of that size between recipes are not significant. A
  separate lone-command model, used only for devices that report process creation alone, is the idea left.
  That search also found that `defense_tamper` matches "off" inside "Office" in a `netsh firewall` command
  (an installer allowing its own program); fixing it changes a feature, so it waits for the next model.
  Fixing it alone (`\\b(off|disable)\\b`) changes 27 values in 10 training rows, all of three simulated
  `firewall_modify` trees (a rule name or payload path holding "off" or "disable"); the refit on otherwise
  identical data and seed (`ringfence-xgb-1.0-6205f1b2b7`) measured held-out labs 89 % / 84 %, .evtx 67 %
  / 50 %, probes 25 % / 20 %, dev 1.18 false alerts per 1,000 (over the budget): one fit's scatter
  outweighs the fix, so it was not kept on its own.
- **Two boosters, one per sensor view, as first measured and not kept** (1.0 features, `--two-view` then,
  `pipeline/model/routed.py`): rows whose file, registry, network, image-load, process-access and script
  features are all zero (own and subtree; 64 % of the rows, 139,594 of them in train and calibration) are
  scored by a second booster fitted, stopped and calibrated on those rows alone; the other rows by this
  model's booster, which the same run reproduced bit for bit. On the same cached data and seed: held-out
  labs 95 % / 79 %, 0 of 252 benign trees (unchanged), .evtx 67 % / 50 % (the CrackMapExec payload as
  Generic 1.00: the second booster's `generic` threshold is 0.987), probes 27 % / 24 %, but dev 1.47 false
  alerts per 1,000 benign trees (10 of 6,789, all on process-only rows, six of them Impact 0.73-0.95 on
  Linux user tools, an SSH admin session and installers' service commands): over the budget. Each booster
  spent a budget of its own, and a class whose threshold a calibration benign tree sets lets about 1 in
  n+1 new benign trees through per booster: the second booster's calibration set seven classes that way.
  With each of its thresholds raised to at least the first booster's (the same fit): dev 0.88 per 1,000 (6
  trees), .evtx 50 % / 50 %, probes 25 % / 22 %, labs unchanged: no gain over one booster. Trained on the
  same data, the second booster knows little the first did not. `fit_views` now calibrates the second
  booster with the first's thresholds as floors (one budget for both views). Given more lone-command data
  of its own as well (`model-g`'s second wave of lone Windows techniques and 1,500 installer,
  admin-maintenance and management-script look-alikes, at feature version 1.0, for the second booster
  only; local branch `lone2`): labs unchanged, .evtx 50 % / 33 % (the backup deletion no longer named
  Impact), probes 22 % / 22 %, dev 1.05 per 1,000: worse, not kept. Without `model-g`'s 13 command-line
  indicators (feature version 1.1) the generators' commands differ from their look-alikes in little a
  feature sees. Left to try: those indicators with the second booster, the first refitted on the same
  sources at 1.1 (the labs' one-to-three-recording scatter between fits then applies).
- **Linux live telemetry has no file attribution** (inotify): Linux ransomware and wipers are caught by
  their process chain (a launcher outside the system folders running an encryptor and a destroyer per
  file), learnt from randomised simulations only; in-process encryption by a single binary shows no such
  chain. The children of such a launcher (`shred`, `sleep`) score as the attack too, so a flush that
  scores a child before its parent alerts on the child alone (its tree then holds one process and no
  blockable file); the next flush roots the alert at the launcher.
- **Real background that looks like an attack** is only as well covered as the benign workloads are: a
  fleet's own diagnostics, inventory and support scripts that export or query security configuration (as
  `gatherNetworkInfo.vbs` does) may alert until they are in the benign data or excluded; `ringfence
  evaluate` (or `ringfence hunt` over that fleet's recordings) shows them.
- **Busy shells read as staging.** The pipeline benchmark's synthetic workload (`bench/_pipeline_data.py`:
  Office, browsers, editors, `cmd /c dir`, `powershell -File`, `whoami`, with random Temp writes, DNS
  queries, connections and image loads spread over the newest processes) gets 1,079 alerts on 240,000
  events, nearly all on `cmd.exe` or `powershell.exe` processes that wrote Temp files and queried DNS
  (Exfiltration 0.98 from `sub_dns_query`, `img_shell`, `sub_file_write`; Collection from Temp writes).
  The workload is random rather than recorded, so this is no false-alert rate, but a script that really
  does this (a build or installer step run through a shell) may alert until such scripts are in the benign
  data.
- **Alert roots climb into holders.** The detector roots an incident at the highest ancestor that is
  itself flagged, and a parent scores through its descendants' behaviour: an attack started from a test
  runner or a tool's Python process can be rooted there (the verdict still names the first blockable file
  of the tree; the kill targets the root).
"""
