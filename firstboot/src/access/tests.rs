use super::*;

const OLD: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOLDOLDOLD old@laptop";
const NEW: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINEWNEWNEW new@laptop";

fn unit_text(hostname: &str, keys: &[&str]) -> String {
    format!("version = 1\nhostname = {hostname:?}\n[access]\nssh_authorized_keys = {keys:?}\n")
}

/// A unit fp-7 with admins flypack (keys file present) and ops (none yet).
fn rig() -> (tempfile::TempDir, Root) {
    let d = tempfile::tempdir().unwrap();
    let root = Root::new(d.path());
    std::fs::create_dir_all(root.path("/etc/flypack/ssh")).unwrap();
    std::fs::create_dir_all(root.path("/home/flypack/.ssh")).unwrap();
    std::fs::write(root.path("/etc/group"), "root:x:0:\nsudo:x:27:flypack,ops\n").unwrap();
    std::fs::write(
        root.path("/etc/passwd"),
        "flypack:x:1000:1000::/home/flypack:/bin/bash\nops:x:1001:1001::/home/ops:/bin/bash\n",
    )
    .unwrap();
    std::fs::write(root.path(crate::config::RESOLVED), unit_text("fp-7", &[OLD])).unwrap();
    std::fs::write(root.path("/etc/flypack/ssh/flypack.keys"), format!("{OLD}\n")).unwrap();
    (d, root)
}

/// The armed rollback's program in tests: it does nothing.
const NO_OP: &str = "/bin/true";

fn keys_of(root: &Root, admin: &str) -> Option<String> {
    std::fs::read_to_string(root.path(format!("/etc/flypack/ssh/{admin}.keys"))).ok()
}

#[test]
fn new_keys_are_in_force_at_once_and_in_the_config_only_once_confirmed() {
    let (_d, root) = rig();
    let set = set_keys(&root, vec![NEW.into()], 90, Path::new(NO_OP)).unwrap();
    let Set::Pending(p) = set else { panic!("{set:?}") };
    for a in ["flypack", "ops"] {
        assert_eq!(keys_of(&root, a).as_deref(), Some(format!("{NEW}\n").as_str()), "{a}");
    }
    assert_eq!(
        crate::config::in_force_required(&root)
            .unwrap()
            .access
            .ssh_authorized_keys,
        [OLD]
    );
    assert!(p.deadline >= now_secs() + 89);

    let e = set_keys(&root, vec![OLD.into()], 90, Path::new(NO_OP))
        .unwrap_err()
        .to_string();
    assert!(e.contains("already waiting") && e.contains(&p.token), "{e}");

    assert_eq!(confirm(&root).unwrap().0, p.token);
    assert_eq!(
        crate::config::in_force_required(&root)
            .unwrap()
            .access
            .ssh_authorized_keys,
        [NEW]
    );
    assert!(pending(&root).unwrap().is_none());
    assert!(matches!(
        set_keys(&root, vec![NEW.into()], 90, Path::new(NO_OP)).unwrap(),
        Set::Unchanged
    ));
    let e = confirm(&root).unwrap_err().to_string();
    assert!(e.contains("no SSH key change is waiting"), "{e}");
}

#[test]
fn a_rollback_puts_back_exactly_the_old_files_and_only_its_own_change() {
    let (_d, root) = rig();
    let Set::Pending(p) = set_keys(&root, vec![NEW.into(), OLD.into()], 90, Path::new(NO_OP)).unwrap() else {
        panic!()
    };
    assert_eq!(rollback(&root, Some("another")).unwrap(), None);
    assert!(
        keys_of(&root, "flypack").unwrap().contains(NEW),
        "another token changes nothing"
    );
    assert_eq!(rollback(&root, Some(&p.token)).unwrap(), Some(p.token));
    assert_eq!(keys_of(&root, "flypack").as_deref(), Some(format!("{OLD}\n").as_str()));
    assert_eq!(keys_of(&root, "ops"), None, "ops had no keys file and has none again");
    assert_eq!(
        crate::config::in_force_required(&root)
            .unwrap()
            .access
            .ssh_authorized_keys,
        [OLD]
    );
    assert_eq!(rollback(&root, None).unwrap(), None, "nothing left to roll back");
}

#[test]
fn a_late_confirm_and_an_expired_change_at_boot_end_on_the_old_keys() {
    let (_d, root) = rig();
    let Set::Pending(_) = set_keys(&root, vec![NEW.into()], 0, Path::new(NO_OP)).unwrap() else {
        panic!()
    };
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let e = confirm(&root).unwrap_err().to_string();
    assert!(e.contains("too late") && e.contains("old keys are back"), "{e}");
    assert_eq!(keys_of(&root, "flypack").as_deref(), Some(format!("{OLD}\n").as_str()));

    let Set::Pending(p) = set_keys(&root, vec![NEW.into()], 0, Path::new(NO_OP)).unwrap() else {
        panic!()
    };
    assert_eq!(rollback_expired(&root).unwrap(), Some(p.token));
    assert_eq!(keys_of(&root, "ops"), None);
    assert!(pending(&root).unwrap().is_none());
}

#[test]
fn refuses_no_keys_a_bad_key_and_another_units_config_and_changes_nothing() {
    let (d, root) = rig();
    let before = keys_of(&root, "flypack");
    let e = set_keys(&root, vec![], 90, Path::new(NO_OP)).unwrap_err().to_string();
    assert!(e.contains("lock every admin out"), "{e}");
    for bad in ["hunter2", "ssh-ed25519 AAAA x\nssh-rsa BBBB evil"] {
        let e = format!(
            "{:#}",
            set_keys(&root, vec![bad.into()], 90, Path::new(NO_OP)).unwrap_err()
        );
        assert!(e.contains("access.ssh_authorized_keys[0]"), "{bad:?}: {e}");
    }
    let other = d.path().join("fp-8.toml");
    std::fs::write(&other, unit_text("fp-8", &[NEW])).unwrap();
    let e = keys_from_unit(&root, &other).unwrap_err().to_string();
    assert!(e.contains("config of fp-8, and this unit is fp-7"), "{e}");
    let mine = d.path().join("fp-7.toml");
    std::fs::write(&mine, unit_text("fp-7", &[NEW, OLD])).unwrap();
    assert_eq!(keys_from_unit(&root, &mine).unwrap(), [NEW, OLD]);
    assert_eq!(keys_of(&root, "flypack"), before);
    assert!(pending(&root).unwrap().is_none());
}

#[test]
fn names_the_profile_keys_it_does_not_change() {
    let (_d, root) = rig();
    assert!(other_key_files(&root).is_empty());
    std::fs::write(
        root.path("/home/flypack/.ssh/authorized_keys"),
        format!("# from the profile\n{OLD}\n\n"),
    )
    .unwrap();
    assert_eq!(
        other_key_files(&root),
        [("/home/flypack/.ssh/authorized_keys".to_string(), 1)]
    );
}
