"""Simulated Linux impact driven by scripts: the process tree of ransomware and wipers that run
standard tools once per file (T1486 Data Encrypted for Impact, T1485 Data Destruction).

Why a separate generator: on Linux much real ransomware and most wipers are shell, Python or Perl
scripts (or small binaries) that loop over the victim's files and run `openssl enc`, `gpg -c`,
`ccrypt`, `7z -p`, then `shred -u` or `rm` on each original (ATT&CK T1486/T1485; Atomic Red Team's
Linux tests for both). A live agent that watches files with inotify cannot name the process behind
a file change, so often only the chain of process starts is visible: a launcher in a
user-writable place — a dropped binary, or a *copy* of an interpreter renamed to hide it — with
dozens of short-lived encryptor and destroyer children. Every name, path, tool, count and delay is
randomised, so the model learns "one parent, many per-file encrypt-then-destroy children", not a
string. Only the launcher and the children that do harm (encrypt, destroy, plant, steal) are labelled
attack; its pauses (`sleep`) and note writers are benign rows, or a lone `sleep`/`cat` below any
user-installed tool would learn to look like ransomware. Each generator draws three times the usual number of trees (`weight=3`): the shape has many
variants (four launcher kinds, eight encryptors, six destroyers, two sensor views). Hard negatives
(an encrypted backup job, an admin shredding a few files) live in `linux_benign`.
"""

from __future__ import annotations

from pipeline.training.sim.builder import Proc
from pipeline.training.sim.catalog import Registry
from pipeline.training.sim.linux_attack1 import bin_, drop_path, fetch
from pipeline.training.sim.session import Session
from schemas.events import Platform

REG = Registry(Platform.LINUX)
add = REG.add

_VICTIM_DIRS = ("/home/{u}/Documents", "/home/{u}/work", "/srv/share", "/var/www/html", "/opt/data", "/home/{u}/Pictures",
                "/mnt/backup", "/var/lib/postgresql/data", "/data/projects", "{w}/victim", "{w}/files")
_DOC_EXT = ("docx", "xlsx", "pdf", "jpg", "png", "sql", "csv", "txt", "odt", "pptx", "db", "zip", "conf", "php")
_INTERPRETERS = ("bash", "sh", "dash", "python3", "perl", "busybox")


def _victims(s: Session, n: int) -> list[str]:
    r, user = s.r, s.user if s.user != "root" else "admin"
    folders = [d.format(u=user, w=s.wdir()) for d in r.sample(_VICTIM_DIRS, r.num(1, 3))]
    return [f"{r.pick(folders)}/{r.name(r.pick(_DOC_EXT))}" for _ in range(n)]


def _launcher(s: Session) -> Proc:
    """The process that runs the loop: a copied interpreter, a dropped binary or a system shell."""
    r = s.r
    script = f"{s.wdir()}/{r.pick(('.', ''))}{r.pick((r.token(3, 8), r.word(), 'run', 'update', 'x'))}{r.pick(('.sh', '.py', '.pl', ''))}"
    kind = r.rng.randrange(4)
    if kind <= 1:  # a copy of an interpreter, renamed (its hash exists nowhere else)
        interp = r.pick(_INTERPRETERS)
        copy = drop_path(s)
        s.run(bin_("cp", s), f"cp {bin_(interp, s)} {copy}", via_shell=0.3)
        if r.chance(0.5):
            s.run(bin_("chmod", s), f"chmod +x {copy}")
        return s.run(copy, f"{copy} {script} {r.pick(('', s.wdir(), '/home', '--all'))}".strip())
    if kind == 2:  # a dropped (downloaded) binary
        tool = drop_path(s)
        fetch(s, tool, run=False)
        return s.run(tool, f"{tool} {r.pick(('', '-p /home', '--path /srv', '-e', s.wdir()))}".strip())
    interp = r.pick(("bash", "sh", "python3", "perl"))
    return s.run(bin_(interp, s), f"{interp} {script}")


def _encrypt_cmd(s: Session, path: str, ext: str, key: str) -> tuple[str, str, str]:
    """(tool, command line, output path) of one per-file encryption."""
    r = s.r
    out = f"{path}.{ext}"
    choices = (
        ("openssl", f"openssl enc -aes-256-cbc {r.pick(('-pbkdf2 ', '-salt ', '-pbkdf2 -salt ', ''))}-pass pass:{key} -in {path} -out {out}"),
        ("openssl", f"openssl {r.pick(('aes-256-cbc', 'enc -aes-128-ctr', 'enc -chacha20'))} -k {key} -in {path} -out {out}"),
        ("gpg", f"gpg --batch --yes {r.pick(('--passphrase ' + key, '--passphrase-file ' + s.wdir() + '/.k'))} -c -o {out} {path}"),
        ("gpg", f"gpg --batch --yes --trust-model always -e -r {r.token(5, 9)}@{r.domain()} -o {out} {path}"),
        ("ccrypt", f"ccrypt -e -f -K {key} {path}"),
        ("7z", f"7z a -p{key} -mhe=on {out} {path}"),
        ("zip", f"zip -q -P {key} {out} {path}"),
        ("age", f"age -r age1{r.token(40, 50)} -o {out} {path}"),
    )
    tool, cmd = r.pick(choices)
    return tool, cmd, (f"{path}.cpt" if tool == "ccrypt" else out)


