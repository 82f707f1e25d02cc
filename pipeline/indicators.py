"""Command-line and script indicators: behaviour named by what a command *does*, not where it ran.

Each indicator is a regular expression over the lower-cased command line (or script content) with
the ATT&CK techniques it points at. They are deliberately platform-neutral where the behaviour is
(a download cradle is a download cradle in PowerShell and in `curl | sh`), and they never look at
host, user or domain names, Sysmon rule names or lab-specific paths, so that a model trained on one
lab's recordings still means something on another's. The bit position of an indicator in a mask is
its index in `INDICATORS`; appending is compatible, reordering is a new feature version.

Hostile text: a pattern such as `netsh\b.*firewall.*off`, searched in a command line that repeats
`netsh firewall` a few thousand times, backtracks cubically (8 KB took 4 s, 32 KB minutes), and a
process start or a script is text any process on a device controls. Texts of `LINEAR_FROM`
characters or more are therefore searched with each pattern's *linear form* (`linear_form`): the
same test within a line, anchored at the start of each line, each `.*`-separated part found at its
first occurrence after the previous one inside an atomic group, so nothing is tried twice. (Where a
pattern's white space would span a line break the two can differ, hence a fixed boundary.) Shorter texts
keep the plain pattern (faster on ordinary lines; its worst case there is a few milliseconds).

`indicator_mask` and `lone_mask` remember the masks of recent lines; a line they have not seen goes to
a `_Matcher`, which gives the mask one indicator at a time would (`_mask_of`, the reference) at about
a third of the cost: every prefilter of the list at once (a needle looked for only if its first three
characters occur in the text), then each passing pattern searched alternative by alternative, only those
whose own needle is in the text (`_needle`: literal text every match contains), a long text's linear
forms with each part's own `search` (`_first_occurrences`) instead of a lazy scan of every line
(tests/unit/test_indicator_matcher.py; `python -m bench.indicator_masks`).
"""

from __future__ import annotations

import base64
import binascii
import importlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any


@dataclass(frozen=True, slots=True)
class Indicator:
    """One named behaviour recognisable in a command line or a script."""

    name: str
    doc: str
    techniques: tuple[str, ...]
    pattern: re.Pattern[str]
    substrings: tuple[str, ...]  # the pattern can only match if one of these occurs...
    tokens: frozenset[str]  # ...or one of these is a whole token; both empty: always try
    linear: re.Pattern[str]  # the same test in time linear in the text (`linear_form`), for long texts

    def may_match(self, text: str, tokens: frozenset[str]) -> bool:
        """Cheap necessary condition checked before the regular expression."""
        if not self.substrings and not self.tokens:
            return True
        return not self.tokens.isdisjoint(tokens) or any(s in text for s in self.substrings)

    def search(self, text: str, tokens: frozenset[str]) -> bool:
        """Whether the lower-cased `text` shows this behaviour."""
        if not self.may_match(text, tokens):
            return False
        return (self.pattern if len(text) < LINEAR_FROM else self.linear).search(text) is not None


LINEAR_FROM = 512  # characters from which a text is searched with the patterns' linear forms


