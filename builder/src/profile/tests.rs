use super::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The default profile's text, with its relative paths made absolute so the
/// mutated copies can live in a temp dir.
fn default_text() -> String {
    let images = repo().join("images");
    std::fs::read_to_string(images.join("flypack.toml"))
        .unwrap()
        .replace(
            "preseed = \"flypack.preseed\"",
            &format!("preseed = {:?}", images.join("flypack.preseed").display().to_string()),
        )
        .replace(
            "unit_defaults = \"flypack.unit.toml\"",
            &format!(
                "unit_defaults = {:?}",
                images.join("flypack.unit.toml").display().to_string()
            ),
        )
        .replace(
            "compose = \"../compose/monitoring/docker-compose.yml\"",
            &format!(
                "compose = {:?}",
                repo()
                    .join("compose/monitoring/docker-compose.yml")
                    .display()
                    .to_string()
            ),
        )
        .replace(
            "ansible = \"../ansible\"",
            &format!("ansible = {:?}", repo().join("ansible").display().to_string()),
        )
        .replace(
            "overlays = [\"../overlays/base\"]",
            &format!("overlays = [{:?}]", repo().join("overlays/base").display().to_string()),
        )
}

fn load_text(text: &str) -> Result<Profile> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.toml");
    std::fs::write(&p, text).unwrap();
    Profile::load(&p)
}

#[test]
fn default_profile_validates() {
    let p = Profile::load(&repo().join(DEFAULT_PROFILE)).unwrap();
    assert_eq!(p.name.as_str(), "flypack");
    assert_eq!(p.disk.total, 4 << 30);
    assert_eq!(
        p.disk.root,
        (4 << 30) - (2 << 20) - (1 << 20) - (128 << 20) - (16 << 20)
    );
    assert_eq!(
        p.debian.sources(),
        vec![
            "deb http://deb.debian.org/debian bookworm main non-free-firmware",
            "deb http://deb.debian.org/debian bookworm-updates main non-free-firmware",
            "deb http://deb.debian.org/debian-security bookworm-security main non-free-firmware",
        ]
    );
    assert!(p.users.iter().all(|u| u.name.as_str() != "root"));
    let sorted = {
        let mut s = p.debian.packages.clone();
        s.sort();
        s
    };
    assert_eq!(p.debian.packages, sorted);
}

#[test]
fn snapshot_pins_every_source() {
    let text = default_text().replace("# snapshot = ", "snapshot = ");
    let p = load_text(&text).unwrap();
    assert_eq!(
        p.debian.sources(),
        vec![
            "deb http://snapshot.debian.org/archive/debian/20250520T000000Z/ bookworm main non-free-firmware",
            "deb http://snapshot.debian.org/archive/debian/20250520T000000Z/ bookworm-updates main non-free-firmware",
            "deb http://snapshot.debian.org/archive/debian-security/20250520T000000Z/ bookworm-security main non-free-firmware",
        ]
    );
}

