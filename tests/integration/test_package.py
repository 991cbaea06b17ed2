"""The Debian package (issue 21, parts 3-5): cpack -G DEB from the build directory (its binary,
not a rebuild) into a temporary folder; dpkg-deb -c / -I / -e show the files, the conffile, the
maintainer scripts and the shared-library dependencies; the unit passes systemd-analyze verify
inside the extracted tree; the extracted binary checks the packaged config and prints the man
page the package ships. Nothing is installed on this machine (no dpkg -i).

Skipped (exit 77, with the reason) when dpkg-deb or cpack is missing."""
import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile

from jnt import BIN, Checks

t = Checks("package")
build = os.path.dirname(os.path.abspath(BIN))
for tool in ("dpkg-deb", "cpack"):
    if shutil.which(tool) is None:
        print("SKIP: %s is not installed (apt-get install dpkg-dev cmake); the package is not "
              "tested" % tool)
        sys.exit(77)
if not os.path.exists(os.path.join(build, "CPackConfig.cmake")):
    print("SKIP: %s has no CPackConfig.cmake (configure it with cmake first)" % build)
    sys.exit(77)


def sh(args, **kw):
    p = subprocess.run(args, capture_output=True, timeout=120, **kw)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


tmp = tempfile.mkdtemp(prefix="jn-deb-")
try:
    rc, out, err = sh(["cpack", "-G", "DEB", "-B", os.path.join(tmp, "pkg")], cwd=build)
    t.eq(rc, 0, "cpack -G DEB builds the package: %s%s" % (out[-2000:], err[-2000:]))
    debs = [f for f in os.listdir(os.path.join(tmp, "pkg")) if f.endswith(".deb")]
    t.eq(len(debs), 1, "one .deb: %r" % debs)
    deb = os.path.join(tmp, "pkg", debs[0])
    t.check(re.match(r"^junction_\d+\.\d+\.\d+_[a-z0-9]+\.deb$", debs[0] if debs else ""),
            "named junction_<version>_<arch>.deb: %r" % debs)

    # ---- files ----
    rc, out, _ = sh(["dpkg-deb", "-c", deb])
    t.eq(rc, 0, "dpkg-deb -c")
    files = {}
    for line in out.splitlines():
        f = line.split()
        files[f[-1].lstrip(".")] = (f[0], f[1])
    for path in ("/usr/bin/junction", "/lib/systemd/system/junction.service",
                 "/etc/junction/junction.yaml", "/usr/share/man/man1/junction.1.gz"):
        t.check(path in files, "the package has %s" % path)
    t.eq(files.get("/usr/bin/junction", ("",))[0], "-rwxr-xr-x", "the binary is executable")
    t.check(all(v[1] == "root/root" for v in files.values()), "every file is root's")

    # ---- control: depends, conffile, maintainer scripts ----
    rc, info, _ = sh(["dpkg-deb", "-I", deb])
    t.eq(rc, 0, "dpkg-deb -I")
    depends = next((l for l in info.splitlines() if l.strip().startswith("Depends:")), "")
    for lib in ("libevent-core-2.1", "liblmdb0", "libssl3", "libjansson4", "libyaml-0-2",
                "libmsgpackc2", "librdkafka1", "libpaho-mqtt1.3", "liblua5.4-0", "adduser"):
        t.check(lib in depends, "Depends names %s: %s" % (lib, depends))
    ctrl = os.path.join(tmp, "control")
    rc, _, err = sh(["dpkg-deb", "-e", deb, ctrl])
    t.eq(rc, 0, "dpkg-deb -e: %s" % err)
    with open(os.path.join(ctrl, "conffiles")) as f:
        t.eq(f.read().split(), ["/etc/junction/junction.yaml"], "the config is a conffile")
    for script in ("postinst", "prerm", "postrm"):
        p = os.path.join(ctrl, script)
        t.check(os.path.exists(p) and os.access(p, os.X_OK), "%s is there, executable" % script)
    with open(os.path.join(ctrl, "postinst")) as f:
        post = f.read()
    t.check("adduser --system" in post and "chmod 0700 /var/lib/junction" in post,
            "postinst makes the junction user and /var/lib/junction 0700")
    rc, _, err = sh(["sh", "-n", os.path.join(ctrl, "postinst")])
    t.eq(rc, 0, "postinst is valid sh: %s" % err)

    # ---- the extracted tree ----
    root = os.path.join(tmp, "root")
    rc, _, err = sh(["dpkg-deb", "-x", deb, root])
    t.eq(rc, 0, "dpkg-deb -x: %s" % err)
    jb = os.path.join(root, "usr", "bin", "junction")
    conf = os.path.join(root, "etc", "junction", "junction.yaml")
    rc, out, err = sh([jb, "check", "-c", conf])
    t.eq(rc, 0, "the packaged binary checks the packaged config: %s" % err)
    t.eq(err, "", "without a warning")
    t.check(out.startswith(conf + ": ok (2 channels, 0 services, 1 routes)"), out)
    with open(conf) as f:
        text = f.read()
    t.check("data_dir: /var/lib/junction" in text and "admin: 127.0.0.1:8081" in text,
            "data_dir in /var/lib/junction, admin on loopback")
    with gzip.open(os.path.join(root, "usr/share/man/man1/junction.1.gz"), "rt") as f:
        man = f.read()
    rc, out, _ = sh([jb, "man"])
    t.eq(man, out, "the man page is the binary's own `junction man`")
    t.check(".TH JUNCTION 1" in man and ".B junction init" in man and "log_format" in man,
            "with the commands and the options")
    with open(os.path.join(root, "lib/systemd/system/junction.service")) as f:
        unit = f.read()
    for line in ("Type=notify", "ExecStart=/usr/bin/junction run -c /etc/junction/junction.yaml",
                 "ExecReload=/bin/kill -HUP $MAINPID", "User=junction", "ProtectSystem=strict",
                 "NoNewPrivileges=yes", "WatchdogSec=30s", "Restart=on-failure"):
        t.check("\n" + line + "\n" in unit, "the unit has %s" % line)

    # systemd-analyze verify in the extracted tree (its ExecStart binary exists there); the
    # targets the unit names and /bin/kill are copied in from this machine.
    sa = shutil.which("systemd-analyze")
    if sa is None:
        print("note: systemd-analyze is not installed; the unit is not verified")
    else:
        units = os.path.join(root, "lib", "systemd", "system")
        for f in os.listdir("/lib/systemd/system"):
            if f.endswith(".target"):
                shutil.copy(os.path.join("/lib/systemd/system", f), units)
        os.makedirs(os.path.join(root, "bin"), exist_ok=True)
        shutil.copy("/bin/kill", os.path.join(root, "bin", "kill"))
        rc, out, err = sh([sa, "--root=" + root, "--man=no", "verify", "junction.service"])
        t.eq((rc, out + err), (0, ""), "systemd-analyze verify: no complaint")
finally:
    shutil.rmtree(tmp, ignore_errors=True)
t.finish()