def _outside(regex: str) -> Iterator[tuple[int, str, int]]:
    """(position, character, groups open before it) of each character of `regex` that is neither
    escaped nor inside a character class: the structure `_split_top` and `_top_groups` read."""
    depth, i, in_class = 0, 0, False
    while i < len(regex):
        c = regex[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            i += regex[i + 1 : i + 2] == "]"  # a leading ] is a member
        else:
            yield i, c, depth
            depth += (c == "(") - (c == ")")
        i += 1


def _split_top(regex: str, sep: str) -> list[str]:
    """`regex` split at `sep` (`|` or a greedy `.*`) outside groups, classes and escapes."""
    out, start = [], 0
    for i, _, depth in _outside(regex):
        if depth == 0 and i >= start and regex.startswith(sep, i) and not _lazy_or_possessive(regex, i, sep):
            out.append(regex[start:i])
            start = i + len(sep)
    return [*out, regex[start:]]


def _lazy_or_possessive(regex: str, i: int, sep: str) -> bool:
    """A `.*?` or `.*+` at `i` is not a separator (only greedy `.*` is)."""
    return sep == ".*" and regex[i + 2 : i + 3] in ("?", "+")


def _top_groups(regex: str) -> list[tuple[int, int]]:
    """(start, end) of every outermost group of `regex`."""
    out, start = [], 0
    for i, c, depth in _outside(regex):
        if c == "(" and depth == 0:
            start = i
        elif c == ")" and depth == 1:
            out.append((start, i + 1))
    return out


def _distribute(branch: str) -> list[str]:
    """`branch` as alternatives without a `.*` inside a plain group: `a.*(b.*c|d)` -> `a.*b.*c`, `a.*d`."""
    for start, end in _top_groups(branch):
        group = branch[start:end]
        if group.startswith("(?") and not group.startswith("(?:"):
            continue  # lookarounds and flags stay as they are
        inner = group[3:-1] if group.startswith("(?:") else group[1:-1]
        if ".*" not in inner or branch[end : end + 1] in ("?", "*", "+", "{"):
            continue
        parts = _split_top(inner, "|")
        return [alt for part in parts for alt in _distribute(branch[:start] + part + branch[end:])]
    return [branch]


def linear_form(regex: str) -> str:
    """A pattern that `search`es like `regex`, in time linear in the text: every alternative
    `p1.*p2.*...pn` becomes `^(?>.*?p1)(?>.*?p2)....*?pn`, the first occurrence of each part after
    the previous one (enough: if any occurrence of p1 is followed by p2 on the same line, the first
    one on that line is). `.` stops at a newline, so the search starts at every line (not only at the
    text's start): a script's second line is searched as its first is. Patterns anchored with `^` (the
    lookahead conjunctions) are returned as they are."""
    if regex.startswith("^"):
        return regex
    branches = [alt for branch in _split_top(regex, "|") for alt in _distribute(branch)]
    parts = [_split_top(branch, ".*") for branch in branches]
    return r"(?:\A|(?<=\n))(?:" + "|".join(
        "".join(f"(?>.*?(?:{p}))" for p in seq[:-1]) + f".*?(?:{seq[-1]})" for seq in parts
    ) + ")"


def _ind(name: str, doc: str, techniques: str, regex: str, *, needles: str) -> Indicator:
    """`needles`: space-separated substrings, `=word` for whole tokens (a prefilter, see `may_match`)."""
    parts = needles.split()
    return Indicator(
        name,
        doc,
        tuple(techniques.split()),
        re.compile(regex),
        tuple(p for p in parts if not p.startswith("=")),
        frozenset(p[1:] for p in parts if p.startswith("=")),
        re.compile(linear_form(regex)),
    )


_B64 = r"[a-z0-9+/]{40,}={0,2}"

# fmt: off
INDICATORS: tuple[Indicator, ...] = (
    _ind("encoded_command", "PowerShell -enc/-EncodedCommand or FromBase64String", "T1027 T1059.001",
         r"\s[-/]e(nc(odedcommand)?|c)?\s+[a-z0-9+/=]{20,}|frombase64string",
         needles="=-e =-ec =-enc =-encodedcommand =e =ec =enc =encodedcommand frombase64string"),
    _ind("base64_blob", "a base64-looking token of 40+ characters", "T1027",
         r"(?<![a-z0-9+/])" + _B64,
         needles=""),
    _ind("download_cradle", "download primitives: WebClient, iwr, curl/wget URL, certutil/bitsadmin", "T1105",
         r"downloadstring|downloadfile|downloaddata|net\.webclient|invoke-webrequest|\biwr\b"
         r"|start-bitstransfer|bitsadmin\b.*/transfer|certutil\b.*(urlcache|verifyctl)"
         r"|\b(curl|wget)\b.*\b(https?|ftp)://|invoke-restmethod|\birm\b\s+http",
         needles=(
             "download webclient invoke-webrequest iwr bitstransfer bitsadmin certutil curl wget "
             "invoke-restmethod irm"
         )),
    _ind("invoke_expression", "IEX / Invoke-Expression / eval of fetched text", "T1059.001",
         r"\biex\b|invoke-expression|\|\s*iex|\beval\b\s*[\"'(\$`]",
         needles="iex invoke-expression eval"),
    _ind("hidden_execution", "hidden window, no profile, non-interactive, policy bypass",
         "T1564.003 T1059.001",
         r"\s-w(indowstyle)?\s+h(idden)?\b|\s-nop(rofile)?\b|\s-noni(nteractive)?\b"
         r"|-e(xecutionpolicy|p)\s+bypass|-exec\s+bypass",
         needles="-w -nop -noni bypass"),
    _ind("shadow_copy_delete", "delete shadow copies, backups or recovery (vssadmin, wmic, wbadmin, bcdedit)",
         "T1490",
         r"vssadmin\b.*(delete|resize)\s+shadow|shadowcopy\b.*delete|win32_shadowcopy"
         r"|wbadmin\b.*delete|bcdedit\b.*(recoveryenabled\s+no|ignoreallfailures)|diskshadow\b",
         needles="vssadmin shadowcopy wbadmin bcdedit diskshadow"),
    _ind("log_clear", "clear event logs or shell history", "T1070.001 T1070.003",
         r"wevtutil\b.*\b(cl|clear-log)\b|clear-eventlog|remove-eventlog|history\s+-c|unset\s+histfile"
         r"|histfile=/dev/null|>\s*/var/log/|rm\s+(-\w+\s+)*/var/log|\.bash_history",
         needles="wevtutil clear-eventlog remove-eventlog history histfile /var/log"),
    _ind("registry_run_key", "write a Run/RunOnce autorun key from the command line", "T1547.001",
         r"(reg(\.exe)?\s+add|new-itemproperty|set-itemproperty).*\\currentversion\\run",
         needles="\\currentversion\\run"),
    _ind("scheduled_task", "create a scheduled task or cron/at job", "T1053.005 T1053.003",
         r"schtasks\b.*/create|register-scheduledtask|new-scheduledtask|\bat\s+\d|\bcrontab\b"
         r"|/etc/cron|/var/spool/cron",
         needles="schtasks scheduledtask =at crontab /etc/cron /var/spool/cron"),
    _ind("service_install", "create/alter a service or systemd unit", "T1543.003 T1543.002",
         r"\bsc(\.exe)?\s+(\\\\\S+\s+)?(create|config)\b|new-service|systemctl\s+(enable|daemon-reload)"
         r"|/etc/systemd/system|/etc/init\.d/|update-rc\.d",
         needles="create config new-service systemctl /etc/systemd/system /etc/init.d/ update-rc.d"),
    _ind("account_create", "add a user or add one to an admin group", "T1136 T1098",
         r"net1?(\.exe)?\s+(user|localgroup|group)\b.*\s/add|\buseradd\b|\badduser\b|usermod\s+-\w*g"
         r"|new-localuser|add-localgroupmember|/etc/sudoers",
         needles="/add useradd adduser usermod new-localuser add-localgroupmember /etc/sudoers"),
    _ind("identity_discovery", "whoami, id, quser, net user/group queries", "T1033 T1087",
         r"\bwhoami\b|^\s*id(\s|$)|[;&|]\s*id(\s|$)|\bquser\b|query\s+user|net1?(\.exe)?\s+(user|group|"
         r"localgroup|accounts)\b|\bgetent\s+passwd|cat\s+/etc/passwd",
         needles="=whoami =quser =query =net =net1 =id =getent /etc/passwd"),
    _ind("domain_discovery", "domain trust/controller/admin enumeration", "T1482 T1087.002 T1069.002",
         r"\bnltest\b|dsquery|get-ad(user|computer|group|domain)|\badfind\b|\bsetspn\b|ldapsearch"
         r"|domain\s+(admins|controllers)|\bklist\b|get-netdomain|sharphound|bloodhound",
         needles="nltest dsquery get-ad adfind setspn ldapsearch domain klist sharphound bloodhound"),
    _ind("system_discovery", "system/network configuration discovery", "T1082 T1016 T1057",
         r"\bsysteminfo\b|\bipconfig\b|\bifconfig\b|\bip\s+(a|addr|route)\b|\bnetstat\b|\barp\s+-a"
         r"|route\s+print|\btasklist\b|\bps\s+(-?aux|-ef)\b|\buname\s+-a|/etc/os-release|\bhostname\b"
         r"|get-process\b|get-ciminstance|get-wmiobject\s+win32_",
         needles=(
             "=systeminfo =ipconfig =ifconfig =ip =netstat =arp =route =tasklist =ps =uname =hostname "
             "=get-process /etc/os-release get-ciminstance get-wmiobject"
         )),
    _ind("network_discovery", "shares, remote systems and port scanning", "T1018 T1135 T1046",
         r"net1?(\.exe)?\s+(view|share)\b|\bnmap\b|\bmasscan\b|test-netconnection|\bping\s+-[nc]\s+\d"
         r"|get-netshare|invoke-portscan|\bnbtstat\b",
         needles="=net =net1 =nmap =masscan =ping =nbtstat test-netconnection get-netshare invoke-portscan"),
    _ind("make_executable", "chmod +x / setuid bits on a file", "T1222.002",
         r"\bchmod\s+(-\w+\s+)*(?:[ugoa]*\+[rwxst]*[xs]|(?=[0-7]{3,4}\b)[0-7]*[1357])",
         needles="chmod"),
    _ind("pipe_to_shell", "fetched content piped into a shell or interpreter", "T1059.004 T1105",
         # 1.0's `\b(curl|wget|fetch)\b[^|]*\|...`, exactly, in linear time: only the first download
         # tool of each `|`-free stretch is tried (every later one reaches the same `|`).
         r"(?:\A|(?<=\|))(?>[^|]*?\b(curl|wget|fetch)\b)[^|]*+\|\s*(sudo\s+)?(ba|da|z|k)?sh\b"
         r"|\|\s*(python\d?|perl|ruby)\b"
         r"|\b(curl|wget)\b.*-o\s*-\s*\|",
         needles="|"),
    _ind("base64_decode", "decode base64/hex payloads (base64 -d, certutil -decode, openssl)", "T1140",
         r"base64\s+(-\w+\s+)*(-d|--decode)|certutil\b.*-decode|openssl\s+(enc|base64)\b.*-d"
         r"|xxd\s+-r|\[convert\]::frombase64",
         needles="base64 certutil openssl xxd frombase64"),
    _ind("reverse_shell", "interactive shell bound to a socket", "T1059 T1095",
         r"\bn(c|cat)\b.*\s-[a-z]*e\s|/dev/(tcp|udp)/|bash\s+-i\s*>&|socat\b.*exec|mkfifo\b"
         r"|pty\.spawn|socket\.socket|tcpclient\(",
         needles="nc /dev/ >& socat mkfifo pty.spawn socket tcpclient"),
    _ind("remote_execution", "run code on another host (psexec, wmic /node, winrm, ssh cmd)", "T1021 T1047",
         r"psexec|paexec|wmic\b.*/node:|\bwinrs\b|invoke-command\b.*-computername|enter-pssession"
         r"|\\\\[\w.-]+\\(admin|c|ipc)\$|\bssh\b\s+(-\w+\s+)*\S\S++\s+\S|\bscp\b|\bsshpass\b"
         r"|schtasks\b.*/s\s|invoke-wmimethod\b.*-computername",
         needles="psexec paexec /node: winrs -computername enter-pssession \\\\ ssh scp /s"),
    _ind("archive_data", "pack files into an archive", "T1560",
         r"\btar\s+-?\w*[cz]\w*\b|\bzip\s+-|7z(a|\.exe)?\s+a\b|\brar\s+a\b|compress-archive|\bmakecab\b"
         r"|\bgzip\b|\bzip\s+\S+\.zip",
         needles="tar zip 7z rar compress-archive makecab gzip"),
    _ind("exfil_transfer", "upload or send data out (curl -T/-F, scp, rsync, rclone, nc < file)",
         "T1048 T1041 T1567",
         r"curl\b.*\s(-t|--upload-file|-f|--form|--data-binary|-d\s*@)|\brclone\b"
         r"|\brsync\b.*:|\bftp\b|\btftp\b|invoke-restmethod\b.*-method\s+(post|put)|\bn(c|cat)\b.*<"
         r"|uploadfile|uploadstring|\bscp\b.*:",
         needles="curl rclone rsync ftp invoke-restmethod nc upload scp"),
    _ind("credential_tool", "credential dumping tools and hives (mimikatz, comsvcs, sam/shadow)", "T1003",
         r"mimikatz|sekurlsa|lsadump|kerberos::|comsvcs(\.dll)?\W*(minidump|24)"
         r"|procdump\b.*lsass|ntdsutil|reg(\.exe)?\s+save\s+hklm\\(sam|security|system)|/etc/shadow"
         r"|\bunshadow\b|vaultcmd|cmdkey\s+/list|rubeus|kerberoast|invoke-mimikatz|lazagne",
         needles=(
             "mimikatz sekurlsa lsadump kerberos:: comsvcs procdump ntdsutil save /etc/shadow "
             "unshadow vaultcmd cmdkey rubeus kerberoast lazagne"
         )),
    _ind("defense_tamper", "disable AV, firewall, audit or SELinux; AMSI bypass", "T1562",
         r"set-mppreference|add-mppreference\b.*exclusion|disablerealtimemonitoring|amsiutils"
         r"|amsiinitfailed|setenforce\s+0|systemctl\s+(stop|disable)\s+(auditd|firewalld|apparmor)"
         r"|ufw\s+disable|iptables\s+-f|netsh\b.*(firewall|advfirewall).*(off|disable)|sc\s+stop\s+windefend"
         r"|fltmc\b.*unload|auditpol\b.*/(clear|remove)|tamperprotection|stop-service\b.*windefend",
         needles=(
             "mppreference disablerealtimemonitoring amsiutils amsiinitfailed setenforce systemctl "
             "ufw iptables netsh windefend fltmc auditpol tamperprotection"
         )),
    _ind("proxy_execution", "signed-binary proxy execution (mshta, regsvr32 /i:, rundll32 js, msbuild)",
         "T1218 T1127",
         r"mshta\b.*(https?:|javascript:|vbscript:)|regsvr32\b.*/i:|scrobj\.dll"
         r"|rundll32\b.*(javascript:|url\.dll|shell32\.dll,\s*shellexec|advpack|ieadvpack|zipfldr)"
         r"|msiexec\b.*/q.*https?:|\bodbcconf\b|installutil\b|\bregasm\b|\bregsvcs\b|cmstp\b.*/s"
         r"|msbuild\b.*\.(xml|csproj|proj)\b|forfiles\b.*/c|pcalua\b.*-a|mavinject",
         needles=(
             "mshta regsvr32 scrobj rundll32 msiexec odbcconf installutil regasm regsvcs cmstp "
             "msbuild forfiles pcalua mavinject"
         )),
    _ind("hide_artifacts", "hide or timestomp files (attrib +h, chattr +i, touch -r)", "T1564.001 T1070.006",
         r"attrib\s+.*\+[hs]|chattr\s+\+i|touch\s+-(r|t|d)\s|set-itemproperty\b.*(creationtime|"
         r"lastwritetime)|\.lastwritetime\s*=",
         needles="attrib chattr touch creationtime lastwritetime"),
    _ind("file_wipe", "secure delete or mass recursive deletion", "T1485 T1070.004",
         r"\bshred\b|\bsdelete\b|cipher\s+/w|\brm\s+-(?=[^\Wr]*r[^\Wf]*f)\w*+\s+/(\s|$|\*)|dd\s+if=/dev/(zero|u?random)"
         r"\s+of=/dev/|format\s+[a-z]:|del\s+/[fsq].*/[fsq]",
         needles="shred sdelete cipher rm if=/dev/ format del"),
    _ind("ssh_keys", "authorized_keys, ssh-keygen or private key access", "T1098.004 T1552.004",
         r"authorized_keys|ssh-keygen|\bid_(rsa|dsa|ecdsa|ed25519)\b|\.ssh[\\/]",
         needles="authorized_keys ssh-keygen id_ .ssh"),
    _ind("privilege_escalation", "sudo/su/pkexec, setuid hunts, runas, UAC bypass hosts", "T1548",
         r"\bsudo\s+(-l|su\b|-s\b|-i\b)|\bsu\s+(-|root)|\bpkexec\b|-perm\s+-?[u/]?[+=]?[4-6]000|\bsetcap\b"
         r"|getcap\s+-r|runas\s+/user|fodhelper|eventvwr|computerdefaults|sdclt|ms-settings\\shell",
         needles=(
             "sudo su pkexec -perm setcap getcap runas fodhelper eventvwr computerdefaults sdclt ms-settings"
         )),
    _ind("data_collection", "clipboard, screenshots, keylogging or searching for secrets",
         "T1005 T1115 T1113",
         r"get-clipboard|\bxclip\b|\bxsel\b|copyfromscreen|screenshot|import\s+-window\s+root|keylog"
         r"|getasynckeystate|findstr\s+/\w*?s.*pass|grep\s+-\w*?r.*pass(word|wd)"
         r"|get-childitem\b.*-recurse.*\.(docx?|xlsx?|pdf|kdbx)|find\s+/.*-name\s+.*\.(docx?|pdf|kdbx|pem)",
         needles=(
             "clipboard xclip xsel copyfromscreen screenshot import keylog getasynckeystate findstr "
             "grep get-childitem find"
         )),
    _ind("tunnel_proxy", "port forwarding or tunnelling (ssh -R/-D, plink, chisel, portproxy)", "T1572 T1090",
         r"\bssh\b.*\s-[a-z]*[rld]\s+\d|\bplink\b|\bchisel\b|\bngrok\b|socat\b.*tcp-listen"
         r"|portproxy|\bfrpc\b|\biodine\b|dnscat",
         needles="ssh plink chisel ngrok socat portproxy frpc iodine dnscat"),
    _ind("url_literal", "a URL in the command line", "T1105", r"\b(https?|ftp)://", needles="://"),
    _ind("ip_literal", "a raw IPv4 address in the command line", "T1071",
         r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?![0-9.])",
         needles=""),
    _ind("user_writable_exec", "runs or names an executable/script in a temp or world-writable dir", "T1204",
         r"((?:\A|(?<=[\s\"']))(?>[^\s\"']*?\\(temp|tmp|appdata\\local\\temp|downloads|public)\\)[^\s\"']*\.(exe|dll|scr|ps1|bat"
         r"|cmd|vbs|js|hta))|((^|\s)/(tmp|var/tmp|dev/shm)/)",
         needles="\\temp\\ \\tmp\\ \\downloads\\ \\public\\ /tmp/ /var/tmp/ /dev/shm/"),
    _ind("obfuscation", "caret/backtick/char-code/concat obfuscation or IFS tricks", "T1027",
         r"(\w\^){3,}|(\w`){3,}|\[char\]\s*\d|-join\s*\(|\$\{ifs\}|-bxor|\[string\]::join"
         r"|replace\([^)]*\)\s*\.\s*replace|\|\s*rev\b|(\+\s*['\"]\w{1,3}['\"]\s*){3,}",
         needles="^ ` [char] -join ${ifs} -bxor [string]::join replace rev +"),
    _ind("wmi_execution", "process creation through WMI/CIM", "T1047",
         r"wmic\b.*process\s+call\s+create|invoke-wmimethod|invoke-cimmethod|win32_process\b.*create",
         needles="wmic invoke-wmimethod invoke-cimmethod win32_process"),
    _ind("inline_interpreter", "python -c / perl -e / ruby -e / node -e / php -r one-liners", "T1059.006",
         r"\b(python\d?(\.\d+)?|perl|ruby|node|php)\s+-[ecr]\s",
         needles="python perl ruby node php"),
    _ind("security_discovery", "look for security products", "T1518.001",
         r"securitycenter2|antivirusproduct|get-mpcomputerstatus|sc\s+query\s+windefend|"
         r"\b(ps|tasklist)\b.*\|\s*(grep|findstr).*(av|defender|falcon|sentinel|sysmon)",
         needles="securitycenter2 antivirusproduct get-mpcomputerstatus windefend |"),
    _ind("memory_dump", "dump process memory (procdump, MiniDump, gcore, /proc/*/mem)", "T1003.001",
         r"procdump|minidump|\bgcore\b|(?:\A|(?<=\s))(?>\S*?/proc/)\S+/mem\b|out-minidump|createdump",
         needles="procdump minidump gcore /proc/ createdump"),
    _ind("remote_access_tool", "remote access/admin tools launched by command line", "T1219",
         r"anydesk|teamviewer|screenconnect|\bvnc\w*\b|atera|\bngrok\b",
         needles="anydesk teamviewer screenconnect vnc atera ngrok"),
    _ind("kill_processes", "kill processes or stop services en masse", "T1489",
         r"taskkill\b.*/(f|im)|stop-process\b.*-force|\bpkill\b|\bkillall\b|net1?\s+stop\b"
         r"|systemctl\s+stop\b|sc\s+stop\b",
         needles="taskkill pkill killall stop"),
    _ind("dll_sideload_path", "loads code from a writable path via rundll32/regsvr32", "T1574.002",
         r"(rundll32|regsvr32)\b.*(\\temp\\|\\appdata\\|\\users\\public\\|\\programdata\\|/tmp/)",
         needles="rundll32 regsvr32"),
    _ind("ransom_encrypt", "bulk encryption commands (openssl enc -e, gpg -c, cipher /e)", "T1486",
         r"openssl\s+enc\b(?!.*\s-d\b)|\bgpg\b.*(-c|--symmetric)|cipher\s+/e|\.encrypt\("
         r"|aescryptoserviceprovider",
         needles="openssl gpg cipher .encrypt( aescryptoserviceprovider"),
)
# Feature version 1.1: what a *lone* command line configures, for the process-creation view (Security 4688,
# Sysmon event 1), where the command line is nearly all there is. They are kept apart from INDICATORS
# (their own mask, `lone_mask`): the rows of the full-telemetry view and the re-scoring of ancestors
# stay exactly as at 1.0, and only the process-creation booster (`pipeline.model.routed`) reads them.
# Each names a configuration an attacker changes (or reads) and an installer or admin rarely does in
# the same words: a service's recovery command or binary path, a debugger for another image, logon
# autostarts, security and credential settings in the registry, audit and firewall changes, explicit
# credentials on the command line, session hijacking, plug-in DLLs of system services.
_WRITABLE = (r"(\\programdata\\|\\appdata\\|\\users\\public\\|\\windows\\temp\\|\\temp\\|\\perflogs\\"
             r"|\\downloads\\|\\windows\\tasks\\|\\recycler|\\\$recycle\.bin\\)")