def _destroy_cmd(s: Session, path: str) -> tuple[str, str]:
    r = s.r
    return r.pick((("shred", f"shred -u {path}"), ("shred", f"shred -{r.pick(('zun', 'fun', 'un'))}{r.num(1, 5)} {path}"),
                   ("rm", f"rm -f {path}"), ("rm", f"rm {path}"), ("unlink", f"unlink {path}"),
                   ("dd", f"dd if=/dev/{r.pick(('urandom', 'zero'))} of={path} bs=1k count={r.num(1, 64)} conv=notrunc")))


def _prelude(s: Session, parent: Proc, work: str) -> None:
    """Sometimes: plant persistence or take credentials first (labelled with their own tactic)."""
    b, r = s.b, s.r
    if r.chance(0.35):
        b.label = "Persistence"
        cron = r.pick(("/var/spool/cron/crontabs/root", f"{work}/var/spool/cron/crontabs/{s.user}", "/etc/cron.d/" + r.token()))
        s.run(bin_("mkdir", s), f"mkdir -p {cron.rsplit('/', 1)[0]}", parent=parent)
        p = s.run(bin_("cp", s), f"cp {work}/{r.token()}.txt {cron}", parent=parent)
        if r.chance(0.5):
            b.write(p, cron, r.num(40, 200))
    if r.chance(0.3):
        b.label = "CredentialAccess"
        s.run(bin_(r.pick(("cat", "cp")), s), r.pick((f"cat {r.pick(('/etc/shadow', work + '/etc/shadow'))}",
                                                       f"cp /etc/shadow {work}/{r.token()}")), parent=parent)
    b.label = "Impact"


def _note(s: Session, parent: Proc, folder: str) -> None:
    b, r = s.b, s.r
    note = f"{folder}/{r.pick(('README_RESTORE.txt', 'HOW_TO_DECRYPT.txt', 'RECOVER-FILES.txt', r.token().upper() + '.txt'))}"
    if r.chance(0.5):  # `echo ... > note` is a shell builtin: only the file shows, if anything
        b.create(parent, note)
    else:
        s.run(bin_(r.pick(("cp", "tee")), s), r.pick((f"cp {s.wdir()}/{r.token()} {note}", f"tee {note}")), parent=parent,
              attack=False)  # writing a text file is not the harm; the launcher's row carries it


@add("T1486", "Impact", weight=3)
def linux_script_ransomware(s: Session) -> None:
    """A launcher loops over files: an encryptor child per file, then a destroyer child per original."""
    b, r = s.b, s.r
    launcher = _launcher(s)
    work = s.wdir()
    _prelude(s, launcher, work)
    ext, key = r.pick(("enc", "locked", "crypt", r.token(3, 6))), r.token(8, 24)
    attributed = r.chance(0.4)  # eBPF/fanotify agents name the writer; inotify ones do not
    pause = r.pick((0.0, 0.05, 0.5, 2.0))
    victims = _victims(s, r.num(3, 40))
    for path in victims:
        tool, cmd, out = _encrypt_cmd(s, path, ext, key)
        enc = s.run(bin_(tool, s), cmd, parent=launcher)
        if attributed:
            b.create(enc, out)
            b.write(enc, out, r.num(1_000, 2_000_000))
        if r.chance(0.85):
            tool, cmd = _destroy_cmd(s, path)
            gone = s.run(bin_(tool, s), cmd, parent=launcher)
            if attributed:
                b.delete(gone, path)
        if pause and r.chance(0.7):
            s.run(bin_("sleep", s), f"sleep {pause:g}", parent=launcher, attack=False)  # a pause harms nothing
    _note(s, launcher, victims[0].rsplit("/", 1)[0])


@add("T1485", "Impact", weight=3)
def linux_script_wiper(s: Session) -> None:
    """A launcher walks folders and destroys each file with its own shred/dd/rm child."""
    b, r = s.b, s.r
    launcher = _launcher(s)
    _prelude(s, launcher, s.wdir())
    attributed = r.chance(0.4)
    for path in _victims(s, r.num(4, 40)):
        tool, cmd = _destroy_cmd(s, path)
        if tool == "rm" and r.chance(0.5):
            tool, cmd = "shred", f"shred -u {path}"
        gone = s.run(bin_(tool, s), cmd, parent=launcher)
        if attributed:
            b.delete(gone, path)
        if r.chance(0.3):
            s.run(bin_("sleep", s), f"sleep {r.pick((0.1, 0.5, 1))}", parent=launcher, attack=False)
