#!/usr/bin/python3
# -*- coding: utf-8 -*-
"""Makes a diagnostics bundle in one module run.

One task instead of one per command and per file: under software emulation
each module run costs about 4 s, and the bundle took over 50 of them.
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: flypack_bundle
short_description: Make a unit's diagnostics bundle (a tar.gz) in one run
description:
  - Runs read-only commands (never through a shell), reads each container's
    log, copies a list of files, and writes it all into one tar.gz under
    O(dest), named C(PREFIX-HOSTNAME-UTCTIME.tar.gz).
  - A command that is missing, fails or times out is written down in the
    bundle (its output file ends with its exit and error), never fatal a
    bundle is most needed when something is broken.
  - The archive is written under a temporary name and renamed when
    complete, so no half-written bundle ever carries the final name.
options:
  dest:
    description: Folder the bundle goes to (made, mode 0750, if missing).
    type: path
    required: true
  prefix:
    description: First part of the bundle's name.
    type: str
    default: diagnostics
  commands:
    description: What to run; each item has C(file) (a relative path in the
      bundle) and C(argv) (the command and its arguments).
    type: list
    elements: dict
    default: []
  files:
    description: Files copied as they are when they exist, relative to O(root).
      Only regular files (a FIFO or a device is written down, not read).
    type: list
    elements: str
    default: []
  root:
    description: Root of the unit's files.
    type: path
    default: /
  container_log_lines:
    description: Lines of each container's log (0 reads no containers).
    type: int
    default: 2000
  timeout:
    description: Seconds each command may take.
    type: int
    default: 120
  max_file_bytes:
    description: A command's output or a file longer than this is cut, and
      the cut is written down.
    type: int
    default: 67108864
author: Flypack
"""

RETURN = r"""
bundle:
  description: Path of the bundle.
  type: str
  returned: success
members:
  description: Files in the bundle, relative to its top folder.
  type: list
  returned: success
problems:
  description: What could not be collected, and why.
  type: list
  returned: success
"""

import io
import os
import socket
import stat
import subprocess
import tarfile
import time

from ansible.module_utils.basic import AnsibleModule


def safe_member(name):
    """A relative path with no '..', '.' or empty part (a tar member that
    cannot land outside the bundle's folder when extracted)."""
    parts = name.split("/")
    return (
        bool(name)
        and not name.startswith("/")
        and all(p not in ("", ".", "..") for p in parts)
        and "\0" not in name
    )


def run(argv, timeout, limit, merge_stderr=False):
    """Output of argv (with its errors when merge_stderr), and a trailer
    saying why it failed ('' when it did not)."""
    try:
        p = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        return b"", "# %s: not found\n" % " ".join(argv)
    except subprocess.TimeoutExpired as e:
        return (e.stdout or b"")[:limit], "# %s: no answer in %d s\n" % (" ".join(argv), timeout)
    except OSError as e:
        return b"", "# %s: %s\n" % (" ".join(argv), e)
    out = p.stdout[:limit]
    trailer = ""
    if len(p.stdout) > limit:
        trailer += "# cut at %d bytes of %d\n" % (limit, len(p.stdout))
    if p.returncode != 0:
        err = (p.stderr or b"").decode("utf-8", "replace").strip()
        trailer += "# %s: exit %d: %s\n" % (" ".join(argv), p.returncode, err)
    return out, trailer


def read_regular(path, limit):
    """The first bytes of a regular file (a FIFO or a device would block or
    never end); None when it does not exist; raises OSError with why
    otherwise. Symbolic links are followed: /etc/os-release is one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError("not a regular file")
        return f.read(limit)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dest=dict(type="path", required=True),
            prefix=dict(type="str", default="diagnostics"),
            commands=dict(type="list", elements="dict", default=[]),
            files=dict(type="list", elements="str", default=[]),
            root=dict(type="path", default="/"),
            container_log_lines=dict(type="int", default=2000),
            timeout=dict(type="int", default=120),
            max_file_bytes=dict(type="int", default=64 * 1024 * 1024),
        ),
        supports_check_mode=True,
    )
    p = module.params
    host = socket.gethostname()
    if not safe_member(p["prefix"]) or "/" in p["prefix"]:
        module.fail_json(msg="prefix %r: expected a plain name (no '/')" % p["prefix"])
    for c in p["commands"]:
        argv = c.get("argv")
        # Templating turns a number into an int: the argument is its text.
        if (
            not isinstance(argv, list)
            or not argv
            or not all(isinstance(a, (str, int)) and not isinstance(a, bool) for a in argv)
        ):
            module.fail_json(msg="command %r: argv must be a non-empty list of strings" % (c,))
        c["argv"] = [str(a) for a in argv]
        if not isinstance(c.get("file"), str) or not safe_member(c["file"]):
            module.fail_json(
                msg="command %r: file must be a relative path inside the bundle (no '..', no leading '/')"
                % (c,)
            )
    for f in p["files"]:
        if not safe_member(f):
            module.fail_json(msg="file %r: expected a path relative to root (no '..', no leading '/')" % f)

    name = "%s-%s-%s" % (p["prefix"], host, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    bundle = os.path.join(p["dest"], name + ".tar.gz")
    if module.check_mode:
        module.exit_json(changed=True, bundle=bundle, members=[], problems=[])

    limit = p["max_file_bytes"]
    members = []
    problems = []
    now = time.time()

    os.makedirs(p["dest"], mode=0o750, exist_ok=True)
    partial = os.path.join(p["dest"], ".%s.tar.gz.partial" % name)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o640)
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:

            def add(member, data):
                info = tarfile.TarInfo("%s/%s" % (name, member))
                info.size = len(data)
                info.mtime = now
                info.mode = 0o640
                tar.addfile(info, io.BytesIO(data))
                members.append(member)

            for c in p["commands"]:
                out, trailer = run(c["argv"], p["timeout"], limit)
                if trailer:
                    problems.append(trailer.strip())
                add(c["file"], out + b"\n" + trailer.encode())

            if p["container_log_lines"] > 0:
                names, trailer = run(
                    ["docker", "ps", "-a", "--format", "{{.Names}}"], p["timeout"], limit
                )
                if trailer:
                    problems.append(trailer.strip())
                for c in names.decode("utf-8", "replace").split():
                    if not safe_member(c):
                        problems.append("container %r: a name that is no file name, skipped" % c)
                        continue
                    out, trailer = run(
                        ["docker", "logs", "--timestamps", "--tail", str(p["container_log_lines"]), c],
                        p["timeout"],
                        limit,
                        # The container's stderr comes on docker's own.
                        merge_stderr=True,
                    )
                    add("containers/%s.log" % c, out + b"\n" + trailer.encode())

            for f in p["files"]:
                path = os.path.join(p["root"], f)
                try:
                    data = read_regular(path, limit)
                except OSError as e:
                    problems.append("%s: %s" % (path, e.strerror or e))
                    continue
                if data is not None:
                    add("files/%s" % f.replace("/", "_"), data)
        os.replace(partial, bundle)
    except BaseException:
        try:
            os.unlink(partial)
        except OSError:
            pass
        raise
    module.exit_json(changed=True, bundle=bundle, members=members, problems=problems)


if __name__ == "__main__":
    main()