_SET = r"(/d|-value)\s+[\"']?"  # what a value is set to: `reg add ... /d 1`, `Set-ItemProperty ... -Value 1`
# A file started in the same line (for `fetch_and_run`): by a cmdlet, `start`, after a command separator,
# or by a script or library host.
_STARTED = (r"(start-process|invoke-item|\bstart\s+\"?[^\s\"]+\.(exe|bat|cmd|ps1|hta|vbs|js)\b"
            r"|[;&|]\s*&?\s*[\"']?[^\s;&|\"']+\.(exe|bat|cmd|hta|vbs|js)\b|rundll32|regsvr32|mshta|\bcscript"
            r"|\bwscript|msiexec)")
LONE_INDICATORS: tuple[Indicator, ...] = (
    _ind("service_tamper", "a service's recovery command, binary path, DLL or security descriptor changed",
         "T1543.003 T1574.011",
         r"\bsc(\.exe)?\s+(\\\\\S+\s+)?(failure\b.*\bcommand=|config\b.*\bbinpath=|sdset\b)"
         r"|\\services\\[^\\\s]+(\\parameters)?\"?\s+/v\s+\"?(imagepath|failurecommand|servicedll)"
         r"|set-service\b.*-binarypathname|set-itemproperty\b.*\\services\\.*(imagepath|servicedll)",
         needles="failure config sdset \\services\\ set-service"),
    _ind("debugger_hijack", "a debugger or exit monitor set for another image (IFEO, SilentProcessExit)",
         "T1546.012 T1546.008",
         r"image file execution options|silentprocessexit|\\(sethc|utilman|osk|magnify|narrator|displayswitch"
         r"|atbroker)\.exe\b.*\b(debugger|globalflag)",
         needles="image silentprocessexit sethc utilman osk magnify narrator displayswitch atbroker"),
    _ind("logon_autostart", "Winlogon, AppInit/AppCert DLLs, policy Run keys, Active Setup, logon scripts",
         "T1547.004 T1546.010 T1547.014 T1037.001",
         r"\\winlogon\"?\s+/v\s+\"?(userinit|shell|notify|taskman)|appinit_dlls|appcertdlls"
         r"|\\policies\\explorer\\run|active setup\\installed components|userinitmprlogonscript"
         r"|\\start menu\\programs\\startup\\",
         needles="winlogon appinit_dlls appcertdlls explorer active userinitmprlogonscript startup"),
    _ind("defense_registry", "registry values set to switch off Defender, UAC, logging or command-line "
         "auditing (the value that disables, not any write)",
         "T1562.001 T1562.002 T1548.002 T1112",
         r"^(?=.*\b(reg(\.exe)?\"?\s+add|set-itemproperty|new-itemproperty)\b)(?:"
         r"(?=.*disable(antispyware|antivirus|realtimemonitoring|behaviormonitoring|ioavprotection"
         r"|onaccessprotection"
         r"|scanonrealtimeenable|scriptscanning|blockatfirstseen"
         r"|routinelytakingaction))(?=.*" + _SET + r"(0x0*)?1\b)"
         r"|(?=.*(enablelua|consentpromptbehavioradmin|promptonsecuredesktop|enablescriptblocklogging"
         r"|enablemodulelogging|processcreationincludecmdline_enabled"
         r"|tamperprotection))(?=.*" + _SET + r"(0x0*)?0\b)"
         r"|(?=.*localaccounttokenfilterpolicy)(?=.*" + _SET + r"(0x0*)?1\b)"
         r"|(?=.*\\services\\(eventlog|windefend|sense|wdboot|wdfilter|wdnisdrv|wdnissvc|sysmon\w*|mpssvc)\b)"
         r"(?=.*\bstart\b)(?=.*" + _SET + r"(0x0*)?4\b)"
         r"|(?=.*\\control\\minint)|(?=.*\\wmi\\autologger\\)(?=.*" + _SET + r"(0x0*)?0\b))",
         needles="add set-itemproperty new-itemproperty"),
    _ind("credential_registry", "registry values set to expose credentials (WDigest caching on, LSA "
         "protection off, DSRM network logon, weak LM hashes, credential delegation)",
         "T1003.001 T1112 T1556",
         r"^(?=.*\b(reg(\.exe)?\"?\s+add|set-itemproperty|new-itemproperty)\b)(?:"
         r"(?=.*uselogoncredential)(?=.*" + _SET + r"(0x0*)?1\b)"
         r"|(?=.*(runasppl|\bnolmhash|disablerestrictedadmin\b))(?=.*" + _SET + r"(0x0*)?0\b)"
         r"|(?=.*dsrmadminlogonbehavior)(?=.*" + _SET + r"(0x0*)?[12]\b)"
         r"|(?=.*lmcompatibilitylevel)(?=.*" + _SET + r"(0x0*)?[0-2]\b)"
         r"|(?=.*(allowdefaultcredentials|allowdefcredentialswhenntlmonly|tokenleakdetectdelaysecs)))",
         needles="add set-itemproperty new-itemproperty"),
    _ind("audit_tamper", "audit policy, event log or change journal switched off or removed",
         "T1562.002 T1070",
         r"auditpol\b.*(/set\b.*:\s*disable|/remove|/clear)|wevtutil\b.*\bsl\b.*/e:false"
         r"|fsutil\b.*usn\s+deletejournal|nteventlog\b.*cleareventlog|limit-eventlog|clear-eventlog"
         r"|bcdedit\b.*(testsigning\s+on|nointegritychecks\s+on|debug\s+on)",
         needles="auditpol wevtutil fsutil nteventlog limit-eventlog clear-eventlog bcdedit"),
    _ind("firewall_change", "a firewall rule or profile added, opened or switched off",
         "T1562.004",
         r"netsh\b.*(firewall|advfirewall)\b.*\b(add|set)\b|new-netfirewallrule|set-netfirewallprofile"
         r"|set-netfirewallrule|disable-netfirewallrule",
         needles=(
             "netsh new-netfirewallrule set-netfirewallprofile set-netfirewallrule disable-netfirewallrule"
         )),
    _ind("security_config_query", "firewall, audit policy, Defender or LSA settings read",
         "T1016 T1518.001 T1082",
         r"netsh\b.*(firewall|advfirewall)\b.*\bshow\b|auditpol\b.*/(get|list)|get-netfirewall"
         r"|get-mppreference|reg(\.exe)?\s+query\b.*(\\lsa\b|\\windows defender|\\policies\\|wdigest"
         r"|\\winlogon|image file execution options)",
         needles="netsh auditpol get-netfirewall get-mppreference query"),
    _ind("net_capture", "a packet capture started (pktmon, netsh trace capture, tcpdump, tshark)",
         "T1040",
         r"pktmon\b.*\bstart\b|netsh\b.*trace\s+start\b.*capture\s*=\s*yes|\btcpdump\b|\btshark\b|\bwindump\b"
         r"|\bdumpcap\b",
         needles="pktmon netsh tcpdump tshark windump dumpcap"),
    _ind("explicit_credentials", "a password typed on the command line (net use /user: PASS, runas "
         "/savecred, "
         "psexec -p, /password:)",
         "T1078 T1021.002 T1552",
         # `/u(ser)?:\S+\s+(?!/)\S+` exactly, in linear time: only the first `/u:` of a token is tried
         # (every later one in the same token has the same rest of the line after its token).
         r"net1?(\.exe)?\s+use\b.*(?:\A|(?<=\s))(?>\S*?/u(ser)?:)\S++\s+(?!/)\S+"
         r"|\bcmdkey\b.*/pass:|/savecred|/password:\S|/rp\s+\S"
         r"|(?:\A|(?<=\s))(?>\S*?(psexec|paexec))\S*\s.*\s-p\s+\S|sshpass\s+-p|-asplaintext|convertto-securestring",
         needles=(
             "use cmdkey /savecred /password: /rp psexec paexec sshpass -asplaintext convertto-securestring"
         )),
    _ind("session_hijack", "another user's session attached to this one (tscon to an RDP session, shadowing "
         "without consent)",
         "T1563.002",
         r"\btscon(\.exe)?\s+\d+\s+/dest:(?!console\b)\S|\bmstsc\b.*/shadow:\d+.*/noconsentprompt",
         needles="tscon mstsc"),
    _ind("share_change", "a share created or opened to everyone, or shares mounted with admin rights",
         "T1135 T1021.002",
         r"net1?(\.exe)?\s+share\s+\S+=\S+|new-smbshare|grant-smbshareaccess|/grant:\s*everyone",
         needles="share new-smbshare grant-smbshareaccess /grant"),
    _ind("spn_change", "a service principal name added to an account (Kerberoasting set-up)",
         "T1098 T1558.003",
         r"\bsetspn(\.exe)?\s+(-\w+\s+)*-[as]\s|set-aduser\b.*serviceprincipalname|-serviceprincipalnames",
         needles="setspn set-aduser serviceprincipalname -serviceprincipalnames"),
    _ind("plugin_dll_register", "a DLL registered into a system service (netsh helper, DNS plug-in, "
         "time provider, print monitor, LSA package)",
         "T1546.007 T1574 T1547.003 T1547.010",
         r"netsh(\.exe)?\s+add\s+helper|serverlevelplugindll|\\timeproviders\\|\\print\\monitors\\"
         r"|\\control\\lsa\\.*packages|\\netsh\"?\s+/v",
         needles="helper serverlevelplugindll \\timeproviders\\ \\monitors\\ packages \\netsh"),
    _ind("privileged_schedule", "a scheduled task or at job run as SYSTEM, highest, at logon or start-up",
         "T1053.005 T1053.002",
         r"schtasks\b.*/create\b.*(/ru\s+\"?(system|nt authority\\system)|/rl\s+highest"
         r"|/sc\s+(onlogon|onstart"
         r"|onidle))|\bat(\.exe)?\s+(\\\\\S+\s+)?\d{1,2}:\d{2}|register-scheduledtask\b.*(system|highest)",
         needles="schtasks =at =at.exe register-scheduledtask"),
    _ind("fs_redirect", "file-system redirection tricks (symbolic-link evaluation, links into shadow copies)",
         "T1006 T1564",
         r"fsutil\b.*behavior\s+set\s+symlinkevaluation|mklink\b.*globalroot|harddiskvolumeshadowcopy",
         needles="fsutil mklink globalroot harddiskvolumeshadowcopy"),
    _ind("feature_enable", "an optional feature enabled that hosts other code (WSL, SMB1, telnet, TFTP)",
         "T1202 T1562",
         r"(dism\b.*/enable-feature|enable-windowsoptionalfeature|add-windowscapability)\b.*"
         r"(subsystem-linux|smb1|telnet|tftp|virtualmachineplatform|openssh\.server)",
         needles="dism enable-windowsoptionalfeature add-windowscapability"),
    _ind("writable_config_target", "a service, task, firewall rule or registry value pointed at a "
         "user-writable path",
         "T1574 T1543.003 T1053.005",
         r"(binpath=|command=|program=|/tr\s|/v\s+\S.*/d\s|-binarypathname|-execute\s"
         r"|-program\s).*" + _WRITABLE,
         needles="binpath= command= program= /tr /d -binarypathname -execute -program"),
    _ind("remote_launch", "a shell, script or payload started on another host (not a query)",
         "T1021.006 T1047 T1569.002 T1053.005",
         r"\bwinrs\b.*(?:\A|(?<=\s))(?>\S*?-r(emote)?:)\S++\s+\"?(cmd|powershell|pwsh|rundll32|mshta|regsvr32"
         r"|wscript|cscript"
         r"|\S+\.(exe|bat"
         r"|ps1|vbs|js|hta))\b|invoke-command\b.*\{[^{}]{0,1024}(iex|invoke-expression|start-process|downloadstring"
         r"|new-object|\.exe|cmd\b)|wmic\b.*/node:.*process\s+call\s+create|\bsc(\.exe)?\s+\\\\\S+\s+(create"
         r"|config|start)\b|schtasks\b.*/s\s+\S.*/(create|run)\b|\b(psexec|paexec)",
         needles="winrs invoke-command wmic sc schtasks psexec paexec"),
    _ind("relay_admin_port", "a port relay to a remote-administration port (RDP, SMB, RPC, WinRM, LDAP, "
         "MSSQL)",
         "T1090 T1572",
         r"portproxy\b.*connectport=(3389|445|139|135|5985|5986|1433|389|636|88)\b",
         needles="portproxy"),
    # Feature version 1.2: remote-shell output, PowerShell that builds what it runs, content fetched and run;
    # read in the command line and in what an -EncodedCommand decodes to (`lone_mask`).
    _ind("remote_shell_output", "an Impacket-style remote shell's command (wmiexec, smbexec, atexec, "
         "dcomexec): output sent to an admin share's `__output` or `__<timestamp>` file, its batch file run "
         "quietly from Windows or Windows\\Temp, or output sent to a Windows\\Temp file of eight letters",
         "T1047 T1021.002 T1569.002 T1053.005",
         r"\\\\[^\\\s]+\\(admin|c)\$\\__(output\b|\d{9,})"
         r"|\bcmd(\.exe)?\"?\s+/q\s+/c\s+\"?(%\w+%|[a-z]:\\windows(\\temp)?)\\[^\\\s\"]+\.bat\b"
         r"|>\s*\"?(%windir%|[a-z]:\\windows)\\temp\\\w{8}\.tmp\"?\s+2>&1",
         needles="__ /q 2>&1"),
    _ind("dynamic_invoke", "PowerShell that builds the command it runs: IEX spelled from characters of "
         "variables ($env:ComSpec[4,15,25], $PSHome[..], $ShellId[..], $VerbosePreference) or from character "
         "codes ([char]105+[char]101+[char]120, [char[]](73,69,88)), or decoded text piped into a computed "
         "command `| .( )` / `| &( )`",
         "T1027.010 T1059.001",
         r"\$\{?env:(comspec|public)\}?\s*\[\s*-?\d+\s*[,\]]|\$pshome\s*\[\s*-?\d+|\$shellid\s*\[\s*-?\d+"
         r"|verbosepreference(\.tostring\(\s*\))?(\s*\))?\s*\[\s*\d+\s*,|\*mdr\*"
         r"|\|\s*[.&]\s*\(\s*(\$|\(|'|\")"
         r"|\[char\]\s*(73|105|0x49|0x69)\s*\+\s*\[char\]\s*(69|101|0x45|0x65)\s*\+\s*\[char\]\s*(88|120|0x58|0x78)\b"
         r"|\[char\[\]\]\s*@?\(\s*(73|105)\s*,\s*(69|101)\s*,\s*(88|120)\s*\)",
         needles="comspec public pshome shellid verbosepreference *mdr* | [char] [char[]]"),
    _ind("fetch_and_run", "content downloaded and run in one command: a download cradle fed to IEX, or a "
         "file fetched (WebClient, -OutFile, bitsadmin, certutil, BITS, curl or wget -o) and then started",
         "T1059.001 T1105 T1204.002",
         r"^(?=.*(\biex\b|invoke-expression))(?=.*(downloadstring|downloaddata|net\.webclient|invoke-webrequest"
         r"|\biwr\b|invoke-restmethod|\birm\b|\bcurl\b|\bwget\b|webrequest\]::create|msxml2\.xmlhttp"
         r"|winhttp\.winhttprequest))"
         r"|^(?=.*(downloadfile|-outfile\b|/transfer\b|-urlcache\b|start-bitstransfer))(?=.*" + _STARTED + ")"
         r"|^(?=.*\b(curl|wget)\b)(?=.*\s(-o|--output)\s+[^\s;&|]+\.(exe|dll|bat|cmd|ps1|hta|vbs|js|msi|scr)\b)"
         r"(?=.*" + _STARTED + ")",
         needles=(
             "iex invoke-expression downloadfile -outfile /transfer -urlcache start-bitstransfer curl wget"
         )),
    # Feature version 1.3: the domain mapped as a whole, not one account looked up.
    _ind("domain_enumeration", "the domain mapped as a whole: every user or group (`net user /domain`), a "
         "privileged group's members, the password policy, SPNs by wildcard, trusts or domain controllers, "
         "every share of a host, or an AD enumeration tool (AdFind, PowerView, an LDAP searcher); not one "
         "named account or group looked up",
         "T1087.002 T1069.002 T1201 T1482 T1558.003 T1135 T1018",
         r"\bnet1?(\.exe)?\"?\s+(user|group|accounts|view|computers?)\s+/do(m(ain)?)?(\s|:|$)"
         r"|\bnet1?(\.exe)?\"?\s+group\s+\"?(domain\s+(admins|controllers|computers)|enterprise\s+admins"
         r"|schema\s+admins|dnsadmins|exchange\s+trusted\s+subsystem)\b"
         r"|\bnet1?(\.exe)?\"?\s+view\s+(\\\\\S+\s+)?/all\b"
         r"|\bsetspn(\.exe)?\"?\s(.*\s)?[-/]q\s+\S*\*"
         r"|\bnltest(\.exe)?\"?\s.*/(dclist|domain_trusts|trusted_domains|all_trusts)\b"
         r"|\bdsquery(\.exe)?\"?\s+\*|\bdsquery(\.exe)?\"?\s.*-limit\s+0\b|\badfind(\.exe)?\b"
         r"|get-ad(user|computer|group)\b.*-filter\s*['\"{(]?\s*\*|get-ad(user|computer)\b.*serviceprincipalname"
         r"|get-adgroupmember\b.*(domain|enterprise|schema)\s+admins|get-adtrust\b|getalltrustrelationships"
         r"|get-addomaincontroller\b.*-filter|get-net(user|group|computer|domaintrust|domaincontroller|session"
         r"|share|loggedon)\b|get-domain(user|group|computer|trust|controller)\b|invoke-(sharefinder|userhunter"
         r"|enumeratelocaladmin)\b|find-localadminaccess|\[adsisearcher\]|directoryservices\.directorysearcher",
         needles=(
             "=net =net1 setspn nltest dsquery adfind get-ad getalltrustrelationships get-net get-domain "
             "invoke-sharefinder invoke-userhunter invoke-enumeratelocaladmin find-localadminaccess "
             "adsisearcher directorysearcher"
         )),
    _ind("recovery_inhibit", "every shadow copy, backup catalogue or automatic recovery removed: `vssadmin "
         "delete shadows /all`, `wmic shadowcopy delete`, Win32_ShadowCopy objects deleted, `wbadmin delete "
         "catalog` or `-keepversions:0`, shadow storage shrunk to megabytes, `bcdedit` recovery off or boot "
         "failures ignored; not a backup tool's retention (`/oldest`, `-keepversions:3`)",
         "T1490",
         r"\bvssadmin(\.exe)?\"?\s+delete\s+shadows\b.*\s/all\b|\bvssadmin(\.exe)?\"?\s+resize\s+shadowstorage\b"
         r".*maxsize=\s*\d{1,4}\s*mb\b|\bshadowcopy\s+delete\b|win32_shadowcopy\b.*(\.delete\(|remove-wmiobject"
         r"|remove-ciminstance)|\bwbadmin(\.exe)?\"?\s+delete\s+(catalog\b|(systemstatebackup|backup)\b.*"
         r"-keepversions:\s*0\b)|\bbcdedit(\.exe)?\"?\s.*(recoveryenabled\s+(no|off|false|0)\b"
         r"|bootstatuspolicy\s+ignoreallfailures)",
         needles="vssadmin shadowcopy win32_shadowcopy wbadmin bcdedit"),
    _ind("recovery_tool", "a shadow-copy, backup or boot-configuration tool used at all (vssadmin, wbadmin, "
         "bcdedit, diskshadow, wmic shadowcopy, Win32_ShadowCopy): so that a backup tool's retention reaches "
         "the process-creation view's booster beside the attacks `recovery_inhibit` names",
         "T1490",
         r"\b(vssadmin|wbadmin|bcdedit|diskshadow)(\.exe)?\b|\bshadowcopy\b|win32_shadowcopy",
         needles="vssadmin wbadmin bcdedit diskshadow shadowcopy"),
)
# fmt: on

