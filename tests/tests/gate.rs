#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The security gate against a local archive made here (a `file:` mirror
//! whose signed security index holds a newer version of a package in the
//! image): the build is refused and names the package; a waiver lets it
//! through until its date; an index signed by another key is not trusted.

use std::path::{Path, PathBuf};
use std::process::Command;

use flypack_e2e::*;
use sha2::{Digest, Sha256};

/// A GnuPG home with one signing key; returns (home, keyring file).
fn gpg_key(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let home = dir.join(format!("gnupg-{name}"));
    std::fs::create_dir_all(&home).unwrap();
    let gpg = |args: &[&str]| {
        let (ok, out) = sh(Command::new("gpg")
            .arg("--homedir")
            .arg(&home)
            .args(["--batch", "--quiet"])
            .args(args));
        assert!(ok, "gpg {args:?}: {out}");
    };
    gpg(&[
        "--passphrase",
        "",
        "--quick-gen-key",
        &format!("Flypack {name} <{name}@test.invalid>"),
        "ed25519",
        "sign",
        "never",
    ]);
    let keyring = dir.join(format!("{name}.gpg"));
    gpg(&["--output", keyring.to_str().unwrap(), "--export"]);
    (home, keyring)
}

/// A `file:` mirror with `dists/bookworm-security` listing `pkg` at `version`,
/// its InRelease clearsigned with the key in `home`.
fn mirror(dir: &Path, home: &Path, pkg: &str, version: &str) -> PathBuf {
    let root = dir.join("mirror");
    let d = root.join("dists/bookworm-security");
    std::fs::create_dir_all(d.join("main/binary-amd64")).unwrap();
    let packages =
        format!("Package: {pkg}\nVersion: {version}\nArchitecture: amd64\n\nPackage: not-in-the-image\nVersion: 1.0\n");
    let plain = d.join("main/binary-amd64/Packages");
    std::fs::write(&plain, packages).unwrap();
    let (ok, out) = sh(Command::new("xz").args(["-z", "-k", "-f"]).arg(&plain));
    assert!(ok, "{out}");
    let xz = std::fs::read(plain.with_extension("xz")).unwrap();
    let release = format!(
        "Origin: Flypack test\nSuite: bookworm-security\nDate: Sat, 28 Nov 2026 12:00:00 UTC\nSHA256:\n {} {} main/binary-amd64/Packages.xz\n",
        hex::encode(Sha256::digest(&xz)),
        xz.len()
    );
    std::fs::write(d.join("Release"), release).unwrap();
    let (ok, out) = sh(Command::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args(["--batch", "--yes", "--quiet", "--clearsign", "--output"])
        .arg(d.join("InRelease"))
        .arg(d.join("Release")));
    assert!(ok, "{out}");
    root
}

fn check(profile: &Path) -> Run {
    run(builder().args(["--json", "security-check"]).arg(profile))
}

#[test]
fn a_newer_security_version_refuses_the_build_unless_waived() {
    let img = shared_image();
    // The real archive's indices were checked for the default image.
    let sec = img
        .manifest
        .security
        .as_ref()
        .expect("the gate's result in the manifest");
    assert_eq!(sec.indices.len(), 2, "{sec:?}");
    assert!(sec.newer.iter().all(|l| l.waived.is_some()), "{sec:?}");

    let dir = tempfile::tempdir().unwrap();
    let base = img
        .manifest
        .packages
        .iter()
        .find(|p| p.name == "base-files")
        .expect("base-files in the image");
    let newer = format!("{}+flypack1", base.version);
    let (home, keyring) = gpg_key(dir.path(), "archive");
    let m = mirror(dir.path(), &home, "base-files", &newer);
    let profile = |extra: &str| {
        let p = dir.path().join(format!("p{}.toml", extra.len()));
        let text = format!(
            "{}\n[security]\nmirror = \"file://{}\"\ncheck_updates = false\nkeyring = \"{}\"\n{extra}",
            default_profile_text(None),
            m.display(),
            keyring.display()
        );
        std::fs::write(&p, text).unwrap();
        p
    };

    // Refused, naming the package, both versions and the way out.
    let p = profile("");
    let r = check(&p);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "base-files {} (available: {newer} in bookworm-security)",
            base.version
        )),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("--refresh-rootfs") && r.stderr.contains("security.waivers"),
        "{}",
        r.stderr
    );
    // The build stops there: nothing under the final names.
    let out = dir.path().join("out");
    let b = build(&p, &out);
    assert_ne!(b.code, 0);
    assert!(b.stderr.contains("base-files"), "{}", b.stderr);
    assert!(!out.join("flypack.img").exists() && !out.join("flypack.manifest.json").exists());

    // Waived until a date to come: through, and the waiver is recorded.
    let w = profile(
        "[[security.waivers]]\npackage = \"base-files\"\nreason = \"cosmetic release notes only\"\nexpires = \"2099-12-31\"\n",
    );
    let r = check(&w);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let got = &r.event("result").unwrap()["security"]["newer"][0];
    assert_eq!(got["package"], "base-files");
    assert!(
        got["waived"].as_str().unwrap().contains("cosmetic release notes only"),
        "{got}"
    );
    // An expired waiver does not count.
    let old = profile(
        "[[security.waivers]]\npackage = \"base-files\"\nreason = \"was fine last year\"\nexpires = \"2020-01-01\"\n",
    );
    assert_eq!(check(&old).code, 1);

    // An index signed by another key is not trusted.
    let (_, other) = gpg_key(dir.path(), "stranger");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace(keyring.to_str().unwrap(), other.to_str().unwrap());
    std::fs::write(&p, text).unwrap();
    let r = check(&p);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("is not signed by a key in"), "{}", r.stderr);
}
