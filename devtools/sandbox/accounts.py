"""A sandbox host's own user database, sudoers and home directories, as a cloud image has them.

Debian's cloud images let in only ``admin`` (Ubuntu's: ``ubuntu``), with the key given at
launch in ~/.ssh/authorized_keys, no password, and passwordless sudo from
/etc/sudoers.d/90-cloud-init-users ("<user> ALL=(ALL) NOPASSWD:ALL"); root's password is
locked and sshd refuses root ("PermitRootLogin no" is not the image default, but root has no
authorized key there, so root is refused either way; the sandbox says it explicitly).

``write_files(root, user, public_key, keep_env)`` fills ``root/etc`` (passwd, group, shadow,
gshadow, sudoers, sudoers.d), ``root/root`` and ``root/home/<user>``; hosts.py bind-mounts them
over the host's /etc/..., /root and /home. The accounts are this machine's system accounts
(uid < 1000, so the tools in the shared filesystem keep their owners) plus the login user at
uid 1000, as on the image; no password hash of this machine is copied.
"""

import os
import re

USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
UID = 1000
# Groups cloud-init's default user gets on Debian's images (system_info.default_user.groups).
USER_GROUPS = ("adm", "dialout", "cdrom", "floppy", "sudo", "audio", "dip", "video", "plugdev")
# Debian 12's /etc/sudoers, minus the comments.
SUDOERS = """Defaults\tenv_reset
Defaults\tmail_badpass
Defaults\tsecure_path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
Defaults\tuse_pty
%s
root\tALL=(ALL:ALL) ALL
%%sudo\tALL=(ALL:ALL) ALL
@includedir /etc/sudoers.d
"""
FILES = ("passwd", "group", "shadow", "gshadow", "sudoers")


def check_user(user):
    if not USER_RE.match(user or "") or user == "root":
        raise ValueError("login_user must be a user name other than root, e.g. admin or ubuntu: "
                         "%r" % (user,))


def _system_entries(path):
    with open(path, encoding="utf-8") as handle:
        lines = [line.rstrip("\n") for line in handle if line.strip()]
    entries = []
    for line in lines:
        fields = line.split(":")
        if len(fields) >= 3 and fields[2].isdigit() and \
                (int(fields[2]) < UID or int(fields[2]) == 65534):
            entries.append(fields)
    return entries


def _write(path, text, mode):
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w",
              encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, mode)


def write_files(root, user, public_key, keep_env=()):
    """Write the host's accounts under `root` (see the module docstring).

    keep_env: variables sudo keeps (the sandbox's SSH session knobs, e.g.
    FAKE_CASSANDRA_JOIN_SECONDS, which stand for no real setting; everything else sudo resets).
    """
    check_user(user)
    etc = os.path.join(root, "etc")
    os.makedirs(os.path.join(etc, "sudoers.d"), exist_ok=True)
    passwd = [f for f in _system_entries("/etc/passwd") if f[0] != user]
    groups = [f for f in _system_entries("/etc/group") if f[0] != user]
    passwd.append([user, "x", str(UID), str(UID), "", "/home/" + user, "/bin/bash"])
    for fields in groups:
        if fields[0] in USER_GROUPS:
            members = [m for m in fields[3].split(",") if m] if len(fields) > 3 else []
            fields[3:] = [",".join(members + [user])]
    groups.append([user, "x", str(UID), ""])
    # "*": no password can match; not "!", which sshd without PAM takes for a locked account.
    shadow = ["%s:*:19800:0:99999:7:::" % f[0] for f in passwd]
    gshadow = ["%s:*::%s" % (f[0], f[3] if len(f) > 3 else "") for f in groups]
    _write(os.path.join(etc, "passwd"), "".join(":".join(f) + "\n" for f in passwd), 0o644)
    _write(os.path.join(etc, "group"), "".join(":".join(f) + "\n" for f in groups), 0o644)
    _write(os.path.join(etc, "shadow"), "".join(line + "\n" for line in shadow), 0o640)
    _write(os.path.join(etc, "gshadow"), "".join(line + "\n" for line in gshadow), 0o640)
    keep = 'Defaults\tenv_keep += "%s"' % " ".join(sorted(keep_env)) if keep_env else ""
    _write(os.path.join(etc, "sudoers"), SUDOERS % keep, 0o440)
    _write(os.path.join(etc, "sudoers.d", "90-cloud-init-users"),
           "# Created by cloud-init v. 22.4.2 on the image\n\n"
           "# User rules for %s\n%s ALL=(ALL) NOPASSWD:ALL\n" % (user, user), 0o440)
    os.makedirs(os.path.join(root, "root"), mode=0o700, exist_ok=True)
    home = os.path.join(root, "home", user)
    ssh_dir = os.path.join(home, ".ssh")
    os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
    _write(os.path.join(ssh_dir, "authorized_keys"), public_key.strip() + "\n", 0o600)
    for path in (home, ssh_dir, os.path.join(ssh_dir, "authorized_keys")):
        os.chown(path, UID, UID)
    return [os.path.join("/etc", name) for name in FILES] + ["/etc/sudoers.d"]