LONE_INDICATOR_NAMES: tuple[str, ...] = tuple(ind.name for ind in LONE_INDICATORS)
_LONE_INDEXED = tuple(enumerate(LONE_INDICATORS))

INDICATOR_NAMES: tuple[str, ...] = tuple(ind.name for ind in INDICATORS)
_INDEXED = tuple(enumerate(INDICATORS))
_TOKEN_SPLIT = re.compile(r"[^a-z0-9_\-]+")
_CACHED_CHARS = 4096  # command lines repeat across a fleet; huge scripts are not worth caching


def indicator_mask(text: str) -> int:
    """Return the bit mask of every indicator found in `text` (bit i = INDICATORS[i])."""
    if not text:
        return 0
    return _cached_mask(text) if len(text) <= _CACHED_CHARS else _mask(text)


def lone_mask(text: str) -> int:
    """The bit mask of every `LONE_INDICATORS` entry found in `text` (bit i = LONE_INDICATORS[i])."""
    if not text:
        return 0
    return _cached_lone_mask(text) if len(text) <= _CACHED_CHARS else _lone_mask(text)


def _mask_of(text: str, indexed: tuple[tuple[int, Indicator], ...]) -> int:
    """The mask, one indicator at a time (`Indicator.search`): the reference `_Matcher` is tested equal to."""
    lowered = text.lower()
    tokens = frozenset(_TOKEN_SPLIT.split(lowered))
    mask = 0
    for bit, ind in indexed:
        if ind.search(lowered, tokens):
            mask |= 1 << bit
    return mask