/// Each bad profile: (what to replace, replacement, expected key path,
/// words the message must contain).
#[test]
fn bad_profiles_name_the_key_and_the_fix() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "version = 1",
            "version = 1\ncolour = \"red\"",
            "colour",
            "unknown field `colour`",
        ),
        ("version = 1", "version = 2", "version", "expected 1"),
        ("name = \"flypack\"", "name = \"Fly Pack\"", "name", "not an image name"),
        (
            "suite = \"bookworm\"",
            "suite = \"bullseye\"",
            "debian.suite",
            "expected \"bookworm\"",
        ),
        (
            "suite = \"bookworm\"",
            "suite = \"bookworm\"\nmirorr = \"x\"",
            "debian.mirorr",
            "unknown field `mirorr`",
        ),
        (
            "mirror = \"http://deb.debian.org/debian\"",
            "mirror = \"ftp.debian.org\"",
            "debian.mirror",
            "not a mirror URL",
        ),
        (
            "# snapshot = \"20250520T000000Z\"",
            "snapshot = \"2025-05-20\"",
            "debian.snapshot",
            "YYYYMMDDTHHMMSSZ",
        ),
        (
            "components = [\"main\", \"non-free-firmware\"]",
            "components = [\"main\", \"nonfree\"]",
            "debian.components[1]",
            "not a Debian component",
        ),
        (
            "\"linux-image-amd64\", ",
            "\"Linux Image\", ",
            "debian.packages[0]",
            "not a Debian package name",
        ),
        ("\"linux-image-amd64\", ", "", "debian.packages", "no kernel"),
        (
            "\"cloud-guest-utils\", ",
            "",
            "debian.packages",
            "missing \"cloud-guest-utils\"",
        ),
        ("\"jq\", ", "\"jq\", \"jq\", ", "debian.packages", "listed twice"),
        (
            "name = \"flypack\"\ngroups",
            "name = \"flypack\"\npassword = \"secret\"\ngroups",
            "users[0].password",
            "unknown field `password`",
        ),
        (
            "# \"ssh-ed25519 AAAAC3... engineer@laptop\",",
            "\"ssh-ed25519 not-a-key\",",
            "users[0].ssh_authorized_keys[0]",
            "not an SSH public key",
        ),
        (
            "name = \"flypack\"\ngroups",
            "name = \"root\"\ngroups",
            "users[0].name",
            "root has no login",
        ),
        ("size = \"4GiB\"", "size = \"4GB\"", "disk.size", "not a size"),
        ("size = \"4GiB\"", "size = \"1GiB\"", "disk.size", "at least 1GiB"),
        ("esp = \"128MiB\"", "esp = \"16MiB\"", "disk.esp", "at least 64MiB"),
        ("seed = \"16MiB\"", "seed = \"1024KiB\"", "disk.seed", "4MiB to 256MiB"),
        (
            "cmdline = [\"quiet\"]",
            "cmdline = [\"root=/dev/sda1\"]",
            "boot.cmdline[0]",
            "set by the builder",
        ),
        (
            "unit_defaults = ",
            "fleet = \"/nonexistent.toml\"\nunit_defaults = ",
            "fleet",
            "cannot read /nonexistent.toml",
        ),
        (
            "ansible = ",
            "ansible = \"/nonexistent\"\n#",
            "ansible",
            "is not an Ansible folder (no playbooks/ in it)",
        ),
        (
            "\"ansible-core\", \"python3-ansible-runner\",",
            "\"python3-ansible-runner\",",
            "ansible",
            "add ansible-core to debian.packages",
        ),
        (
            "provided = [\"ansible\"]",
            "provided = [\"ansible=7.7.0\"]",
            "debian.provided[0]",
            "expected a bare package name",
        ),
        (
            "provided = [\"ansible\"]",
            "provided = [\"ansible-core\"]",
            "debian.provided[0]",
            "is also in debian.packages",
        ),
        (
            "provided = [\"ansible\"]",
            "provided = [\"ansible\", \"linux-image-cloud-amd64\"]",
            "debian.provided[1]",
            "needed on every unit",
        ),
        (
            "formats = [\"raw\"]",
            "formats = [\"iso\"]",
            "outputs.formats[0]",
            "unknown variant `iso`",
        ),
        (
            "overlays = [",
            "overlays = [\"/nonexistent/overlay\", ",
            "overlays[0]",
            "is not a directory",
        ),
    ];
    let base = default_text();
    for (from, to, key, words) in cases {
        assert!(
            base.contains(from),
            "test case anchor {from:?} not in the default profile"
        );
        let text = base.replacen(from, to, 1);
        let err = load_text(&text).expect_err(&format!("{key} should be rejected"));
        let errs: Vec<ConfigError> = if let Some(e) = err.downcast_ref::<ConfigErrors>() {
            e.0.clone()
        } else if let Some(e) = err.downcast_ref::<ConfigError>() {
            vec![e.clone()]
        } else {
            panic!("{key}: not a config error: {err:#}");
        };
        let hit = errs
            .iter()
            .find(|e| e.key == *key)
            .unwrap_or_else(|| panic!("{key}: no error with that key in {errs:?}"));
        assert!(
            hit.message.contains(words),
            "{key}: {:?} does not contain {words:?}",
            hit.message
        );
        assert!(hit.file.ends_with("p.toml"), "{hit}");
    }
}

#[test]
fn preseed_lines_are_checked() {
    for (line, ok) in [
        ("", true),
        ("# comment", true),
        ("tzdata tzdata/Areas select Etc", true),
        ("iperf3 iperf3/start_daemon boolean false", true),
        ("iperf3 iperf3/start_daemon boolean maybe", false),
        ("passwd passwd/root-password password hunter2", false),
        ("just some words", false),
    ] {
        assert_eq!(check_preseed_line(line).is_ok(), ok, "{line:?}");
    }
}

#[test]
fn sizes_parse_and_print() {
    for (s, v) in [
        ("4GiB", 4u64 << 30),
        ("512MiB", 512 << 20),
        ("1TiB", 1 << 40),
        ("64KiB", 64 << 10),
    ] {
        assert_eq!(parse_size(s), Some(Size(v)), "{s}");
        assert_eq!(Size(v).to_string(), s);
    }
    for bad in ["4GB", "4 G", "GiB", "-1MiB", "1.5GiB", ""] {
        assert_eq!(parse_size(bad), None, "{bad}");
    }
}
