#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `builder fleet-ca new` writes the CA (secret, 0600) and its certificate
//! (for phones), never over an existing CA; `show` prints the fingerprint
//! openssl computes for it.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn builder(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_builder")).args(args).output().unwrap()
}

#[test]
fn a_new_fleet_ca_is_secret_its_certificate_public_and_never_overwritten() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("fleet-ca.pem");
    let o = builder(&["fleet-ca", "new", "--name", "rig-a", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let crt = d.path().join("fleet-ca.crt");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&out), mode(&crt)), (0o600, 0o644));
    let pem = std::fs::read_to_string(&out).unwrap();
    assert!(pem.contains("BEGIN PRIVATE KEY"));
    assert!(!std::fs::read_to_string(&crt).unwrap().contains("PRIVATE KEY"));

    let o = builder(&["fleet-ca", "show", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ours = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let ssl = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-subject", "-in"])
        .arg(&crt)
        .output()
        .unwrap();
    let ssl = String::from_utf8_lossy(&ssl.stdout).to_string();
    assert!(ssl.contains(&format!("Fingerprint={ours}")), "{ssl} vs {ours}");
    assert!(ssl.contains("Flypack fleet CA (rig-a)"), "{ssl}");

    // A second `new` at the same place would orphan every phone's trust.
    let o = builder(&["fleet-ca", "new", "--name", "rig-a", "--out", out.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("exists") && err.contains("--out"), "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), pem, "the CA was changed");

    // customize and flash sign only for a unit config's names.
    let o = builder(&["customize", "x.img", "--fleet-ca", out.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--unit"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