class _Matcher:
    """`_mask_of` for one list of indicators, its prefilters (`Indicator.may_match`) run for all of them at
    once: each distinct substring is looked for once, and only if its first three characters occur in the
    text (`_grams`), each whole token is one dict lookup; the indicators they leave are searched alternative
    by alternative (`_alternatives`, `_branches`), skipping those whose needle the text lacks.

    Why: a command line the caches have not seen (most of them carry a process's own arguments: ids,
    temporary names, URLs) cost ~100 us per mask on the OTRF recordings' 1,030 distinct lines (~3.5 ms
    for a long script), and a fleet's process starts pay it twice (`indicator_mask`, then `lone_mask`).
    Loose needles ("-f" is in "--field-trial-handle") let many patterns through to a search that tries
    every alternative at every position. BENCHMARKS.md, "Session W"."""

    def __init__(self, indicators: Sequence[Indicator]) -> None:
        self.indicators = tuple(indicators)
        always = [bit for bit, ind in enumerate(indicators) if not ind.substrings and not ind.tokens]
        self.always = sum(1 << bit for bit in always)
        substrings: dict[str, int] = {}
        tokens: dict[str, int] = {}
        for bit, ind in enumerate(indicators):
            for text in ind.substrings:
                substrings[text] = substrings.get(text, 0) | 1 << bit
            for token in ind.tokens:
                tokens[token] = tokens.get(token, 0) | 1 << bit
        self.needles = tuple(substrings.items())  # a long text looks for each
        # a substring can only occur if its first three characters do: looked for by them (`_grams`)
        by_gram: dict[tuple[str, ...], list[tuple[str, int]]] = {}
        for text, bits in substrings.items():
            by_gram.setdefault(tuple(text[:3]) if len(text) >= 3 else (), []).append((text, bits))
        self.short = tuple(by_gram.pop((), ()))  # one or two characters: looked for as they are
        self.by_gram = {gram: tuple(found) for gram, found in by_gram.items()}
        self.grams = frozenset(self.by_gram)
        self.tokens, self.known_tokens = tokens, frozenset(tokens)
        self.alternatives = tuple(_alternatives(ind.pattern.pattern) for ind in indicators)
        self.branches = tuple(_branches(ind.pattern.pattern) for ind in indicators)

    def __call__(self, text: str) -> int:
        lowered = text.lower()
        candidates = self.always
        if len(lowered) <= GRAMS_CHARS:
            for gram in self.grams.intersection(_grams(lowered)):
                for needle, bits in self.by_gram[gram]:
                    if needle in lowered:
                        candidates |= bits
            for needle, bits in self.short:
                if needle in lowered:
                    candidates |= bits
        else:  # a script's many distinct triples would cost more than looking for every needle
            for needle, bits in self.needles:
                if needle in lowered:
                    candidates |= bits
        for token in self.known_tokens.intersection(_TOKEN_SPLIT.split(lowered)):
            candidates |= self.tokens[token]
        mask, linear = 0, len(lowered) >= LINEAR_FROM
        while candidates:
            low = candidates & -candidates
            bit = low.bit_length() - 1
            if not linear:
                if (alternatives := self.alternatives[bit]) is None:
                    found = self.indicators[bit].pattern.search(lowered) is not None
                else:
                    found = any(needle in lowered and alternative.search(lowered) is not None
                                for needle, alternative in alternatives)  # fmt: skip
            elif (branches := self.branches[bit]) is None:
                found = self.indicators[bit].linear.search(lowered) is not None
            else:
                found = any(needle in lowered and _first_occurrences(lowered, parts)
                            for needle, parts in branches)  # fmt: skip
            if found:
                mask |= low
            candidates ^= low
        return mask


GRAMS_CHARS = 4096  # texts up to this long are prefiltered through their triples (`_grams`), and remembered
_last_grams: tuple[str, frozenset[tuple[str, ...]]] = ("", frozenset())  # `lone_mask` reads the line
# `indicator_mask` has just read: one (text, grams) pair, replaced whole (a reader never sees half of it)


def _grams(lowered: str) -> frozenset[tuple[str, ...]]:
    """Every three consecutive characters of the text (as tuples: made in one C pass by `zip`)."""
    global _last_grams
    last, grams = _last_grams
    if lowered != last:
        grams = frozenset(zip(lowered, lowered[1:], lowered[2:], strict=False))  # the shorter ones end it
        _last_grams = (lowered, grams)
    return grams


_REFERS = re.compile(r"\\[1-9]|\(\?P=|\(\?\(")  # a backreference, or a conditional on a group
_FLAGS = re.compile(r"\(\?[aiLmsux-]+[:)]")  # inline flags: an alternative alone would lose or gain them


def _splits(regex: str) -> bool:
    """Whether pieces of `regex` mean alone what they mean in it: not anchored with `^` (kept whole), no
    group referred to (numbers would shift alone), no inline flags (a piece could lose them)."""
    return not (regex.startswith("^") or _REFERS.search(regex) or _FLAGS.search(regex))


def _pieces(pieces: list[str]) -> tuple[tuple[str, re.Pattern[str]], ...] | None:
    """Each piece compiled on its own with its `_needle`; None when one does not compile alone."""
    try:
        return tuple((_needle(piece), re.compile(piece)) for piece in pieces)
    except re.error:
        return None


def _alternatives(regex: str) -> tuple[tuple[str, re.Pattern[str]], ...] | None:
    """The pattern's top-level alternatives, each compiled on its own with its `_needle`: `search` of the
    whole pattern finds a match exactly when one of them does. None for a pattern of one alternative or
    one that does not split (`_splits`)."""
    alternatives = _split_top(regex, "|")
    return _pieces(alternatives) if len(alternatives) >= 2 and _splits(regex) else None


def _branches(regex: str) -> tuple[tuple[str, tuple[re.Pattern[str], ...]], ...] | None:
    """The linear form's alternatives (`linear_form`), each as its `.*`-separated parts compiled on their
    own, with the longest text one of its parts cannot match without (`_needle`: looked for first, '' when
    there is none); None for a pattern that does not split (`_splits`), or whose parts do not compile
    alone: then the linear form itself is searched."""
    if not _splits(regex):
        return None
    split = []
    for branch in (alt for top in _split_top(regex, "|") for alt in _distribute(top)):
        parts = _pieces(_split_top(branch, ".*"))
        if parts is None:
            return None
        split.append((max((n for n, _ in parts), key=len), tuple(p for _, p in parts)))
    return tuple(split)


_re_parser: Any = importlib.import_module("re._parser")  # the standard library's own parser (no type stubs)
_REPEATS = frozenset(getattr(_re_parser, name) for name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"))


def _needle(regex: str) -> str:
    """The longest run of plain characters that `regex` matches in sequence at its top level (not inside
    a group, a class, an alternation, or anything optional; a character repeated at least once counts
    once and ends the run): text every match contains. '' when there is none."""
    parsed = _re_parser.parse(regex)
    if parsed.state.flags & (re.IGNORECASE | re.VERBOSE):  # letters then match more than themselves
        return ""
    runs: list[str] = []
    run: list[str] = []
    for op, value in parsed:
        if op is _re_parser.LITERAL:
            run.append(chr(value))
            continue
        low, item = (value[0], list(value[2])) if op in _REPEATS else (0, [])
        if low >= 1 and len(item) == 1 and item[0][0] is _re_parser.LITERAL:
            run.append(chr(item[0][1]))  # `x+`, `x{2,}`: an x is there; what follows need not be
        runs.append("".join(run))
        run = []
    runs.append("".join(run))
    return max(runs, key=len)


def _first_occurrences(text: str, parts: tuple[re.Pattern[str], ...]) -> bool:
    r"""Whether one alternative of a linear form, `(?:\A|(?<=\n))(?>.*?(?:p1))...(?>.*?(?:pk-1)).*?(?:pk)`,
    matches `text`: on some line, the first occurrence of p1, then the first of each next part after the
    previous one's end, each starting on the line where the one before it ended (`.` stops at a newline).

    The same answer as the linear form's `search` (tests/unit/test_indicator_matcher.py), found with each
    part's own `search`, which skips ahead with the part's literal prefix where the linear form tries the
    part at every position of every line through its lazy `.*?`: 3-4 times faster on long scripts. Lines
    are taken in order, only those where the first part occurs, and each later part's search is
    remembered and done again only once its match lies behind (or a chain ended before where it was
    searched from), so a text repeating a first part on every line does not rescan the rest per line."""
    first, n = parts[0], len(text)
    if len(parts) == 1:
        return first.search(text) is not None
    kept: list[tuple[int, re.Match[str] | None]] = [(n + 1, None)] * len(parts)  # (searched from, match)
    start = 0
    while start <= n:
        match = first.search(text, start)
        if match is None:
            return False
        line_end = text.find("\n", match.start())
        line_end, end = n if line_end < 0 else line_end, match.end()
        for i in range(1, len(parts)):
            since, match = kept[i]
            if since > end or (match is not None and match.start() < end):
                match = parts[i].search(text, end)
                kept[i] = (end, match)
            if match is None:
                break  # not on this line; a later line's chain may end before `end` (a part spanning lines)
            stop = line_end if end <= line_end else text.find("\n", end)  # the line `end` is on ends there
            if match.start() > (n if stop < 0 else stop):
                break
            end = match.end()
        else:
            return True
        start = line_end + 1
    return False


_MATCH = _Matcher(INDICATORS)
_MATCH_LONE = _Matcher(LONE_INDICATORS)


def _mask(text: str) -> int:
    return _MATCH(text)


def _lone_text(text: str) -> str:
    """What the lone indicators read: the line, and what its encoded commands decode to."""
    decoded = encoded_text(text)
    if decoded:  # one line, command and decoded text: the lookahead conjunctions read the first line
        text = " ".join((*text.split(), *decoded.split()))
    return text


def _lone_mask(text: str) -> int:
    return _MATCH_LONE(_lone_text(text))


# PowerShell takes a parameter after `-`, `/` or a typographic dash (U+2013-U+2015), then optionally a
# second dash of any of those kinds, and any prefix of -EncodedCommand (or -ec); the argument may be
# quoted, with white space inside (base64 decoding skips it). ASCII-only: under IGNORECASE `[a-z]` would
# also take the Kelvin sign and the long s, which base64 refuses.
_ENCODED_ARG = re.compile(
    r"(?:^|[\s\"'])[-/\u2013\u2014\u2015][-\u2013\u2014\u2015]?(e[a-z]*)\s+"
    r"(?:\"([a-z0-9+/=\s]{16,})\"|'([a-z0-9+/=\s]{16,})'|([a-z0-9+/]{16,}=*))",
    re.IGNORECASE | re.ASCII,
)
_ENCODED_MAX = 65536  # base64 characters decoded per argument: a script, not a payload's bulk
_DECODED_MAX = 262144  # decoded characters kept per text, all arguments and levels together


def encoded_text(text: str, depth: int = 3) -> str:
    """What the PowerShell `-EncodedCommand` arguments of `text` (any of its abbreviations: -e, -ec,
    -en, -enc, ...) decode to, UTF-16LE as PowerShell reads them, one per line; '' when there is none.
    An encoded command that itself starts one is decoded again, up to `depth` levels. Every argument is
    tried (the arguments do not overlap, so a hostile line costs time linear in its length), each up to
    `_ENCODED_MAX` characters and `_DECODED_MAX` decoded characters in all; what does not decode to text
    (at least half of it printable ASCII: another program's `-e` flag, a binary payload) is left out."""
    out: list[str] = []
    kept = 0
    for found in _ENCODED_ARG.finditer(text):
        flag = found.group(1).lower()
        if flag != "ec" and not "encodedcommand".startswith(flag):
            continue
        argument = found.group(2) or found.group(3) or found.group(4)
        payload = "".join(argument.split()).rstrip("=")[:_ENCODED_MAX]
        payload = payload[: len(payload) - (len(payload) % 4 == 1)]  # one spare character never decodes
        try:
            raw = base64.b64decode(payload + "=" * (-len(payload) % 4))
        except (ValueError, binascii.Error):  # "=" inside a quoted argument
            continue
        decoded = raw[: len(raw) - len(raw) % 2].decode("utf-16-le", errors="replace")[: _DECODED_MAX - kept]
        if not decoded or 2 * sum(" " <= c <= "~" or c in "\r\n\t" for c in decoded) < len(decoded):
            continue
        out.append(decoded)
        kept += len(decoded)
        if depth > 1 and kept < _DECODED_MAX:
            inner = encoded_text(decoded, depth - 1)[: _DECODED_MAX - kept]
            if inner:
                out.append(inner)
                kept += len(inner)
        if kept >= _DECODED_MAX:
            break
    return "\n".join(out)


_cached_mask = lru_cache(maxsize=32768)(_mask)
_cached_lone_mask = lru_cache(maxsize=32768)(_lone_mask)
LONE_CACHED_CHARS = _CACHED_CHARS  # the longest line whose mask is remembered (`features._LONE_SEEN` too)


def indicator_names(mask: int) -> tuple[str, ...]:
    """Names of the indicators set in `mask`, in catalogue order."""
    return tuple(name for bit, name in enumerate(INDICATOR_NAMES) if mask >> bit & 1)


def lone_indicator_names(mask: int) -> tuple[str, ...]:
    """Names of the `LONE_INDICATORS` set in a `lone_mask`, in catalogue order."""
    return tuple(name for bit, name in enumerate(LONE_INDICATOR_NAMES) if mask >> bit & 1)


def indicator_techniques(mask: int) -> tuple[str, ...]:
    """ATT&CK technique ids of the indicators set in `mask`, sorted and unique."""
    found = {t for bit, ind in _INDEXED if mask >> bit & 1 for t in ind.techniques}
    return tuple(sorted(found))
